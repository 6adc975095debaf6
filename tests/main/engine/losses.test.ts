import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, test } from 'vitest';
import {
  balancedClassWeights,
  combineStageTwoLoss,
  type KtoInputs,
  ktoLoss,
  mismatchedPartner,
  steeringKlLoss,
} from '../../../src/main/engine/losses';
import { BugError, UserError } from '../../../src/shared/errors';

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

function logSoftmaxRow(row: number[]): number[] {
  const logSumExp = Math.log(row.reduce((sum, x) => sum + Math.exp(x), 0));
  return row.map((x) => x - logSumExp);
}

/** Central finite differences of a scalar function of one float32 tensor, entry by entry. */
function centralDifferences(f: (x: tf.Tensor) => tf.Scalar, x: tf.Tensor, h: number): number[] {
  const values = Array.from(x.dataSync());
  return values.map((_, i) => {
    const evaluate = (delta: number) =>
      tf.tidy(() => {
        const shifted = values.slice();
        shifted[i] += delta;
        return f(tf.tensor(shifted, x.shape)).dataSync()[0];
      });
    return (evaluate(h) - evaluate(-h)) / (2 * h);
  });
}

function expectAllClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number) {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    expect(Math.abs(actual[i] - expected[i]), `entry ${i}`).toBeLessThan(tolerance);
  }
}

// Three examples, a vocabulary of 5 and steering tokens at ids 3, 1, 4 (category order).
const LOGITS = [
  [0.1, 1.2, -0.3, 2.0, 0.5],
  [1.0, -1.0, 0.0, 0.5, 0.3],
  [-0.2, 0.4, 0.9, -1.1, 0.0],
];
const STEERING_IDS = [3, 1, 4];
const TARGETS = [
  [0.5, 0.5, 0],
  [0.2, 0.3, 0.5],
  [1, 0, 0],
];

function klInputs(mask: number[]) {
  return {
    lastLogits: tf.tensor2d(LOGITS),
    steeringIds: STEERING_IDS,
    targets: tf.tensor2d(TARGETS),
    desirableMask: tf.tensor1d(mask),
  };
}

describe('steeringKlLoss', () => {
  test('matches hand computation with zero target', () => {
    const logQ = LOGITS.map((row) => {
      const logProbs = logSoftmaxRow(row);
      return STEERING_IDS.map((id) => logProbs[id]);
    });
    // Entries with p* = 0 are left out (0 * log 0 = 0).
    const expected0 = 0.5 * (Math.log(0.5) - logQ[0][0]) + 0.5 * (Math.log(0.5) - logQ[0][1]);
    const expected1 =
      0.2 * (Math.log(0.2) - logQ[1][0]) +
      0.3 * (Math.log(0.3) - logQ[1][1]) +
      0.5 * (Math.log(0.5) - logQ[1][2]);
    const expected2 = 1 * (Math.log(1) - logQ[2][0]);

    const { loss, perExample } = steeringKlLoss(klInputs([1, 0, 1]));
    expectAllClose(perExample.dataSync(), [expected0, expected1, expected2], 1e-5);
    // Example 1 is undesirable, so the mean is over examples 0 and 2.
    expect(loss.dataSync()[0]).toBeCloseTo((expected0 + expected2) / 2, 5);
  });

  test('is zero without desirable examples', () => {
    const { loss } = steeringKlLoss(klInputs([0, 0, 0]));
    const value = loss.dataSync()[0];
    expect(Number.isFinite(value)).toBe(true);
    expect(value).toBe(0);
  });

  test('gradient matches finite differences', () => {
    const { steeringIds, targets, desirableMask, lastLogits } = klInputs([1, 0, 1]);
    const f = (logits: tf.Tensor) =>
      steeringKlLoss({ lastLogits: logits as tf.Tensor2D, steeringIds, targets, desirableMask })
        .loss;
    const analytic = tf.grad(f)(lastLogits).dataSync();
    const numeric = centralDifferences(f, lastLogits, 1e-2);
    expectAllClose(analytic, numeric, 1e-3);
    // The undesirable row gets no gradient at all.
    expectAllClose(analytic.slice(5, 10), [0, 0, 0, 0, 0], 1e-9);
  });

  test('frees its intermediate tensors', () => {
    const inputs = klInputs([1, 1, 0]);
    const before = tf.memory().numTensors;
    const { loss, perExample } = steeringKlLoss(inputs);
    expect(tf.memory().numTensors).toBe(before + 2);
    loss.dispose();
    perExample.dispose();
  });

  test('rejects steering id outside vocabulary', () => {
    const inputs = { ...klInputs([1, 1, 1]), steeringIds: [3, 1, 5] };
    expect(() => steeringKlLoss(inputs)).toThrow(UserError);
    expect(() => steeringKlLoss(inputs)).toThrow(/id 5 is outside the vocabulary \[0, 5\)/);
  });

  test('rejects duplicate steering id', () => {
    const inputs = { ...klInputs([1, 1, 1]), steeringIds: [3, 1, 3] };
    expect(() => steeringKlLoss(inputs)).toThrow(/appears twice/);
  });

  test('rejects targets of wrong width', () => {
    const inputs = { ...klInputs([1, 1, 1]), steeringIds: [3, 1] };
    expect(() => steeringKlLoss(inputs)).toThrow(BugError);
    expect(() => steeringKlLoss(inputs)).toThrow(/targets must have shape \[3, 2\]/);
  });
});

