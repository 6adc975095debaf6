import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BenchModel, buildBenchExamples, loadBenchModel } from '../../bench/fixture';
import type { TrainingExample } from '../../src/main/engine/batches';
import { loadDataset } from '../../src/main/engine/datasets';
import { STARTER_DEFAULTS } from '../../src/main/engine/starter';
import { useEngineBackend } from '../helpers/backend';
import { makeTempDir, writeTinyModelFolder } from '../helpers/tiny-model';
import { tinyBench } from './tiny-bench';

const dataset = loadDataset('us-gender');
let bench: BenchModel;
let examples: TrainingExample[];
let tempDir: string;

beforeAll(async () => {
  await useEngineBackend();
  bench = await tinyBench(dataset);
  examples = buildBenchExamples(bench, dataset, 12, 0);
  tempDir = await makeTempDir('bench-fixture');
});

afterAll(async () => {
  bench?.model.dispose();
  if (tempDir) await fs.rm(tempDir, { recursive: true, force: true });
});

describe('loadBenchModel', () => {
  it('builds the starter config when absent', async () => {
    const missing = path.join(tempDir, 'no-such-model');
    const loaded = await loadBenchModel(missing, dataset);
    try {
      expect(loaded.source).toEqual({
        kind: 'initParams',
        reason: expect.stringContaining(missing),
      });
      expect(loaded.model.config.hiddenSize).toBe(STARTER_DEFAULTS.model.hiddenSize);
      expect(loaded.model.config.numLayers).toBe(STARTER_DEFAULTS.model.numLayers);
      // The starter BPE vocabulary plus one special steering token per category.
      expect(loaded.model.config.vocabSize).toBe(STARTER_DEFAULTS.vocabSize + 2);
      expect(loaded.steering.tokens).toEqual(['<|gender:male|>', '<|gender:female|>']);
    } finally {
      loaded.model.dispose();
    }
  });

  it('loads an existing folder', async () => {
    const dir = path.join(tempDir, 'tiny-model');
    await writeTinyModelFolder(dir);
    const loaded = await loadBenchModel(dir, dataset);
    try {
      expect(loaded.source).toEqual({
        kind: 'folder',
        dir,
        weightsSha256: expect.stringMatching(/^[0-9a-f]{64}$/),
      });
      expect(loaded.steering.mode).toBe('special');
      expect(loaded.model.config.vocabSize).toBe(loaded.tokenizer.vocabSize);
    } finally {
      loaded.model.dispose();
    }
  });

  it('rejects a folder without weights', async () => {
    const dir = path.join(tempDir, 'empty-model');
    await fs.mkdir(dir);
    await expect(loadBenchModel(dir, dataset)).rejects.toThrow(/config .*config\.json is missing/);
  });
});

describe('buildBenchExamples', () => {
  it('pairs each answer behind two tokens', () => {
    const [desirable, undesirable] = examples;
    const ids = bench.steering.tokenIds;
    expect(desirable.desirable).toBe(true);
    expect(undesirable.desirable).toBe(false);
    expect(undesirable.promptIds).toEqual(desirable.promptIds);
    expect(ids).toContain(desirable.responseIds[0]);
    expect(ids).toContain(undesirable.responseIds[0]);
    expect(undesirable.responseIds[0]).not.toBe(desirable.responseIds[0]);
    expect(desirable.responseIds.at(-1)).toBe(bench.tokenizer.eosId);
    expect(examples.filter((e) => e.desirable).length).toBeGreaterThanOrEqual(12);
  });

  it('uses dataset prompts and targets', () => {
    const prompt = bench.tokenizer.decode(examples[0].promptIds);
    expect(prompt).toMatch(/^Q: .* in the US\?\nA:$/);
    const target = dataset.occupations[examples[0].occupationIndex].target;
    expect(examples[0].target).toEqual(target);
  });
});
