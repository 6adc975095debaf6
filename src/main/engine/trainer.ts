/**
 * The training loop for both stages: stage 1 supervised fine-tuning on the responses, stage 2
 * steering-token KL plus KTO against a frozen copy of the stage-1 model.
 *
 * Each step: one batch, loss and gradients, clipping by global norm, AdamW at the scheduled
 * learning rate, a progress event, a checkpoint every `checkpointEvery` steps, and a check of
 * the abort signal. A cancelled run saves a checkpoint of the step it reached, then throws a
 * CancelledError.
 */
import * as tf from '@tensorflow/tfjs';
import { CancelledError, UserError } from '../../shared/errors';
import {
  epochBatches,
  type PackedBatch,
  packBatch,
  scoreBatch,
  type TrainingExample,
} from './batches';
import {
  balancedClassWeights,
  combineStageTwoLoss,
  ktoLoss,
  mismatchedPartner,
  type StageTwoMode,
  steeringKlLoss,
} from './losses';
import { LlamaModel } from './model';
import { AdamW, type AdamWState, clipByGlobalNorm } from './optimizer';
import { type LearningRateDecay, learningRateAt } from './schedule';

export type TrainingStage = 'sft' | 'align';

/** Settings of one stage. Units and ranges are given per field. */
export interface StageConfig {
  /** Passes over the examples; the step count is epochs * floor(examples / batchSize). >= 1. */
  epochs: number;
  /** Examples per step, >= 2 for stage 2 (KTO pairs each example with the next). */
  batchSize: number;
  /** Peak learning rate after warm-up. > 0. */
  learningRate: number;
  /** Steps of linear warm-up from 0. >= 0. */
  warmupSteps: number;
  decay: LearningRateDecay;
  /** Final learning rate as a fraction of the peak, for decaying schedules. [0, 1]. */
  minLearningRateRatio: number;
  /** AdamW decoupled weight decay. >= 0. */
  weightDecay: number;
  /** Maximum global gradient norm. > 0. */
  gradientClip: number;
  /** Steps between checkpoints; 0 saves only at the end and on cancel. */
  checkpointEvery: number;
  seed: number;
}

/** Stage-2 loss settings. */
export interface AlignmentLossConfig {
  mode: StageTwoMode;
  /** Weight of the KL term beside the mean KTO loss. >= 0. */
  klWeight: number;
  /** KTO beta. > 0. */
  beta: number;
  desirableWeight: number;
  undesirableWeight: number;
}

export const SFT_DEFAULTS: StageConfig = {
  epochs: 2,
  batchSize: 32,
  learningRate: 1e-3,
  warmupSteps: 10,
  decay: 'cosine',
  minLearningRateRatio: 0.1,
  weightDecay: 0.01,
  gradientClip: 1,
  checkpointEvery: 50,
  seed: 0,
};

export const ALIGN_DEFAULTS: StageConfig = {
  ...SFT_DEFAULTS,
  epochs: 2,
  learningRate: 5e-4,
};

export const ALIGN_LOSS_DEFAULTS: AlignmentLossConfig = {
  mode: 'kl+kto',
  klWeight: 1,
  beta: 0.1,
  desirableWeight: 1,
  undesirableWeight: 1,
};

/** One progress event per step, named like the metrics they carry. */
export interface TrainingStepEvent {
  type: 'train/step';
  stage: TrainingStage;
  step: number;
  totalSteps: number;
  loss: number;
  klLoss: number | null;
  ktoLoss: number | null;
  z0: number | null;
  learningRate: number;
  gradientNorm: number;
  /** Tokens of the step's batch that are not padding. */
  tokens: number;
  tokensPerSec: number;
  stepTimeMs: number;
}

/** Saved alongside the model in each checkpoint, enough to continue the same run. */
export interface TrainerState {
  stage: TrainingStage;
  step: number;
  totalSteps: number;
  optimizer: AdamWState;
}

