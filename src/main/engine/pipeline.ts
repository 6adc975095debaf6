/**
 * The alignment run: measure the input model, build training examples from its samples,
 * train stage 1 (SFT) and stage 2 (KL + KTO), measure the trained model, write the report.
 *
 * Every phase emits events for progress display; an AbortSignal stops sampling or training
 * cleanly (training saves a checkpoint first). A run folder can be resumed from its newest
 * checkpoint. A failed or cancelled run still writes a report, marked as such.
 */
import { createHash } from 'node:crypto';
import { promises as fs, constants as fsConstants } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { AttuneError, UserError } from '../../shared/errors';
import type {
  ExampleResponse,
  MeasurementSummary,
  RunReport,
  SteeringCalibration,
} from '../../shared/report-types';
import { writeFileAtomically } from './atomic';
import {
  type LoadedModel,
  loadModelFolder,
  type ModelMeta,
  type SteeringInfo,
  saveModelFolder,
} from './checkpoint';
import { type DatasetDefinition, loadDataset } from './datasets';
import { buildTrainingExamples } from './examples';
import { GGUF_EXPORT_TYPES, type GgufExportType, saveGgufModel } from './gguf/gguf-model';
import { tokenizerToGguf } from './gguf/gguf-tokenizer';
import { loadModel } from './load-model';
import {
  measureDataset,
  type PromptFormat,
  resolvePromptFormat,
  type SampledResponse,
  type SteeringDraws,
} from './measure';
import { summarizeMeasurement } from './metrics';
import { countParameters, type LlamaModel } from './model';
import type { LoadProgress } from './model-memory';
import { writeReport } from './report';
import { checkResumeSettings, RUN_SETTINGS_FILE, saveRunSettings } from './run-settings';
import { readLatestCheckpoint, readTrainerState, saveTrainingCheckpoint } from './run-store';
import { DEFAULT_SAMPLING, type SamplingOptions, validateSampling } from './sampler';
import { attachSteeringTokens, digitSteeringTokens, type SteeringMode } from './steering';
import type { TextTokenizer } from './tokenizer';
import {
  ALIGN_DEFAULTS,
  ALIGN_LOSS_DEFAULTS,
  type AlignmentLossConfig,
  frozenCopy,
  SFT_DEFAULTS,
  type StageConfig,
  type TrainerState,
  type TrainingStepEvent,
  trainAlignment,
  trainSft,
  validateStageConfig,
} from './trainer';

export const ATTUNE_VERSION = '0.1.0';

/** Upper bound on responses per occupation: every prompt is tokenized and held in memory up front. */
export const MAX_ROUNDS = 100_000;

export interface RunOptions {
  modelDir: string;
  datasetId: string;
  /** 'real', 'uniform' or a target CSV path; the dataset default when absent. */
  target?: string;
  /** Responses sampled per occupation, before and after training. */
  rounds: number;
  seed: number;
  /** Run folder; must be new or empty unless `resume` is set. */
  outDir: string;
  steeringMode: SteeringMode;
  sampling: Omit<SamplingOptions, 'seed'>;
  /** Draw scheme of the steering token when measuring a model that has steering tokens. */
  steeringDraws: SteeringDraws;
  /** Prompt format of the questions. `auto` uses the model's chat template when it has one. */
  promptFormat: PromptFormat;
  sft: StageConfig;
  align: StageConfig;
  loss: AlignmentLossConfig;
  /** Continue the run in `outDir` from its newest checkpoint. */
  resume: boolean;
  /** Also write the trained model as a GGUF file llama.cpp runs. */
  exportGguf?: { file: string; type: GgufExportType };
  /** Skip training: measure and report only. */
  measureOnly: boolean;
  commandLine: string[];
}

