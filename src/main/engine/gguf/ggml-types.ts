/**
 * ggml tensor types: names and block layouts of every type a GGUF file can declare, and
 * dequantization and quantization for the types Attune reads and writes.
 *
 * Block layouts are those ggml's ggml-quants.c decodes (all little-endian): Q4_0 and Q8_0 are
 * blocks of 32 values with an F16 scale; Q4_K and Q6_K are super-blocks of 256 values (see
 * ggml-kquants.ts). The tests compare every decoder bit for bit with ggml's own.
 */

import { invariant, UserError } from '../../../shared/errors';
import {
  encodeScale,
  floatToBfloat16,
  floatToHalf,
  halfToFloat,
  readHalf,
  roundHalfAwayFromZero,
  writeUint16,
} from './ggml-float';
import { dequantizeQ4K, dequantizeQ6K, quantizeQ4K, quantizeQ6K } from './ggml-kquants';

export const GgmlType = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, Q4_K: 12, Q6_K: 14, BF16: 30 } as const;
export type GgmlTypeId = (typeof GgmlType)[keyof typeof GgmlType];

/** Layout of one ggml type: `blockSize` values are stored in `bytesPerBlock` bytes. */
export interface GgmlTypeLayout {
  name: string;
  blockSize: number;
  bytesPerBlock: number;
}

/**
 * Every type id that ggml defines, with its layout, as reported by ggml_type_name, ggml_blck_size
 * and ggml_type_size in the ggml that node-llama-cpp 3.21.1 ships. Ids ggml removed are absent.
 */
const GGML_TYPE_LAYOUTS: ReadonlyMap<number, GgmlTypeLayout> = new Map(
  (
    [
      [0, 'F32', 1, 4],
      [1, 'F16', 1, 2],
      [2, 'Q4_0', 32, 18],
      [3, 'Q4_1', 32, 20],
      [6, 'Q5_0', 32, 22],
      [7, 'Q5_1', 32, 24],
      [8, 'Q8_0', 32, 34],
      [9, 'Q8_1', 32, 36],
      [10, 'Q2_K', 256, 84],
      [11, 'Q3_K', 256, 110],
      [12, 'Q4_K', 256, 144],
      [13, 'Q5_K', 256, 176],
      [14, 'Q6_K', 256, 210],
      [15, 'Q8_K', 256, 292],
      [16, 'IQ2_XXS', 256, 66],
      [17, 'IQ2_XS', 256, 74],
      [18, 'IQ3_XXS', 256, 98],
      [19, 'IQ1_S', 256, 50],
      [20, 'IQ4_NL', 32, 18],
      [21, 'IQ3_S', 256, 110],
      [22, 'IQ2_S', 256, 82],
      [23, 'IQ4_XS', 256, 136],
      [24, 'I8', 1, 1],
      [25, 'I16', 1, 2],
      [26, 'I32', 1, 4],
      [27, 'I64', 1, 8],
      [28, 'F64', 1, 8],
      [29, 'IQ1_M', 256, 56],
      [30, 'BF16', 1, 2],
      [34, 'TQ1_0', 256, 54],
      [35, 'TQ2_0', 256, 66],
      [39, 'MXFP4', 32, 17],
      [40, 'NVFP4', 64, 36],
      [41, 'Q1_0', 128, 18],
      [42, 'Q2_0', 64, 18],
    ] as const
  ).map(([id, name, blockSize, bytesPerBlock]) => [id, { name, blockSize, bytesPerBlock }]),
);

const SUPPORTED_TYPES: ReadonlySet<number> = new Set(Object.values(GgmlType));

// The F32 and BF16 paths view typed arrays as raw bytes, which match GGUF only on little-endian hosts.
invariant(
  new Uint8Array(Uint16Array.of(1).buffer)[0] === 1,
  () => 'GGUF tensors need a little-endian host.',
);

