import seedrandom from 'seedrandom';
import { describe, expect, it } from 'vitest';
import { floatToHalf, halfToFloat } from '../../../../src/main/engine/gguf/ggml-float';
import {
  dequantize,
  GgmlType,
  type GgmlTypeId,
  ggmlTypeName,
  isSupportedType,
  quantize,
  tensorByteLength,
} from '../../../../src/main/engine/gguf/ggml-types';
import { UserError } from '../../../../src/shared/errors';
import {
  ggmlDequantizeMany,
  ggmlQuantizeMany,
  ggmlUnavailableReason,
} from '../../../fixtures/gguf/ggml-reference';

const ALL_TYPES = Object.entries(GgmlType) as [string, GgmlTypeId][];
const BLOCK_TYPES: [string, GgmlTypeId][] = ALL_TYPES.filter(([, t]) => t !== GgmlType.F32);

/** Seeded values shaped like weights: mostly N(0, 0.02^2) with a few outliers. */
function weights(seed: string, n: number, scale = 0.02): Float32Array {
  const rng = seedrandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const normal = Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
    out[i] = normal * scale * (rng() < 0.01 ? 20 : 1);
  }
  return out;
}

/** Data sets of 1024 values that stress the encoders differently. */
function dataSets(): [string, Float32Array][] {
  const n = 1024;
  return [
    ['weights', weights('w', n)],
    ['unit scale', weights('u', n, 1)],
    ['all positive', weights('p', n).map(Math.abs)],
    ['all negative', weights('n', n).map((x) => -Math.abs(x) - 0.01)],
    ['tiny', weights('t', n, 1e-4)],
    ['constant', new Float32Array(n).fill(0.75)],
    ['zeros', new Float32Array(n)],
    ['one block of zeros', weights('z', n).fill(0, 256, 512)],
  ];
}

const bits = (values: Float32Array) =>
  Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length));
const F16_EPS = 2 ** -11;
/** Largest error of rounding a non-negative `x` to F16: relative for normals, 2^-25 below. */
const f16Error = (x: number) => Math.max(x * F16_EPS, 2 ** -25);

function blockStats(values: Float32Array, start: number, length: number) {
  let maxAbs = 0;
  let min = 0;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = start; i < start + length; i++) {
    maxAbs = Math.max(maxAbs, Math.abs(values[i]));
    min = Math.min(min, values[i]);
    max = Math.max(max, values[i]);
  }
  return { maxAbs, min, max };
}

/**
 * Returns the maximum round-trip error of value `i`, derived from each encoder's rounding rule.
 * Q8_0 and Q4_0 follow ggml's reference rule: half a step, or one step at Q4_0's clamped top
 * level, plus the F16 error of the scale. Q4_K and Q6_K round to the nearest level of a step that
 * is at most the sub-block's exact step plus one unit of d.
 */
function errorBound(type: GgmlTypeId, values: Float32Array, i: number): number {
  const x = Math.abs(values[i]);
  const decodeSlack = 2 ** -22 * blockStats(values, i - (i % 256), 256).maxAbs;
  switch (type) {
    case GgmlType.F32:
      return 0;
    case GgmlType.F16:
      return f16Error(x);
    case GgmlType.BF16:
      return x * 2 ** -8;
    case GgmlType.Q8_0: {
      const d = blockStats(values, i - (i % 32), 32).maxAbs / 127;
      return d / 2 + 127 * f16Error(d) + decodeSlack;
    }
    case GgmlType.Q4_0: {
      const d = blockStats(values, i - (i % 32), 32).maxAbs / 8;
      return d + 8 * f16Error(d) + decodeSlack;
    }
    case GgmlType.Q4_K: {
      const superBlock = blockStats(values, i - (i % 256), 256);
      const dmin = (-superBlock.min / 63) * (1 + 2 * F16_EPS) + 2 ** -24;
      const sub = blockStats(values, i - (i % 32), 32);
      const step = (sub.max - sub.min + dmin) / 15;
      const d = ((2 * superBlock.maxAbs + dmin) / 15 / 63) * (1 + 2 * F16_EPS) + 2 ** -24;
      return (step + d) / 2 + 16 * decodeSlack;
    }
    case GgmlType.Q6_K: {
      const superBlock = blockStats(values, i - (i % 256), 256);
      const step = blockStats(values, i - (i % 16), 16).maxAbs / 31;
      const d = (superBlock.maxAbs / 31 / 127) * (1 + 2 * F16_EPS) + 2 ** -24;
      return (step + d) / 2 + decodeSlack;
    }
  }
}

