/**
 * Peak matmul rate of the active backend: plain `tf.matMul` (no transpose flags) of two random
 * float32 matrices, timed from the call until `dataSync` returns the product.
 */
import * as tf from '@tensorflow/tfjs';
import { median } from 'simple-statistics';
import { invariant } from '../src/shared/errors';

export interface MatmulShape {
  m: number;
  k: number;
  n: number;
}

export interface MatmulResult extends MatmulShape {
  /** 2 * m * k * n. */
  flops: number;
  warmup: number;
  /** Wall time of each timed repetition, in milliseconds. */
  timesMs: number[];
  medianMs: number;
  /** flops / median time. */
  flopsPerSecond: number;
}

/** Times `[m, k] @ [k, n]`: `warmup` untimed runs, then `repetitions` timed ones. */
export function measureMatmul(
  shape: MatmulShape,
  warmup: number,
  repetitions: number,
): MatmulResult {
  const { m, k, n } = shape;
  const a = tf.randomNormal([m, k], 0, 1, 'float32', 1); // [M, K]
  const b = tf.randomNormal([k, n], 0, 1, 'float32', 2); // [K, N]
  const timesMs: number[] = [];
  try {
    for (let i = 0; i < warmup + repetitions; i++) {
      const started = performance.now();
      const product = tf.matMul(a, b); // [M, N]
      product.dataSync();
      const elapsed = performance.now() - started;
      product.dispose();
      if (i >= warmup) timesMs.push(elapsed);
    }
  } finally {
    tf.dispose([a, b]);
  }
  const flops = 2 * m * k * n;
  const medianMs = median(timesMs);
  return { m, k, n, flops, warmup, timesMs, medianMs, flopsPerSecond: flops / (medianMs / 1000) };
}

/** FLOP/s at the median of the pooled repetitions of several measurements of one shape. */
export function pooledFlopsPerSecond(results: readonly MatmulResult[]): number {
  const first = results[0];
  invariant(
    results.every((r) => r.m === first.m && r.k === first.k && r.n === first.n),
    () => 'pooled matmul measurements must share one shape',
  );
  return first.flops / (median(results.flatMap((r) => r.timesMs)) / 1000);
}