/**
 * Run defaults, chosen on the starter model (870k parameters, trained from scratch):
 *
 * - Stage 1 runs 4 epochs at 1.5e-3. After 2 epochs at 5e-4 the text ignored the steering
 *   token (steering token/text agreement 52% on us-gender); after 4 at 1.5e-3 it was 99%.
 * - Stage 2 uses KTO beta 1 and KL weight 4 instead of the reference's 0.1 and 1. With beta
 *   0.1 the KTO rewards keep growing. At every learning rate that calibrates the steering
 *   tokens within 2 epochs (3e-5 and up), the text after a counter-stereotypical token then
 *   turned into noise, and 31 to 37% of responses named no gender. Beta 1 bounds the rewards
 *   near 3 nats.
 *   With KL weight 1, KTO's pull towards the starter's own (stereotyped) steering choices left
 *   the steering softmax 0.041 (uniform target) and 0.021 (real) from the target in MAE;
 *   with weight 4 it is 0.011 and 0.005.
 *
 * NOTE: large pretrained models move far less per step; for them the reference settings
 * (`--beta 0.1 --kl-weight 1` with a learning rate near 1e-6) are the better start.
 */
export const RUN_DEFAULTS: Omit<RunOptions, 'modelDir' | 'datasetId' | 'outDir' | 'commandLine'> = {
  rounds: 100,
  seed: 0,
  steeringMode: 'special',
  sampling: { temperature: 1, topP: 1, maxNewTokens: 48, batchSize: 100 },
  steeringDraws: 'stratified',
  promptFormat: 'auto',
  sft: { ...SFT_DEFAULTS, epochs: 4, learningRate: 1.5e-3 },
  align: { ...ALIGN_DEFAULTS, epochs: 2, learningRate: 1e-4 },
  loss: { ...ALIGN_LOSS_DEFAULTS, beta: 1, klWeight: 4 },
  resume: false,
  measureOnly: false,
};

export type RunEvent =
  | { type: 'phase'; phase: RunPhase; message: string }
  | { type: 'sample/progress'; phase: 'before' | 'after'; done: number; total: number }
  | ({ type: 'load/progress' } & LoadProgress)
  /** The loaded model: its size and the float32 memory its weights take. */
  | { type: 'model'; architecture: string; parameters: number; weightBytes: number }
  | TrainingStepEvent;

export type RunPhase =
  | 'load'
  | 'measure-before'
  | 'examples'
  | 'sft'
  | 'align'
  | 'measure-after'
  | 'export'
  | 'report';

export interface RunContext {
  onEvent?: (event: RunEvent) => void;
  signal?: AbortSignal;
}

export interface RunResult {
  report: RunReport;
  jsonPath: string;
  htmlPath: string;
  modelDir: string | null;
}

/** Checks every setting and input file before any work starts; throws a UserError naming the bad one. */
export async function prepareRun(options: RunOptions): Promise<{ dataset: DatasetDefinition }> {
  const dataset = loadDataset(options.datasetId, options.target ? { target: options.target } : {});
  if (!Number.isInteger(options.rounds) || options.rounds < 1 || options.rounds > MAX_ROUNDS) {
    throw new UserError(
      `rounds must be an integer from 1 to ${MAX_ROUNDS}, got ${options.rounds}.`,
    );
  }
  validateSampling({ ...options.sampling, seed: options.seed });
  validateStageConfig(options.sft, 'sft');
  validateStageConfig(options.align, 'align');

  // The output folder: never a file, and never a folder with results unless resuming.
  const outStat = await fs.stat(options.outDir).catch(() => null);
  if (outStat && !outStat.isDirectory()) {
    throw new UserError(
      `Output folder ${options.outDir} is a file; choose a folder path for --out.`,
    );
  }
  const entries = await fs.readdir(options.outDir).catch(() => [] as string[]);
  if (!options.resume && entries.length > 0 && !(await isAbandonedRun(options.outDir, entries))) {
    throw new UserError(
      `Output folder ${options.outDir} is not empty; choose a new --out folder, or pass --resume to continue the run in it.`,
    );
  }

  if (options.resume && !entries.includes('before-samples.json')) {
    const stoppedEarly = entries.length > 0 && (await isAbandonedRun(options.outDir, entries));
    throw new UserError(
      stoppedEarly
        ? `Nothing to resume in ${options.outDir}: the run stopped before its first measurement was saved. Run the same command without --resume to start it again in that folder.`
        : `Cannot resume: ${options.outDir} contains no run (before-samples.json is missing).`,
    );
  }
  if (options.resume && (await reportStatus(options.outDir)) === 'complete') {
    throw new UserError(
      `Cannot resume: the run in ${options.outDir} is complete, and its report is kept as it is.`,
    );
  }
  if (options.resume) await checkResumeSettings(options);
  if (options.exportGguf) await checkExportTarget(options.exportGguf, options.modelDir);
  await checkWritableFolder(options.outDir, '--out');
  return { dataset };
}

