import { describe, expect, it } from 'vitest';
import { loadDataset } from '../../../src/main/engine/datasets';
import {
  type MeasuredSample,
  smoothedKl,
  summarizeMeasurement,
  wilsonInterval,
} from '../../../src/main/engine/metrics';
import { BugError } from '../../../src/shared/errors';

const dataset = {
  id: 'small',
  categories: ['male', 'female'],
  occupations: [
    { occupation: 'Cooks', target: [0.5, 0.5] },
    { occupation: 'Nurses', target: [0.2, 0.8] },
    { occupation: 'Pilots', target: [0.9, 0.1] },
  ],
};

function sample(
  occupationIndex: number,
  textCategory: number | null,
  steeringCategory: number | null = null,
): MeasuredSample {
  return {
    occupationIndex,
    round: 0,
    prompt: 'Q: x\nA:',
    text: 'x',
    steeringCategory,
    textCategory,
  };
}

// Cooks: 3 male, 1 female, 1 unknown; steering tokens on every sample.
// Nurses: 2 female, no steering tokens. Pilots: 2 unknown.
const samples: MeasuredSample[] = [
  sample(0, 0, 0),
  sample(0, 0, 0),
  sample(0, 0, 1),
  sample(0, 1, 1),
  sample(0, null, 0),
  sample(1, 1),
  sample(1, 1),
  sample(2, null),
  sample(2, null),
];

describe('summarizeMeasurement', () => {
  const summary = summarizeMeasurement(dataset, samples, { seed: 1 });
  const [cooks, nurses, pilots] = summary.occupations;

  it('counts categories and unknowns', () => {
    expect(cooks.counts).toEqual([3, 1]);
    expect(cooks.unknownCount).toBe(1);
    expect(cooks.total).toBe(5);
    expect(cooks.unknownShare).toBeCloseTo(0.2, 12);
  });

  it('leaves unknowns out of the denominator', () => {
    expect(cooks.measured).toEqual([0.75, 0.25]);
    expect(nurses.measured).toEqual([0, 1]);
  });

  it('computes MAE and total variation', () => {
    expect(cooks.mae).toBeCloseTo(0.25, 12);
    expect(cooks.tv).toBeCloseTo(0.25, 12);
    expect(nurses.mae).toBeCloseTo(0.2, 12);
    expect(nurses.tv).toBeCloseTo(0.2, 12);
  });

  it('computes KL from counts smoothed by 0.5', () => {
    // Cooks: smoothed measured = [3.5, 1.5] / 5 = [0.7, 0.3].
    expect(cooks.kl).toBeCloseTo(0.5 * Math.log(0.5 / 0.7) + 0.5 * Math.log(0.5 / 0.3), 12);
    // Nurses: smoothed measured = [0.5, 2.5] / 3, finite although no male response.
    expect(nurses.kl).toBeCloseTo(
      0.2 * Math.log(0.2 / (1 / 6)) + 0.8 * Math.log(0.8 / (5 / 6)),
      12,
    );
  });

  it('flags an occupation with only unknowns', () => {
    expect(pilots.measured).toBeNull();
    expect(pilots.flagged).toBe(true);
    expect(pilots.mae).toBeNull();
    expect(pilots.kl).toBeNull();
    expect(pilots.shareIntervals).toBeNull();
    expect(pilots.unknownShare).toBe(1);
    expect(summary.flaggedOccupations).toEqual(['Pilots']);
    expect(summary.measuredOccupationCount).toBe(2);
  });

  it('averages over measured occupations', () => {
    expect(summary.mae).toBeCloseTo((0.25 + 0.2) / 2, 12);
    expect(summary.tv).toBeCloseTo((0.25 + 0.2) / 2, 12);
    expect(summary.kl).toBeCloseTo(((cooks.kl as number) + (nurses.kl as number)) / 2, 12);
  });

  it('computes steering token/text agreement', () => {
    expect(cooks.agreement).toBeCloseTo(3 / 4, 12);
    expect(cooks.agreementSampleCount).toBe(4);
    expect(nurses.agreement).toBeNull();
    expect(nurses.agreementSampleCount).toBe(0);
    expect(summary.agreement).toBeCloseTo(3 / 4, 12);
  });

  it('pools counts and the unknown share', () => {
    expect(summary.sampleCount).toBe(9);
    expect(summary.knownCount).toBe(6);
    expect(summary.unknownCount).toBe(3);
    expect(summary.unknownShare).toBeCloseTo(3 / 9, 12);
    expect(summary.counts).toEqual([3, 3]);
  });

  it('gives Wilson intervals per category share', () => {
    const [male] = cooks.shareIntervals ?? [];
    expect(male.low).toBeCloseTo(0.3006, 4);
    expect(male.high).toBeCloseTo(0.9544, 4);
  });

  it('records the method', () => {
    expect(summary.method.klSmoothingPseudocount).toBe(0.5);
    expect(summary.method.bootstrapReps).toBe(1000);
    expect(summary.method.bootstrapSeed).toBe(1);
  });
});

describe('wilsonInterval', () => {
  it('stays inside 0..1 at the edges', () => {
    const none = wilsonInterval(0, 10);
    const all = wilsonInterval(10, 10);
    expect(none.low).toBeCloseTo(0, 12);
    expect(none.high).toBeCloseTo(0.2775, 4);
    expect(all.high).toBeCloseTo(1, 12);
    expect(all.low).toBeCloseTo(0.7225, 4);
  });
});

