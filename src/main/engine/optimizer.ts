/**
 * AdamW with decoupled weight decay, and clipping by global gradient norm.
 *
 * Hand-written because tf.train.adam in TensorFlow.js 4.22 has no weight decay option, so it cannot
 * decay some parameters and skip others.
 */
import * as tf from '@tensorflow/tfjs';
import { BugError, UserError } from '../../shared/errors';

/** AdamW settings. */
export interface AdamWOptions {
  /** Decay rate of the first-moment average, in [0, 1). */
  beta1: number;
  /** Decay rate of the second-moment average, in [0, 1). */
  beta2: number;
  /** Added to sqrt(v_hat) in the denominator, > 0. */
  epsilon: number;
  /** Decoupled weight decay lambda, >= 0. A step scales decayed parameters by 1 - lr * lambda. */
  weightDecay: number;
  /** Predicate that is true for parameters that get no weight decay; `isNormOrBias` by default. */
  skipWeightDecay: (name: string) => boolean;
}

export const ADAMW_DEFAULTS: Readonly<AdamWOptions> = {
  beta1: 0.9,
  beta2: 0.999,
  epsilon: 1e-8,
  weightDecay: 0.01,
  skipWeightDecay: isNormOrBias,
};

/** True for normalisation weights and biases, the parameters that usually get no weight decay. */
export function isNormOrBias(name: string): boolean {
  return /norm|bias/i.test(name);
}

/** Optimizer state of one parameter, copied out of the backend. */
export interface MomentState {
  /** First-moment average m. */
  m: Float32Array;
  /** Second-moment average v. */
  v: Float32Array;
  shape: number[];
}

export interface AdamWState {
  /** Number of updates applied so far, which the bias corrections use. */
  step: number;
  moments: Record<string, MomentState>;
}

interface Moments {
  m: tf.Variable;
  v: tf.Variable;
}

/**
 * AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019) over a fixed
 * set of named tf.Variables. The decay is scaled by the learning rate, as in PyTorch's
 * torch.optim.AdamW, so it follows the schedule.
 *
 * The optimizer owns its moment variables; call `dispose()` when training ends.
 *
 * @example
 * const optimizer = new AdamW(model.params, { weightDecay: 0.01 });
 * optimizer.step(grads, learningRateAt(step, schedule));
 */
export class AdamW {
  readonly options: Readonly<AdamWOptions>;
  private readonly variables: Record<string, tf.Variable>;
  private readonly moments: Record<string, Moments> = {};
  private completedSteps = 0;

  constructor(variables: Record<string, tf.Variable>, options: Partial<AdamWOptions> = {}) {
    this.options = resolveAdamWOptions(options);
    this.variables = { ...variables };
    for (const [name, variable] of Object.entries(variables)) {
      // tidy frees the zero tensors; the variables survive it.
      this.moments[name] = tf.tidy(() => ({
        m: tf.variable(tf.zerosLike(variable), false),
        v: tf.variable(tf.zerosLike(variable), false),
      }));
    }
  }

  /** Number of updates applied so far. */
  get stepCount(): number {
    return this.completedSteps;
  }

  /**
   * Applies one update, in place, to every variable that has an entry in `grads`. Variables
   * without a gradient stay unchanged, decay included. The caller keeps ownership of `grads`.
   * NOTE: all parameters share one step count, so a parameter that misses steps gets the bias
   * correction of the shared count, unlike PyTorch's per-parameter count.
   */
  step(grads: Record<string, tf.Tensor>, learningRate: number): void {
    if (!Number.isFinite(learningRate) || learningRate < 0) {
      throw new BugError(
        `AdamW.step: learningRate must be a number >= 0; received ${learningRate}.`,
      );
    }
    for (const [name, grad] of Object.entries(grads)) this.checkGradient(name, grad);
    this.completedSteps += 1;
    const { beta1, beta2 } = this.options;
    const biasCorrection1 = 1 - beta1 ** this.completedSteps;
    const biasCorrection2 = 1 - beta2 ** this.completedSteps;
    for (const [name, grad] of Object.entries(grads)) {
      this.updateParameter(name, grad, learningRate, biasCorrection1, biasCorrection2);
    }
  }

