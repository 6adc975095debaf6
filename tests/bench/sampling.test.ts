import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BenchModel } from '../../bench/fixture';
import { datasetPrompts, measureSampling } from '../../bench/sampling';
import { loadDataset, promptsFor } from '../../src/main/engine/datasets';
import { useEngineBackend } from '../helpers/backend';
import { tinyBench } from './tiny-bench';

const dataset = loadDataset('us-gender');
const OPTIONS = { temperature: 1, topP: 1, maxNewTokens: 4, seed: 0, batchSize: 2 };
let bench: BenchModel;

beforeAll(async () => {
  await useEngineBackend();
  bench = await tinyBench(dataset);
});

afterAll(() => bench?.model.dispose());

describe('datasetPrompts', () => {
  it('cycles occupations, then rounds', () => {
    const count = dataset.occupations.length + 1;
    const prompts = datasetPrompts(bench, dataset, count);
    expect(prompts).toHaveLength(count);
    expect(bench.tokenizer.decode(prompts[1])).toBe(promptsFor(dataset, 1, 0));
    expect(bench.tokenizer.decode(prompts[count - 1])).toBe(promptsFor(dataset, 0, 1));
  });
});

describe('measureSampling', () => {
  it('counts steering and text tokens', async () => {
    const prompts = datasetPrompts(bench, dataset, 3);
    const result = await measureSampling(bench, prompts, OPTIONS);
    // Every request gets its steering token first, then at most 3 more tokens.
    expect(result.generatedTokens).toBeGreaterThanOrEqual(3);
    expect(result.generatedTokens).toBeLessThanOrEqual(12);
    expect(result.prompts).toBe(3);
    expect(result.msPerBatch).toBeCloseTo((result.wallSeconds * 1000) / 2, 6);
    expect(result.tokensPerSecond).toBeCloseTo(result.generatedTokens / result.wallSeconds, 6);
  });
});
