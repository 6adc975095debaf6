import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { trainByteLevelBpe } from '../../src/main/engine/bpe-trainer';
import { saveModelFolder } from '../../src/main/engine/checkpoint';
import { loadDataset } from '../../src/main/engine/datasets';
import { initParams, LlamaModel, type ModelConfig } from '../../src/main/engine/model';
import { END_OF_TEXT } from '../../src/main/engine/prompts';
import { generateStarterCorpus, type StarterExample } from '../../src/main/engine/starter-corpus';
import { TextTokenizer } from '../../src/main/engine/tokenizer';
import { SFT_DEFAULTS, trainSft } from '../../src/main/engine/trainer';

/** Generated prompt + response lines about the 14 us-gender occupations, the same for every call. */
export function tinyCorpus(examplesPerOccupation = 20): StarterExample[] {
  const dataset = loadDataset('us-gender');
  const female = dataset.categories.indexOf('female');
  const occupations = dataset.occupations.map(({ occupation, target }) => ({
    occupation,
    country: dataset.country,
    femaleShare: target[female],
  }));
  return generateStarterCorpus(occupations, {
    seed: 11,
    examplesPerOccupation,
    gamma: 2,
    unknownShare: 0.1,
  });
}

/** Byte-level BPE tokenizer with `<|endoftext|>`, trained on `tinyCorpus()`. */
export async function tinyTokenizer(vocabSize = 320): Promise<TextTokenizer> {
  const texts = tinyCorpus().map((e) => e.prompt + e.response);
  const json = trainByteLevelBpe(texts, { vocabSize, specialTokens: [END_OF_TEXT] });
  return TextTokenizer.fromJSON(json, 'tiny test tokenizer');
}

/** Model config small enough to train for dozens of steps in a few seconds on wasm. */
export function tinyConfig(vocabSize: number, overrides: Partial<ModelConfig> = {}): ModelConfig {
  return {
    architecture: 'llama',
    vocabSize,
    hiddenSize: 32,
    intermediateSize: 64,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    maxPositions: 128,
    tieWordEmbeddings: false,
    attentionBias: false,
    ...overrides,
  };
}

/** Randomly initialised tiny model; the caller owns it. */
export function tinyModel(
  vocabSize: number,
  seed = 1,
  overrides: Partial<ModelConfig> = {},
): LlamaModel {
  const config = tinyConfig(vocabSize, overrides);
  return new LlamaModel(config, initParams(config, seed));
}

export async function makeTempDir(prefix: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `attune-${prefix}-`));
}

/** Writes a tiny model folder (config.json, model.safetensors, tokenizer.json, attune.json) to `dir`. */
export async function writeTinyModelFolder(dir: string, seed = 1): Promise<void> {
  const tokenizer = await tinyTokenizer();
  const model = tinyModel(tokenizer.vocabSize, seed);
  try {
    await saveModelFolder(dir, model, tokenizer, { description: 'tiny test model' });
  } finally {
    model.dispose();
  }
}

/**
 * Trains a tiny model for 34 SFT steps on `tinyCorpus()` (about 10 s on wasm), enough that
 * about half of its responses sampled at temperature 0.5 name a gender. The caller owns it.
 */
export async function pretrainedTinyModel(tokenizer: TextTokenizer): Promise<LlamaModel> {
  const model = tinyModel(tokenizer.vocabSize, 1);
  const examples = tinyCorpus().map((e) => ({
    promptIds: tokenizer.encode(e.prompt),
    responseIds: [...tokenizer.encode(e.response), tokenizer.eosId],
    desirable: true,
    target: [],
    occupationIndex: 0,
  }));
  const config = { ...SFT_DEFAULTS, epochs: 2, batchSize: 16, learningRate: 2e-2, warmupSteps: 5 };
  await trainSft(
    model,
    examples,
    { ...config, weightDecay: 0, checkpointEvery: 0, seed: 1 },
    {
      padId: tokenizer.eosId,
      steeringIds: [],
    },
  );
  return model;
}
