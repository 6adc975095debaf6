/**
 * Reader and writer for the safetensors format: an 8-byte little-endian header length, a JSON
 * header mapping tensor names to dtype, shape and byte offsets, then the raw little-endian data.
 * Hand-written because no maintained npm package reads and writes it under Node; the format is
 * a JSON header plus raw bytes.
 *
 * The header must index the data section whole, as the format requires: the tensors cover it
 * contiguously, without gaps or overlaps, up to the end of the file.
 */
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import { invariant, UserError } from '../../shared/errors';

export interface NamedTensor {
  shape: number[];
  data: Float32Array;
}

/** One header entry. `begin` and `end` are byte offsets relative to the start of the data. */
export interface TensorEntry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** Byte offset of the data section: 8 plus the JSON header length. */
  dataStart: number;
  /** Entries in header order. */
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

/** dtypes the engine converts to float32. */
export const FLOAT_DTYPES = ['F32', 'F16', 'BF16'] as const;

/** Bytes per element of the whole-byte dtypes of the safetensors format. */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Serialises float32 tensors; `metadata` values must be strings, as the format requires. */
export function encodeSafetensors(
  tensors: Map<string, NamedTensor>,
  metadata: Record<string, string> = {},
): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, tensor] of tensors) {
    const bytes = tensor.data.length * 4;
    header[name] = { dtype: 'F32', shape: tensor.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let position = 8 + headerBytes.length;
  for (const tensor of tensors.values()) {
    const view = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
    view.copy(out, position);
    position += view.length;
  }
  return out;
}

/** Parses a whole safetensors buffer; F16 and BF16 are widened to float32. `source` names the file. */
export function decodeSafetensors(
  buffer: Buffer,
  source: string,
): { tensors: Map<string, NamedTensor>; metadata: Record<string, string> } {
  const headerLength = readHeaderLength(buffer, buffer.length, source);
  const header = parseSafetensorsHeader(
    buffer.subarray(8, 8 + headerLength),
    buffer.length,
    source,
  );
  const tensors = new Map<string, NamedTensor>();
  for (const entry of header.tensors.values()) {
    const dtype = floatDtype(entry, source);
    const bytes = buffer.subarray(header.dataStart + entry.begin, header.dataStart + entry.end);
    const data = new Float32Array(elementCount(entry.shape));
    decodeFloat32Into(bytes, dtype, data);
    tensors.set(entry.name, { shape: entry.shape, data });
  }
  return { tensors, metadata: header.metadata };
}

/**
 * Reads and checks the header of an open safetensors file without reading tensor data.
 * Returns the header and its raw bytes (length prefix included), for hashing.
 */
export async function readSafetensorsHeader(
  handle: FileHandle,
  fileSize: number,
  source: string,
): Promise<{ header: SafetensorsHeader; headerBytes: Buffer }> {
  const prefix = Buffer.alloc(Math.min(8, fileSize));
  await readExactly(handle, prefix, 0, source);
  const headerLength = readHeaderLength(prefix, fileSize, source);
  const headerBytes = Buffer.alloc(8 + headerLength);
  prefix.copy(headerBytes, 0);
  await readExactly(handle, headerBytes.subarray(8), 8, source);
  const header = parseSafetensorsHeader(headerBytes.subarray(8), fileSize, source);
  return { header, headerBytes };
}

/** Reads `target.length` bytes at `position`; a short read means the file changed or is truncated. */
export async function readExactly(
  handle: FileHandle,
  target: Uint8Array,
  position: number,
  source: string,
): Promise<void> {
  let done = 0;
  while (done < target.length) {
    const { bytesRead } = await handle.read(target, done, target.length - done, position + done);
    if (bytesRead === 0) {
      throw new UserError(
        `${source}: the file ended at byte ${position + done} while reading; it is truncated or was changed during the load.`,
      );
    }
    done += bytesRead;
  }
}

function readHeaderLength(prefix: Buffer, fileSize: number, source: string): number {
  if (fileSize < 8) throw new UserError(`${source}: file is too short for a safetensors header.`);
  const headerLength = Number(prefix.readBigUInt64LE(0));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > fileSize) {
    throw new UserError(
      `${source}: header length ${headerLength} exceeds the file size ${fileSize}; the file is truncated or not safetensors.`,
    );
  }
  return headerLength;
}

/** Parses the JSON header of a file of `fileSize` bytes and checks every entry's layout. */
export function parseSafetensorsHeader(
  json: Uint8Array,
  fileSize: number,
  source: string,
): SafetensorsHeader {
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(json.buffer, json.byteOffset, json.byteLength).toString());
  } catch (error) {
    throw new UserError(`${source}: the safetensors header is not valid JSON.`, { cause: error });
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new UserError(`${source}: the safetensors header is not a JSON object.`);
  }
  const dataStart = 8 + json.byteLength;
  const dataLength = fileSize - dataStart;
  const tensors = new Map<string, TensorEntry>();
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    tensors.set(name, parseEntry(name, value, dataLength, source));
  }
  checkContiguous([...tensors.values()], dataLength, source);
  const metadata = ((header as Record<string, unknown>).__metadata__ ?? {}) as Record<
    string,
    string
  >;
  return { dataStart, tensors, metadata };
}