/**
 * Checks what needs the loaded model before any sampling: the prompt format, digit steering
 * tokens, and that the tokenizer can be written to GGUF when the run exports one.
 */
function checkModelForRun(
  options: RunOptions,
  input: LoadedModel,
  dataset: DatasetDefinition,
): void {
  resolvePromptFormat(options.promptFormat, input.tokenizer);
  if (options.measureOnly) return;
  if (options.exportGguf) tokenizerToGguf(input.tokenizer);
  if (options.steeringMode === 'digits' && !matchingSteering(input.meta, dataset)) {
    digitSteeringTokens(input.tokenizer, dataset.categories);
  }
}

/** Rejects a GGUF export path that cannot be written, before hours of training. */
async function checkExportTarget(
  target: { file: string; type: GgufExportType },
  modelPath: string,
): Promise<void> {
  if (!GGUF_EXPORT_TYPES.includes(target.type)) {
    throw new UserError(
      `Unknown GGUF weight type ${JSON.stringify(target.type)}; use ${GGUF_EXPORT_TYPES.join(', ')}.`,
    );
  }
  if (!/\.gguf$/i.test(target.file)) {
    throw new UserError(`--export-gguf ${target.file} must name a file ending in .gguf.`);
  }
  if (path.resolve(target.file) === path.resolve(modelPath)) {
    throw new UserError(
      `--export-gguf ${target.file} is the input model; name a new file so the base model is kept.`,
    );
  }
  if (await fs.stat(target.file).catch(() => null)) {
    throw new UserError(
      `--export-gguf ${target.file} already exists; name a new file, or move the old one away first.`,
    );
  }
  await checkWritableFolder(path.dirname(target.file), '--export-gguf');
}