describe('ggml type table', () => {
  it('names known and unknown types', () => {
    expect(ggmlTypeName(GgmlType.Q4_K)).toBe('Q4_K');
    expect(ggmlTypeName(13)).toBe('Q5_K');
    expect(ggmlTypeName(30)).toBe('BF16');
    expect(ggmlTypeName(99)).toBe('type 99');
    expect(ggmlTypeName(4), 'an id ggml removed').toBe('type 4');
  });

  it('supports exactly the seven types', () => {
    for (const [name, type] of ALL_TYPES) expect(isSupportedType(type), name).toBe(true);
    for (const type of [3, 6, 10, 13, 15, 99])
      expect(isSupportedType(type), `type ${type}`).toBe(false);
  });

  it('computes byte lengths of whole blocks', () => {
    expect(tensorByteLength(GgmlType.F32, 10)).toBe(40);
    expect(tensorByteLength(GgmlType.F16, 3)).toBe(6);
    expect(tensorByteLength(GgmlType.BF16, 3)).toBe(6);
    expect(tensorByteLength(GgmlType.Q4_0, 64)).toBe(36);
    expect(tensorByteLength(GgmlType.Q8_0, 64)).toBe(68);
    expect(tensorByteLength(GgmlType.Q4_K, 512)).toBe(288);
    expect(tensorByteLength(GgmlType.Q6_K, 256)).toBe(210);
    expect(tensorByteLength(GgmlType.Q8_0, 0)).toBe(0);
  });

  it('rejects partial blocks', () => {
    expect(() => tensorByteLength(GgmlType.Q8_0, 33)).toThrow(UserError);
    expect(() => tensorByteLength(GgmlType.Q4_K, 32)).toThrow(/blocks of 256/);
    expect(() => quantize(GgmlType.Q6_K, new Float32Array(100))).toThrow(/multiple of 256/);
  });
});

describe('block layouts', () => {
  it('decodes a hand-built Q8_0 block', () => {
    const bytes = new Uint8Array(34);
    bytes.set([0x00, 0x38], 0); // d = 0.5 as F16 0x3800
    for (let j = 0; j < 32; j++) bytes[2 + j] = (j * 8 - 128) & 0xff;
    const values = dequantize(GgmlType.Q8_0, bytes, 32);
    for (let j = 0; j < 32; j++) expect(values[j], `value ${j}`).toBe((j * 8 - 128) * 0.5);
  });

  it('decodes a hand-built Q4_0 block', () => {
    const bytes = new Uint8Array(18);
    bytes.set([0x00, 0x40], 0); // d = 2
    for (let j = 0; j < 16; j++) bytes[2 + j] = j | ((15 - j) << 4);
    const values = dequantize(GgmlType.Q4_0, bytes, 32);
    for (let j = 0; j < 16; j++) {
      expect(values[j], `low nibble ${j}`).toBe((j - 8) * 2);
      expect(values[j + 16], `high nibble ${j}`).toBe((7 - j) * 2);
    }
  });

  it('decodes a hand-built Q4_K super-block', () => {
    // Scales 10 + 7j and mins 63 - 5j exceed 15 for several j, so the 2-bit high parts matter.
    const scales = Array.from({ length: 8 }, (_, j) => 10 + 7 * j);
    const mins = Array.from({ length: 8 }, (_, j) => 63 - 5 * j);
    const bytes = new Uint8Array(144);
    bytes.set([0x00, 0x34, 0x00, 0x30], 0); // d = 0.25, dmin = 0.125
    for (let j = 0; j < 8; j++) {
      if (j < 4) {
        bytes[4 + j] |= scales[j];
        bytes[8 + j] |= mins[j];
      } else {
        bytes[8 + j] |= (scales[j] & 15) | ((mins[j] & 15) << 4);
        bytes[4 + j - 4] |= (scales[j] >> 4) << 6;
        bytes[4 + j] |= (mins[j] >> 4) << 6;
      }
    }
    const level = (i: number) => (i * 7) % 16;
    for (let group = 0; group < 4; group++) {
      for (let l = 0; l < 32; l++) {
        bytes[16 + 32 * group + l] = level(64 * group + l) | (level(64 * group + 32 + l) << 4);
      }
    }
    const values = dequantize(GgmlType.Q4_K, bytes, 256);
    for (let i = 0; i < 256; i++) {
      const sub = i >> 5;
      expect(values[i], `value ${i}`).toBe(0.25 * scales[sub] * level(i) - 0.125 * mins[sub]);
    }
  });

  it('decodes a hand-built Q6_K super-block', () => {
    const bytes = new Uint8Array(210);
    const level = (i: number) => (i * 37) % 64; // stored level; q = level - 32
    for (let i = 0; i < 256; i++) {
      const half = i >> 7;
      const k = i % 128;
      const l = k % 32;
      const quarter = k >> 5; // 0..3: values l, l + 32, l + 64, l + 96 of the half
      const lowByte = 64 * half + l + (quarter % 2) * 32;
      bytes[lowByte] |= (level(i) & 15) << (quarter >= 2 ? 4 : 0);
      bytes[128 + 32 * half + l] |= (level(i) >> 4) << (2 * quarter);
    }
    const scales = Array.from({ length: 16 }, (_, j) => 9 * j - 70);
    scales.forEach((s, j) => {
      bytes[192 + j] = s & 0xff;
    });
    bytes.set([0x00, 0x38], 208); // d = 0.5
    const values = dequantize(GgmlType.Q6_K, bytes, 256);
    for (let i = 0; i < 256; i++) {
      expect(values[i], `value ${i}`).toBe(0.5 * scales[i >> 4] * (level(i) - 32));
    }
  });

  it('converts F16 at the edges of its range', () => {
    expect(halfToFloat(floatToHalf(65504))).toBe(65504);
    expect(halfToFloat(floatToHalf(65519))).toBe(65504);
    expect(halfToFloat(floatToHalf(65520))).toBe(Number.POSITIVE_INFINITY);
    expect(halfToFloat(floatToHalf(2 ** -24))).toBe(2 ** -24);
    expect(halfToFloat(floatToHalf(2 ** -25)), 'tie rounds to even zero').toBe(0);
    expect(halfToFloat(floatToHalf(1 + 2 ** -11)), 'tie rounds to even').toBe(1);
    expect(halfToFloat(floatToHalf(1 + 3 * 2 ** -11)), 'tie rounds up to even').toBe(1 + 2 ** -9);
    expect(floatToHalf(-0)).toBe(0x8000);
    expect(floatToHalf(Number.NaN)).toBe(0x7e00);
  });
});

