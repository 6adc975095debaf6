/**
 * Reader and writer for the safetensors format: an 8-byte little-endian header length, a JSON
 * header mapping tensor names to dtype, shape and byte offsets, then the raw little-endian data.
 * Hand-written because no maintained npm package reads and writes it under Node; the format is
 * a JSON header plus raw bytes.
 */
import { UserError } from '../../shared/errors';

export interface NamedTensor {
  shape: number[];
  data: Float32Array;
}

const BYTES_PER_ELEMENT: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };
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

/** Parses a safetensors buffer; F16 and BF16 are widened to float32. `source` names the file. */
export function decodeSafetensors(
  buffer: Buffer,
  source: string,
): { tensors: Map<string, NamedTensor>; metadata: Record<string, string> } {
  if (buffer.length < 8)
    throw new UserError(`${source}: file is too short for a safetensors header.`);
  const headerLength = Number(buffer.readBigUInt64LE(0));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > buffer.length) {
    throw new UserError(
      `${source}: header length ${headerLength} exceeds the file size ${buffer.length}; the file is truncated or not safetensors.`,
    );
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buffer.subarray(8, 8 + headerLength).toString('utf8'));
  } catch (error) {
    throw new UserError(`${source}: the safetensors header is not valid JSON.`, { cause: error });
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new UserError(`${source}: the safetensors header is not a JSON object.`);
  }
  const dataStart = 8 + headerLength;
  const dataLength = buffer.length - dataStart;
  const tensors = new Map<string, NamedTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    tensors.set(name, decodeEntry(buffer, dataStart, dataLength, name, entry, source));
  }
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
  return { tensors, metadata };
}

function decodeEntry(
  buffer: Buffer,
  dataStart: number,
  dataLength: number,
  name: string,
  entry: unknown,
  source: string,
): NamedTensor {
  const {
    dtype,
    shape,
    data_offsets: offsets,
  } = (entry ?? {}) as {
    dtype?: string;
    shape?: number[];
    data_offsets?: [number, number];
  };
  const width = dtype ? BYTES_PER_ELEMENT[dtype] : undefined;
  if (!width) {
    throw new UserError(
      `${source}: tensor ${name} has dtype ${dtype}; supported are F32, F16, BF16.`,
    );
  }
  if (!Array.isArray(shape) || !shape.every((n) => Number.isInteger(n) && n >= 0)) {
    throw new UserError(`${source}: tensor ${name} has an invalid shape ${JSON.stringify(shape)}.`);
  }
  const count = shape.reduce((a, b) => a * b, 1);
  const [begin, end] = Array.isArray(offsets) ? offsets : [Number.NaN, Number.NaN];
  if (!(begin >= 0 && end <= dataLength && end - begin === count * width)) {
    throw new UserError(
      `${source}: tensor ${name} data_offsets ${JSON.stringify(offsets)} do not fit shape [${shape}] ${dtype} within ${dataLength} data bytes; the file is truncated or corrupt.`,
    );
  }
  const bytes = buffer.subarray(dataStart + begin, dataStart + end);
  return { shape, data: toFloat32(bytes, dtype as string, count) };
}

function toFloat32(bytes: Buffer, dtype: string, count: number): Float32Array {
  const out = new Float32Array(count);
  if (dtype === 'F32') {
    for (let i = 0; i < count; i++) out[i] = bytes.readFloatLE(i * 4);
    return out;
  }
  const word = new Uint32Array(1);
  const asFloat = new Float32Array(word.buffer);
  for (let i = 0; i < count; i++) {
    const half = bytes.readUInt16LE(i * 2);
    if (dtype === 'BF16') {
      word[0] = half << 16;
      out[i] = asFloat[0];
    } else {
      out[i] = halfToFloat(half);
    }
  }
  return out;
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