  private updateParameter(
    name: string,
    grad: tf.Tensor,
    learningRate: number,
    biasCorrection1: number,
    biasCorrection2: number,
  ): void {
    const { beta1, beta2, epsilon, weightDecay, skipWeightDecay } = this.options;
    const parameter = this.variables[name];
    const { m, v } = this.moments[name];
    const decay = skipWeightDecay(name) ? 0 : weightDecay;
    // Elementwise ops only, which the wasm backend runs fast.
    tf.tidy(() => {
      const mNext = tf.add(tf.mul(beta1, m), tf.mul(1 - beta1, grad));
      const vNext = tf.add(tf.mul(beta2, v), tf.mul(1 - beta2, tf.square(grad)));
      const mHat = tf.div(mNext, biasCorrection1);
      const vHat = tf.div(vNext, biasCorrection2);
      const adamStep = tf.div(mHat, tf.add(tf.sqrt(vHat), epsilon));
      // theta <- theta * (1 - lr * lambda) - lr * m_hat / (sqrt(v_hat) + eps)
      const decayed = decay === 0 ? parameter : tf.mul(parameter, 1 - learningRate * decay);
      m.assign(mNext);
      v.assign(vNext);
      parameter.assign(tf.sub(decayed, tf.mul(learningRate, adamStep)));
    });
  }

  private checkGradient(name: string, grad: tf.Tensor): void {
    const parameter = this.variables[name];
    if (parameter === undefined) {
      throw new BugError(
        `AdamW.step: gradient "${name}" has no variable; the optimizer has ` +
          `${Object.keys(this.variables).length} variables (${previewNames(this.variables)}).`,
      );
    }
    if (!sameShape(parameter.shape, grad.shape)) {
      throw new BugError(
        `AdamW.step: gradient "${name}" has shape [${grad.shape.join(', ')}]; ` +
          `its variable has [${parameter.shape.join(', ')}].`,
      );
    }
  }

  /** Copies the step count and all moments out of the backend, for a checkpoint. */
  getState(): AdamWState {
    const moments: Record<string, MomentState> = {};
    for (const [name, { m, v }] of Object.entries(this.moments)) {
      // Copies, because some backends return their live buffer from dataSync.
      moments[name] = {
        m: new Float32Array(m.dataSync()),
        v: new Float32Array(v.dataSync()),
        shape: [...m.shape],
      };
    }
    return { step: this.completedSteps, moments };
  }

  /**
   * Restores a state from `getState()`, so training continues as if it never stopped. Throws a
   * UserError when the state names other parameters or shapes than this optimizer has.
   */
  setState(state: AdamWState): void {
    validateState(state, this.variables);
    for (const [name, { m, v }] of Object.entries(this.moments)) {
      const saved = state.moments[name];
      tf.tidy(() => {
        m.assign(tf.tensor(saved.m, saved.shape, 'float32'));
        v.assign(tf.tensor(saved.v, saved.shape, 'float32'));
      });
    }
    this.completedSteps = state.step;
  }

  /** Frees the moment variables. The parameters belong to the caller and stay. */
  dispose(): void {
    for (const { m, v } of Object.values(this.moments)) {
      m.dispose();
      v.dispose();
    }
  }
}