describe('quantize round trip', () => {
  for (const [typeName, type] of ALL_TYPES) {
    it(`${typeName} stays within its error bound`, () => {
      for (const [setName, values] of dataSets()) {
        const restored = dequantize(type, quantize(type, values), values.length);
        let worst = 0;
        let worstIndex = 0;
        for (let i = 0; i < values.length; i++) {
          const excess = Math.abs(restored[i] - values[i]) - errorBound(type, values, i);
          if (excess > worst) [worst, worstIndex] = [excess, i];
        }
        expect(worst, `${setName}: value ${worstIndex} exceeds the bound`).toBe(0);
      }
    });
  }

  it('keeps zeros and constants exact in block types', () => {
    for (const [typeName, type] of BLOCK_TYPES) {
      const zeros = dequantize(type, quantize(type, new Float32Array(256)), 256);
      expect(
        zeros.every((x) => x === 0),
        `${typeName} zeros`,
      ).toBe(true);
    }
  });

  it('rejects NaN and infinity in block types', () => {
    const values = weights('nan', 256);
    values[77] = Number.NaN;
    expect(() => quantize(GgmlType.Q8_0, values)).toThrow(/Value 77 is NaN/);
    values[77] = Number.POSITIVE_INFINITY;
    expect(() => quantize(GgmlType.Q4_K, values)).toThrow(UserError);
    expect(bits(dequantize(GgmlType.F32, quantize(GgmlType.F32, values), 256))).toEqual(
      bits(values),
    );
  });

  it('rejects values beyond the float16 scale range', () => {
    const values = weights('big', 256).map((x) => x * 1e12);
    for (const [typeName, type] of BLOCK_TYPES.filter(
      ([, t]) => t !== GgmlType.F16 && t !== GgmlType.BF16,
    )) {
      expect(() => quantize(type, values), typeName).toThrow(/too large to quantize/);
    }
  });

  it('rejects a byte count that does not match', () => {
    expect(() => dequantize(GgmlType.Q4_K, new Uint8Array(143), 256)).toThrow(
      /take 144 bytes, but 143/,
    );
  });
});