function ktoInputs(values: {
  policy: number[];
  ref: number[];
  policyMismatched: number[];
  refMismatched: number[];
  mask: number[];
}): KtoInputs {
  return {
    policySeqLogProb: tf.tensor1d(values.policy),
    refSeqLogProb: tf.tensor1d(values.ref),
    policyMismatchedSeqLogProb: tf.tensor1d(values.policyMismatched),
    refMismatchedSeqLogProb: tf.tensor1d(values.refMismatched),
    desirableMask: tf.tensor1d(values.mask),
  };
}

// Rewards r = [2.5, -1, 1]. Examples 0 and 2 are desirable.
const POLICY = [-10, -12, -8];
const REF = [-12.5, -11, -9];
const MASK = [1, 0, 1];

describe('ktoLoss', () => {
  test('clamps negative z0 to zero', () => {
    // Mismatched log-ratios [-1, -1, 1] have mean -1/3, so z0 = max(0, -1/3) = 0.
    const inputs = ktoInputs({
      policy: POLICY,
      ref: REF,
      policyMismatched: [-20, -22, -19],
      refMismatched: [-19, -21, -20],
      mask: MASK,
    });
    const beta = 0.1;
    const expected = [
      1 - sigmoid(beta * (2.5 - 0)),
      1 - sigmoid(beta * (0 - -1)),
      1 - sigmoid(beta * (1 - 0)),
    ];
    const result = ktoLoss(inputs);
    expect(result.z0.dataSync()[0]).toBe(0);
    expectAllClose(result.rewards.dataSync(), [2.5, -1, 1], 1e-6);
    expectAllClose(result.perExampleLosses.dataSync(), expected, 1e-6);
    expect(result.meanLoss.dataSync()[0]).toBeCloseTo(
      (expected[0] + expected[1] + expected[2]) / 3,
      6,
    );
  });

  test('uses positive z0 and beta', () => {
    // Mismatched log-ratios [2, 1, 3] have mean 2, so z0 = 2.
    const inputs = ktoInputs({
      policy: POLICY,
      ref: REF,
      policyMismatched: [-18, -20, -17],
      refMismatched: [-20, -21, -20],
      mask: MASK,
    });
    const beta = 0.5;
    const expected = [
      1 - sigmoid(beta * (2.5 - 2)),
      1 - sigmoid(beta * (2 - -1)),
      1 - sigmoid(beta * (1 - 2)),
    ];
    const result = ktoLoss(inputs, { beta });
    expect(result.z0.dataSync()[0]).toBeCloseTo(2, 6);
    expectAllClose(result.perExampleLosses.dataSync(), expected, 1e-6);
  });

  test('applies class weights', () => {
    const inputs = ktoInputs({
      policy: POLICY,
      ref: REF,
      policyMismatched: [-18, -20, -17],
      refMismatched: [-20, -21, -20],
      mask: MASK,
    });
    const weights = { desirableWeight: 2, undesirableWeight: 0.5 };
    const expected = [
      2 * (1 - sigmoid(0.1 * (2.5 - 2))),
      0.5 * (1 - sigmoid(0.1 * (2 - -1))),
      2 * (1 - sigmoid(0.1 * (1 - 2))),
    ];
    const result = ktoLoss(inputs, weights);
    expectAllClose(result.perExampleLosses.dataSync(), expected, 1e-6);
    expect(result.meanLoss.dataSync()[0]).toBeCloseTo(
      (expected[0] + expected[1] + expected[2]) / 3,
      6,
    );
  });

  test('one-class batch gives finite loss', () => {
    for (const mask of [
      [1, 1, 1],
      [0, 0, 0],
    ]) {
      const inputs = ktoInputs({
        policy: POLICY,
        ref: REF,
        policyMismatched: [-18, -20, -17],
        refMismatched: [-20, -21, -20],
        mask,
      });
      const value = ktoLoss(inputs).meanLoss.dataSync()[0];
      expect(Number.isFinite(value), `mask ${mask}`).toBe(true);
      expect(value, `mask ${mask}`).toBeGreaterThan(0);
    }
  });

  test('gradient matches finite differences', () => {
    // beta = 1 makes the gradient large enough to compare in float32. z0 = 2 is not clamped.
    const values = {
      policy: POLICY,
      ref: REF,
      policyMismatched: [-18, -20, -17],
      refMismatched: [-20, -21, -20],
      mask: MASK,
    };
    const inputs = ktoInputs(values);
    const lossOf = (override: Partial<KtoInputs>) =>
      ktoLoss({ ...inputs, ...override }, { beta: 1, desirableWeight: 1.5 }).meanLoss;

    for (const name of ['policySeqLogProb', 'refSeqLogProb'] as const) {
      const f = (x: tf.Tensor) => lossOf({ [name]: x });
      const analytic = tf.grad(f)(inputs[name]).dataSync();
      const numeric = centralDifferences(f, inputs[name], 1e-2);
      expectAllClose(analytic, numeric, 2e-4);
      expect(Math.max(...analytic.map(Math.abs)), name).toBeGreaterThan(0.01);
    }
  });

  test('sends no gradient through z0', () => {
    const inputs = ktoInputs({
      policy: POLICY,
      ref: REF,
      policyMismatched: [-18, -20, -17],
      refMismatched: [-20, -21, -20],
      mask: MASK,
    });
    const f = (x: tf.Tensor) =>
      ktoLoss({ ...inputs, policyMismatchedSeqLogProb: x as tf.Tensor1D }, { beta: 1 }).meanLoss;
    const gradient = tf.grad(f)(inputs.policyMismatchedSeqLogProb).dataSync();
    expect(Array.from(gradient)).toEqual([0, 0, 0]);
  });

  test('rejects a batch of one', () => {
    const inputs = ktoInputs({
      policy: [-1],
      ref: [-1],
      policyMismatched: [-1],
      refMismatched: [-1],
      mask: [1],
    });
    expect(() => ktoLoss(inputs)).toThrow(UserError);
    expect(() => ktoLoss(inputs)).toThrow(/at least two examples per batch/);
  });

  test('rejects unknown and invalid options', () => {
    const inputs = ktoInputs({
      policy: POLICY,
      ref: REF,
      policyMismatched: POLICY,
      refMismatched: REF,
      mask: MASK,
    });
    expect(() => ktoLoss(inputs, { betta: 0.1 } as object)).toThrow(/unknown option "betta"/);
    expect(() => ktoLoss(inputs, { beta: 0 })).toThrow(/beta must be a positive number/);
  });

  test('frees its intermediate tensors', () => {
    const inputs = ktoInputs({
      policy: POLICY,
      ref: REF,
      policyMismatched: POLICY,
      refMismatched: REF,
      mask: MASK,
    });
    const before = tf.memory().numTensors;
    const result = ktoLoss(inputs);
    expect(tf.memory().numTensors).toBe(before + 4);
    tf.dispose(Object.values(result));
  });
});

