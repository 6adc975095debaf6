import { describe, expect, it } from 'vitest';
import {
  attentionForwardFlops,
  countedParameters,
  modelFlopUtilization,
  pairedUtilization,
  stepFlopsPerToken,
} from '../../bench/flops';
import type { ModelConfig } from '../../src/main/engine/model';
import { STARTER_DEFAULTS } from '../../src/main/engine/starter';

/** The starter config with two special steering tokens added to its 1024-token vocabulary. */
const STARTER: ModelConfig = { ...STARTER_DEFAULTS.model, vocabSize: 1026 };

describe('countedParameters', () => {
  it('counts starter projections and head', () => {
    const counted = countedParameters(STARTER);
    // Per layer: q and o 128x128, k and v 128x64, gate, up and down 128x352.
    const perLayer = 2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 352;
    expect(perLayer).toBe(184_320);
    expect(counted.blockMatmul).toBe(4 * perLayer);
    expect(counted.head).toBe(128 * 1026);
    expect(counted.total).toBe(4 * perLayer + 128 * 1026);
  });

  it('ignores biases and counts an untied head once', () => {
    const tied = countedParameters(STARTER);
    const qwen = countedParameters({ ...STARTER, attentionBias: true, tieWordEmbeddings: false });
    expect(qwen.blockMatmul).toBe(tied.blockMatmul);
    expect(qwen.head).toBe(tied.head);
  });
});

describe('stepFlopsPerToken', () => {
  const n = countedParameters(STARTER).total;
  const attention = attentionForwardFlops(STARTER, 50);

  it('gives 6N for one forward and backward', () => {
    const flops = stepFlopsPerToken(STARTER, { forwardBackward: 1, forwardOnly: 0 }, 50);
    expect(flops.weights).toBe(6 * n);
    expect(flops.withAttention).toBe(6 * n + 12 * 4 * 50 * 128);
  });

  it('adds 2N per extra forward', () => {
    const flops = stepFlopsPerToken(STARTER, { forwardBackward: 1, forwardOnly: 3 }, 50);
    expect(flops.weights).toBe(12 * n);
    expect(flops.withAttention).toBe(12 * n + 6 * attention);
  });

  it('uses heads times head size as d', () => {
    expect(attentionForwardFlops({ ...STARTER, numHeads: 8, headDim: 16 }, 10)).toBe(
      4 * 4 * 10 * 128,
    );
  });
});

describe('modelFlopUtilization', () => {
  it('divides achieved by measured FLOP/s', () => {
    expect(modelFlopUtilization(6e6, 1000, 30e9)).toBeCloseTo(0.2, 12);
  });

  it('rejects a zero matmul rate', () => {
    expect(() => modelFlopUtilization(6e6, 1000, 0)).toThrow(/matmul FLOP\/s must be > 0, got 0/);
  });
});

describe('pairedUtilization', () => {
  it('pairs each step with its own rate', () => {
    const steps = [
      // 1000 tok/s * 6e6 FLOPs = 6 GFLOP/s against 30 GFLOP/s: 0.2.
      { tokens: 2000, seconds: 2, matmulFlopsPerSecond: 30e9 },
      // The same step on a machine slowed to half speed: 3 against 15, still 0.2.
      { tokens: 1000, seconds: 2, matmulFlopsPerSecond: 15e9 },
      { tokens: 2000, seconds: 1, matmulFlopsPerSecond: 30e9 },
    ];
    const result = pairedUtilization(6e6, steps);
    expect(result.perStep[0]).toBeCloseTo(0.2, 12);
    expect(result.perStep[1]).toBeCloseTo(0.2, 12);
    expect(result.perStep[2]).toBeCloseTo(0.4, 12);
    expect(result.median).toBeCloseTo(0.2, 12);
  });

  it('rejects an empty step list', () => {
    expect(() => pairedUtilization(6e6, [])).toThrow(/at least one step/);
  });
});