/** Creates `dir` if needed and checks that files can be written in it. */
export async function checkWritableFolder(dir: string, flag: string): Promise<void> {
  try {
    await fs.mkdir(dir, { recursive: true });
    await fs.access(dir, fsConstants.W_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new UserError(
      `${flag}: cannot write in ${dir} (${code}). Choose a folder you can write to.`,
      { cause: error },
    );
  }
}

/**
 * True for a folder holding only the report of a run that failed or was cancelled before its
 * first measurement was saved: nothing in it can be resumed, so a new run may replace it.
 */
async function isAbandonedRun(outDir: string, entries: string[]): Promise<boolean> {
  const leftovers = new Set(['report.json', 'report.html', RUN_SETTINGS_FILE]);
  if (!entries.every((e) => leftovers.has(e))) return false;
  const status = await reportStatus(outDir);
  return status === 'failed' || status === 'cancelled';
}

/** Reads the status of `outDir/report.json`; null when it is missing or unreadable. */
async function reportStatus(outDir: string): Promise<string | null> {
  const text = await fs.readFile(path.join(outDir, 'report.json'), 'utf8').catch(() => null);
  if (text === null) return null;
  try {
    return (JSON.parse(text) as Partial<RunReport>).status ?? null;
  } catch {
    return null;
  }
}

/** Runs the whole pipeline and writes report.json and report.html into `options.outDir`. */
export async function runPipeline(
  options: RunOptions,
  context: RunContext = {},
): Promise<RunResult> {
  const { dataset } = await prepareRun(options);
  const emit = (event: RunEvent) => context.onEvent?.(event);
  const phase = (p: RunPhase, message: string) => emit({ type: 'phase', phase: p, message });
  phase('load', `loading ${options.modelDir}`);
  const input = await loadModel(options.modelDir, {
    onProgress: (progress) => emit({ type: 'load/progress', ...progress }),
  });
  const parameters = countParameters(input.model.params);
  emit({
    type: 'model',
    architecture: input.model.config.architecture,
    parameters,
    weightBytes: 4 * parameters,
  });
  try {
    checkModelForRun(options, input, dataset);
  } catch (error) {
    input.model.dispose();
    throw error;
  }
  await fs.mkdir(options.outDir, { recursive: true });
  if (!options.resume) await saveRunSettings(options);
  const report = emptyReport(options, dataset, input);
  // A GGUF file contains its tokenizer, so the file's hash covers both.
  report.model.tokenizerSha256 = /\.gguf$/i.test(input.dir)
    ? input.weightsSha256
    : await sha256OfFile(path.join(input.dir, 'tokenizer.json'));
  const timings = report.timingsMs;
  const timed = async <T>(name: string, work: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      return await work();
    } finally {
      timings[name] = (timings[name] ?? 0) + Math.round(performance.now() - started);
    }
  };
  let current: { model: LlamaModel; tokenizer: TextTokenizer } = input;
  let modelOut: string | null = null;
  try {
    const inputSteering = matchingSteering(input.meta, dataset);
    phase('measure-before', `sampling ${options.rounds} responses per occupation`);
    const before = await timed('samplingBefore', () =>
      measureOrReuse(options, dataset, input, inputSteering, 'before', emit, context.signal),
    );
    report.before = summarize(dataset, before, options);
    report.examples.push(...pickExamples(dataset, before, 'before'));
    if (options.measureOnly) {
      report.status = 'complete';
      return await finish(options, report, null);
    }
    phase('examples', 'building training examples from the samples');
    const steered = inputSteering
      ? { model: input.model, tokenizer: input.tokenizer, steering: inputSteering }
      : await attachSteeringTokens(
          input.model,
          input.tokenizer,
          dataset.attribute,
          dataset.categories,
          options.steeringMode,
        );
    current = steered;
    const built = buildTrainingExamples(
      before,
      dataset,
      steered.steering,
      steered.tokenizer.eosId,
      options.seed,
    );
    if (built.desirableCount < 2) {
      const unfinished = built.skippedUnfinished
        ? ` (${built.skippedUnfinished} more stopped at --max-new-tokens before finishing)`
        : '';
      throw new UserError(
        `Only ${built.desirableCount} sampled responses named a category${unfinished}, too few to train on; raise --rounds${unfinished ? ' or --max-new-tokens' : ''}.`,
      );
    }
    report.settings.training = {
      promptFormat: report.settings.promptFormat,
      steering: steered.steering,
      sft: options.sft,
      align: options.align,
      loss: options.loss,
      examples: {
        desirable: built.desirableCount,
        undesirable: built.undesirableCount,
        skippedUnknown: built.skippedUnknown,
        skippedUnfinished: built.skippedUnfinished,
      },
    };
    const meta: ModelMeta = {
      steering: steered.steering,
      training: report.settings.training,
      description: `Aligned by Attune ${ATTUNE_VERSION} on ${dataset.id} (${dataset.target.kind} target) from ${path.basename(input.dir)}`,
    };
    if (options.resume) report.trainingHistory.push(...(await historyBeforeResume(options.outDir)));
    const trained = await timed('training', () =>
      trainStages(
        options,
        steered,
        meta,
        built.examples,
        report.trainingHistory,
        emit,
        context.signal,
      ),
    );
    current = { model: trained, tokenizer: steered.tokenizer };
    modelOut = path.join(options.outDir, 'model');
    await saveModelFolder(modelOut, trained, steered.tokenizer, meta);
    report.trainedModel = {
      path: modelOut,
      sha256: await sha256OfFile(path.join(modelOut, 'model.safetensors')),
      tokenizerSha256: await sha256OfFile(path.join(modelOut, 'tokenizer.json')),
    };
    const exportTo = options.exportGguf;
    if (exportTo) {
      phase('export', `writing ${exportTo.file}`);
      await timed('exportGguf', () =>
        saveGgufModel(exportTo.file, trained, steered.tokenizer, meta, {
          type: exportTo.type,
          name: `attune-${dataset.id}`,
        }),
      );
      report.trainedModel.gguf = {
        path: exportTo.file,
        type: exportTo.type,
        sha256: await sha256OfFile(exportTo.file),
      };
    }
    phase(
      'measure-after',
      `sampling ${options.rounds} responses per occupation from the trained model`,
    );
    const after = await timed('samplingAfter', () =>
      measureDataset(trained, steered.tokenizer, dataset, {
        rounds: options.rounds,
        sampling: { ...options.sampling, seed: options.seed + 1 },
        steeringIds: steered.steering.tokenIds,
        steeringDraws: options.steeringDraws,
        promptFormat: options.promptFormat,
        signal: context.signal,
        onProgress: (done, total) => emit({ type: 'sample/progress', phase: 'after', done, total }),
      }),
    );
    report.after = summarize(dataset, after, options);
    report.examples.push(...pickExamples(dataset, after, 'after'));
    report.warnings = qualityWarnings(report.before, report.after);
    report.status = 'complete';
    return await finish(options, report, modelOut);
  } catch (error) {
    report.status =
      error instanceof AttuneError && error.kind === 'cancelled' ? 'cancelled' : 'failed';
    report.error = error instanceof Error ? error.message : String(error);
    await finish(options, report, modelOut).catch(() => undefined);
    throw error;
  } finally {
    current.model.dispose();
  }
}

