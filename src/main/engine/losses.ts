/**
 * Stage-2 losses: steering-token calibration (KL), KTO, and the sum of the two.
 *
 * Shape letters: B batch size, V vocabulary size, K steering tokens (one per category).
 * Ownership: every function runs its tensor work in `tf.tidy`. The caller keeps ownership of
 * the tensors it passes in and owns every tensor returned.
 */
import * as tf from '@tensorflow/tfjs';
import { BugError, UserError } from '../../shared/errors';

/** KTO settings. */
export interface KtoOptions {
  /** Scale of the reward inside the sigmoid, > 0. */
  beta: number;
  /** lambda_D, the weight of each desirable example's loss, > 0. */
  desirableWeight: number;
  /** lambda_U, the weight of each undesirable example's loss, > 0. */
  undesirableWeight: number;
}

export const KTO_DEFAULTS: Readonly<KtoOptions> = {
  beta: 0.1,
  desirableWeight: 1,
  undesirableWeight: 1,
};

/** Bounds of lambda_D*n_D : lambda_U*n_U, the range that TRL's KTO documentation recommends. */
const MIN_WEIGHTED_CLASS_RATIO = 1;
const MAX_WEIGHTED_CLASS_RATIO = 4 / 3;

// ---------------------------------------------------------------------------------------------
// Steering-token calibration
// ---------------------------------------------------------------------------------------------

export interface SteeringKlInputs {
  /** Logits at the last prompt position, the one that predicts the first response token. [B, V] */
  lastLogits: tf.Tensor2D;
  /** Vocabulary ids of the K steering tokens, in category order. */
  steeringIds: readonly number[];
  /** Target distribution p* over the K categories for each example's occupation. [B, K] */
  targets: tf.Tensor2D;
  /** 1 for a desirable example, 0 for an undesirable one. [B] */
  desirableMask: tf.Tensor1D;
}

export interface SteeringKlResult {
  /** Mean of `perExample` over the desirable examples, or 0 when the batch has none. [] */
  loss: tf.Scalar;
  /** KL(p* || q) of every example, desirable or not. [B] */
  perExample: tf.Tensor1D;
}

/**
 * Computes the steering-token calibration loss L = sum_k p*_k (log p*_k - log q_k).
 *
 * `log q` is the log-softmax over the whole vocabulary, read at the K steering columns without
 * renormalising over K, so the loss also pushes first-token mass onto the steering tokens.
 * A target entry of 0 contributes 0 (0 * log 0 = 0). Caller owns both returned tensors.
 *
 * @example
 * const { loss, perExample } = steeringKlLoss({
 *   lastLogits, steeringIds: [15, 16], targets, desirableMask,
 * });
 */
export function steeringKlLoss(inputs: SteeringKlInputs): SteeringKlResult {
  validateSteeringKlInputs(inputs);
  const { lastLogits, steeringIds, targets, desirableMask } = inputs;
  return tf.tidy(() => {
    const logQ = selectColumns(tf.logSoftmax(lastLogits), steeringIds); // [B, K]
    const positive = tf.greater(targets, 0); // [B, K]
    // Replacing p* = 0 by 1 before the log makes log p* = 0 there, so 0 * log 0 gives 0.
    const logTarget = tf.log(tf.where(positive, targets, tf.onesLike(targets))); // [B, K]
    const perExample = tf.sum(tf.mul(targets, tf.sub(logTarget, logQ)), 1); // [B]

    const isDesirable = tf.greater(desirableMask, 0); // [B]
    const desirableSum = tf.sum(tf.where(isDesirable, perExample, tf.zerosLike(perExample)));
    const desirableCount = tf.sum(tf.cast(isDesirable, 'float32'));
    const loss = tf.div(desirableSum, tf.maximum(desirableCount, 1)) as tf.Scalar;
    return { loss, perExample: perExample as tf.Tensor1D };
  });
}

/**
 * Returns `matrix[:, ids]` as [B, K]. tf.gather's gradient needs the UnsortedSegmentSum kernel,
 * which the wasm backend lacks, so this slices one column per id (slice's gradient is a pad).
 */
function selectColumns(matrix: tf.Tensor2D, ids: readonly number[]): tf.Tensor2D {
  const batchSize = matrix.shape[0];
  const columns = ids.map((id) => tf.slice(matrix, [0, id], [batchSize, 1])); // K x [B, 1]
  return tf.concat(columns, 1); // [B, K]
}

