import { describe, expect, it } from 'vitest';
import { loadDataset } from '../../../src/main/engine/datasets';
import type { MeasuredSample } from '../../../src/main/engine/metrics';
import { summarizeMeasurement } from '../../../src/main/engine/metrics';
import { qualityWarnings } from '../../../src/main/engine/pipeline';

const dataset = loadDataset('us-gender');

/** Ten responses per occupation: `unknown` of them name nothing, the rest agree or disagree with the steering token. */
function summary(unknown: number, agree: boolean) {
  const samples: MeasuredSample[] = dataset.occupations.flatMap((_, o) =>
    Array.from({ length: 10 }, (_, round) => {
      const steeringCategory = round % 2;
      let textCategory: number | null = agree ? steeringCategory : 1 - steeringCategory;
      if (round < unknown) textCategory = null;
      const text = textCategory === null ? 'nothing' : dataset.categories[textCategory];
      return { occupationIndex: o, round, prompt: '', text, steeringCategory, textCategory };
    }),
  );
  return summarizeMeasurement(dataset, samples, { bootstrapReps: 0 });
}

describe('qualityWarnings', () => {
  it('accepts a clean trained model', () => {
    expect(qualityWarnings(summary(0, true), summary(0, true))).toEqual([]);
  });

  it('flags a jump in unknown answers', () => {
    const warnings = qualityWarnings(summary(0, true), summary(3, true));
    expect(warnings.length, 'one warning').toBe(1);
    expect(warnings[0], 'names both shares').toContain('30.0% of the answers after training');
  });

  it('flags text that ignores the steering token', () => {
    const warnings = qualityWarnings(summary(0, true), summary(0, false));
    expect(warnings.join(' '), 'agreement warning').toContain('agreement after training is 0.0%');
  });

  it('flags occupations with no named category', () => {
    const warnings = qualityWarnings(summary(0, true), summary(10, true));
    expect(warnings.join(' '), 'occupation warning').toContain('14 occupations had no answer');
  });
});