/** Trains both stages (or the rest of them, on resume); appends every step to `history`. */
async function trainStages(
  options: RunOptions,
  steered: { model: LlamaModel; tokenizer: TextTokenizer; steering: SteeringInfo },
  meta: ModelMeta,
  examples: Parameters<typeof trainSft>[1],
  history: RunReport['trainingHistory'],
  emit: (event: RunEvent) => void,
  signal?: AbortSignal,
): Promise<LlamaModel> {
  const { model, tokenizer, steering } = steered;
  const runDir = options.outDir;
  const latest = options.resume ? await readLatestCheckpoint(runDir) : null;
  let resume: TrainerState | undefined;
  let policy = model;
  if (latest) {
    const checkpointDir = path.join(runDir, 'checkpoints', latest.dir);
    resume = await readTrainerState(checkpointDir);
    policy = await replaceWeights(model, checkpointDir);
  }
  const onStep = (event: TrainingStepEvent) => {
    history.push({
      step: event.step,
      stage: event.stage,
      loss: event.loss,
      klLoss: event.klLoss ?? undefined,
      ktoLoss: event.ktoLoss ?? undefined,
      z0: event.z0 ?? undefined,
      lr: event.learningRate,
      tokensPerSec: event.tokensPerSec,
    });
    emit(event);
  };
  const save = (stageModel: LlamaModel) => (state: TrainerState) =>
    saveTrainingCheckpoint(runDir, stageModel, tokenizer, meta, state).then(() => undefined);
  const trainingContext = (resumeFrom: TrainerState | undefined) => ({
    padId: tokenizer.eosId,
    steeringIds: steering.tokenIds,
    onStep,
    signal,
    resume: resumeFrom,
    saveCheckpoint: save(policy),
  });
  const stage1Dir = path.join(runDir, 'stage1-model');
  if (!resume || resume.stage === 'sft') {
    emit({ type: 'phase', phase: 'sft', message: 'stage 1: supervised fine-tuning' });
    await trainSft(
      policy,
      examples,
      { ...options.sft, seed: options.seed },
      trainingContext(resume),
    );
    await saveModelFolder(stage1Dir, policy, tokenizer, meta);
    resume = undefined;
  }
  const reference = resume ? (await loadModelFolder(stage1Dir)).model : frozenCopy(policy);
  try {
    emit({ type: 'phase', phase: 'align', message: `stage 2: ${options.loss.mode}` });
    await trainAlignment(
      policy,
      reference,
      examples,
      { ...options.align, seed: options.seed },
      options.loss,
      trainingContext(resume),
    );
  } finally {
    reference.dispose();
  }
  return policy;
}

/** Loads the weights of a checkpoint folder into a model of the same shape; disposes `model`. */
async function replaceWeights(model: LlamaModel, checkpointDir: string): Promise<LlamaModel> {
  const loaded = await loadModelFolder(checkpointDir);
  if (loaded.model.config.vocabSize !== model.config.vocabSize) {
    loaded.model.dispose();
    throw new UserError(
      `Checkpoint ${checkpointDir} does not match the model of this run (vocabulary size).`,
    );
  }
  model.dispose();
  return loaded.model;
}

