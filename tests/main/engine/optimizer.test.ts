import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterEach, beforeAll, describe, expect, test } from 'vitest';
import { AdamW, clipByGlobalNorm, isNormOrBias } from '../../../src/main/engine/optimizer';
import { BugError, UserError } from '../../../src/shared/errors';

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

const created: { dispose(): void }[] = [];
afterEach(() => {
  for (const item of created.splice(0)) item.dispose();
});

function variable(values: number[], name: string): tf.Variable {
  const v = tf.tidy(() => tf.variable(tf.tensor1d(values), true, `${name}-${created.length}`));
  created.push(v);
  return v;
}

function optimizer(...args: ConstructorParameters<typeof AdamW>): AdamW {
  const adamW = new AdamW(...args);
  created.push(adamW);
  return adamW;
}

/** Deterministic pseudo-random gradients (a linear congruential generator), one per step. */
function gradientsAt(step: number, sizes: Record<string, number>): Record<string, tf.Tensor> {
  let seed = 12345 + step * 7919;
  const next = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648 - 0.5;
  };
  const grads: Record<string, tf.Tensor> = {};
  for (const [name, size] of Object.entries(sizes)) {
    grads[name] = tf.tensor1d(Array.from({ length: size }, next));
  }
  return grads;
}

describe('AdamW', () => {
  test('two steps equal hand-computed updates', () => {
    const [lr, wd, beta1, beta2, eps] = [0.01, 0.1, 0.9, 0.999, 1e-8];
    const theta0 = [1.0, -2.0, 0.5];
    const g1 = [0.1, -0.3, 0.02];
    const g2 = [-0.05, 0.2, 0.4];
    const weight = variable(theta0, 'w.weight');
    const adamW = optimizer({ w: weight }, { weightDecay: wd, beta1, beta2, epsilon: eps });

    // Step 1: m = (1 - beta1) g, v = (1 - beta2) g^2, bias corrections 1 - beta^1.
    const m1 = g1.map((g) => (1 - beta1) * g);
    const v1 = g1.map((g) => (1 - beta2) * g * g);
    const theta1 = theta0.map((theta, i) => {
      const mHat = m1[i] / (1 - beta1);
      const vHat = v1[i] / (1 - beta2);
      return theta * (1 - lr * wd) - (lr * mHat) / (Math.sqrt(vHat) + eps);
    });
    // Step 2: moments carry over, bias corrections 1 - beta^2.
    const m2 = g2.map((g, i) => beta1 * m1[i] + (1 - beta1) * g);
    const v2 = g2.map((g, i) => beta2 * v1[i] + (1 - beta2) * g * g);
    const theta2 = theta1.map((theta, i) => {
      const mHat = m2[i] / (1 - beta1 ** 2);
      const vHat = v2[i] / (1 - beta2 ** 2);
      return theta * (1 - lr * wd) - (lr * mHat) / (Math.sqrt(vHat) + eps);
    });

    adamW.step({ w: tf.tensor1d(g1) }, lr);
    const after1 = Array.from(weight.dataSync());
    adamW.step({ w: tf.tensor1d(g2) }, lr);
    const after2 = Array.from(weight.dataSync());
    for (let i = 0; i < 3; i++) {
      expect(after1[i], `step 1, entry ${i}`).toBeCloseTo(theta1[i], 6);
      expect(after2[i], `step 2, entry ${i}`).toBeCloseTo(theta2[i], 6);
    }
    expect(adamW.stepCount).toBe(2);
  });

  test('applies decay only where intended', () => {
    // A zero gradient leaves m = v = 0, so only the decay can move a parameter.
    const names = ['layers.0.attention.wq.weight', 'layers.0.attention_norm.weight', 'output.bias'];
    const variables = Object.fromEntries(names.map((name) => [name, variable([2, -4], name)]));
    const adamW = optimizer(variables, { weightDecay: 0.5 });
    const zeros = Object.fromEntries(names.map((name) => [name, tf.zeros([2])]));
    adamW.step(zeros, 0.1);
    expect(Array.from(variables[names[0]].dataSync())).toEqual([
      Math.fround(2 * 0.95),
      Math.fround(-4 * 0.95),
    ]);
    expect(Array.from(variables[names[1]].dataSync())).toEqual([2, -4]);
    expect(Array.from(variables[names[2]].dataSync())).toEqual([2, -4]);
  });

  test('honours a custom decay predicate', () => {
    const norm = variable([2, -4], 'final_norm.weight');
    const adamW = optimizer({ norm }, { weightDecay: 0.5, skipWeightDecay: () => false });
    adamW.step({ norm: tf.zeros([2]) }, 0.1);
    expect(norm.dataSync()[0]).toBeCloseTo(1.9, 6);
  });

  test('isNormOrBias matches norms and biases', () => {
    expect(isNormOrBias('layers.3.ffn_norm.weight')).toBe(true);
    expect(isNormOrBias('layers.3.attention.wq.bias')).toBe(true);
    expect(isNormOrBias('layers.3.attention.wq.weight')).toBe(false);
    expect(isNormOrBias('tok_embeddings.weight')).toBe(false);
  });

  test('state round trip continues identically', () => {
    const sizes = { a: 4, 'b.bias': 3 };
    const original = { a: variable([1, 2, 3, 4], 'a'), 'b.bias': variable([0.5, -0.5, 0], 'b') };
    const first = optimizer(original, { weightDecay: 0.05 });
    for (let step = 0; step < 3; step++) first.step(gradientsAt(step, sizes), 0.01);

    const state = first.getState();
    expect(state.step).toBe(3);
    expect(state.moments.a.shape).toEqual([4]);
    const resumedVariables = {
      a: variable(Array.from(original.a.dataSync()), 'a'),
      'b.bias': variable(Array.from(original['b.bias'].dataSync()), 'b'),
    };
    const resumed = optimizer(resumedVariables, { weightDecay: 0.05 });
    resumed.setState(state);
    // getState returns copies: changing them must not reach either optimizer.
    state.moments.a.m.fill(999);

    for (let step = 3; step < 6; step++) {
      first.step(gradientsAt(step, sizes), 0.01);
      resumed.step(gradientsAt(step, sizes), 0.01);
    }
    expect(resumed.stepCount).toBe(6);
    for (const name of Object.keys(sizes) as (keyof typeof original)[]) {
      expect(Array.from(resumedVariables[name].dataSync()), name).toEqual(
        Array.from(original[name].dataSync()),
      );
    }
  });

  test('setState rejects mismatched state', () => {
    const adamW = optimizer({ a: variable([1, 2], 'a') });
    const state = adamW.getState();
    const wrongShape = {
      step: 1,
      moments: { a: { m: new Float32Array(3), v: new Float32Array(3), shape: [3] } },
    };
    expect(() => adamW.setState(wrongShape)).toThrow(UserError);
    expect(() => adamW.setState(wrongShape)).toThrow(/"a" has shape \[3\]/);
    const wrongNames = { step: 1, moments: { b: state.moments.a } };
    expect(() => adamW.setState(wrongNames)).toThrow(/missing \[a\], unexpected \[b\]/);
  });

  test('rejects unknown gradient and option', () => {
    const adamW = optimizer({ a: variable([1, 2], 'a') });
    expect(() => adamW.step({ c: tf.zeros([2]) }, 0.1)).toThrow(BugError);
    expect(() => adamW.step({ a: tf.zeros([3]) }, 0.1)).toThrow(/has shape \[3\]/);
    expect(() => new AdamW({}, { beta3: 0.9 } as object)).toThrow(/unknown option "beta3"/);
    expect(() => new AdamW({}, { beta2: 1 })).toThrow(/beta2 must be in \[0, 1\)/);
  });

  test('leaks no tensors over 20 steps', () => {
    const sizes = { a: 16, 'b.bias': 8 };
    const variables = {
      a: variable(
        Array.from({ length: 16 }, (_, i) => i / 16),
        'a',
      ),
      'b.bias': variable(
        Array.from({ length: 8 }, (_, i) => -i / 8),
        'b',
      ),
    };
    const adamW = optimizer(variables);
    const before = tf.memory().numTensors;
    for (let step = 0; step < 20; step++) {
      const grads = gradientsAt(step, sizes);
      const { grads: clipped, globalNorm } = clipByGlobalNorm(grads, 0.5);
      adamW.step(clipped, 0.01);
      tf.dispose([...Object.values(grads), ...Object.values(clipped), globalNorm]);
    }
    expect(tf.memory().numTensors).toBe(before);
    expect(adamW.stepCount).toBe(20);
  });
});