/** Returns the ggml name of a type id ("Q4_K"), or "type 99" for an id ggml does not define. */
export function ggmlTypeName(type: number): string {
  return GGML_TYPE_LAYOUTS.get(type)?.name ?? `type ${type}`;
}

/** Returns the layout of any type ggml defines, supported here or not; undefined for other ids. */
export function ggmlTypeLayout(type: number): GgmlTypeLayout | undefined {
  return GGML_TYPE_LAYOUTS.get(type);
}

/** Tells whether Attune can dequantize and quantize this type. */
export function isSupportedType(type: number): type is GgmlTypeId {
  return SUPPORTED_TYPES.has(type);
}

/** Names of the supported types, for error messages: "F32, F16, ...". */
export function supportedTypeNames(): string {
  return [...SUPPORTED_TYPES].map(ggmlTypeName).join(', ');
}

/** Returns the bytes that `elements` values of `type` occupy; raises UserError unless whole blocks. */
export function tensorByteLength(type: GgmlTypeId, elements: number): number {
  const layout = GGML_TYPE_LAYOUTS.get(type);
  if (layout === undefined) throw new UserError(`Unknown ggml type ${type}.`);
  if (!Number.isSafeInteger(elements) || elements < 0 || elements % layout.blockSize !== 0) {
    throw new UserError(
      `${layout.name} stores values in blocks of ${layout.blockSize}, so ${elements} values ` +
        `is not a whole number of blocks; use a length that is a multiple of ${layout.blockSize}.`,
    );
  }
  return (elements / layout.blockSize) * layout.bytesPerBlock;
}

/** Decodes `elements` values of `type` from `bytes`, which must hold exactly those values. */
export function dequantize(type: GgmlTypeId, bytes: Uint8Array, elements: number): Float32Array {
  const expected = tensorByteLength(type, elements);
  if (bytes.length !== expected) {
    throw new UserError(
      `${elements} values of ${ggmlTypeName(type)} take ${expected} bytes, but ${bytes.length} were given.`,
    );
  }
  const out = new Float32Array(elements);
  switch (type) {
    case GgmlType.F32:
      new Uint8Array(out.buffer).set(bytes);
      break;
    case GgmlType.F16:
      for (let i = 0; i < elements; i++)
        out[i] = halfToFloat(bytes[2 * i] | (bytes[2 * i + 1] << 8));
      break;
    case GgmlType.BF16:
      dequantizeBfloat16(bytes, out);
      break;
    case GgmlType.Q4_0:
      dequantizeQ4_0(bytes, out);
      break;
    case GgmlType.Q8_0:
      dequantizeQ8_0(bytes, out);
      break;
    case GgmlType.Q4_K:
      dequantizeQ4K(bytes, out);
      break;
    case GgmlType.Q6_K:
      dequantizeQ6K(bytes, out);
      break;
  }
  return out;
}

/**
 * Encodes `values` as `type`. F32, F16 and BF16 keep NaN and infinities, and F16 rounds finite
 * values beyond ±65504 to infinity as ggml does. The block types raise UserError on NaN and
 * infinity and on values whose block scale would overflow F16.
 */
export function quantize(type: GgmlTypeId, values: Float32Array): Uint8Array {
  const out = new Uint8Array(tensorByteLength(type, values.length));
  switch (type) {
    case GgmlType.F32:
      out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
      break;
    case GgmlType.F16:
      for (let i = 0; i < values.length; i++) writeUint16(out, 2 * i, floatToHalf(values[i]));
      break;
    case GgmlType.BF16:
      for (let i = 0; i < values.length; i++) writeUint16(out, 2 * i, floatToBfloat16(values[i]));
      break;
    case GgmlType.Q4_0:
      checkFinite(values, 'Q4_0');
      quantizeQ4_0(values, out);
      break;
    case GgmlType.Q8_0:
      checkFinite(values, 'Q8_0');
      quantizeQ8_0(values, out);
      break;
    case GgmlType.Q4_K:
      checkFinite(values, 'Q4_K');
      quantizeQ4K(values, out);
      break;
    case GgmlType.Q6_K:
      checkFinite(values, 'Q6_K');
      quantizeQ6K(values, out);
      break;
  }
  return out;
}