function validateSteeringKlInputs({
  lastLogits,
  steeringIds,
  targets,
  desirableMask,
}: SteeringKlInputs): void {
  const where = 'steeringKlLoss';
  requireRank(where, 'lastLogits', lastLogits, 2, '[B, V]');
  requireRank(where, 'targets', targets, 2, '[B, K]');
  requireRank(where, 'desirableMask', desirableMask, 1, '[B]');
  const [batchSize, vocabSize] = lastLogits.shape;
  if (steeringIds.length === 0) {
    throw new UserError(`${where}: steeringIds is empty; pass one token id per category.`);
  }
  const seen = new Set<number>();
  for (const id of steeringIds) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new UserError(
        `${where}: steering token id ${id} is outside the vocabulary [0, ${vocabSize}); ` +
          'check that the steering tokens exist in the tokenizer of this model.',
      );
    }
    if (seen.has(id)) {
      throw new UserError(
        `${where}: steering token id ${id} appears twice in [${steeringIds.join(', ')}]; ` +
          'each category needs its own token.',
      );
    }
    seen.add(id);
  }
  requireShape(where, 'targets', targets, [batchSize, steeringIds.length]);
  requireShape(where, 'desirableMask', desirableMask, [batchSize]);
}

// ---------------------------------------------------------------------------------------------
// KTO
// ---------------------------------------------------------------------------------------------

/** Sequence log-probs: each is log pi(response | prompt) summed over the response tokens. */
export interface KtoInputs {
  /** Policy log-prob of each example's own response, steering token included. [B] */
  policySeqLogProb: tf.Tensor1D;
  /** Frozen reference model's log-prob of the same responses. [B] */
  refSeqLogProb: tf.Tensor1D;
  /** Policy log-prob of example i's prompt with the response of `mismatchedPartner(B)[i]`. [B] */
  policyMismatchedSeqLogProb: tf.Tensor1D;
  /** Reference log-prob of the same mismatched pairs. [B] */
  refMismatchedSeqLogProb: tf.Tensor1D;
  /** 1 for a desirable example, 0 for an undesirable one. [B] */
  desirableMask: tf.Tensor1D;
}

export interface KtoResult {
  /** Weighted KTO loss of each example. [B] */
  perExampleLosses: tf.Tensor1D;
  /** Implied reward r = policySeqLogProb - refSeqLogProb. [B] */
  rewards: tf.Tensor1D;
  /** Reference point: mean log-ratio of the mismatched pairs, clamped at 0, no gradient. [] */
  z0: tf.Scalar;
  /** Mean of `perExampleLosses` over the batch, the term the stage-2 objective uses. [] */
  meanLoss: tf.Scalar;
}

/**
 * Computes the Kahneman-Tversky Optimization loss of Ethayarajh et al. (2024), "KTO: Model
 * Alignment as Prospect Theoretic Optimization", for a batch of unpaired examples.
 *
 * z0 is a constant for the gradient: the gradient with respect to the mismatched log-probs is 0.
 * Throws a UserError for a batch of fewer than two examples. Caller owns all returned tensors.
 *
 * @example
 * const kto = ktoLoss({ policySeqLogProb, refSeqLogProb, policyMismatchedSeqLogProb,
 *   refMismatchedSeqLogProb, desirableMask }, { beta: 0.1 });
 */
export function ktoLoss(inputs: KtoInputs, options: Partial<KtoOptions> = {}): KtoResult {
  const { beta, desirableWeight, undesirableWeight } = resolveKtoOptions(options);
  validateKtoInputs(inputs);
  const { policySeqLogProb, refSeqLogProb, desirableMask } = inputs;
  return tf.tidy(() => {
    // Reference point z0 = max(0, mean_i [log pi(y'_i | x_i) - log pi_ref(y'_i | x_i)]), a batch
    // estimate of KL(pi || pi_ref) from mismatched pairs, held constant for the gradient.
    const mismatchedLogRatio = tf.sub(
      inputs.policyMismatchedSeqLogProb,
      inputs.refMismatchedSeqLogProb,
    ); // [B]
    const z0 = tf.maximum(stopGradient(tf.mean(mismatchedLogRatio)), 0) as tf.Scalar; // []

    // Implied reward r(x, y) = log pi(y | x) - log pi_ref(y | x).
    const rewards = tf.sub(policySeqLogProb, refSeqLogProb) as tf.Tensor1D; // [B]

    // Desirable: lambda_D * (1 - sigmoid(beta * (r - z0))).
    const desirableLosses = tf.mul(
      desirableWeight,
      tf.sub(1, tf.sigmoid(tf.mul(beta, tf.sub(rewards, z0)))),
    ); // [B]

    // Undesirable: lambda_U * (1 - sigmoid(beta * (z0 - r))).
    const undesirableLosses = tf.mul(
      undesirableWeight,
      tf.sub(1, tf.sigmoid(tf.mul(beta, tf.sub(z0, rewards)))),
    ); // [B]

    const isDesirable = tf.greater(desirableMask, 0); // [B]
    const perExampleLosses = tf.where(
      isDesirable,
      desirableLosses,
      undesirableLosses,
    ) as tf.Tensor1D; // [B]
    const meanLoss = tf.mean(perExampleLosses) as tf.Scalar;
    return { perExampleLosses, rewards, z0, meanLoss };
  });
}

