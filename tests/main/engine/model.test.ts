import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initParams, KVCache, LlamaModel, type ModelConfig } from '../../../src/main/engine/model';
import { useEngineBackend } from '../../helpers/backend';

const tinyConfig = (overrides: Partial<ModelConfig> = {}): ModelConfig => ({
  architecture: 'llama',
  vocabSize: 23,
  hiddenSize: 16,
  intermediateSize: 24,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 4,
  ropeTheta: 10000,
  rmsNormEps: 1e-5,
  maxPositions: 64,
  tieWordEmbeddings: false,
  attentionBias: false,
  ...overrides,
});

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
}

beforeAll(async () => {
  await useEngineBackend();
});

describe('LlamaModel', () => {
  it('KV-cache decoding matches the full forward pass', () => {
    for (const overrides of [
      {},
      { architecture: 'qwen2' as const, attentionBias: true, tieWordEmbeddings: true },
    ]) {
      const config = tinyConfig(overrides);
      const model = new LlamaModel(config, initParams(config, 3));
      const ids = [
        [1, 5, 7, 2, 9, 4, 11, 3],
        [6, 2, 8, 8, 1, 0, 13, 20],
      ];
      const full = model.forward(tf.tensor2d(ids, undefined, 'int32'));
      const cache = new KVCache(config.numLayers, 2);
      const prefill = model.forward(
        tf.tensor2d(
          ids.map((r) => r.slice(0, 3)),
          undefined,
          'int32',
        ),
        { cache },
      );
      const steps = [prefill];
      for (let t = 3; t < 8; t++) {
        steps.push(
          model.forward(
            tf.tensor2d(
              ids.map((r) => [r[t]]),
              undefined,
              'int32',
            ),
            { cache },
          ),
        );
      }
      const incremental = tf.concat(steps, 1);
      expect(maxAbsDiff(full, incremental)).toBeLessThanOrEqual(1e-4);
      cache.dispose();
      model.dispose();
    }
  });

  it('left padding leaves each row equal to its unpadded run', () => {
    const config = tinyConfig();
    const model = new LlamaModel(config, initParams(config, 5));
    const short = [4, 9, 2];
    const long = [7, 1, 3, 12, 5];
    const pad = 0;
    const cache = new KVCache(config.numLayers, 2);
    const batch = tf.tensor2d([[pad, pad, ...short], long], undefined, 'int32');
    const tokenValid = Uint8Array.from([0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
    const positions = Int32Array.from([0, 0, 0, 1, 2, 0, 1, 2, 3, 4]);
    const batched = model.forward(batch, { cache, tokenValid, positions, lastOnly: true });
    const alone = model.forward(tf.tensor2d([short], undefined, 'int32'), { lastOnly: true });
    const row0 = tf.slice(batched, [0, 0, 0], [1, 1, -1]);
    expect(maxAbsDiff(row0, alone)).toBeLessThanOrEqual(1e-4);
    // One more decoding step keeps the rows independent.
    const next = model.forward(tf.tensor2d([[8], [8]], undefined, 'int32'), {
      cache,
      positions: Int32Array.from([3, 5]),
    });
    const aloneNext = model.forward(tf.tensor2d([[...short, 8]], undefined, 'int32'), {
      lastOnly: true,
    });
    expect(maxAbsDiff(tf.slice(next, [0, 0, 0], [1, 1, -1]), aloneNext)).toBeLessThanOrEqual(1e-4);
    cache.dispose();
    model.dispose();
  });

  it('analytic gradients match finite differences', () => {
    // Directional derivatives along a random unit direction per tensor: summing many entries
    // keeps float32 central differences accurate where single entries are dominated by rounding.
    for (const overrides of [
      {},
      { architecture: 'qwen2' as const, attentionBias: true, tieWordEmbeddings: true },
    ]) {
      const config = tinyConfig({ numLayers: 1, vocabSize: 11, ...overrides });
      const model = new LlamaModel(config, initParams(config, 9));
      for (const p of model.variables())
        p.assign(
          tf.tidy(() => tf.add(tf.mul(p, 5), tf.randomNormal(p.shape, 0, 0.05, 'float32', 4))),
        );
      const ids = tf.tensor2d(
        [
          [1, 4, 2, 7, 3],
          [5, 5, 0, 9, 1],
        ],
        undefined,
        'int32',
      );
      const targets = tf.oneHot(
        tf.tensor2d(
          [
            [4, 2, 7, 3, 9],
            [5, 0, 9, 1, 2],
          ],
          undefined,
          'int32',
        ),
        config.vocabSize,
      );
      const lossFn = () =>
        tf.tidy(() => {
          const logp = tf.logSoftmax(model.forward(ids));
          return tf.neg(tf.mean(tf.sum(tf.mul(logp, targets), -1))) as tf.Scalar;
        });
      const { grads } = tf.variableGrads(lossFn);
      for (const [name, variable] of Object.entries(model.params)) {
        const original = variable.clone();
        const direction = tf.tidy(() => {
          const u = tf.randomNormal(variable.shape, 0, 1, 'float32', name.length);
          return tf.div(u, tf.norm(u));
        });
        const analytic = tf.tidy(
          () => tf.sum(tf.mul(grads[variable.name], direction)).dataSync()[0],
        );
        const h = 1e-2;
        const probe = (delta: number) => {
          variable.assign(tf.tidy(() => tf.add(original, tf.mul(direction, delta))));
          const loss = lossFn();
          const value = loss.dataSync()[0];
          loss.dispose();
          return value;
        };
        const numeric = (probe(h) - probe(-h)) / (2 * h);
        variable.assign(original);
        tf.dispose([original, direction]);
        expect(
          Math.abs(numeric - analytic),
          `${config.architecture} ${name}: numeric ${numeric}, analytic ${analytic}`,
        ).toBeLessThanOrEqual(1e-3 + 2e-2 * Math.abs(numeric));
      }
      tf.dispose(Object.values(grads));
      model.dispose();
    }
  });
});