function checkFinite(values: Float32Array, typeName: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      throw new UserError(
        `Value ${i} is ${values[i]}, which ${typeName} cannot store; the weights contain NaN or infinity.`,
      );
    }
  }
}

function dequantizeBfloat16(bytes: Uint8Array, out: Float32Array): void {
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < out.length; i++)
    words[i] = ((bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16) >>> 0;
}

// Q4_0 block (18 bytes): F16 scale d, then 16 bytes. Byte j contains value j in its low nibble
// and value j + 16 in its high nibble, each stored as q + 8 with q in -8..7. Value = q * d.
function dequantizeQ4_0(bytes: Uint8Array, out: Float32Array): void {
  for (let block = 0; block < out.length / 32; block++) {
    const base = block * 18;
    const d = readHalf(bytes, base);
    for (let j = 0; j < 16; j++) {
      const byte = bytes[base + 2 + j];
      out[block * 32 + j] = ((byte & 0x0f) - 8) * d;
      out[block * 32 + j + 16] = ((byte >> 4) - 8) * d;
    }
  }
}

// ggml's reference rule (quantize_row_q4_0_ref): d = -m / 8 where m is the value of largest
// magnitude, q = min(15, trunc(x / d + 8.5)). Math.fround repeats ggml's float32 arithmetic.
function quantizeQ4_0(values: Float32Array, out: Uint8Array): void {
  for (let block = 0; block < values.length / 32; block++) {
    let maxAbs = 0;
    let extreme = 0;
    for (let j = 0; j < 32; j++) {
      const value = values[block * 32 + j];
      if (maxAbs < Math.abs(value)) {
        maxAbs = Math.abs(value);
        extreme = value;
      }
    }
    const d = Math.fround(extreme / -8);
    const inverse = d !== 0 ? Math.fround(1 / d) : 0;
    const base = block * 18;
    writeUint16(out, base, encodeScale(d, 'Q4_0', block, false));
    for (let j = 0; j < 16; j++) {
      const low = quantizeNibble(values[block * 32 + j], inverse);
      const high = quantizeNibble(values[block * 32 + j + 16], inverse);
      out[base + 2 + j] = low | (high << 4);
    }
  }
}

function quantizeNibble(value: number, inverse: number): number {
  return Math.min(15, Math.trunc(Math.fround(Math.fround(value * inverse) + 8.5)));
}

// Q8_0 block (34 bytes): F16 scale d, then 32 int8 values q. Value = q * d.
function dequantizeQ8_0(bytes: Uint8Array, out: Float32Array): void {
  const signed = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let block = 0; block < out.length / 32; block++) {
    const base = block * 34;
    const d = readHalf(bytes, base);
    for (let j = 0; j < 32; j++) out[block * 32 + j] = signed[base + 2 + j] * d;
  }
}

// ggml's reference rule (quantize_row_q8_0_ref): d = max|x| / 127, q = round(x / d) with halves
// rounded away from zero, in float32 arithmetic.
function quantizeQ8_0(values: Float32Array, out: Uint8Array): void {
  for (let block = 0; block < values.length / 32; block++) {
    let maxAbs = 0;
    for (let j = 0; j < 32; j++) maxAbs = Math.max(maxAbs, Math.abs(values[block * 32 + j]));
    const d = Math.fround(maxAbs / 127);
    const inverse = d !== 0 ? Math.fround(1 / d) : 0;
    const base = block * 34;
    writeUint16(out, base, encodeScale(d, 'Q8_0', block, false));
    for (let j = 0; j < 32; j++) {
      const scaled = Math.fround(values[block * 32 + j] * inverse);
      out[base + 2 + j] = roundHalfAwayFromZero(scaled) & 0xff;
    }
  }
}
