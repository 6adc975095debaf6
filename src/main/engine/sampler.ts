/**
 * Batched sampling with a KV cache: temperature, top-p, max new tokens, stop on
 * end-of-sequence, and for attribute generation a steering token drawn first from the softmax
 * over the K steering logits.
 *
 * Shapes: B batch, V vocabulary, K steering categories.
 */
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import { CancelledError, UserError } from '../../shared/errors';
import { KVCache, type LlamaModel } from './model';

export interface SamplingOptions {
  /** Softmax temperature for text tokens; 0 picks the most likely token (greedy). Range >= 0. */
  temperature: number;
  /** Nucleus sampling: keep the smallest set of tokens whose probability reaches topP. Range (0, 1]. */
  topP: number;
  /** Maximum tokens generated after the prompt (steering token included). */
  maxNewTokens: number;
  /** Seeds one random stream per request, so results do not depend on batch size. */
  seed: number;
  /** Sequences decoded together. */
  batchSize: number;
}

export const DEFAULT_SAMPLING: SamplingOptions = {
  temperature: 1,
  topP: 1,
  maxNewTokens: 48,
  seed: 0,
  batchSize: 64,
};

export interface GenerationResult {
  /** Generated ids after the prompt, steering token included, end-of-sequence excluded. */
  tokens: number[];
  /** Index into the steering ids of the sampled steering token, or null without steering. */
  steeringCategory: number | null;
  /** Probability of each steering category at the first response position (softmax over K). */
  steeringProbs: number[] | null;
  finished: boolean;
}

export interface GenerateContext {
  /** Token ids of the steering categories; when set, the first response token is one of them. */
  steeringIds?: number[];
  /**
   * One number in [0, 1) per prompt that replaces the random draw of the steering token, for
   * stratified measurement. The text stream still consumes its draw, so text sampling is the same.
   */
  steeringUniforms?: readonly number[];
  eosId: number;
  /**
   * Ids at or above this are never sampled: embedding rows past the tokenizer's vocabulary, which
   * padded checkpoints carry, have no text. Defaults to the model's vocabulary size.
   */
  vocabLimit?: number;
  /** Token id used to left-pad prompts; never attended to. */
  padId: number;
  signal?: AbortSignal;
  /** Called after each batch with the number of requests finished so far. */
  onProgress?: (done: number, total: number) => void;
}

export function validateSampling(options: SamplingOptions): void {
  const { temperature, topP, maxNewTokens, batchSize } = options;
  if (!(temperature >= 0)) throw new UserError(`temperature must be >= 0, got ${temperature}.`);
  if (!(topP > 0 && topP <= 1)) throw new UserError(`top-p must be in (0, 1], got ${topP}.`);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
    throw new UserError(`max new tokens must be a positive integer, got ${maxNewTokens}.`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new UserError(`batch size must be a positive integer, got ${batchSize}.`);
  }
}

/** Generates one continuation per prompt, in batches. */
export async function generate(
  model: LlamaModel,
  prompts: number[][],
  options: SamplingOptions,
  context: GenerateContext,
): Promise<GenerationResult[]> {
  validateSampling(options);
  // A loop, not Math.max(...lengths): spreading 100k+ arguments overflows the call stack.
  const longest = prompts.reduce((max, p) => Math.max(max, p.length), 0);
  if (longest + options.maxNewTokens > model.config.maxPositions) {
    throw new UserError(
      `A prompt of ${longest} tokens plus ${options.maxNewTokens} new tokens exceeds the model's ${model.config.maxPositions} positions; set max new tokens to at most ${Math.max(0, model.config.maxPositions - longest)}.`,
    );
  }
  const uniforms = context.steeringUniforms;
  if (uniforms && uniforms.length !== prompts.length) {
    throw new UserError(
      `Got ${uniforms.length} steering draws for ${prompts.length} prompts; give one per prompt.`,
    );
  }
  const results: GenerationResult[] = [];
  for (let start = 0; start < prompts.length; start += options.batchSize) {
    const batch = prompts.slice(start, start + options.batchSize);
    const rngs = batch.map((_, i) => seedrandom(`${options.seed}:${start + i}`));
    const draws = uniforms?.slice(start, start + options.batchSize);
    results.push(...(await generateBatch(model, batch, rngs, draws, options, context)));
    context.onProgress?.(results.length, prompts.length);
  }
  return results;
}