describe('mismatchedPartner', () => {
  test('pairs odd batches without self-pairs', () => {
    expect(mismatchedPartner(3)).toEqual([1, 2, 0]);
    expect(mismatchedPartner(5)).toEqual([1, 2, 3, 4, 0]);
    for (const batchSize of [2, 3, 4, 5, 7]) {
      const partners = mismatchedPartner(batchSize);
      partners.forEach((partner, i) => {
        expect(partner, `B=${batchSize}, i=${i}`).not.toBe(i);
      });
      expect(new Set(partners).size, `B=${batchSize}`).toBe(batchSize);
    }
  });

  test('rejects a batch of one', () => {
    expect(() => mismatchedPartner(1)).toThrow(UserError);
    expect(() => mismatchedPartner(1)).toThrow(/at least two examples per batch to estimate z0/);
    expect(() => mismatchedPartner(1)).toThrow(/Set the training batch size to 2 or more/);
    expect(() => mismatchedPartner(0)).toThrow(UserError);
  });
});

describe('balancedClassWeights', () => {
  const weightedRatio = (nD: number, nU: number, w: ReturnType<typeof balancedClassWeights>) =>
    (w.desirableWeight * nD) / (w.undesirableWeight * nU);

  test('keeps weights already in range', () => {
    expect(balancedClassWeights(12, 10)).toEqual({ desirableWeight: 1, undesirableWeight: 1 });
    // 3.5 * 10 : 1 * 30 is 7:6, inside [1:1, 4:3].
    const user = balancedClassWeights(10, 30, { desirableWeight: 3.5 });
    expect(user).toEqual({ desirableWeight: 3.5, undesirableWeight: 1 });
  });

  test('scales down desirable weight to 4:3', () => {
    const weights = balancedClassWeights(30, 10);
    expect(weights.undesirableWeight).toBe(1);
    expect(weights.desirableWeight).toBeCloseTo(4 / 9, 12);
    expect(weightedRatio(30, 10, weights)).toBeCloseTo(4 / 3, 12);
  });

  test('scales down undesirable weight to 1:1', () => {
    const weights = balancedClassWeights(10, 30);
    expect(weights.desirableWeight).toBe(1);
    expect(weights.undesirableWeight).toBeCloseTo(1 / 3, 12);
    expect(weightedRatio(10, 30, weights)).toBeCloseTo(1, 12);
  });

  test('keeps weights when a class is empty', () => {
    const weights = balancedClassWeights(0, 8, { desirableWeight: 2 });
    expect(weights).toEqual({ desirableWeight: 2, undesirableWeight: 1 });
  });

  test('reads only the weights of a loss config', () => {
    const lossConfig = {
      mode: 'kl+kto',
      klWeight: 1,
      beta: 0.1,
      desirableWeight: 1,
      undesirableWeight: 1,
    };
    const weights = balancedClassWeights(2, 1, lossConfig);
    expect(weights).toEqual({ desirableWeight: 2 / 3, undesirableWeight: 1 });
    // The result spreads into the ktoLoss options without unknown keys.
    const inputs = ktoInputs({
      policy: POLICY,
      ref: REF,
      policyMismatched: POLICY,
      refMismatched: REF,
      mask: MASK,
    });
    // The mismatched log-ratios equal the rewards [2.5, -1, 1], so z0 = 2.5 / 3.
    const expected = (2 / 3) * (1 - sigmoid(0.1 * (2.5 - 2.5 / 3)));
    const losses = ktoLoss(inputs, { beta: 0.1, ...weights }).perExampleLosses.dataSync();
    expect(losses[0]).toBeCloseTo(expected, 6);
  });

  test('rejects invalid counts and weights', () => {
    expect(() => balancedClassWeights(-1, 3)).toThrow(/desirableCount must be a whole number/);
    expect(() => balancedClassWeights(2, 3, { undesirableWeight: 0 })).toThrow(
      /undesirableWeight must be a positive number/,
    );
  });
});

