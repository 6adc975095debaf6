import { beforeAll, describe, expect, it } from 'vitest';
import { type MatmulResult, measureMatmul, pooledFlopsPerSecond } from '../../bench/matmul';
import { useEngineBackend } from '../helpers/backend';

beforeAll(async () => {
  await useEngineBackend();
});

describe('measureMatmul', () => {
  it('times only the repetitions', () => {
    const result = measureMatmul({ m: 8, k: 4, n: 3 }, 2, 5);
    expect(result.timesMs).toHaveLength(5);
    expect(result.flops).toBe(2 * 8 * 4 * 3);
    expect(result.medianMs).toBe([...result.timesMs].sort((a, b) => a - b)[2]);
    expect(result.flopsPerSecond).toBeCloseTo(result.flops / (result.medianMs / 1000), 6);
  });

  it('frees its tensors', async () => {
    const tf = await useEngineBackend();
    const before = tf.memory().numTensors;
    measureMatmul({ m: 4, k: 4, n: 4 }, 1, 1);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('pooledFlopsPerSecond', () => {
  const shape = { m: 2, k: 2, n: 2, flops: 16, warmup: 0, medianMs: 0, flopsPerSecond: 0 };
  const run = (timesMs: number[]): MatmulResult => ({ ...shape, timesMs });

  it('takes the median over all repetitions', () => {
    // Pooled times 1, 2, 3, 8, 9: the median is 3 ms, so 16 FLOPs / 3 ms.
    expect(pooledFlopsPerSecond([run([1, 8, 9]), run([2, 3])])).toBeCloseTo(16 / 0.003, 6);
  });

  it('rejects mixed shapes', () => {
    const other = { ...run([1]), n: 4 };
    expect(() => pooledFlopsPerSecond([run([1]), other])).toThrow(/share one shape/);
  });
});