function validateState(state: AdamWState, variables: Record<string, tf.Variable>): void {
  if (!Number.isInteger(state.step) || state.step < 0) {
    throw new UserError(
      `Optimizer state: step must be a whole number >= 0; received ${state.step}.`,
    );
  }
  const expected = Object.keys(variables).sort();
  const received = Object.keys(state.moments).sort();
  const missing = expected.filter((name) => !(name in state.moments));
  const extra = received.filter((name) => !(name in variables));
  if (missing.length > 0 || extra.length > 0) {
    throw new UserError(
      `Optimizer state does not match the trained parameters: missing [${missing.join(', ')}], ` +
        `unexpected [${extra.join(', ')}]. Resume from a checkpoint of the same model and adapter.`,
    );
  }
  for (const name of expected) {
    const { m, v, shape } = state.moments[name];
    const size = shape.reduce((product, dim) => product * dim, 1);
    if (!sameShape(shape, variables[name].shape) || m.length !== size || v.length !== size) {
      throw new UserError(
        `Optimizer state for "${name}" has shape [${shape.join(', ')}] with ${m.length} and ` +
          `${v.length} values; the parameter has shape [${variables[name].shape.join(', ')}]. ` +
          'Resume from a checkpoint of the same model and adapter.',
      );
    }
  }
}

function resolveAdamWOptions(options: Partial<AdamWOptions>): AdamWOptions {
  for (const key of Object.keys(options)) {
    if (!(key in ADAMW_DEFAULTS)) {
      throw new UserError(
        `AdamW: unknown option "${key}"; the known options are ` +
          `${Object.keys(ADAMW_DEFAULTS).join(', ')}.`,
      );
    }
  }
  const resolved = { ...ADAMW_DEFAULTS, ...options };
  requireInRange('beta1', resolved.beta1, 0, 1);
  requireInRange('beta2', resolved.beta2, 0, 1);
  if (!(resolved.epsilon > 0) || !Number.isFinite(resolved.epsilon)) {
    throw new UserError(`AdamW: epsilon must be a positive number; received ${resolved.epsilon}.`);
  }
  if (!(resolved.weightDecay >= 0) || !Number.isFinite(resolved.weightDecay)) {
    throw new UserError(
      `AdamW: weightDecay must be a number >= 0; received ${resolved.weightDecay}.`,
    );
  }
  return resolved;
}

function requireInRange(name: string, value: number, min: number, maxExclusive: number): void {
  if (!(value >= min && value < maxExclusive)) {
    throw new UserError(`AdamW: ${name} must be in [${min}, ${maxExclusive}); received ${value}.`);
  }
}

export interface ClippedGradients {
  /** The gradients scaled by min(1, maxNorm / (globalNorm + 1e-6)). */
  grads: Record<string, tf.Tensor>;
  /** sqrt of the sum of squares of every gradient entry, before clipping. [] */
  globalNorm: tf.Scalar;
}

/**
 * Scales all gradients together so that their global L2 norm is at most `maxNorm`, keeping their
 * direction. The 1e-6 in the scale guards against a zero norm. A NaN or infinite norm gives NaN
 * gradients: check `globalNorm` before stepping. The caller keeps `grads` and owns every returned
 * tensor.
 *
 * @example
 * const { grads: clipped, globalNorm } = clipByGlobalNorm(grads, 1.0);
 */
export function clipByGlobalNorm(
  grads: Record<string, tf.Tensor>,
  maxNorm: number,
): ClippedGradients {
  if (!Number.isFinite(maxNorm) || maxNorm <= 0) {
    throw new UserError(
      `Gradient clipping: maxNorm must be a positive number; received ${maxNorm}.`,
    );
  }
  return tf.tidy(() => {
    const squaredSums = Object.values(grads).map((grad) => tf.sum(tf.square(grad)));
    const globalNorm = tf.sqrt(squaredSums.length > 0 ? tf.addN(squaredSums) : tf.scalar(0));
    const scale = tf.minimum(1, tf.div(maxNorm, tf.add(globalNorm, 1e-6)));
    const clipped: Record<string, tf.Tensor> = {};
    for (const [name, grad] of Object.entries(grads)) clipped[name] = tf.mul(grad, scale);
    return { grads: clipped, globalNorm: globalNorm as tf.Scalar };
  });
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((size, i) => size === b[i]);
}

function previewNames(variables: Record<string, tf.Variable>): string {
  const names = Object.keys(variables);
  const listed = names.slice(0, 5).join(', ');
  return names.length > 5 ? `${listed}, ...` : listed;
}
