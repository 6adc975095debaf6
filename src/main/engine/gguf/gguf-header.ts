/**
 * Parser for the GGUF header: magic, version, counts, key-value metadata and tensor infos
 * in the layout ggml's gguf.cpp reads (little-endian, versions 2 and 3).
 *
 * Hand-written instead of @huggingface/gguf 0.4.6's gguf(), because that parser reads a short
 * file as if zeros followed its end, so a truncated header parses without error. Its limits are
 * also fixed counts rather than what the file can hold, and its errors do not name the bad field.
 * Here every length and count is checked against the bytes left in the file before it is used.
 */

import { GGUFValueType } from '@huggingface/gguf';
import { ggmlTypeLayout } from './ggml-types';
import { Cursor } from './gguf-cursor';
import type { GgufTensorInfo } from './gguf-file';

export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS. */
export const GGUF_MAX_DIMS = 4;

/** Minimum bytes of one metadata entry: an empty key (8), the value type (4), a 1-byte value. */
const MIN_KV_BYTES = 13;
/** Minimum bytes of one tensor info: an empty name (8), n_dims (4), type (4), offset (8). */
const MIN_TENSOR_INFO_BYTES = 24;

/** Minimum bytes of one value of each type; strings and arrays take at least their header. */
const MIN_VALUE_BYTES: Record<number, number> = {
  [GGUFValueType.UINT8]: 1,
  [GGUFValueType.INT8]: 1,
  [GGUFValueType.UINT16]: 2,
  [GGUFValueType.INT16]: 2,
  [GGUFValueType.UINT32]: 4,
  [GGUFValueType.INT32]: 4,
  [GGUFValueType.FLOAT32]: 4,
  [GGUFValueType.BOOL]: 1,
  [GGUFValueType.STRING]: 8,
  [GGUFValueType.ARRAY]: 12,
  [GGUFValueType.UINT64]: 8,
  [GGUFValueType.INT64]: 8,
  [GGUFValueType.FLOAT64]: 8,
};

/** Type of one metadata value, as @huggingface/gguf's GGUFTypedMetadata entries carry it. */
export interface GgufValueTypeInfo {
  type: GGUFValueType;
  subType?: GGUFValueType;
}

export interface ParsedGgufHeader {
  version: number;
  /** Plain values: arrays as JS arrays, uint64 and int64 as number when exact, else bigint. */
  metadata: Record<string, unknown>;
  /** GGUF value type of each metadata key, to write the metadata back with the same types. */
  metadataTypes: Record<string, GgufValueTypeInfo>;
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Absolute byte offset of the tensor data section. */
  dataOffset: number;
}

/** Returns a uint64 or int64 as a number when that is exact, else as the bigint. */
function safeInteger(value: bigint): number | bigint {
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : value;
}

function readScalar(cursor: Cursor, type: number, field: string): unknown {
  switch (type) {
    case GGUFValueType.UINT8:
      return cursor.u8(field);
    case GGUFValueType.INT8:
      return cursor.i8(field);
    case GGUFValueType.UINT16:
      return cursor.u16(field);
    case GGUFValueType.INT16:
      return cursor.i16(field);
    case GGUFValueType.UINT32:
      return cursor.u32(field);
    case GGUFValueType.INT32:
      return cursor.i32(field);
    case GGUFValueType.FLOAT32:
      return cursor.f32(field);
    case GGUFValueType.FLOAT64:
      return cursor.f64(field);
    case GGUFValueType.UINT64:
      return safeInteger(cursor.u64(field));
    case GGUFValueType.INT64:
      return safeInteger(cursor.i64(field));
    case GGUFValueType.STRING:
      return cursor.string(field);
    case GGUFValueType.BOOL: {
      const byte = cursor.u8(field);
      if (byte > 1)
        throw cursor.error(`${field} is a bool stored as ${byte}; only 0 and 1 are valid.`);
      return byte === 1;
    }
    default:
      throw cursor.error(`${field} has unknown value type ${type}; valid types are 0 to 12.`);
  }
}

