/**
 * Q4_K and Q6_K: ggml's k-quant super-blocks of 256 values.
 *
 * The decoders repeat dequantize_row_q4_K / dequantize_row_q6_K from ggml-quants.c. The encoders
 * are simpler than ggml's, which search for scales that lower the squared error. They choose
 * scales that cover every value of a sub-block and round each value to the nearest level, so the
 * error of a value is at most half the sub-block's step.
 */

import { encodeScale, halfToFloat, readHalf, writeUint16 } from './ggml-float';

const SUPER_BLOCK = 256;
const Q4K_BYTES = 144;
const Q6K_BYTES = 210;

/**
 * Reads the 6-bit scale and 6-bit min of sub-block `j` (0..7) from the 12 packed bytes at
 * `offset`. Sub-blocks 0..3 use the low 6 bits of bytes j and j + 4. Sub-blocks 4..7 take their
 * low 4 bits from byte j + 4 and their top 2 bits from the top bits of bytes j - 4 and j.
 */
function scaleAndMin(bytes: Uint8Array, offset: number, j: number): [number, number] {
  if (j < 4) return [bytes[offset + j] & 63, bytes[offset + j + 4] & 63];
  const packed = bytes[offset + j + 4];
  const scale = (packed & 0x0f) | ((bytes[offset + j - 4] >> 6) << 4);
  const min = (packed >> 4) | ((bytes[offset + j] >> 6) << 4);
  return [scale, min];
}

/** Packs eight 6-bit scales and mins into 12 bytes at `offset`, the inverse of scaleAndMin. */
function packScalesAndMins(out: Uint8Array, offset: number, scales: Uint8Array, mins: Uint8Array) {
  for (let j = 0; j < 4; j++) {
    out[offset + j] = scales[j] | ((scales[j + 4] >> 4) << 6);
    out[offset + j + 4] = mins[j] | ((mins[j + 4] >> 4) << 6);
    out[offset + j + 8] = (scales[j + 4] & 0x0f) | ((mins[j + 4] & 0x0f) << 4);
  }
}

// Q4_K super-block (144 bytes): F16 d, F16 dmin, 12 bytes of packed 6-bit scales and mins for
// eight sub-blocks of 32, then 128 bytes of 4-bit values. Byte l of each 32-byte group c contains
// value 64c + l in its low nibble and value 64c + 32 + l in its high nibble.
// Value = d * scale * q - dmin * min.
export function dequantizeQ4K(bytes: Uint8Array, out: Float32Array): void {
  for (let block = 0; block < out.length / SUPER_BLOCK; block++) {
    const base = block * Q4K_BYTES;
    const d = readHalf(bytes, base);
    const dmin = readHalf(bytes, base + 2);
    for (let group = 0; group < 4; group++) {
      const [scaleLow, minLow] = scaleAndMin(bytes, base + 4, 2 * group);
      const [scaleHigh, minHigh] = scaleAndMin(bytes, base + 4, 2 * group + 1);
      const stepLow = d * scaleLow;
      const offsetLow = dmin * minLow;
      const stepHigh = d * scaleHigh;
      const offsetHigh = dmin * minHigh;
      const values = base + 16 + 32 * group;
      const first = block * SUPER_BLOCK + 64 * group;
      for (let l = 0; l < 32; l++) {
        const byte = bytes[values + l];
        out[first + l] = stepLow * (byte & 0x0f) - offsetLow;
        out[first + 32 + l] = stepHigh * (byte >> 4) - offsetHigh;
      }
    }
  }
}

/**
 * Encodes Q4_K. Each sub-block of 32 gets an offset (dmin * min) at or above -min(0, lowest value)
 * and a step (d * scale) at which 15 steps reach its highest value. Both d and dmin are rounded up,
 * so the 6-bit scale and min always reach far enough.
 */
export function quantizeQ4K(values: Float32Array, out: Uint8Array): void {
  const lows = new Float64Array(8);
  const highs = new Float64Array(8);
  const mins = new Uint8Array(8);
  const offsets = new Float64Array(8);
  const steps = new Float64Array(8);
  const scales = new Uint8Array(8);
  for (let block = 0; block < values.length / SUPER_BLOCK; block++) {
    const first = block * SUPER_BLOCK;
    for (let j = 0; j < 8; j++) {
      let low = 0;
      let high = Number.NEGATIVE_INFINITY;
      for (let i = first + 32 * j; i < first + 32 * (j + 1); i++) {
        low = Math.min(low, values[i]);
        high = Math.max(high, values[i]);
      }
      lows[j] = low;
      highs[j] = high;
    }

    const base = block * Q4K_BYTES;
    const dminBits = encodeScale((0 - Math.min(...lows)) / 63, 'Q4_K', block, true);
    const dmin = halfToFloat(dminBits);
    for (let j = 0; j < 8; j++) {
      mins[j] = dmin > 0 ? Math.min(63, Math.ceil(-lows[j] / dmin)) : 0;
      offsets[j] = Math.fround(dmin * mins[j]);
      steps[j] = (highs[j] + offsets[j]) / 15;
    }
    const dBits = encodeScale(Math.max(...steps) / 63, 'Q4_K', block, true);
    const d = halfToFloat(dBits);
    for (let j = 0; j < 8; j++) scales[j] = d > 0 ? Math.min(63, Math.ceil(steps[j] / d)) : 0;

    writeUint16(out, base, dBits);
    writeUint16(out, base + 2, dminBits);
    packScalesAndMins(out, base + 4, scales, mins);
    for (let group = 0; group < 4; group++) {
      const [j, k] = [2 * group, 2 * group + 1];
      const [stepLow, stepHigh] = [Math.fround(d * scales[j]), Math.fround(d * scales[k])];
      for (let l = 0; l < 32; l++) {
        const low = levelQ4K(values[first + 64 * group + l], stepLow, offsets[j]);
        const high = levelQ4K(values[first + 64 * group + 32 + l], stepHigh, offsets[k]);
        out[base + 16 + 32 * group + l] = low | (high << 4);
      }
    }
  }
}

