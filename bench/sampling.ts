/**
 * Sampling throughput of `generate`: generated tokens (steering token included, end-of-sequence
 * excluded) per wall second, on dataset prompts.
 */
import { type DatasetDefinition, promptsFor } from '../src/main/engine/datasets';
import { generate, type SamplingOptions } from '../src/main/engine/sampler';
import type { BenchModel } from './fixture';

export interface SamplingResult {
  batchSize: number;
  prompts: number;
  maxNewTokens: number;
  /** Tokens in all results: steering token and text, end-of-sequence excluded. */
  generatedTokens: number;
  /** Results that ended with end-of-sequence before `maxNewTokens`. */
  finished: number;
  wallSeconds: number;
  tokensPerSecond: number;
  /** Wall time per batch of `batchSize` requests, in milliseconds. */
  msPerBatch: number;
  /**
   * msPerBatch over the mean tokens per request, prefill included: the per-token latency at
   * batch size 1, the time per decode step at larger batch sizes.
   */
  msPerDecodeStep: number;
}

/**
 * Encodes `count` dataset prompts, cycling through the occupations and advancing the round
 * (question template) after each full cycle, so a batch mixes occupations and prompt lengths.
 */
export function datasetPrompts(bench: BenchModel, dataset: DatasetDefinition, count: number) {
  const occupations = dataset.occupations.length;
  return Array.from({ length: count }, (_, i) =>
    bench.tokenizer.encode(promptsFor(dataset, i % occupations, Math.floor(i / occupations))),
  );
}

/** Runs `generate` once on `prompts` and times it. */
export async function measureSampling(
  bench: BenchModel,
  prompts: number[][],
  options: SamplingOptions,
  signal?: AbortSignal,
): Promise<SamplingResult> {
  const started = performance.now();
  const results = await generate(bench.model, prompts, options, {
    steeringIds: bench.steering.tokenIds,
    eosId: bench.tokenizer.eosId,
    padId: bench.tokenizer.eosId,
    signal,
  });
  const wallSeconds = (performance.now() - started) / 1000;
  const generatedTokens = results.reduce((sum, r) => sum + r.tokens.length, 0);
  const batches = Math.ceil(prompts.length / options.batchSize);
  const msPerBatch = (wallSeconds * 1000) / batches;
  return {
    batchSize: options.batchSize,
    prompts: prompts.length,
    maxNewTokens: options.maxNewTokens,
    generatedTokens,
    finished: results.filter((r) => r.finished).length,
    wallSeconds,
    tokensPerSecond: generatedTokens / wallSeconds,
    msPerBatch,
    msPerDecodeStep: msPerBatch / (generatedTokens / prompts.length),
  };
}