describe('clipByGlobalNorm', () => {
  const grads = () => ({ a: tf.tensor1d([3, 4]), b: tf.tensor2d([[12]]) });

  test('scales gradients above max norm', () => {
    const { grads: clipped, globalNorm } = clipByGlobalNorm(grads(), 6.5);
    expect(globalNorm.dataSync()[0]).toBeCloseTo(13, 5);
    const a = clipped.a.dataSync();
    expect(a[0]).toBeCloseTo(1.5, 5);
    expect(a[1]).toBeCloseTo(2, 5);
    expect(clipped.b.dataSync()[0]).toBeCloseTo(6, 5);
    expect(clipped.b.shape).toEqual([1, 1]);
  });

  test('keeps gradients below max norm', () => {
    const input = grads();
    const { grads: clipped, globalNorm } = clipByGlobalNorm(input, 100);
    expect(globalNorm.dataSync()[0]).toBeCloseTo(13, 5);
    expect(Array.from(clipped.a.dataSync())).toEqual([3, 4]);
    expect(clipped.a).not.toBe(input.a);
  });

  test('returns only its own tensors', () => {
    const input = grads();
    const before = tf.memory().numTensors;
    const result = clipByGlobalNorm(input, 1);
    expect(tf.memory().numTensors).toBe(before + 3);
    tf.dispose([...Object.values(result.grads), result.globalNorm]);
  });

  test('rejects non-positive max norm', () => {
    expect(() => clipByGlobalNorm(grads(), 0)).toThrow(UserError);
    expect(() => clipByGlobalNorm(grads(), 0)).toThrow(/maxNorm must be a positive number/);
  });
});