/** Random bytes for blocks of `type`, with every F16 scale finite. */
function randomBlocks(type: GgmlTypeId, elements: number, seed: string): Uint8Array {
  const rng = seedrandom(seed);
  const bytes = new Uint8Array(tensorByteLength(type, elements)).map(() => Math.floor(rng() * 256));
  const finiteHalf = () => floatToHalf((rng() - 0.5) * 2 ** (Math.floor(rng() * 20) - 14));
  const setHalf = (at: number) => {
    const half = finiteHalf();
    bytes[at] = half & 0xff;
    bytes[at + 1] = half >> 8;
  };
  const blockBytes = tensorByteLength(
    type,
    type === GgmlType.Q4_K || type === GgmlType.Q6_K ? 256 : 32,
  );
  for (let base = 0; base < bytes.length; base += blockBytes) {
    if (type === GgmlType.Q4_0 || type === GgmlType.Q8_0) setHalf(base);
    if (type === GgmlType.Q4_K) [base, base + 2].forEach(setHalf);
    if (type === GgmlType.Q6_K) setHalf(base + 208);
  }
  return bytes;
}

describe.skipIf(ggmlUnavailableReason !== undefined)('agreement with ggml', () => {
  const elements = 1024;

  it('decodes blocks bit for bit like ggml', () => {
    const jobs: { name: string; type: GgmlTypeId; bytes: Uint8Array }[] = [];
    for (const [typeName, type] of BLOCK_TYPES) {
      jobs.push({
        name: `${typeName} random bytes`,
        type,
        bytes: randomBlocks(type, elements, typeName),
      });
      for (const [setName, values] of dataSets()) {
        jobs.push({ name: `${typeName} ${setName}`, type, bytes: quantize(type, values) });
      }
    }
    const theirs = ggmlDequantizeMany(jobs.map((job) => ({ ...job, elements })));
    jobs.forEach((job, k) => {
      const ours = dequantize(job.type, job.bytes, elements);
      const nan = ours.map((x) => (Number.isNaN(x) ? 1 : 0));
      expect(
        Array.from(theirs[k].map((x) => (Number.isNaN(x) ? 1 : 0))),
        `${job.name} NaNs`,
      ).toEqual(Array.from(nan));
      const comparable = (values: Float32Array) =>
        bits(values.map((x) => (Number.isNaN(x) ? 0 : x)));
      expect(comparable(ours), job.name).toEqual(comparable(theirs[k]));
    });
  });

  it('encodes F16, BF16, Q8_0 and Q4_0 like ggml', () => {
    const specials = Float32Array.from([
      0,
      -0,
      1,
      -1,
      65504,
      65519,
      65520,
      1e9,
      -1e9,
      2 ** -24,
      2 ** -25,
      3 * 2 ** -25,
      2 ** -14,
      1 + 2 ** -11,
      1 + 3 * 2 ** -11,
      1 + 2 ** -8,
      1 + 3 * 2 ** -8,
      3.4e38,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      Number.NaN,
      1e-40,
    ]);
    const withSpecials = new Float32Array(elements);
    withSpecials.set(weights('s', elements, 3));
    withSpecials.set(specials, 100);
    const jobs: { name: string; type: GgmlTypeId; values: Float32Array }[] = [
      { name: 'F16 specials', type: GgmlType.F16, values: withSpecials },
      { name: 'BF16 specials', type: GgmlType.BF16, values: withSpecials },
    ];
    for (const type of [GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0] as const) {
      for (const [setName, values] of dataSets())
        jobs.push({ name: `${ggmlTypeName(type)} ${setName}`, type, values });
    }
    const theirs = ggmlQuantizeMany(jobs);
    jobs.forEach((job, k) => {
      expect(Array.from(quantize(job.type, job.values)), job.name).toEqual(Array.from(theirs[k]));
    });
  });

  it('encodes Q4_K and Q6_K nearly as well as ggml', () => {
    const values = weights('quality', 256 * 64);
    const rmse = (bytes: Uint8Array, type: GgmlTypeId) => {
      const restored = dequantize(type, bytes, values.length);
      let sum = 0;
      for (let i = 0; i < values.length; i++) sum += (restored[i] - values[i]) ** 2;
      return Math.sqrt(sum / values.length);
    };
    for (const type of [GgmlType.Q4_K, GgmlType.Q6_K] as const) {
      const [reference] = ggmlQuantizeMany([{ type, values }]);
      const ratio = rmse(quantize(type, values), type) / rmse(reference, type);
      // Measured: 1.14 for Q4_K and 1.07 for Q6_K on these weights.
      expect(ratio, `${ggmlTypeName(type)} error relative to ggml's encoder`).toBeLessThan(1.25);
    }
  });
});
