/**
 * The starter model: a small Llama-style decoder trained from scratch on generated responses about
 * occupations, with a byte-level BPE tokenizer trained on the same corpus. Its gender choices
 * follow a stereotype-amplified version of real shares, so it has a bias for the studio to fix.
 */
import type { TrainingExample } from './batches';
import { trainByteLevelBpe } from './bpe-trainer';
import { loadDataset } from './datasets';
import { initParams, LlamaModel, type ModelConfig } from './model';
import { END_OF_TEXT } from './prompts';
import {
  type CorpusOccupation,
  generateStarterCorpus,
  type StarterExample,
} from './starter-corpus';
import { TextTokenizer } from './tokenizer';
import { type StageConfig, type TrainingContext, trainSft } from './trainer';

export interface StarterConfig {
  seed: number;
  /** Generated responses per occupation. */
  examplesPerOccupation: number;
  /** Logit scale of the real female share; the corpus share is p^g / (p^g + (1-p)^g). */
  gamma: number;
  /** Share of responses that state no gender. */
  unknownShare: number;
  /** BPE vocabulary size, special tokens included. */
  vocabSize: number;
  model: Omit<ModelConfig, 'vocabSize'>;
  training: StageConfig;
}

export const STARTER_DEFAULTS: StarterConfig = {
  seed: 1,
  examplesPerOccupation: 160,
  gamma: 5,
  unknownShare: 0.02,
  vocabSize: 1024,
  model: {
    architecture: 'llama',
    hiddenSize: 128,
    intermediateSize: 352,
    numLayers: 4,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 32,
    ropeTheta: 10000,
    rmsNormEps: 1e-5,
    maxPositions: 128,
    tieWordEmbeddings: true,
    attentionBias: false,
  },
  training: {
    epochs: 2,
    batchSize: 32,
    learningRate: 2e-3,
    warmupSteps: 50,
    decay: 'cosine',
    minLearningRateRatio: 0.05,
    weightDecay: 0.01,
    gradientClip: 1,
    checkpointEvery: 0,
    seed: 1,
  },
};

/** Occupations of the corpus: the US and UK reference sets and the BLS table, without repeats. */
export function starterOccupations(): CorpusOccupation[] {
  const seen = new Set<string>();
  const occupations: CorpusOccupation[] = [];
  for (const id of ['us-gender', 'uk-gender', 'bls-gender']) {
    const dataset = loadDataset(id, { target: 'real' });
    const female = dataset.categories.indexOf('female');
    for (const { occupation, target } of dataset.occupations) {
      const key = `${dataset.country}:${occupation.toLowerCase()}`;
      if (seen.has(key)) continue;
      seen.add(key);
      occupations.push({ occupation, country: dataset.country, femaleShare: target[female] });
    }
  }
  return occupations;
}

export interface StarterModel {
  model: LlamaModel;
  tokenizer: TextTokenizer;
  corpus: StarterExample[];
}

/** Generates the corpus, trains the tokenizer, then trains the model; the caller owns the model. */
export async function trainStarterModel(
  config: StarterConfig,
  context: Omit<TrainingContext, 'padId' | 'steeringIds'>,
): Promise<StarterModel> {
  const corpus = generateStarterCorpus(starterOccupations(), {
    seed: config.seed,
    examplesPerOccupation: config.examplesPerOccupation,
    gamma: config.gamma,
    unknownShare: config.unknownShare,
  });
  const texts = corpus.map((e) => e.prompt + e.response);
  const tokenizerJson = trainByteLevelBpe(texts, {
    vocabSize: config.vocabSize,
    specialTokens: [END_OF_TEXT],
  });
  const tokenizer = await TextTokenizer.fromJSON(tokenizerJson, 'starter tokenizer');
  const modelConfig: ModelConfig = { ...config.model, vocabSize: tokenizer.vocabSize };
  const model = new LlamaModel(modelConfig, initParams(modelConfig, config.seed));
  const examples: TrainingExample[] = corpus.map((e) => ({
    promptIds: tokenizer.encode(e.prompt),
    responseIds: [...tokenizer.encode(e.response), tokenizer.eosId],
    desirable: true,
    target: [],
    occupationIndex: 0,
  }));
  await trainSft(model, examples, config.training, {
    ...context,
    padId: tokenizer.eosId,
    steeringIds: [],
  });
  return { model, tokenizer, corpus };
}
