/**
 * Writer for GGUF version 3 files in the layout llama.cpp's reader requires: tensor data in the
 * order of the tensor infos, each tensor starting on a multiple of the alignment and padded to
 * one, including the last.
 *
 * The key-value part is hand-written because @huggingface/gguf 0.4.6's serializeGgufMetadata
 * rejects arrays of UINT8: it tests the element type for truthiness, and UINT8 is 0.
 */

import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { GGUFValueType } from '@huggingface/gguf';
import { BugError, UserError } from '../../../shared/errors';
import { writeError } from '../atomic';
import {
  type GgmlTypeId,
  ggmlTypeLayout,
  ggmlTypeName,
  isSupportedType,
  quantize,
  tensorByteLength,
} from './ggml-types';
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAX_DIMS } from './gguf-header';

/**
 * One metadata value with its GGUF type, as in @huggingface/gguf's GGUFTypedMetadata. The writer
 * checks the value against the type; UINT64 and INT64 take a bigint or a safe integer.
 */
export interface GgufMetadataEntry {
  value: unknown;
  type: GGUFValueType;
  /** Element type of an ARRAY value. */
  subType?: GGUFValueType;
}

export type GgufTypedMetadata = Record<string, GgufMetadataEntry>;

export interface GgufWriteTensor {
  name: string;
  /** ggml ne order: shape[0] is the contiguous (innermost) axis. */
  shape: number[];
  type: GgmlTypeId;
  values: Float32Array;
}

/** Header fields that @huggingface/gguf's typedMetadata lists beside the key-value pairs. */
const HEADER_FIELDS = new Set(['version', 'tensor_count', 'kv_count']);
/** ggml's GGML_MAX_NAME: llama.cpp rejects tensor names of this many bytes or more. */
const MAX_NAME_BYTES = 64;

const INTEGER_RANGES: Partial<Record<GGUFValueType, [number, number]>> = {
  [GGUFValueType.UINT8]: [0, 0xff],
  [GGUFValueType.INT8]: [-0x80, 0x7f],
  [GGUFValueType.UINT16]: [0, 0xffff],
  [GGUFValueType.INT16]: [-0x8000, 0x7fff],
  [GGUFValueType.UINT32]: [0, 0xffffffff],
  [GGUFValueType.INT32]: [-0x80000000, 0x7fffffff],
};
const BIGINT_RANGES: Partial<Record<GGUFValueType, [bigint, bigint]>> = {
  [GGUFValueType.UINT64]: [0n, (1n << 64n) - 1n],
  [GGUFValueType.INT64]: [-(1n << 63n), (1n << 63n) - 1n],
};

/** Byte width and little-endian writer of each fixed-size scalar type. */
const SCALAR_ENCODINGS: Partial<Record<GGUFValueType, [number, (b: Buffer, v: never) => unknown]>> =
  {
    [GGUFValueType.UINT8]: [1, (b, v: number) => b.writeUInt8(v)],
    [GGUFValueType.INT8]: [1, (b, v: number) => b.writeInt8(v)],
    [GGUFValueType.UINT16]: [2, (b, v: number) => b.writeUInt16LE(v)],
    [GGUFValueType.INT16]: [2, (b, v: number) => b.writeInt16LE(v)],
    [GGUFValueType.UINT32]: [4, (b, v: number) => b.writeUInt32LE(v)],
    [GGUFValueType.INT32]: [4, (b, v: number) => b.writeInt32LE(v)],
    [GGUFValueType.FLOAT32]: [4, (b, v: number) => b.writeFloatLE(v)],
    [GGUFValueType.FLOAT64]: [8, (b, v: number) => b.writeDoubleLE(v)],
    [GGUFValueType.BOOL]: [1, (b, v: boolean) => b.writeUInt8(v ? 1 : 0)],
    [GGUFValueType.UINT64]: [8, (b, v: bigint) => b.writeBigUInt64LE(v)],
    [GGUFValueType.INT64]: [8, (b, v: bigint) => b.writeBigInt64LE(v)],
  };

function encodeString(value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  return Buffer.concat([encodeU64(bytes.length), bytes]);
}

function encodeU32(value: number): Buffer {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(value);
  return bytes;
}

function encodeU64(value: number | bigint): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(BigInt(value));
  return bytes;
}

