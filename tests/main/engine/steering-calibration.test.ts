import { describe, expect, it } from 'vitest';
import { loadDataset } from '../../../src/main/engine/datasets';
import type { SampledResponse } from '../../../src/main/engine/measure';
import { steeringCalibration } from '../../../src/main/engine/pipeline';

function sample(occupationIndex: number, steeringProbs: number[] | null): SampledResponse {
  return {
    occupationIndex,
    round: 0,
    prompt: '',
    promptIds: [],
    text: '',
    textIds: [],
    finished: true,
    steeringCategory: steeringProbs ? 0 : null,
    textCategory: null,
    steeringProbs,
  };
}

describe('steeringCalibration', () => {
  const dataset = loadDataset('us-gender', { target: 'uniform' });

  it('averages softmax per occupation', () => {
    const samples = dataset.occupations.flatMap((_, o) => [
      sample(o, [0.6, 0.4]),
      sample(o, [0.4, 0.6]),
    ]);
    samples.push(sample(0, [1, 0]));
    const result = steeringCalibration(dataset, samples);
    expect(result, 'calibration with steering').not.toBeNull();
    expect(result?.shares[0][0], 'occupation 0 male share').toBeCloseTo(2 / 3, 10);
    expect(result?.shares[1][0], 'occupation 1 male share').toBeCloseTo(0.5, 10);
    // Occupation 0 is off by 1/6 on both categories, the other 13 are exact.
    expect(result?.mae, 'dataset MAE').toBeCloseTo(1 / 6 / 14, 10);
  });

  it('returns null without steering', () => {
    const samples = dataset.occupations.map((_, o) => sample(o, null));
    expect(steeringCalibration(dataset, samples)).toBeNull();
  });
});