export interface TrainingContext {
  padId: number;
  steeringIds: number[];
  onStep?: (event: TrainingStepEvent) => void;
  signal?: AbortSignal;
  /** Persists model and trainer state; called every `checkpointEvery` steps, at the end, and on cancel. */
  saveCheckpoint?: (state: TrainerState) => Promise<void>;
  /** Continue from this state (from a checkpoint whose weights are already in the model). */
  resume?: TrainerState;
}

export interface StageResult {
  steps: number;
  finalLoss: number;
  history: TrainingStepEvent[];
}

/** Tensors computed before the taped loss, without gradient; disposed after the step. */
type StepConstants = Record<string, tf.Tensor>;
type PrepareStep = (batch: PackedBatch, members: TrainingExample[]) => StepConstants;
type StepLoss = (
  batch: PackedBatch,
  members: TrainingExample[],
  constants: StepConstants,
) => StepOutput;

interface StepOutput {
  loss: tf.Scalar;
  kl?: tf.Scalar;
  kto?: tf.Scalar;
  z0?: tf.Scalar;
}

export function validateStageConfig(config: StageConfig, stage: TrainingStage): void {
  const check = (ok: boolean, field: string, expected: string, value: unknown) => {
    if (!ok) throw new UserError(`${stage} setting ${field} must be ${expected}; got ${value}.`);
  };
  check(
    Number.isInteger(config.epochs) && config.epochs >= 1,
    'epochs',
    'an integer >= 1',
    config.epochs,
  );
  const minBatch = stage === 'align' ? 2 : 1;
  check(
    Number.isInteger(config.batchSize) && config.batchSize >= minBatch,
    'batchSize',
    `an integer >= ${minBatch}${stage === 'align' ? ' (KTO estimates z0 from pairs within a batch)' : ''}`,
    config.batchSize,
  );
  check(config.learningRate > 0, 'learningRate', '> 0', config.learningRate);
  check(config.gradientClip > 0, 'gradientClip', '> 0', config.gradientClip);
  check(config.weightDecay >= 0, 'weightDecay', '>= 0', config.weightDecay);
  check(
    Number.isInteger(config.checkpointEvery) && config.checkpointEvery >= 0,
    'checkpointEvery',
    'an integer >= 0',
    config.checkpointEvery,
  );
}

/** Stage 1: next-token cross-entropy on the response tokens (steering token included). */
export async function trainSft(
  model: LlamaModel,
  examples: readonly TrainingExample[],
  config: StageConfig,
  context: TrainingContext,
): Promise<StageResult> {
  const desirable = examples.filter((e) => e.desirable);
  return runStage('sft', model, desirable, config, context, (batch) => {
    const scores = scoreBatch(model, batch);
    const loss = tf.neg(
      tf.div(tf.sum(scores.seqLogProb), tf.sum(scores.responseTokens)),
    ) as tf.Scalar;
    return { loss };
  });
}

/**
 * Stage 2: `mean(L_KTO) + klWeight * L_KL` (or one term alone for the ablations) against
 * `reference`, the frozen stage-1 model. Class weights are balanced over the whole example set.
 */