/**
 * Passes `x` through unchanged and sends a zero gradient back. TensorFlow.js 4.22 has no
 * stop-gradient op, so this builds one from tf.customGrad.
 */
const stopGradient = tf.customGrad((x, _save) => {
  const input = x as tf.Tensor;
  return { value: tf.clone(input), gradFunc: () => tf.zerosLike(input) };
}) as (x: tf.Tensor) => tf.Tensor;

function resolveKtoOptions(options: Partial<KtoOptions>): KtoOptions {
  rejectUnknownKeys('ktoLoss', options, Object.keys(KTO_DEFAULTS));
  const resolved = { ...KTO_DEFAULTS, ...options };
  for (const key of Object.keys(KTO_DEFAULTS) as (keyof KtoOptions)[]) {
    requirePositive('ktoLoss', key, resolved[key]);
  }
  return resolved;
}

function requirePositive(where: string, name: string, value: number): void {
  if (!Number.isFinite(value) || value <= 0) {
    throw new UserError(`${where}: ${name} must be a positive number; received ${value}.`);
  }
}

function validateKtoInputs(inputs: KtoInputs): void {
  const where = 'ktoLoss';
  requireRank(where, 'policySeqLogProb', inputs.policySeqLogProb, 1, '[B]');
  const batchSize = inputs.policySeqLogProb.shape[0];
  requireKtoBatchSize(batchSize);
  for (const name of [
    'refSeqLogProb',
    'policyMismatchedSeqLogProb',
    'refMismatchedSeqLogProb',
    'desirableMask',
  ] as const) {
    requireShape(where, name, inputs[name], [batchSize]);
  }
}

function requireKtoBatchSize(batchSize: number): void {
  if (!Number.isInteger(batchSize) || batchSize < 2) {
    throw new UserError(
      `KTO needs at least two examples per batch to estimate z0 from mismatched pairs; ` +
        `received a batch of ${batchSize}. Set the training batch size to 2 or more.`,
    );
  }
}

/**
 * Returns, for each example i, the example whose response forms its mismatched pair:
 * i -> (i + 1) mod B. No example is paired with itself for any B >= 2, odd or even.
 * Throws a UserError when B < 2.
 *
 * @example
 * mismatchedPartner(3); // [1, 2, 0]
 */
export function mismatchedPartner(batchSize: number): number[] {
  requireKtoBatchSize(batchSize);
  return Array.from({ length: batchSize }, (_, i) => (i + 1) % batchSize);
}

/** Per-class KTO weights lambda_D and lambda_U, shaped to spread into the `ktoLoss` options. */
export type ClassWeights = Pick<KtoOptions, 'desirableWeight' | 'undesirableWeight'>;

/**
 * Balances lambda_D and lambda_U so that lambda_D*n_D : lambda_U*n_U lies in [1:1, 4:3].
 *
 * Rule: keep the requested weights when the weighted ratio is already in range. Otherwise scale
 * down the weight of the heavier side until the ratio reaches the nearer bound: lambda_D down to
 * 4:3 when desirable examples weigh too much, lambda_U down to 1:1 when undesirable ones do.
 * Scaling down, never up, keeps each example's loss at most its requested weight. When either
 * count is 0 the ratio is undefined, and the requested weights come back unchanged. Only the two
 * weight fields of `requested` are read, so a whole loss config can be passed.
 *
 * @example
 * balancedClassWeights(30, 10); // { desirableWeight: 0.444..., undesirableWeight: 1 }
 */