async function measureOrReuse(
  options: RunOptions,
  dataset: DatasetDefinition,
  input: LoadedModel,
  steering: SteeringInfo | null,
  phase: 'before',
  emit: (event: RunEvent) => void,
  signal?: AbortSignal,
): Promise<SampledResponse[]> {
  const file = path.join(options.outDir, 'before-samples.json');
  if (options.resume) {
    try {
      const saved = JSON.parse(await fs.readFile(file, 'utf8')) as {
        datasetId: string;
        samples: SampledResponse[];
      };
      if (saved.datasetId !== dataset.id || !Array.isArray(saved.samples)) {
        throw new Error(`it contains samples of dataset ${saved.datasetId}, not ${dataset.id}`);
      }
      return saved.samples;
    } catch (error) {
      throw new UserError(
        `Cannot resume from ${file}: ${(error as Error).message}. Start a new run with another --out.`,
      );
    }
  }
  const samples = await measureDataset(input.model, input.tokenizer, dataset, {
    rounds: options.rounds,
    sampling: { ...options.sampling, seed: options.seed },
    steeringIds: steering?.tokenIds,
    steeringDraws: options.steeringDraws,
    promptFormat: options.promptFormat,
    signal,
    onProgress: (done, total) => emit({ type: 'sample/progress', phase, done, total }),
  });
  await writeFileAtomically(file, JSON.stringify({ datasetId: dataset.id, samples }));
  return samples;
}

/** Returns the model's steering tokens when they were trained for this dataset's attribute and categories. */
function matchingSteering(meta: ModelMeta, dataset: DatasetDefinition): SteeringInfo | null {
  const steering = meta.steering;
  if (!steering || steering.attribute !== dataset.attribute) return null;
  if (steering.categories.join('|') !== dataset.categories.join('|')) return null;
  return steering;
}

function summarize(
  dataset: DatasetDefinition,
  samples: SampledResponse[],
  options: RunOptions,
): MeasurementSummary {
  const stratifyBySteering =
    options.steeringDraws === 'stratified' && samples.some((s) => s.steeringCategory !== null);
  const summary = summarizeMeasurement(dataset, samples, {
    seed: options.seed,
    stratifyBySteering,
  });
  const calibration = steeringCalibration(dataset, samples);
  return calibration ? { ...summary, steeringCalibration: calibration } : summary;
}

/** Averages the steering softmax per occupation and compares it with the target; null without steering. */
export function steeringCalibration(
  dataset: DatasetDefinition,
  samples: readonly SampledResponse[],
): SteeringCalibration | null {
  const k = dataset.categories.length;
  const sums = dataset.occupations.map(() => new Array<number>(k).fill(0));
  const counts = dataset.occupations.map(() => 0);
  for (const sample of samples) {
    if (!sample.steeringProbs) continue;
    sample.steeringProbs.forEach((p, i) => {
      sums[sample.occupationIndex][i] += p;
    });
    counts[sample.occupationIndex] += 1;
  }
  if (counts.every((c) => c === 0)) return null;
  const shares = sums.map((row, o) => row.map((sum) => (counts[o] ? sum / counts[o] : Number.NaN)));
  const maes = shares
    .map(
      (row, o) =>
        row.reduce((acc, share, i) => acc + Math.abs(share - dataset.occupations[o].target[i]), 0) /
        k,
    )
    .filter((mae) => Number.isFinite(mae));
  return { mae: maes.reduce((a, b) => a + b, 0) / maes.length, shares };
}

/**
 * Flags a trained model whose text degraded: more responses that name no category (the reader
 * leaves them out of MAE, so MAE alone can look better), or steering tokens the text ignores.
 */