async function generateBatch(
  model: LlamaModel,
  prompts: number[][],
  rngs: seedrandom.PRNG[],
  draws: readonly number[] | undefined,
  options: SamplingOptions,
  context: GenerateContext,
): Promise<GenerationResult[]> {
  const batch = prompts.length;
  const results: GenerationResult[] = prompts.map(() => ({
    tokens: [],
    steeringCategory: null,
    steeringProbs: null,
    finished: false,
  }));
  const maxPrompt = Math.max(...prompts.map((p) => p.length));
  const limit = Math.min(context.vocabLimit ?? model.config.vocabSize, model.config.vocabSize);
  const cache = new KVCache(model.config.numLayers, batch);
  const positionOf = prompts.map((p) => p.length);
  try {
    let logits = prefill(model, prompts, maxPrompt, context.padId, cache); // [B, V]
    for (let step = 0; step < options.maxNewTokens; step++) {
      if (context.signal?.aborted) throw new CancelledError('Sampling cancelled.');
      const next = new Int32Array(batch);
      for (let b = 0; b < batch; b++) {
        const start = b * model.config.vocabSize;
        const row = logits.subarray(start, start + limit);
        const result = results[b];
        if (result.finished) {
          next[b] = context.eosId;
          continue;
        }
        const token =
          step === 0 && context.steeringIds
            ? pickSteering(row, context.steeringIds, rngs[b], draws?.[b], result)
            : sampleToken(row, options, rngs[b]);
        next[b] = token;
        if (token === context.eosId) result.finished = true;
        else result.tokens.push(token);
      }
      if (results.every((r) => r.finished) || step === options.maxNewTokens - 1) break;
      logits = decodeStep(model, next, positionOf, cache);
      for (let b = 0; b < batch; b++) positionOf[b] += 1;
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    cache.dispose();
  }
  return results;
}

function prefill(
  model: LlamaModel,
  prompts: number[][],
  width: number,
  padId: number,
  cache: KVCache,
): Float32Array {
  const batch = prompts.length;
  const ids = new Int32Array(batch * width).fill(padId);
  const positions = new Int32Array(batch * width);
  const tokenValid = new Uint8Array(batch * width);
  prompts.forEach((prompt, b) => {
    const offset = width - prompt.length;
    prompt.forEach((id, t) => {
      ids[b * width + offset + t] = id;
      positions[b * width + offset + t] = t;
      tokenValid[b * width + offset + t] = 1;
    });
  });
  return tf.tidy(() => {
    const input = tf.tensor2d(ids, [batch, width], 'int32');
    const logits = model.forward(input, { cache, positions, tokenValid, lastOnly: true }); // [B, 1, V]
    return logits.dataSync() as Float32Array;
  });
}

function decodeStep(
  model: LlamaModel,
  next: Int32Array,
  positionOf: number[],
  cache: KVCache,
): Float32Array {
  return tf.tidy(() => {
    const input = tf.tensor2d(next, [next.length, 1], 'int32');
    const positions = Int32Array.from(positionOf);
    return model.forward(input, { cache, positions }).dataSync() as Float32Array; // [B, 1, V]
  });
}

function pickSteering(
  row: Float32Array,
  steeringIds: number[],
  rng: seedrandom.PRNG,
  draw: number | undefined,
  result: GenerationResult,
): number {
  const probs = softmax(steeringIds.map((id) => row[id]));
  result.steeringProbs = probs;
  const own = rng();
  const category = drawIndex(probs, draw ?? own);
  result.steeringCategory = category;
  return steeringIds[category];
}

/** Draws a token id from logits with temperature and top-p; temperature 0 is argmax. */
export function sampleToken(
  row: Float32Array,
  options: SamplingOptions,
  rng: () => number,
): number {
  if (options.temperature === 0) return argmax(row);
  const scaled = Array.from(row, (x) => x / options.temperature);
  const probs = softmax(scaled);
  if (options.topP >= 1) return drawIndex(probs, rng());
  const order = probs.map((_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
  const kept: number[] = [];
  let mass = 0;
  for (const index of order) {
    kept.push(index);
    mass += probs[index];
    if (mass >= options.topP) break;
  }
  const keptProbs = kept.map((i) => probs[i] / mass);
  return kept[drawIndex(keptProbs, rng())];
}

export function softmax(values: ArrayLike<number>): number[] {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < values.length; i++) max = Math.max(max, values[i]);
  const exps = Array.from(values, (v) => Math.exp(v - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / total);
}

function drawIndex(probs: number[], u: number): number {
  let cumulative = 0;
  for (let i = 0; i < probs.length; i++) {
    cumulative += probs[i];
    if (u < cumulative) return i;
  }
  return probs.length - 1;
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}