/** Checks one scalar against its declared type and returns the value the encoder takes. */
function checkScalar(value: unknown, type: GGUFValueType, where: string): unknown {
  const fail = (expected: string) =>
    new BugError(
      `${where} has type ${GGUFValueType[type] ?? type} but value ${String(value)}; expected ${expected}.`,
    );
  const integerRange = INTEGER_RANGES[type];
  if (integerRange) {
    if (typeof value !== 'number' || !Number.isInteger(value)) throw fail('an integer');
    if (value < integerRange[0] || value > integerRange[1])
      throw fail(`${integerRange[0]} to ${integerRange[1]}`);
    return value;
  }
  const bigintRange = BIGINT_RANGES[type];
  if (bigintRange) {
    const isInteger =
      typeof value === 'bigint' || (typeof value === 'number' && Number.isSafeInteger(value));
    if (!isInteger) throw fail('a bigint or a safe integer');
    const big = BigInt(value as number | bigint);
    if (big < bigintRange[0] || big > bigintRange[1])
      throw fail(`${bigintRange[0]} to ${bigintRange[1]}`);
    return big;
  }
  switch (type) {
    case GGUFValueType.FLOAT32:
    case GGUFValueType.FLOAT64:
      if (typeof value !== 'number') throw fail('a number');
      return value;
    case GGUFValueType.BOOL:
      if (typeof value !== 'boolean') throw fail('a boolean');
      return value;
    case GGUFValueType.STRING:
      if (typeof value !== 'string') throw fail('a string');
      return value;
    default:
      throw fail('a GGUF value type from 0 to 12 other than ARRAY');
  }
}

function encodeScalar(value: unknown, type: GGUFValueType, where: string): Buffer {
  const checked = checkScalar(value, type, where);
  if (type === GGUFValueType.STRING) return encodeString(checked as string);
  const [width, write] = SCALAR_ENCODINGS[type] as [number, (b: Buffer, v: unknown) => unknown];
  const bytes = Buffer.alloc(width);
  write(bytes, checked);
  return bytes;
}

/** Encodes one key-value pair: key, value type, then the value (arrays: element type, length). */
function encodeEntry(key: string, entry: GgufMetadataEntry, file: string): Buffer {
  const where = `${file}: metadata "${key}"`;
  const head = [encodeString(key), encodeU32(entry.type)];
  if (entry.type !== GGUFValueType.ARRAY)
    return Buffer.concat([...head, encodeScalar(entry.value, entry.type, where)]);
  if (!Array.isArray(entry.value))
    throw new BugError(`${where} has type ARRAY but its value is not an array.`);
  const { subType } = entry;
  if (subType === undefined || subType === GGUFValueType.ARRAY) {
    throw new BugError(
      `${where} is an ARRAY without a scalar subType; llama.cpp reads no arrays of arrays.`,
    );
  }
  const elements = entry.value.map((element, i) =>
    encodeScalar(element, subType, `${where} element ${i}`),
  );
  return Buffer.concat([...head, encodeU32(subType), encodeU64(elements.length), ...elements]);
}

function checkAlignment(entry: GgufMetadataEntry | undefined, file: string): number {
  if (entry === undefined) return GGUF_DEFAULT_ALIGNMENT;
  const alignment = entry.value as number;
  if (
    entry.type !== GGUFValueType.UINT32 ||
    alignment === 0 ||
    (alignment & (alignment - 1)) !== 0
  ) {
    throw new BugError(
      `${file}: metadata "general.alignment" must be a UINT32 power of two, not ${alignment}.`,
    );
  }
  return alignment;
}

function checkTensor(tensor: GgufWriteTensor, file: string): void {
  const where = `${file}: tensor "${tensor.name}"`;
  const nameBytes = Buffer.byteLength(tensor.name, 'utf8');
  if (nameBytes === 0 || nameBytes >= MAX_NAME_BYTES) {
    throw new BugError(
      `${where} has a ${nameBytes}-byte name; llama.cpp needs 1 to ${MAX_NAME_BYTES - 1} bytes.`,
    );
  }
  if (!isSupportedType(tensor.type))
    throw new BugError(
      `${where} has type ${ggmlTypeName(tensor.type)}, which Attune cannot write.`,
    );
  const { shape } = tensor;
  if (
    shape.length < 1 ||
    shape.length > GGUF_MAX_DIMS ||
    !shape.every((d) => Number.isSafeInteger(d) && d >= 1)
  ) {
    throw new BugError(
      `${where} has shape [${shape}]; it needs 1 to ${GGUF_MAX_DIMS} dimensions of at least 1.`,
    );
  }
  const elements = shape.reduce((a, b) => a * b, 1);
  if (elements !== tensor.values.length) {
    throw new BugError(
      `${where} has shape [${shape}] (${elements} values) but ${tensor.values.length} values.`,
    );
  }
  const blockSize = ggmlTypeLayout(tensor.type)?.blockSize ?? 1;
  if (shape[0] % blockSize !== 0) {
    throw new BugError(
      `${where}: ${ggmlTypeName(tensor.type)} needs the first dimension to be a multiple of ${blockSize}, not ${shape[0]}.`,
    );
  }
}