function readValue(cursor: Cursor, field: string): { value: unknown; info: GgufValueTypeInfo } {
  const type = cursor.u32(`${field} value type`);
  if (type !== GGUFValueType.ARRAY) {
    return { value: readScalar(cursor, type, field), info: { type } };
  }

  const subType = cursor.u32(`${field} array element type`);
  if (subType === GGUFValueType.ARRAY) {
    throw cursor.error(`${field} is an array of arrays, which llama.cpp does not read either.`);
  }
  const minBytes = MIN_VALUE_BYTES[subType];
  if (minBytes === undefined) {
    throw cursor.error(
      `${field} has unknown array element type ${subType}; valid types are 0 to 12.`,
    );
  }
  const length = cursor.checkCount(
    cursor.u64(`${field} array length`),
    `${field} array length`,
    'elements',
    minBytes,
  );
  const values: unknown[] = new Array(length);
  for (let i = 0; i < length; i++) values[i] = readScalar(cursor, subType, `${field} element ${i}`);
  return { value: values, info: { type, subType } };
}

function readMetadata(cursor: Cursor, count: number) {
  const metadata: Record<string, unknown> = {};
  const metadataTypes: Record<string, GgufValueTypeInfo> = {};
  for (let i = 0; i < count; i++) {
    const key = cursor.string(`metadata key ${i}`);
    if (Object.hasOwn(metadata, key)) throw cursor.error(`metadata key "${key}" appears twice.`);
    const { value, info } = readValue(cursor, `metadata "${key}"`);
    // defineProperty keeps a key such as "__proto__" an ordinary own property.
    Object.defineProperty(metadata, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
    Object.defineProperty(metadataTypes, key, {
      value: info,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return { metadata, metadataTypes };
}

function readAlignment(cursor: Cursor, parsed: ReturnType<typeof readMetadata>): number {
  const info = parsed.metadataTypes['general.alignment'];
  if (info === undefined) return GGUF_DEFAULT_ALIGNMENT;
  const value = parsed.metadata['general.alignment'];
  if (info.type !== GGUFValueType.UINT32) {
    throw cursor.error(
      `metadata "general.alignment" has type ${GGUFValueType[info.type]}; it must be UINT32.`,
    );
  }
  const alignment = value as number;
  if (alignment === 0 || (alignment & (alignment - 1)) !== 0) {
    throw cursor.error(`metadata "general.alignment" is ${alignment}; it must be a power of two.`);
  }
  return alignment;
}

function readShape(cursor: Cursor, name: string): number[] {
  const nDims = cursor.u32(`tensor "${name}" n_dims`);
  if (nDims > GGUF_MAX_DIMS) {
    throw cursor.error(
      `tensor "${name}" has n_dims ${nDims}; GGUF tensors have at most ${GGUF_MAX_DIMS}.`,
    );
  }
  const shape: number[] = [];
  let elements = 1;
  for (let j = 0; j < nDims; j++) {
    const field = `tensor "${name}" dimension ${j}`;
    const dim = cursor.u64(field);
    if (dim === 0n) throw cursor.error(`${field} is 0; every dimension must be at least 1.`);
    if (dim >= 1n << 63n)
      throw cursor.error(`${field} is ${BigInt.asIntN(64, dim)}, which is negative.`);
    elements *= Number(dim);
    if (elements > Number.MAX_SAFE_INTEGER) {
      throw cursor.error(`tensor "${name}" has more than 2^53 elements; the file is corrupt.`);
    }
    shape.push(Number(dim));
  }
  return shape;
}

function readTensorInfo(cursor: Cursor, index: number, alignment: number): GgufTensorInfo {
  const name = cursor.string(`tensor ${index} name`);
  const shape = readShape(cursor, name);
  const type = cursor.u32(`tensor "${name}" type`);
  const layout = ggmlTypeLayout(type);
  if (layout === undefined) throw cursor.error(`tensor "${name}" has unknown ggml type ${type}.`);
  const rowLength = shape[0] ?? 1;
  if (rowLength % layout.blockSize !== 0) {
    throw cursor.error(
      `tensor "${name}" has type ${layout.name}, which stores blocks of ${layout.blockSize} ` +
        `values, but its first dimension is ${rowLength}.`,
    );
  }
  const elements = shape.reduce((a, b) => a * b, 1);
  const byteLength = (elements / layout.blockSize) * layout.bytesPerBlock;
  const offset = cursor.u64(`tensor "${name}" offset`);
  if (offset % BigInt(alignment) !== 0n) {
    throw cursor.error(
      `tensor "${name}" data offset ${offset} is not a multiple of the alignment ${alignment}.`,
    );
  }
  // Relative for now; parseGgufHeader adds the data section start once it is known.
  return { name, shape, type, offset: Number(offset), byteLength };
}

/** Converts offsets to absolute ones and checks that data lies in the file without overlaps. */
function placeTensors(cursor: Cursor, tensors: GgufTensorInfo[], dataOffset: number): void {
  for (const tensor of tensors) {
    tensor.offset += dataOffset;
    const end = tensor.offset + tensor.byteLength;
    if (end > cursor.fileSize) {
      throw cursor.error(
        `tensor "${tensor.name}" data ends at byte ${end} but the file has ${cursor.fileSize} bytes.`,
      );
    }
  }
  const ordered = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < ordered.length; i++) {
    const previous = ordered[i - 1];
    const current = ordered[i];
    if (current.offset < previous.offset + previous.byteLength) {
      throw cursor.error(
        `tensor "${current.name}" data (bytes ${current.offset} to ` +
          `${current.offset + current.byteLength}) overlaps tensor "${previous.name}" ` +
          `(bytes ${previous.offset} to ${previous.offset + previous.byteLength}).`,
      );
    }
  }
}

function readVersion(cursor: Cursor): number {
  const magic = Buffer.from(cursor.bytesAt(cursor.take(4, 'header magic'), 4));
  if (magic.toString('latin1') !== 'GGUF') {
    throw cursor.error(
      `not a GGUF file, because it starts with bytes ${magic.toString('hex')} instead of "GGUF".`,
    );
  }
  const version = cursor.u32('header version');
  if ((version & 0xffff) === 0 && version !== 0) {
    throw cursor.error(
      `header version reads as ${version}; the file is big-endian, which is not supported.`,
    );
  }
  if (version !== 2 && version !== 3) {
    throw cursor.error(
      `GGUF version ${version} is not supported, only versions 2 and 3. ` +
        'Convert the model again with a current llama.cpp.',
    );
  }
  return version;
}

/**
 * Parses a GGUF header from the first bytes of a file of `fileSize` bytes. Raises UserError
 * naming `file` and the bad field, or NeedMoreBytes when `bytes` ends before the header does.
 */
export function parseGgufHeader(
  bytes: Uint8Array,
  fileSize: number,
  file: string,
): ParsedGgufHeader {
  const cursor = new Cursor(bytes, fileSize, file);
  const version = readVersion(cursor);
  const rawTensorCount = cursor.u64('header tensor_count');
  const rawKvCount = cursor.u64('header kv_count');
  const tensorCount = cursor.checkCount(
    rawTensorCount,
    'header tensor_count',
    'tensor infos',
    MIN_TENSOR_INFO_BYTES,
  );
  const kvCount = cursor.checkCount(
    rawKvCount,
    'header kv_count',
    'metadata entries',
    MIN_KV_BYTES,
  );
  if (tensorCount * MIN_TENSOR_INFO_BYTES + kvCount * MIN_KV_BYTES > cursor.remaining) {
    throw cursor.error(
      `header tensor_count ${tensorCount} and kv_count ${kvCount} together need more than the ` +
        `${cursor.remaining} bytes left in the file; the file is corrupt.`,
    );
  }

  const parsed = readMetadata(cursor, kvCount);
  const alignment = readAlignment(cursor, parsed);
  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const tensor = readTensorInfo(cursor, i, alignment);
    if (names.has(tensor.name)) throw cursor.error(`tensor name "${tensor.name}" appears twice.`);
    names.add(tensor.name);
    tensors.push(tensor);
  }
  const dataOffset = Math.ceil(cursor.position / alignment) * alignment;
  placeTensors(cursor, tensors, dataOffset);
  return { version, ...parsed, tensors, alignment, dataOffset };
}