export function balancedClassWeights(
  desirableCount: number,
  undesirableCount: number,
  requested: Partial<ClassWeights> = {},
): ClassWeights {
  const where = 'balancedClassWeights';
  const desirableWeight = requested.desirableWeight ?? KTO_DEFAULTS.desirableWeight;
  const undesirableWeight = requested.undesirableWeight ?? KTO_DEFAULTS.undesirableWeight;
  requirePositive(where, 'desirableWeight', desirableWeight);
  requirePositive(where, 'undesirableWeight', undesirableWeight);
  requireCount('desirableCount', desirableCount);
  requireCount('undesirableCount', undesirableCount);
  if (desirableCount === 0 || undesirableCount === 0) return { desirableWeight, undesirableWeight };

  const desirableMass = desirableWeight * desirableCount;
  const undesirableMass = undesirableWeight * undesirableCount;
  const ratio = desirableMass / undesirableMass;
  if (ratio > MAX_WEIGHTED_CLASS_RATIO) {
    const scaled = (MAX_WEIGHTED_CLASS_RATIO * undesirableMass) / desirableCount;
    return { desirableWeight: scaled, undesirableWeight };
  }
  if (ratio < MIN_WEIGHTED_CLASS_RATIO) {
    const scaled = (MIN_WEIGHTED_CLASS_RATIO * desirableMass) / undesirableCount;
    return { desirableWeight, undesirableWeight: scaled };
  }
  return { desirableWeight, undesirableWeight };
}

function requireCount(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) {
    throw new UserError(
      `balancedClassWeights: ${name} must be a whole number >= 0; received ${value}.`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Stage-2 objective
// ---------------------------------------------------------------------------------------------

/** 'kl+kto' is the full method; the other two are its ablations. */
export type StageTwoMode = 'kl+kto' | 'kl-only' | 'kto-only';

export const STAGE_TWO_MODES: readonly StageTwoMode[] = ['kl+kto', 'kl-only', 'kto-only'];

export interface StageTwoTerms {
  /** `steeringKlLoss(...).loss`, required unless mode is 'kto-only'. [] */
  kl?: tf.Scalar;
  /** `ktoLoss(...).meanLoss`, required unless mode is 'kl-only'. [] */
  kto?: tf.Scalar;
  mode: StageTwoMode;
  /** Weight of the KL term in 'kl+kto', >= 0 (1 is the equal weighting of the method). */
  klWeight: number;
}

/**
 * Combines the stage-2 terms: `kto + klWeight * kl` for 'kl+kto'. Each ablation returns its own
 * term unweighted, as the ablations of YanbeiJiang/Distribution-Debias (Ours/trainers.py) do.
 * Caller owns the returned scalar, a new tensor in every mode.
 *
 * @example
 * const total = combineStageTwoLoss({
 *   kl: klResult.loss, kto: ktoResult.meanLoss, mode: 'kl+kto', klWeight: 1,
 * });
 */
export function combineStageTwoLoss({ kl, kto, mode, klWeight }: StageTwoTerms): tf.Scalar {
  if (!STAGE_TWO_MODES.includes(mode)) {
    throw new UserError(
      `Stage-2 mode "${mode}" is not known; use one of ${STAGE_TWO_MODES.join(', ')}.`,
    );
  }
  if (!Number.isFinite(klWeight) || klWeight < 0) {
    throw new UserError(`Stage-2 klWeight must be a number >= 0; received ${klWeight}.`);
  }
  if (mode !== 'kto-only' && kl === undefined) {
    throw new BugError(`combineStageTwoLoss: mode '${mode}' needs the KL term, which is missing.`);
  }
  if (mode !== 'kl-only' && kto === undefined) {
    throw new BugError(`combineStageTwoLoss: mode '${mode}' needs the KTO term, which is missing.`);
  }
  return tf.tidy(() => {
    if (mode === 'kl-only') return tf.clone(kl as tf.Scalar);
    if (mode === 'kto-only') return tf.clone(kto as tf.Scalar);
    return tf.add(kto as tf.Scalar, tf.mul(klWeight, kl as tf.Scalar)) as tf.Scalar;
  });
}

// ---------------------------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------------------------

function requireRank(
  where: string,
  name: string,
  tensor: tf.Tensor,
  rank: number,
  layout: string,
): void {
  if (tensor.rank !== rank) {
    throw new BugError(
      `${where}: ${name} must be ${layout}; received shape [${tensor.shape.join(', ')}].`,
    );
  }
}

function requireShape(where: string, name: string, tensor: tf.Tensor, shape: number[]): void {
  const matches =
    tensor.shape.length === shape.length && tensor.shape.every((size, i) => size === shape[i]);
  if (!matches) {
    throw new BugError(
      `${where}: ${name} must have shape [${shape.join(', ')}]; ` +
        `received [${tensor.shape.join(', ')}].`,
    );
  }
}

/** Throws a UserError naming the first key of `options` outside `allowed`. */
function rejectUnknownKeys(where: string, options: object, allowed: string[]): void {
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new UserError(
        `${where}: unknown option "${key}"; the known options are ${allowed.join(', ')}.`,
      );
    }
  }
}