export async function trainAlignment(
  policy: LlamaModel,
  reference: LlamaModel,
  examples: readonly TrainingExample[],
  config: StageConfig,
  lossConfig: AlignmentLossConfig,
  context: TrainingContext,
): Promise<StageResult> {
  const desirableCount = examples.filter((e) => e.desirable).length;
  const weights = balancedClassWeights(
    desirableCount,
    examples.length - desirableCount,
    lossConfig,
  );
  const steeringIds = context.steeringIds;
  // The reference terms carry no gradient: they are computed before the taped loss and
  // disposed after the step. KL-only training needs neither them nor the reference model.
  const prepare = (batch: PackedBatch, members: TrainingExample[]): StepConstants =>
    lossConfig.mode === 'kl-only'
      ? {}
      : referenceTerms(policy, reference, batch, members, context.padId);
  return runStage(
    'align',
    policy,
    examples,
    config,
    context,
    (batch, _members, constants) => {
      const scores = scoreBatch(policy, batch);
      const desirableMask = tf.tensor1d(batch.desirable);
      const kl =
        lossConfig.mode === 'kto-only'
          ? undefined
          : steeringKlLoss({
              lastLogits: scores.lastLogits,
              steeringIds,
              targets: tf.tensor2d(batch.targets, [batch.batchSize, steeringIds.length]),
              desirableMask,
            }).loss;
      if (lossConfig.mode === 'kl-only') return { loss: kl as tf.Scalar, kl };
      const kto = ktoLoss(
        {
          policySeqLogProb: scores.seqLogProb,
          desirableMask,
          refSeqLogProb: constants.refSeqLogProb as tf.Tensor1D,
          policyMismatchedSeqLogProb: constants.policyMismatchedSeqLogProb as tf.Tensor1D,
          refMismatchedSeqLogProb: constants.refMismatchedSeqLogProb as tf.Tensor1D,
        },
        { beta: lossConfig.beta, ...weights },
      );
      const loss = combineStageTwoLoss({
        kl,
        kto: kto.meanLoss,
        mode: lossConfig.mode,
        klWeight: lossConfig.klWeight,
      });
      return { loss, kl, kto: kto.meanLoss, z0: kto.z0 };
    },
    prepare,
  );
}

/**
 * Computes the KTO inputs that carry no gradient: the reference log-probs of the batch, and policy and
 * reference log-probs of the mismatched pairs (prompt i with response i+1 mod B) behind z0.
 * The caller owns the returned tensors [B].
 */
function referenceTerms(
  policy: LlamaModel,
  reference: LlamaModel,
  batch: PackedBatch,
  members: TrainingExample[],
  padId: number,
): StepConstants {
  const mismatched = packBatch(members, padId, mismatchedPartner(batch.batchSize));
  return tf.tidy(() => ({
    refSeqLogProb: scoreBatch(reference, batch).seqLogProb,
    policyMismatchedSeqLogProb: scoreBatch(policy, mismatched).seqLogProb,
    refMismatchedSeqLogProb: scoreBatch(reference, mismatched).seqLogProb,
  }));
}