export function qualityWarnings(
  before: MeasurementSummary | undefined,
  after: MeasurementSummary,
): string[] {
  const warnings: string[] = [];
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const unknownAfter = after.unknownShare ?? 0;
  const unknownBefore = before?.unknownShare ?? 0;
  if (unknownAfter > MAX_UNKNOWN_SHARE && unknownAfter > unknownBefore + MAX_UNKNOWN_SHARE) {
    warnings.push(
      `${pct(unknownAfter)} of the answers after training name no category (before: ${pct(unknownBefore)}); MAE leaves them out, so read the example responses before trusting it. Train on more rounds or with a lower learning rate.`,
    );
  }
  const k = after.categories.length;
  if (after.agreement !== null && after.agreement < MIN_AGREEMENT) {
    warnings.push(
      `Steering token/text agreement after training is ${pct(after.agreement)} (chance is ${pct(1 / k)}); the text does not follow the steering token. Train stage 1 longer.`,
    );
  }
  if (after.measuredOccupationCount < after.occupations.length) {
    warnings.push(
      `${after.occupations.length - after.measuredOccupationCount} occupations had no answer naming a category after training.`,
    );
  }
  return warnings;
}

/** Thresholds of `qualityWarnings`: the limits the starter model's runs are held to. */
const MAX_UNKNOWN_SHARE = 0.05;
const MIN_AGREEMENT = 0.9;

/** Picks the first three responses of each occupation for the report. */
function pickExamples(
  dataset: DatasetDefinition,
  samples: SampledResponse[],
  phase: 'before' | 'after',
): ExampleResponse[] {
  const perOccupation = new Map<number, number>();
  const picked: ExampleResponse[] = [];
  for (const s of samples) {
    const n = perOccupation.get(s.occupationIndex) ?? 0;
    if (n >= 3) continue;
    perOccupation.set(s.occupationIndex, n + 1);
    picked.push({
      phase,
      occupation: dataset.occupations[s.occupationIndex].occupation,
      prompt: s.prompt,
      text: s.text,
      steeringCategory: s.steeringCategory,
      textCategory: s.textCategory,
    });
  }
  return picked;
}

function emptyReport(
  options: RunOptions,
  dataset: DatasetDefinition,
  input: LoadedModel,
): RunReport {
  const c = input.model.config;
  const promptFormat = resolvePromptFormat(options.promptFormat, input.tokenizer);
  return {
    status: 'failed',
    createdAt: new Date().toISOString(),
    attuneVersion: ATTUNE_VERSION,
    commandLine: options.commandLine,
    model: {
      path: path.resolve(input.dir),
      sha256: input.weightsSha256,
      parameterCount: countParameters(input.model.params),
      config: { ...c },
    },
    dataset: {
      id: dataset.id,
      title: dataset.title,
      categories: dataset.categories,
      target: dataset.target,
    },
    backend: tf.getBackend(),
    settings: {
      rounds: options.rounds,
      seed: options.seed,
      temperature: options.sampling.temperature,
      topP: options.sampling.topP,
      maxNewTokens: options.sampling.maxNewTokens,
      steeringDraws: options.steeringDraws,
      promptFormat,
      chatTemplate: promptFormat === 'chat' ? input.tokenizer.options.chatTemplate : undefined,
      training: null,
    },
    trainingHistory: [],
    examples: [],
    timingsMs: {},
  };
}

/**
 * Returns the steps of the interrupted run up to its newest checkpoint, from the report it
 * wrote, so the resumed report shows the whole training history.
 */
async function historyBeforeResume(outDir: string): Promise<RunReport['trainingHistory']> {
  const latest = await readLatestCheckpoint(outDir);
  const text = await fs.readFile(path.join(outDir, 'report.json'), 'utf8').catch(() => null);
  if (!latest || text === null) return [];
  let rows: RunReport['trainingHistory'];
  try {
    rows = (JSON.parse(text) as RunReport).trainingHistory ?? [];
  } catch {
    return [];
  }
  return rows.filter((row) =>
    latest.stage === 'align'
      ? row.stage === 'sft' || row.step <= latest.step
      : row.stage === 'sft' && row.step <= latest.step,
  );
}

async function sha256OfFile(file: string): Promise<string> {
  return createHash('sha256')
    .update(await fs.readFile(file))
    .digest('hex');
}

async function finish(
  options: RunOptions,
  report: RunReport,
  modelDir: string | null,
): Promise<RunResult> {
  report.createdAt = new Date().toISOString();
  const { jsonPath, htmlPath } = await writeReport(options.outDir, report);
  return { report, jsonPath, htmlPath, modelDir };
}

export { DEFAULT_SAMPLING };