describe('smoothedKl', () => {
  it('skips zero target entries', () => {
    // Target [1, 0]: only the first term counts; smoothed measured = 4.5 / 5.
    expect(smoothedKl([1, 0], [4, 0])).toBeCloseTo(Math.log(1 / 0.9), 12);
  });

  it('is near zero for a matching distribution', () => {
    expect(smoothedKl([0.5, 0.5], [500, 500])).toBeCloseTo(0, 12);
  });
});

describe('bootstrap MAE interval', () => {
  function proportionSamples(perOccupation: number): MeasuredSample[] {
    const out: MeasuredSample[] = [];
    for (let i = 0; i < perOccupation; i++) {
      out.push(sample(0, i % 4 === 0 ? 1 : 0), sample(1, i % 5 === 0 ? 0 : 1));
      out.push(sample(2, i % 10 === 0 ? 1 : 0));
    }
    return out;
  }

  it('is the same for the same seed', () => {
    const a = summarizeMeasurement(dataset, samples, { seed: 5 });
    const b = summarizeMeasurement(dataset, samples, { seed: 5 });
    expect(a.maeInterval).toEqual(b.maeInterval);
    expect(a.maeBootstrapMean).toBe(b.maeBootstrapMean);
  });

  it('changes with the seed', () => {
    const a = summarizeMeasurement(dataset, proportionSamples(20), { seed: 5 });
    const b = summarizeMeasurement(dataset, proportionSamples(20), { seed: 6 });
    expect(a.maeBootstrapMean).not.toBe(b.maeBootstrapMean);
  });

  it('narrows with more samples', () => {
    const small = summarizeMeasurement(dataset, proportionSamples(20)).maeInterval;
    const large = summarizeMeasurement(dataset, proportionSamples(400)).maeInterval;
    expect(small).not.toBeNull();
    expect(large).not.toBeNull();
    if (!small || !large) return;
    expect(large.high - large.low).toBeLessThan((small.high - small.low) / 2);
  });

  it('has zero width when every resample is identical', () => {
    const identical = [sample(0, 0), sample(0, 0), sample(1, 1), sample(2, 0)];
    const summary = summarizeMeasurement(dataset, identical);
    expect(summary.mae).toBeCloseTo((0.5 + 0.2 + 0.1) / 3, 12);
    expect(summary.maeInterval?.low).toBeCloseTo(summary.mae as number, 12);
    expect(summary.maeInterval?.high).toBeCloseTo(summary.mae as number, 12);
  });

  it('resamples within steering strata when asked', () => {
    // Text always follows the steering token, so the strata fix the counts exactly.
    const stratified: MeasuredSample[] = [];
    for (let i = 0; i < 40; i++) {
      for (const occupation of [0, 1, 2]) {
        const category = i % 2;
        stratified.push(sample(occupation, category, category));
      }
    }
    const plain = summarizeMeasurement(dataset, stratified, { seed: 3 });
    const within = summarizeMeasurement(dataset, stratified, { seed: 3, stratifyBySteering: true });
    expect(within.method.maeInterval).toBe('bootstrap-percentile-95-within-steering-strata');
    expect(plain.method.maeInterval).toBe('bootstrap-percentile-95');
    expect(within.mae).toBe(plain.mae);
    expect(within.maeInterval?.low).toBeCloseTo(within.mae as number, 12);
    expect(within.maeInterval?.high).toBeCloseTo(within.mae as number, 12);
    const plainWidth = (plain.maeInterval?.high ?? 0) - (plain.maeInterval?.low ?? 0);
    expect(plainWidth, 'independent resampling varies the counts').toBeGreaterThan(0.05);
  });

  it('is absent with zero replicates', () => {
    const summary = summarizeMeasurement(dataset, samples, { bootstrapReps: 0 });
    expect(summary.maeInterval).toBeNull();
    expect(summary.maeBootstrapMean).toBeNull();
  });
});

describe('summarizeMeasurement input checks', () => {
  it('rejects an occupation index outside the dataset', () => {
    expect(() => summarizeMeasurement(dataset, [sample(3, 0)])).toThrow(BugError);
  });

  it('rejects a category outside the categories', () => {
    expect(() => summarizeMeasurement(dataset, [sample(0, 2)])).toThrow(/textCategory 2/);
    expect(() => summarizeMeasurement(dataset, [sample(0, 0, -1)])).toThrow(/steeringCategory -1/);
  });

  it('summarizes an empty sample list', () => {
    const summary = summarizeMeasurement(dataset, []);
    expect(summary.mae).toBeNull();
    expect(summary.unknownShare).toBeNull();
    expect(summary.flaggedOccupations).toHaveLength(3);
  });
});

describe('summarizeMeasurement on a bundled dataset', () => {
  it('reads texts with the dataset reader', () => {
    const uk = loadDataset('uk-gender');
    const texts = [' A male mechanic.', ' She is female.', ' A mechanic.'];
    const measured = texts.map((text) => ({
      ...sample(0, uk.readAttribute(text)),
      text,
    }));
    const row = summarizeMeasurement(uk, measured, { bootstrapReps: 10 }).occupations[0];
    expect(row.counts).toEqual([1, 1]);
    expect(row.unknownCount).toBe(1);
    expect(row.mae).toBeCloseTo(Math.abs(0.5 - uk.occupations[0].target[0]), 12);
  });
});