describe('combineStageTwoLoss', () => {
  test('weights KL in kl+kto and drops terms in ablations', () => {
    const kl = tf.scalar(0.8);
    const kto = tf.scalar(0.3);
    const value = (mode: 'kl+kto' | 'kl-only' | 'kto-only') =>
      combineStageTwoLoss({ kl, kto, mode, klWeight: 0.5 }).dataSync()[0];
    expect(value('kl+kto')).toBeCloseTo(0.3 + 0.5 * 0.8, 6);
    expect(value('kl-only')).toBeCloseTo(0.8, 6);
    expect(value('kto-only')).toBeCloseTo(0.3, 6);
  });

  test('returns a new tensor in ablations', () => {
    const kl = tf.scalar(0.8);
    const total = combineStageTwoLoss({ kl, mode: 'kl-only', klWeight: 1 });
    kl.dispose();
    expect(total.isDisposed).toBe(false);
    expect(total.dataSync()[0]).toBeCloseTo(0.8, 6);
  });

  test('gradient reaches both terms', () => {
    const f = (kl: tf.Tensor, kto: tf.Tensor) =>
      combineStageTwoLoss({
        kl: kl as tf.Scalar,
        kto: kto as tf.Scalar,
        mode: 'kl+kto',
        klWeight: 0.25,
      });
    const [dKl, dKto] = tf.grads(f)([tf.scalar(1), tf.scalar(2)]);
    expect(dKl.dataSync()[0]).toBeCloseTo(0.25, 6);
    expect(dKto.dataSync()[0]).toBeCloseTo(1, 6);
  });

  test('rejects missing term and bad settings', () => {
    const kl = tf.scalar(0.8);
    expect(() => combineStageTwoLoss({ kl, mode: 'kl+kto', klWeight: 1 })).toThrow(BugError);
    expect(() => combineStageTwoLoss({ kl, mode: 'kl-only', klWeight: -1 })).toThrow(
      /klWeight must be a number >= 0/,
    );
    expect(() => combineStageTwoLoss({ kl, mode: 'kl_only' as 'kl-only', klWeight: 1 })).toThrow(
      /Stage-2 mode "kl_only" is not known/,
    );
  });
});
