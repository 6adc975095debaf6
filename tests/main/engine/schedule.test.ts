import { describe, expect, test } from 'vitest';
import { type LearningRateSchedule, learningRateAt } from '../../../src/main/engine/schedule';
import { BugError, UserError } from '../../../src/shared/errors';

const base = { peak: 1e-3, warmupSteps: 10, totalSteps: 110, minRatio: 0.1 };

describe('learningRateAt', () => {
  test('warms up linearly from zero', () => {
    for (const decay of ['constant', 'cosine', 'linear'] as const) {
      const schedule = { ...base, decay };
      expect(learningRateAt(0, schedule), decay).toBe(0);
      expect(learningRateAt(5, schedule), decay).toBeCloseTo(0.5e-3, 12);
      expect(learningRateAt(9, schedule), decay).toBeCloseTo(0.9e-3, 12);
      expect(learningRateAt(10, schedule), decay).toBeCloseTo(1e-3, 12);
    }
  });

  test('cosine reaches min ratio at end', () => {
    const schedule: LearningRateSchedule = { ...base, decay: 'cosine' };
    // Halfway through the decay, cos(pi / 2) = 0 leaves half the span above the floor.
    expect(learningRateAt(60, schedule)).toBeCloseTo(1e-3 * (0.1 + 0.9 * 0.5), 12);
    expect(learningRateAt(35, schedule)).toBeCloseTo(
      1e-3 * (0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI / 4))),
      12,
    );
    expect(learningRateAt(110, schedule)).toBeCloseTo(1e-4, 12);
    expect(learningRateAt(500, schedule)).toBeCloseTo(1e-4, 12);
  });

  test('linear reaches min ratio at end', () => {
    const schedule: LearningRateSchedule = { ...base, decay: 'linear' };
    expect(learningRateAt(60, schedule)).toBeCloseTo(1e-3 * (0.1 + 0.9 * 0.5), 12);
    expect(learningRateAt(85, schedule)).toBeCloseTo(1e-3 * (0.1 + 0.9 * 0.25), 12);
    expect(learningRateAt(110, schedule)).toBeCloseTo(1e-4, 12);
    expect(learningRateAt(500, schedule)).toBeCloseTo(1e-4, 12);
  });

  test('decays to zero by default', () => {
    const schedule: LearningRateSchedule = {
      peak: 2e-4,
      warmupSteps: 0,
      totalSteps: 4,
      decay: 'linear',
    };
    expect(learningRateAt(0, schedule)).toBeCloseTo(2e-4, 12);
    expect(learningRateAt(2, schedule)).toBeCloseTo(1e-4, 12);
    expect(learningRateAt(4, schedule)).toBe(0);
  });

  test('constant holds peak after warm-up', () => {
    const schedule: LearningRateSchedule = { ...base, decay: 'constant' };
    expect(learningRateAt(10, schedule)).toBe(1e-3);
    expect(learningRateAt(110, schedule)).toBe(1e-3);
  });

  test('warm-up covering whole run', () => {
    // The last update has index 109; from step 110 on, the rate is the floor.
    const schedule: LearningRateSchedule = { ...base, warmupSteps: 110, decay: 'cosine' };
    expect(learningRateAt(55, schedule)).toBeCloseTo(0.5e-3, 12);
    expect(learningRateAt(109, schedule)).toBeCloseTo((1e-3 * 109) / 110, 12);
    expect(learningRateAt(110, schedule)).toBeCloseTo(1e-4, 12);
  });

  test('rejects invalid schedule', () => {
    const schedule: LearningRateSchedule = { ...base, decay: 'cosine' };
    expect(() => learningRateAt(0, { ...schedule, peak: 0 })).toThrow(UserError);
    expect(() => learningRateAt(0, { ...schedule, peak: 0 })).toThrow(/peak must be a positive/);
    expect(() => learningRateAt(0, { ...schedule, warmupSteps: 200 })).toThrow(
      /warmupSteps must be a whole number in \[0, totalSteps = 110\]; received 200/,
    );
    expect(() => learningRateAt(0, { ...schedule, totalSteps: 0 })).toThrow(/totalSteps/);
    expect(() => learningRateAt(0, { ...schedule, minRatio: 1.5 })).toThrow(/minRatio/);
    expect(() => learningRateAt(0, { ...schedule, decay: 'step' as 'linear' })).toThrow(
      /decay must be one of constant, cosine, linear; received step/,
    );
    expect(() => learningRateAt(0, { ...schedule, warmup: 3 } as LearningRateSchedule)).toThrow(
      /unknown option "warmup"/,
    );
  });

  test('rejects negative step', () => {
    expect(() => learningRateAt(-1, { ...base, decay: 'cosine' })).toThrow(BugError);
    expect(() => learningRateAt(1.5, { ...base, decay: 'cosine' })).toThrow(/whole number/);
  });
});