const padTo = (length: number, alignment: number) => Math.ceil(length / alignment) * alignment;

/** Encodes the tensor infos: name, n_dims, dims (ne order), type and offset in the data section. */
function encodeTensorInfo(tensor: GgufWriteTensor, offset: number): Buffer {
  return Buffer.concat([
    encodeString(tensor.name),
    encodeU32(tensor.shape.length),
    ...tensor.shape.map(encodeU64),
    encodeU32(tensor.type),
    encodeU64(offset),
  ]);
}

function encodeHeader(
  keyValues: Buffer[],
  tensors: GgufWriteTensor[],
  offsets: number[],
  alignment: number,
): Buffer {
  const unpadded = Buffer.concat([
    Buffer.from('GGUF', 'latin1'),
    encodeU32(3),
    encodeU64(tensors.length),
    encodeU64(keyValues.length),
    ...keyValues,
    ...tensors.map((tensor, i) => encodeTensorInfo(tensor, offsets[i])),
  ]);
  return Buffer.concat([
    unpadded,
    Buffer.alloc(padTo(unpadded.length, alignment) - unpadded.length),
  ]);
}

function quantizeTensor(tensor: GgufWriteTensor, file: string): Uint8Array {
  try {
    return quantize(tensor.type, tensor.values);
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    throw new UserError(`${file}: tensor "${tensor.name}": ${error.message}`, { cause: error });
  }
}

async function writeAll(handle: fs.FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done);
    done += bytesWritten;
  }
}

/**
 * Writes a GGUF file through a temporary sibling and a rename, so readers never see half a file.
 * Metadata keys keep their given types; `version`, `tensor_count` and `kv_count`, which
 * @huggingface/gguf's typedMetadata also lists, are header fields and are ignored here.
 * Tensors are encoded one at a time in their given order.
 */
export async function writeGgufFile(
  file: string,
  metadata: GgufTypedMetadata,
  tensors: GgufWriteTensor[],
): Promise<void> {
  const keyValues = Object.entries(metadata)
    .filter(([key]) => !HEADER_FIELDS.has(key))
    .map(([key, entry]) => encodeEntry(key, entry, file));
  const alignment = checkAlignment(metadata['general.alignment'], file);
  const names = new Set<string>();
  for (const tensor of tensors) {
    checkTensor(tensor, file);
    if (names.has(tensor.name))
      throw new BugError(`${file}: tensor "${tensor.name}" is listed twice.`);
    names.add(tensor.name);
  }

  const offsets: number[] = [];
  let dataLength = 0;
  for (const tensor of tensors) {
    offsets.push(dataLength);
    dataLength += padTo(tensorByteLength(tensor.type, tensor.values.length), alignment);
  }
  const header = encodeHeader(keyValues, tensors, offsets, alignment);

  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  let handle: fs.FileHandle;
  try {
    await fs.mkdir(path.dirname(path.resolve(file)), { recursive: true });
    handle = await fs.open(temp, 'wx');
  } catch (error) {
    throw writeError(error, file);
  }
  let closed = false;
  try {
    await writeAll(handle, header);
    for (const tensor of tensors) {
      const bytes = quantizeTensor(tensor, file);
      await writeAll(handle, bytes);
      await writeAll(handle, new Uint8Array(padTo(bytes.length, alignment) - bytes.length));
    }
    await handle.sync();
    closed = true;
    await handle.close();
    await fs.rename(temp, file);
  } catch (error) {
    if (!closed) await handle.close();
    await fs.rm(temp, { force: true }).catch(() => undefined);
    throw writeError(error, file);
  }
}