function levelQ4K(value: number, step: number, offset: number): number {
  if (step === 0) return 0;
  return Math.min(15, Math.max(0, Math.round((value + offset) / step)));
}

// Q6_K super-block (210 bytes): 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 int8 scales
// (one per sub-block of 16), then F16 d. Each half of 128 values uses 64 low bytes, 32 high bytes
// and 8 scales. Low byte l contains values l and l + 64 (low and high nibble), and low byte l + 32
// contains values l + 32 and l + 96. High byte l contains the top 2 bits of values l, l + 32,
// l + 64 and l + 96 at bits 0, 2, 4 and 6. Levels are stored as q + 32 with q in -32..31.
// Value = d * scale * q.
export function dequantizeQ6K(bytes: Uint8Array, out: Float32Array): void {
  const signed = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let block = 0; block < out.length / SUPER_BLOCK; block++) {
    const base = block * Q6K_BYTES;
    const d = readHalf(bytes, base + 208);
    for (let half = 0; half < 2; half++) {
      const low = base + 64 * half;
      const high = base + 128 + 32 * half;
      const scales = base + 192 + 8 * half;
      const first = block * SUPER_BLOCK + 128 * half;
      for (let l = 0; l < 32; l++) {
        const sub = l >> 4;
        const bits = bytes[high + l];
        const q1 = ((bytes[low + l] & 0x0f) | ((bits & 3) << 4)) - 32;
        const q2 = ((bytes[low + l + 32] & 0x0f) | (((bits >> 2) & 3) << 4)) - 32;
        const q3 = ((bytes[low + l] >> 4) | (((bits >> 4) & 3) << 4)) - 32;
        const q4 = ((bytes[low + l + 32] >> 4) | (((bits >> 6) & 3) << 4)) - 32;
        out[first + l] = d * signed[scales + sub] * q1;
        out[first + l + 32] = d * signed[scales + sub + 2] * q2;
        out[first + l + 64] = d * signed[scales + sub + 4] * q3;
        out[first + l + 96] = d * signed[scales + sub + 6] * q4;
      }
    }
  }
}

/**
 * Encodes Q6_K with levels -31..31 (level -32 stays unused): each sub-block of 16 gets the step
 * max|x| / 31, rounded up to a multiple of d with a scale of at most 127.
 */
export function quantizeQ6K(values: Float32Array, out: Uint8Array): void {
  const levels = new Uint8Array(SUPER_BLOCK);
  const steps = new Float64Array(16);
  for (let block = 0; block < values.length / SUPER_BLOCK; block++) {
    const first = block * SUPER_BLOCK;
    for (let j = 0; j < 16; j++) {
      let maxAbs = 0;
      for (let i = 0; i < 16; i++) maxAbs = Math.max(maxAbs, Math.abs(values[first + 16 * j + i]));
      steps[j] = maxAbs / 31;
    }

    const base = block * Q6K_BYTES;
    const dBits = encodeScale(Math.max(...steps) / 127, 'Q6_K', block, true);
    const d = halfToFloat(dBits);
    for (let j = 0; j < 16; j++) {
      const scale = d > 0 ? Math.min(127, Math.ceil(steps[j] / d)) : 0;
      out[base + 192 + j] = scale;
      const step = Math.fround(d * scale);
      for (let i = 16 * j; i < 16 * (j + 1); i++) {
        const q = step > 0 ? Math.round(values[first + i] / step) : 0;
        levels[i] = Math.min(31, Math.max(-32, q)) + 32;
      }
    }
    packQ6KLevels(levels, out, base);
    writeUint16(out, base + 208, dBits);
  }
}

function packQ6KLevels(levels: Uint8Array, out: Uint8Array, base: number): void {
  for (let half = 0; half < 2; half++) {
    for (let l = 0; l < 32; l++) {
      const first = 128 * half + l;
      const [u1, u2, u3, u4] = [
        levels[first],
        levels[first + 32],
        levels[first + 64],
        levels[first + 96],
      ];
      out[base + 64 * half + l] = (u1 & 0x0f) | ((u3 & 0x0f) << 4);
      out[base + 64 * half + l + 32] = (u2 & 0x0f) | ((u4 & 0x0f) << 4);
      out[base + 128 + 32 * half + l] =
        (u1 >> 4) | ((u2 >> 4) << 2) | ((u3 >> 4) << 4) | ((u4 >> 4) << 6);
    }
  }
}
