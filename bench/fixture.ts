/**
 * The model, steering tokens and training examples the benchmark runs on. The model is the
 * starter model folder when it exists, else an untrained model of the same config. Special
 * steering tokens are attached as the pipeline attaches them. The pipeline's
 * `buildTrainingExamples` turns generated starter-corpus answers into training examples.
 */
import { promises as fs } from 'node:fs';
import type { TrainingExample } from '../src/main/engine/batches';
import { trainByteLevelBpe } from '../src/main/engine/bpe-trainer';
import { loadModelFolder, type SteeringInfo } from '../src/main/engine/checkpoint';
import type { DatasetDefinition } from '../src/main/engine/datasets';
import { buildTrainingExamples } from '../src/main/engine/examples';
import type { SampledResponse } from '../src/main/engine/measure';
import { initParams, LlamaModel, type ModelConfig } from '../src/main/engine/model';
import { END_OF_TEXT } from '../src/main/engine/prompts';
import { STARTER_DEFAULTS, starterOccupations } from '../src/main/engine/starter';
import { type CorpusOccupation, generateStarterCorpus } from '../src/main/engine/starter-corpus';
import { attachSteeringTokens } from '../src/main/engine/steering';
import { TextTokenizer } from '../src/main/engine/tokenizer';
import { invariant } from '../src/shared/errors';

export type ModelSource =
  | { kind: 'folder'; dir: string; weightsSha256: string }
  | { kind: 'initParams'; reason: string };

export interface BenchModel {
  model: LlamaModel;
  tokenizer: TextTokenizer;
  steering: SteeringInfo;
  source: ModelSource;
}

/**
 * Loads the model folder `dir`, or builds the starter config from `initParams` with the starter
 * tokenizer when `dir` does not exist. A folder that exists but fails to load throws. Attaches
 * special steering tokens for `dataset` unless the model already has them. The caller owns the
 * returned model.
 */
export async function loadBenchModel(dir: string, dataset: DatasetDefinition): Promise<BenchModel> {
  const exists = await fs.stat(dir).then(
    () => true,
    () => false,
  );
  if (!exists) {
    const { model, tokenizer } = await untrainedStarter();
    const steered = await attachSteeringTokens(
      model,
      tokenizer,
      dataset.attribute,
      dataset.categories,
      'special',
    );
    const reason = `${dir} does not exist (npm run starter writes it)`;
    return { ...steered, source: { kind: 'initParams', reason } };
  }
  const loaded = await loadModelFolder(dir);
  const source: ModelSource = { kind: 'folder', dir, weightsSha256: loaded.weightsSha256 };
  const own = loaded.meta.steering;
  const matches =
    own?.attribute === dataset.attribute && own.categories.join() === dataset.categories.join();
  if (own && matches) {
    return { model: loaded.model, tokenizer: loaded.tokenizer, steering: own, source };
  }
  const steered = await attachSteeringTokens(
    loaded.model,
    loaded.tokenizer,
    dataset.attribute,
    dataset.categories,
    'special',
  );
  return { ...steered, source };
}

/** Builds the starter model before training: same corpus, tokenizer, config and seed as `npm run starter`. */
async function untrainedStarter(): Promise<{ model: LlamaModel; tokenizer: TextTokenizer }> {
  const corpus = generateStarterCorpus(starterOccupations(), {
    seed: STARTER_DEFAULTS.seed,
    examplesPerOccupation: STARTER_DEFAULTS.examplesPerOccupation,
    gamma: STARTER_DEFAULTS.gamma,
    unknownShare: STARTER_DEFAULTS.unknownShare,
  });
  const tokenizerJson = trainByteLevelBpe(
    corpus.map((e) => e.prompt + e.response),
    { vocabSize: STARTER_DEFAULTS.vocabSize, specialTokens: [END_OF_TEXT] },
  );
  const tokenizer = await TextTokenizer.fromJSON(tokenizerJson, 'starter tokenizer');
  const config: ModelConfig = { ...STARTER_DEFAULTS.model, vocabSize: tokenizer.vocabSize };
  return { model: new LlamaModel(config, initParams(config, STARTER_DEFAULTS.seed)), tokenizer };
}

/**
 * Builds training examples the way the pipeline does, with generated starter-corpus answers for
 * the occupations of `dataset` (a gender dataset) in place of sampled responses. The dataset's
 * reader labels each answer's text. `buildTrainingExamples` then puts the answer behind its own
 * steering token (desirable) and behind another one (undesirable). The corpus has enough answers
 * per occupation for at least `desirable` desirable examples.
 */
export function buildBenchExamples(
  bench: BenchModel,
  dataset: DatasetDefinition,
  desirable: number,
  seed: number,
): TrainingExample[] {
  const female = dataset.categories.indexOf('female');
  invariant(female >= 0, () => `dataset ${dataset.id} has no "female" category`);
  const occupations: CorpusOccupation[] = dataset.occupations.map((o) => ({
    occupation: o.occupation,
    country: dataset.country,
    femaleShare: o.target[female],
  }));
  // About 2 % of corpus answers state no gender, so a 25 % margin covers the shortfall.
  const perOccupation = Math.ceil((1.25 * desirable) / occupations.length);
  const corpus = generateStarterCorpus(occupations, {
    seed,
    examplesPerOccupation: perOccupation,
    gamma: STARTER_DEFAULTS.gamma,
    unknownShare: STARTER_DEFAULTS.unknownShare,
  });
  const { tokenizer } = bench;
  const samples: SampledResponse[] = corpus.map((entry, i) => ({
    occupationIndex: Math.floor(i / perOccupation),
    round: i % perOccupation,
    prompt: entry.prompt,
    promptIds: tokenizer.encode(entry.prompt),
    text: entry.response,
    textIds: tokenizer.encode(entry.response),
    finished: true,
    steeringCategory: null,
    textCategory: dataset.readAttribute(entry.response),
  }));
  const built = buildTrainingExamples(samples, dataset, bench.steering, tokenizer.eosId, seed);
  invariant(
    built.desirableCount >= desirable,
    () => `built ${built.desirableCount} desirable examples, fewer than the ${desirable} requested`,
  );
  return built.examples;
}