function parseEntry(name: string, value: unknown, dataLength: number, source: string): TensorEntry {
  const {
    dtype,
    shape,
    data_offsets: offsets,
  } = (value ?? {}) as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof dtype !== 'string') {
    throw new UserError(`${source}: tensor ${name} has no dtype string.`);
  }
  if (!Array.isArray(shape) || !shape.every((n) => Number.isSafeInteger(n) && n >= 0)) {
    throw new UserError(`${source}: tensor ${name} has an invalid shape ${JSON.stringify(shape)}.`);
  }
  const [begin, end] = Array.isArray(offsets) && offsets.length === 2 ? offsets : [];
  const width = DTYPE_BYTES[dtype];
  // Sub-byte and future dtypes have no whole-byte width here; only their offsets are checked.
  const sizeMatches = width === undefined || end - begin === elementCount(shape) * width;
  if (
    !Number.isSafeInteger(begin) ||
    !Number.isSafeInteger(end) ||
    begin < 0 ||
    end < begin ||
    end > dataLength ||
    !sizeMatches
  ) {
    throw new UserError(
      `${source}: tensor ${name} data_offsets ${JSON.stringify(offsets)} do not fit shape [${shape}] ${dtype} within ${dataLength} data bytes; the file is truncated or corrupt.`,
    );
  }
  return { name, dtype, shape, begin, end };
}

function checkContiguous(entries: TensorEntry[], dataLength: number, source: string): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const entry of sorted) {
    if (entry.begin !== cursor) {
      const problem = entry.begin < cursor ? 'overlaps the tensor before it' : 'leaves a gap';
      throw new UserError(
        `${source}: tensor ${entry.name} starts at data byte ${entry.begin} and ${problem} (expected ${cursor}); the file is corrupt.`,
      );
    }
    cursor = entry.end;
  }
  if (cursor !== dataLength) {
    throw new UserError(
      `${source}: the tensors cover ${cursor} of the ${dataLength} data bytes; the file has trailing bytes or is corrupt.`,
    );
  }
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Returns the entry's dtype when the engine converts it, else throws naming tensor and dtype. */
export function floatDtype(entry: TensorEntry, source: string): (typeof FLOAT_DTYPES)[number] {
  const dtype = FLOAT_DTYPES.find((d) => d === entry.dtype);
  if (!dtype) {
    throw new UserError(
      `${source}: tensor ${entry.name} has dtype ${entry.dtype}; supported are F32, F16, BF16.`,
    );
  }
  return dtype;
}

export function bytesPerElement(dtype: (typeof FLOAT_DTYPES)[number]): number {
  return DTYPE_BYTES[dtype];
}

/**
 * Converts little-endian `bytes` of `dtype` into `out` (one float32 per element). Typed-array
 * views use the host byte order, so the bytes are viewed in place only on a little-endian host.
 */
export function decodeFloat32Into(
  bytes: Uint8Array,
  dtype: (typeof FLOAT_DTYPES)[number],
  out: Float32Array,
): void {
  invariant(os.endianness() === 'LE', () => 'safetensors decoding assumes a little-endian host.');
  const width = DTYPE_BYTES[dtype];
  invariant(
    bytes.byteLength === out.length * width,
    () => `decodeFloat32Into: ${bytes.byteLength} bytes for ${out.length} ${dtype} elements.`,
  );
  // `new Uint8Array(bytes)` copies; a Buffer's `slice` would return a view at the same offset.
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes);
  if (dtype === 'F32') {
    out.set(new Float32Array(aligned.buffer, aligned.byteOffset, out.length));
    return;
  }
  const halves = new Uint16Array(aligned.buffer, aligned.byteOffset, out.length);
  if (dtype === 'BF16') {
    // A bfloat16 is the upper half of a float32.
    const words = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let i = 0; i < halves.length; i++) words[i] = halves[i] << 16;
    return;
  }
  const table = halfTable();
  for (let i = 0; i < halves.length; i++) out[i] = table[halves[i]];
}

let halfToFloatTable: Float32Array | null = null;

/** Returns every binary16 value as float32, indexed by bit pattern (256 KiB, built once). */
function halfTable(): Float32Array {
  if (!halfToFloatTable) {
    halfToFloatTable = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) halfToFloatTable[bits] = halfToFloat(bits);
  }
  return halfToFloatTable;
}

/** IEEE 754 binary16 to number. */
export function halfToFloat(half: number): number {
  const sign = half & 0x8000 ? -1 : 1;
  const exponent = (half >> 10) & 0x1f;
  const fraction = half & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}
