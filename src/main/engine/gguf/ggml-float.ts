/**
 * IEEE 754 binary16 (F16) and bfloat16 (BF16) conversions with ggml's rounding, and the F16 byte
 * helpers the block encoders share.
 *
 * Hand-written because Node 20 has no Math.f16round or Float16Array, and the encoders must match
 * ggml bit for bit (round to nearest even, NaN to a quiet NaN), which the tests check against
 * ggml's own conversion functions.
 */

import { UserError } from '../../../shared/errors';

const floatView = new Float32Array(1);
const bitsView = new Uint32Array(floatView.buffer);

/** Returns the float32 bit pattern of `value` (rounded to float32 first). */
export function float32Bits(value: number): number {
  floatView[0] = value;
  return bitsView[0];
}

function float32FromBits(bits: number): number {
  bitsView[0] = bits;
  return floatView[0];
}

function decodeHalf(half: number): number {
  const sign = half & 0x8000 ? -1 : 1;
  const exponent = (half >> 10) & 0x1f;
  const fraction = half & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1024 + fraction) * 2 ** (exponent - 25);
}

/** Float32 value of each of the 65536 F16 bit patterns; every F16 value is exact in float32. */
const HALF_TABLE = (() => {
  const table = new Float32Array(65536);
  for (let half = 0; half < 65536; half++) table[half] = decodeHalf(half);
  return table;
})();

/** Converts F16 bits to a number. */
export function halfToFloat(half: number): number {
  return HALF_TABLE[half & 0xffff];
}

/** Converts a number to F16 bits: round to nearest even, overflow to infinity, NaN to 0x7e00. */
export function floatToHalf(value: number): number {
  const bits = float32Bits(value);
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | (mantissa ? 0x7e00 : 0x7c00);

  const halfExponent = exponent - 112;
  if (halfExponent >= 31) return sign | 0x7c00;
  if (halfExponent <= 0) return sign | roundSubnormal(mantissa | 0x800000, 14 - halfExponent);

  // A carry out of the mantissa correctly increments the exponent, up to infinity (0x7c00).
  let half = (halfExponent << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** Shifts a 24-bit significand right by `shift` bits, rounding to nearest even. */
function roundSubnormal(significand: number, shift: number): number {
  if (shift > 24) return 0;
  const kept = significand >>> shift;
  const rest = significand & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  return rest > halfway || (rest === halfway && kept & 1) ? kept + 1 : kept;
}

/**
 * Returns the F16 bits of the smallest F16 value that is >= `value`, for a finite `value` >= 0.
 * Encoders use it for scales so that the scaled range still covers every input.
 */
export function floatToHalfRoundingUp(value: number): number {
  const half = floatToHalf(value);
  return halfToFloat(half) < value ? half + 1 : half;
}

/** Converts BF16 bits (the top half of a float32) to a number. */
export function bfloat16ToFloat(bits: number): number {
  return float32FromBits((bits & 0xffff) << 16);
}

/** Converts a number to BF16 bits: round to nearest even; NaN keeps its sign and becomes quiet. */
export function floatToBfloat16(value: number): number {
  const bits = float32Bits(value);
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Writes a little-endian uint16. */
export function writeUint16(bytes: Uint8Array, offset: number, value: number): void {
  bytes[offset] = value & 0xff;
  bytes[offset + 1] = (value >> 8) & 0xff;
}

/** Reads little-endian F16 bits at `offset` and converts them to a number. */
export function readHalf(bytes: Uint8Array, offset: number): number {
  return halfToFloat(bytes[offset] | (bytes[offset + 1] << 8));
}

/**
 * Returns the F16 bits of a block scale, raising UserError when the scale is beyond F16's range
 * (the block's values are then too large for the type).
 */
export function encodeScale(
  scale: number,
  typeName: string,
  block: number,
  roundUp: boolean,
): number {
  const half = roundUp ? floatToHalfRoundingUp(scale) : floatToHalf(scale);
  if ((half & 0x7c00) === 0x7c00) {
    throw new UserError(
      `Block ${block} needs a scale of ${scale}, beyond the float16 range of ${typeName} scales; ` +
        'the weights are too large to quantize, so store this tensor as F32 or F16.',
    );
  }
  return half;
}

/** Rounds like C's roundf: halves go away from zero. */
export function roundHalfAwayFromZero(value: number): number {
  return Math.sign(value) * Math.floor(Math.abs(value) + 0.5);
}
