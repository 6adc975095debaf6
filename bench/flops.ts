/**
 * Model FLOP counts per token and model FLOP utilization (MFU). A multiply-accumulate is 2 FLOPs,
 * so a forward pass costs 2 * N FLOPs per token for N counted weights, and the backward pass
 * (gradients for inputs and weights) twice that: 6 * N per token for forward + backward.
 * Attention adds the score product q.k and the context product weights.v, each 2 * T * d FLOPs
 * per token and layer forward. That makes 4 * L * T * d forward and 12 * L * T * d forward +
 * backward, counting every key position of a length-T sequence (no causal halving).
 */
import { median } from 'simple-statistics';
import { type ModelConfig, parameterShapes } from '../src/main/engine/model';

/** Parameters whose matmuls the FLOP count covers. */
export interface CountedParameters {
  /** q, k, v, o, gate, up and down projection weights of every layer. */
  blockMatmul: number;
  /** Output head d * V, counted once whether or not it is tied to the embedding. */
  head: number;
  /** blockMatmul + head: the N of 6 * N. */
  total: number;
}

/**
 * Counts the parameters that take part in a matmul per token: the seven projection weights of
 * each layer and the output head. The embedding lookup, RMSNorm weights and q/k/v biases are
 * left out because the model math does no multiply-accumulate over them per token.
 */
export function countedParameters(config: ModelConfig): CountedParameters {
  let blockMatmul = 0;
  for (const [name, shape] of parameterShapes(config)) {
    if (/^model\.layers\.\d+\..*_proj\.weight$/.test(name)) {
      blockMatmul += shape.reduce((product, size) => product * size, 1);
    }
  }
  const head = config.hiddenSize * config.vocabSize;
  return { blockMatmul, head, total: blockMatmul + head };
}

/** Attention FLOPs per token of one forward pass: 4 * L * T * d, where d = heads * head size. */
export function attentionForwardFlops(config: ModelConfig, contextLength: number): number {
  return 4 * config.numLayers * contextLength * config.numHeads * config.headDim;
}

/** Useful FLOPs per training token of one step, with and without the attention term. */
export interface StepFlops {
  /** Weight matmuls only: 6 * N for stage 1, 6 * N + 3 * 2 * N for stage 2 with its extra forwards. */
  weights: number;
  /** `weights` plus 3 attention-forward terms per fwd+bwd and 1 per extra forward. */
  withAttention: number;
}

/**
 * FLOPs per training token for `forwardBackward` passes with gradients and `forwardOnly`
 * passes without, over sequences of `contextLength` tokens on average.
 */
export function stepFlopsPerToken(
  config: ModelConfig,
  passes: { forwardBackward: number; forwardOnly: number },
  contextLength: number,
): StepFlops {
  const n = countedParameters(config).total;
  const weights = passes.forwardBackward * 6 * n + passes.forwardOnly * 2 * n;
  const attention = attentionForwardFlops(config, contextLength);
  const attentionTotal = (passes.forwardBackward * 3 + passes.forwardOnly) * attention;
  return { weights, withAttention: weights + attentionTotal };
}

/** Achieved model FLOP/s over the measured matmul FLOP/s, as a fraction (0.25 is 25 %). */
export function modelFlopUtilization(
  flopsPerToken: number,
  tokensPerSecond: number,
  matmulFlopsPerSecond: number,
): number {
  if (!(matmulFlopsPerSecond > 0)) {
    throw new RangeError(`matmul FLOP/s must be > 0, got ${matmulFlopsPerSecond}.`);
  }
  return (flopsPerToken * tokensPerSecond) / matmulFlopsPerSecond;
}

/** One training step with the matmul rate measured right after it. */
export interface PairedStep {
  tokens: number;
  seconds: number;
  matmulFlopsPerSecond: number;
}

/**
 * MFU of each step against the matmul rate measured right after it, and their median. Pairing
 * each step with its own denominator cancels most of the slowdown that other processes on a
 * shared machine cause to both.
 */
export function pairedUtilization(
  flopsPerToken: number,
  steps: readonly PairedStep[],
): { median: number; perStep: number[] } {
  if (steps.length === 0) throw new RangeError('pairedUtilization needs at least one step.');
  const perStep = steps.map((step) =>
    modelFlopUtilization(flopsPerToken, step.tokens / step.seconds, step.matmulFlopsPerSecond),
  );
  return { median: median(perStep), perStep };
}
