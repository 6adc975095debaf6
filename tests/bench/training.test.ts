import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BenchModel } from '../../bench/fixture';
import { buildBenchExamples } from '../../bench/fixture';
import { measureTraining } from '../../bench/training';
import { epochBatches, packBatch, type TrainingExample } from '../../src/main/engine/batches';
import { loadDataset } from '../../src/main/engine/datasets';
import { ALIGN_DEFAULTS, SFT_DEFAULTS } from '../../src/main/engine/trainer';
import { useEngineBackend } from '../helpers/backend';
import { tinyBench } from './tiny-bench';

const STEPS = { warmup: 1, timed: 2, batchSize: 4 };
const dataset = loadDataset('us-gender');
let bench: BenchModel;
let examples: TrainingExample[];

/** Non-padding tokens of the batches the trainer packs at steps `from`..`to - 1` of epoch 0. */
function packedTokens(pool: TrainingExample[], seed: number, from: number, to: number): number {
  const batches = epochBatches(pool.length, STEPS.batchSize, seed, 0).slice(from, to);
  return batches.reduce(
    (sum, indices) =>
      sum +
      packBatch(
        indices.map((i) => pool[i]),
        0,
      ).realTokens,
    0,
  );
}

beforeAll(async () => {
  await useEngineBackend();
  bench = await tinyBench(dataset);
  examples = buildBenchExamples(bench, dataset, 12, 0);
});

afterAll(() => bench?.model.dispose());

describe('measureTraining', () => {
  it('counts the packed sft tokens', async () => {
    const result = await measureTraining('sft', bench, examples, STEPS);
    const pool = examples.filter((e) => e.desirable).slice(0, 12);
    expect(result.timedSteps).toBe(2);
    expect(result.tokens).toBe(packedTokens(pool, SFT_DEFAULTS.seed, 1, 3));
    expect(result.meanSequenceLength).toBeCloseTo(result.tokens / 8, 9);
    expect(result.tokensPerSecond).toBeGreaterThan(0);
    expect(result.perStep).toHaveLength(2);
    expect(result.perStep[0].tokens).toBe(packedTokens(pool, SFT_DEFAULTS.seed, 1, 2));
    expect(result.perStep[0].seconds + result.perStep[1].seconds).toBeCloseTo(
      result.wallSeconds,
      9,
    );
  });

  it('counts the packed align tokens', async () => {
    const result = await measureTraining('align', bench, examples, STEPS);
    const pool = examples.slice(0, 12);
    expect(result.stage).toBe('align');
    expect(result.tokens).toBe(packedTokens(pool, ALIGN_DEFAULTS.seed, 1, 3));
    expect(result.wallSeconds).toBeGreaterThan(0);
  });

  it('excludes betweenSteps from step time', async () => {
    const pauseMs = 200;
    let calls = 0;
    const betweenSteps = () => {
      calls += 1;
      // Blocks this thread for pauseMs without using CPU.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, pauseMs);
    };
    const started = performance.now();
    const result = await measureTraining('sft', bench, examples, STEPS, { betweenSteps });
    const elapsedSeconds = (performance.now() - started) / 1000;
    expect(calls).toBe(3);
    // All three pauses fall outside the two timed steps.
    expect(elapsedSeconds - result.wallSeconds).toBeGreaterThanOrEqual((3 * pauseMs) / 1000);
  });

  it('rejects too few examples', async () => {
    const few = examples.slice(0, 6);
    await expect(measureTraining('align', bench, few, STEPS)).rejects.toThrow(
      /align needs 12 examples, got 6/,
    );
  });
});
