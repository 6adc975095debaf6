/**
 * Training examples, padded batches and the sequence log-probabilities both stages train on.
 *
 * Shapes: B batch, T input positions (longest prompt + response in the batch, minus one),
 * V vocabulary, K steering categories.
 */
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import type { LlamaModel } from './model';

/** One training example: a prompt and a response behind a steering token. */
export interface TrainingExample {
  promptIds: number[];
  /** Steering token, text tokens and the end-of-sequence token. */
  responseIds: number[];
  /** Desirable when the text expresses the category of its steering token. */
  desirable: boolean;
  /** Target distribution over the K categories for the example's occupation. */
  target: number[];
  occupationIndex: number;
}

/** A batch as plain arrays; `toTensors` builds the tensors inside the caller's tidy. */
export interface PackedBatch {
  batchSize: number;
  time: number;
  inputIds: Int32Array; // [B, T]
  labels: Int32Array; // [B, T] token predicted at each position
  responseMask: Float32Array; // [B, T] 1 where the label is a response token
  lastPromptMask: Float32Array; // [B, T] 1 at the position that predicts the first response token
  targets: Float32Array; // [B, K]
  desirable: Float32Array; // [B]
  /** Tokens that are not padding, for throughput figures. */
  realTokens: number;
}

/** Packs prompts with responses (response i of `responseOf[i]`) into right-padded arrays. */
export function packBatch(
  examples: readonly TrainingExample[],
  padId: number,
  responseOf: readonly number[] = examples.map((_, i) => i),
): PackedBatch {
  const batchSize = examples.length;
  const lengths = examples.map(
    (e, i) => e.promptIds.length + examples[responseOf[i]].responseIds.length,
  );
  const time = Math.max(...lengths) - 1;
  const categories = examples[0].target.length;
  const packed: PackedBatch = {
    batchSize,
    time,
    inputIds: new Int32Array(batchSize * time).fill(padId),
    labels: new Int32Array(batchSize * time).fill(padId),
    responseMask: new Float32Array(batchSize * time),
    lastPromptMask: new Float32Array(batchSize * time),
    targets: new Float32Array(batchSize * categories),
    desirable: new Float32Array(batchSize),
    realTokens: 0,
  };
  examples.forEach((example, b) => {
    const sequence = [...example.promptIds, ...examples[responseOf[b]].responseIds];
    const promptLength = example.promptIds.length;
    for (let t = 0; t < sequence.length - 1; t++) {
      packed.inputIds[b * time + t] = sequence[t];
      packed.labels[b * time + t] = sequence[t + 1];
      if (t >= promptLength - 1) packed.responseMask[b * time + t] = 1;
    }
    packed.lastPromptMask[b * time + promptLength - 1] = 1;
    packed.targets.set(example.target, b * categories);
    packed.desirable[b] = example.desirable ? 1 : 0;
    packed.realTokens += sequence.length - 1;
  });
  return packed;
}

export interface SequenceScores {
  /** log pi(response | prompt), summed over response tokens. [B] */
  seqLogProb: tf.Tensor1D;
  /** Number of response tokens per example. [B] */
  responseTokens: tf.Tensor1D;
  /** Logits at the last prompt position. [B, V] */
  lastLogits: tf.Tensor2D;
}

/** Runs `model` over a packed batch. Call inside tf.tidy; the caller owns the results. */
export function scoreBatch(model: LlamaModel, batch: PackedBatch): SequenceScores {
  const { batchSize: b, time: t } = batch;
  const vocab = model.config.vocabSize;
  const logits = model.forward(tf.tensor2d(batch.inputIds, [b, t], 'int32')); // [B, T, V]
  const logProbs = tf.logSoftmax(logits); // [B, T, V]
  const labels = tf.oneHot(tf.tensor2d(batch.labels, [b, t], 'int32'), vocab); // [B, T, V]
  const tokenLogProbs = tf.sum(tf.mul(logProbs, labels), -1); // [B, T]
  const mask = tf.tensor2d(batch.responseMask, [b, t]);
  const lastMask = tf.tensor3d(batch.lastPromptMask, [b, t, 1]);
  return {
    seqLogProb: tf.sum(tf.mul(tokenLogProbs, mask), 1) as tf.Tensor1D,
    responseTokens: tf.sum(mask, 1) as tf.Tensor1D,
    lastLogits: tf.sum(tf.mul(logits, lastMask), 1) as tf.Tensor2D, // [B, V]
  };
}

/**
 * Batches of example indices for one epoch: a seeded shuffle, cut into full batches of
 * `batchSize` (a short remainder is dropped so KTO always has pairs).
 */
export function epochBatches(
  count: number,
  batchSize: number,
  seed: number,
  epoch: number,
): number[][] {
  const rng = seedrandom(`batches:${seed}:${epoch}`);
  const order = Array.from({ length: count }, (_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const batches: number[][] = [];
  for (let start = 0; start + batchSize <= count; start += batchSize) {
    batches.push(order.slice(start, start + batchSize));
  }
  return batches;
}