async function runStage(
  stage: TrainingStage,
  model: LlamaModel,
  examples: readonly TrainingExample[],
  config: StageConfig,
  context: TrainingContext,
  stepLoss: StepLoss,
  prepare?: PrepareStep,
): Promise<StageResult> {
  validateStageConfig(config, stage);
  const minimum = stage === 'align' ? 2 : 1;
  if (examples.length < minimum) {
    throw new UserError(
      `${stage}: ${examples.length} training examples is too few; at least ${minimum} are needed. Sample more rounds.`,
    );
  }
  const batchSize = Math.min(config.batchSize, examples.length);
  const batchesPerEpoch = Math.floor(examples.length / batchSize);
  const totalSteps = batchesPerEpoch * config.epochs;
  const resume = context.resume?.stage === stage ? context.resume : undefined;
  if (resume && resume.totalSteps !== totalSteps) {
    throw new UserError(
      `Cannot resume ${stage}: the checkpoint was made for ${resume.totalSteps} steps, the current settings give ${totalSteps}. Resume with the settings of the original run.`,
    );
  }

  const optimizer = new AdamW(model.params, { weightDecay: config.weightDecay });
  if (resume) optimizer.setState(resume.optimizer);
  const schedule = {
    peak: config.learningRate,
    warmupSteps: Math.min(config.warmupSteps, totalSteps),
    totalSteps,
    decay: config.decay,
    minRatio: config.minLearningRateRatio,
  };
  const history: TrainingStepEvent[] = [];
  const stateAt = (step: number): TrainerState => ({
    stage,
    step,
    totalSteps,
    optimizer: optimizer.getState(),
  });
  let step = resume?.step ?? 0;
  try {
    while (step < totalSteps) {
      const epoch = Math.floor(step / batchesPerEpoch);
      const indices = epochBatches(examples.length, batchSize, config.seed, epoch)[
        step % batchesPerEpoch
      ];
      if (context.signal?.aborted) {
        await context.saveCheckpoint?.(stateAt(step));
        throw new CancelledError(
          `Training cancelled at ${stage} step ${step} of ${totalSteps}; the checkpoint of that step is saved.`,
        );
      }
      const members = indices.map((i) => examples[i]);
      // Update i uses the rate after i + 1 scheduled steps, so warm-up never spends an update at 0.
      const learningRate = learningRateAt(Math.min(step + 1, totalSteps), schedule);
      const event = trainStep(
        stage,
        model,
        optimizer,
        members,
        learningRate,
        config,
        context,
        stepLoss,
        prepare,
      );
      step += 1;
      const full: TrainingStepEvent = { ...event, step, totalSteps };
      history.push(full);
      context.onStep?.(full);
      if (config.checkpointEvery > 0 && step % config.checkpointEvery === 0 && step < totalSteps) {
        await context.saveCheckpoint?.(stateAt(step));
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    await context.saveCheckpoint?.(stateAt(step));
  } finally {
    optimizer.dispose();
  }
  return { steps: totalSteps, finalLoss: history.at(-1)?.loss ?? Number.NaN, history };
}

function trainStep(
  stage: TrainingStage,
  model: LlamaModel,
  optimizer: AdamW,
  members: TrainingExample[],
  learningRate: number,
  config: StageConfig,
  context: TrainingContext,
  stepLoss: StepLoss,
  prepare?: PrepareStep,
): Omit<TrainingStepEvent, 'step' | 'totalSteps'> {
  const started = performance.now();
  const batch = packBatch(members, context.padId);
  const constants = prepare?.(batch, members) ?? {};
  const names = Object.keys(model.params);
  const variables = names.map((n) => model.params[n]);
  let metrics: tf.Scalar[] = [];
  let kinds: ('kl' | 'kto' | 'z0')[] = [];
  const { value, grads } = tf.variableGrads(() => {
    const out = stepLoss(batch, members, constants);
    kinds = (['kl', 'kto', 'z0'] as const).filter((k) => out[k] !== undefined);
    metrics = kinds.map((k) => tf.keep(out[k] as tf.Scalar));
    return out.loss;
  }, variables);
  const named: Record<string, tf.Tensor> = {};
  variables.forEach((v, i) => {
    named[names[i]] = grads[v.name];
  });
  tf.dispose(Object.values(constants));
  const clipped = clipByGlobalNorm(named, config.gradientClip);
  const gradientNorm = clipped.globalNorm.dataSync()[0];
  const loss = value.dataSync()[0];
  const disposeStep = () =>
    tf.dispose([
      value,
      clipped.globalNorm,
      ...Object.values(grads),
      ...Object.values(clipped.grads),
      ...metrics,
    ]);
  if (!Number.isFinite(loss) || !Number.isFinite(gradientNorm)) {
    disposeStep();
    throw new UserError(
      `${stage}: the loss or gradient became ${loss} / ${gradientNorm} at learning rate ${learningRate}; lower the learning rate.`,
    );
  }
  optimizer.step(clipped.grads, learningRate);
  const values = Object.fromEntries(kinds.map((k, i) => [k, metrics[i].dataSync()[0]]));
  disposeStep();
  const stepTimeMs = performance.now() - started;
  return {
    type: 'train/step',
    stage,
    loss,
    klLoss: values.kl ?? null,
    ktoLoss: values.kto ?? null,
    z0: values.z0 ?? null,
    learningRate,
    gradientNorm,
    tokens: batch.realTokens,
    tokensPerSec: (batch.realTokens / stepTimeMs) * 1000,
    stepTimeMs,
  };
}

/** Copies `model` into a frozen KTO reference: same weights, not trainable. The caller disposes it. */
export function frozenCopy(model: LlamaModel): LlamaModel {
  const params: Record<string, tf.Variable> = {};
  for (const [name, p] of Object.entries(model.params)) {
    const copy = p.clone();
    params[name] = tf.variable(copy, false);
    copy.dispose();
  }
  return new LlamaModel(model.config, params);
}
