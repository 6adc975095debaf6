/**
 * Learning-rate schedule: linear warm-up from 0 to the peak, then constant, cosine or linear decay
 * to `peak * minRatio` at `totalSteps`.
 */
import { BugError, UserError } from '../../shared/errors';

export type LearningRateDecay = 'constant' | 'cosine' | 'linear';

export const LEARNING_RATE_DECAYS: readonly LearningRateDecay[] = ['constant', 'cosine', 'linear'];

export interface LearningRateSchedule {
  /** Learning rate at the end of warm-up, > 0. */
  peak: number;
  /** Updates spent rising linearly from 0 to `peak`, a whole number in [0, totalSteps]. */
  warmupSteps: number;
  /** Updates in the whole run, a whole number >= 1. The decay ends at this step. */
  totalSteps: number;
  /** Shape of the curve after warm-up. */
  decay: LearningRateDecay;
  /** Final learning rate as a fraction of `peak`, in [0, 1], default 0. 'constant' ignores it. */
  minRatio?: number;
}

const SCHEDULE_KEYS = ['peak', 'warmupSteps', 'totalSteps', 'decay', 'minRatio'];

/**
 * Returns the learning rate for the update with 0-based index `step`, where `step` is the number
 * of updates already applied. During warm-up the rate is `peak * step / warmupSteps`, so the
 * first update gets 0. After `totalSteps` the rate stays at its final value.
 *
 * @example
 * learningRateAt(0, { peak: 1e-4, warmupSteps: 10, totalSteps: 100, decay: 'cosine' }); // 0
 * learningRateAt(10, { peak: 1e-4, warmupSteps: 10, totalSteps: 100, decay: 'cosine' }); // 1e-4
 */
export function learningRateAt(step: number, schedule: LearningRateSchedule): number {
  validateSchedule(schedule);
  if (!Number.isInteger(step) || step < 0) {
    throw new BugError(`learningRateAt: step must be a whole number >= 0; received ${step}.`);
  }
  const { peak, warmupSteps, totalSteps, decay } = schedule;
  const minRatio = schedule.minRatio ?? 0;
  if (step < warmupSteps) return (peak * step) / warmupSteps;
  if (decay === 'constant') return peak;

  const decaySteps = totalSteps - warmupSteps;
  const progress = decaySteps === 0 ? 1 : Math.min(1, (step - warmupSteps) / decaySteps);
  const shape = decay === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress;
  return peak * (minRatio + (1 - minRatio) * shape);
}

/** Throws a UserError naming the first invalid field of `schedule`. */
export function validateSchedule(schedule: LearningRateSchedule): void {
  const fail = (field: string, expected: string, value: unknown): never => {
    throw new UserError(
      `Learning-rate schedule: ${field} must be ${expected}; received ${String(value)}.`,
    );
  };
  for (const key of Object.keys(schedule)) {
    if (!SCHEDULE_KEYS.includes(key)) {
      throw new UserError(
        `Learning-rate schedule: unknown option "${key}"; ` +
          `the known options are ${SCHEDULE_KEYS.join(', ')}.`,
      );
    }
  }
  const { peak, warmupSteps, totalSteps, decay, minRatio } = schedule;
  if (!Number.isFinite(peak) || peak <= 0) fail('peak', 'a positive number', peak);
  if (!Number.isInteger(totalSteps) || totalSteps < 1) {
    fail('totalSteps', 'a whole number >= 1', totalSteps);
  }
  if (!Number.isInteger(warmupSteps) || warmupSteps < 0 || warmupSteps > totalSteps) {
    fail('warmupSteps', `a whole number in [0, totalSteps = ${totalSteps}]`, warmupSteps);
  }
  if (!LEARNING_RATE_DECAYS.includes(decay)) {
    fail('decay', `one of ${LEARNING_RATE_DECAYS.join(', ')}`, decay);
  }
  if (minRatio !== undefined && !(minRatio >= 0 && minRatio <= 1)) {
    fail('minRatio', 'a number in [0, 1]', minRatio);
  }
}
