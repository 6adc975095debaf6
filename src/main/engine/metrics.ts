/**
 * Distribution metrics of sampled responses against a dataset's targets.
 *
 * The category of a response comes from its text (see reader.ts), never from its steering
 * token. Responses whose text names no category are unknown: they are counted and reported,
 * but left out of the denominator of the measured distribution, as in the reference study.
 */

import seedrandom from 'seedrandom';
import { mean, quantileSorted, sampleWithReplacement } from 'simple-statistics';
import { invariant } from '../../shared/errors';
import type {
  Interval,
  MeasurementMethod,
  MeasurementSummary,
  OccupationMeasurement,
} from '../../shared/report-types';
import type { DatasetDefinition } from './datasets';

export interface MeasuredSample {
  occupationIndex: number;
  round: number;
  prompt: string;
  text: string;
  /** Category of the sampled steering token; null when the model has no steering tokens. */
  steeringCategory: number | null;
  /** Category the reader found in `text`; null for unknown. */
  textCategory: number | null;
}

export interface SummarizeOptions {
  /** Bootstrap replicates for the MAE interval; 1000 by default, 0 turns the interval off. */
  bootstrapReps?: number;
  /** Seed of the bootstrap resampling, so a report can be recomputed exactly. */
  seed?: number;
  /**
   * Resample within the groups of responses that drew the same steering token, keeping each
   * group's size, as stratified steering draws fix those sizes by design. Off by default.
   */
  stratifyBySteering?: boolean;
}

/**
 * Pseudocount added to every category count before KL(target || measured) is computed, and
 * only there. Without it a category the model never named makes the KL infinite. The
 * smoothed measured share is (count + 0.5) / (known + 0.5 K). Target entries of 0 contribute 0.
 */
export const KL_PSEUDOCOUNT = 0.5;

const DEFAULT_BOOTSTRAP_REPS = 1000;
const DEFAULT_BOOTSTRAP_SEED = 0;
/** Standard normal 0.975 quantile; simple-statistics 7.12 `probit(0.975)` returns 1.9572. */
const Z_95 = 1.959963984540054;

type DatasetShape = Pick<DatasetDefinition, 'id' | 'categories' | 'occupations'>;

/**
 * Summarizes sampled responses per occupation and over the dataset.
 *
 * Dataset MAE, KL and TV are means over the occupations that have a measured distribution;
 * occupations where every response was unknown are listed in `flaggedOccupations`.
 *
 * @example
 * const summary = summarizeMeasurement(dataset, samples, { seed: 7 });
 * console.log(summary.mae, summary.maeInterval, summary.unknownShare);
 */
export function summarizeMeasurement(
  dataset: DatasetShape,
  samples: readonly MeasuredSample[],
  options: SummarizeOptions = {},
): MeasurementSummary {
  const k = dataset.categories.length;
  const labelsByOccupation = groupLabels(dataset, samples);
  const occupations = labelsByOccupation.map((labels, i) =>
    measureOccupation(dataset, i, labels, samples),
  );
  const measured = occupations.filter((row) => !row.flagged);
  const counts = new Array<number>(k).fill(0);
  for (const row of occupations) {
    for (let c = 0; c < k; c++) counts[c] += row.counts[c];
  }
  const knownCount = counts.reduce((a, b) => a + b, 0);
  const agreement = agreementOf(samples);
  const method = measurementMethod(options);
  return {
    datasetId: dataset.id,
    categories: [...dataset.categories],
    sampleCount: samples.length,
    knownCount,
    unknownCount: samples.length - knownCount,
    unknownShare: samples.length > 0 ? (samples.length - knownCount) / samples.length : null,
    counts,
    occupations,
    measuredOccupationCount: measured.length,
    flaggedOccupations: occupations.filter((row) => row.flagged).map((row) => row.occupation),
    mae: meanOrNull(measured.map((row) => row.mae as number)),
    ...bootstrapMae(dataset, bootstrapGroups(dataset, samples, method), method),
    kl: meanOrNull(measured.map((row) => row.kl as number)),
    tv: meanOrNull(measured.map((row) => row.tv as number)),
    agreement: agreement.share,
    agreementSampleCount: agreement.sampleCount,
    method,
  };
}

function measurementMethod(options: SummarizeOptions): MeasurementMethod {
  const reps = options.bootstrapReps ?? DEFAULT_BOOTSTRAP_REPS;
  invariant(
    Number.isInteger(reps) && reps >= 0,
    () => `bootstrapReps ${reps} is not an integer >= 0`,
  );
  return {
    reader: 'lowercased text, whole-word category names, the latest last mention wins',
    klSmoothingPseudocount: KL_PSEUDOCOUNT,
    shareInterval: 'wilson-95',
    maeInterval: options.stratifyBySteering
      ? 'bootstrap-percentile-95-within-steering-strata'
      : 'bootstrap-percentile-95',
    bootstrapReps: reps,
    bootstrapSeed: options.seed ?? DEFAULT_BOOTSTRAP_SEED,
  };
}

/** Text category of every sample, grouped by occupation; -1 stands for unknown. */
function groupLabels(dataset: DatasetShape, samples: readonly MeasuredSample[]): number[][] {
  const k = dataset.categories.length;
  const groups: number[][] = dataset.occupations.map(() => []);
  for (const sample of samples) {
    const group = groups[sample.occupationIndex];
    invariant(
      group,
      () => `sample occupationIndex ${sample.occupationIndex} is not in the dataset`,
    );
    checkCategory(sample.textCategory, k, 'textCategory');
    checkCategory(sample.steeringCategory, k, 'steeringCategory');
    group.push(sample.textCategory ?? -1);
  }
  return groups;
}

function checkCategory(category: number | null, k: number, field: string): void {
  invariant(
    category === null || (Number.isInteger(category) && category >= 0 && category < k),
    () => `sample ${field} ${category} is outside 0..${k - 1}`,
  );
}

function measureOccupation(
  dataset: DatasetShape,
  index: number,
  labels: number[],
  samples: readonly MeasuredSample[],
): OccupationMeasurement {
  const { occupation, sector, target } = dataset.occupations[index];
  const k = dataset.categories.length;
  invariant(
    target.length === k,
    () => `target of "${occupation}" has ${target.length} entries, expected ${k}`,
  );
  const counts = countLabels(labels, k);
  const known = counts.reduce((a, b) => a + b, 0);
  const measured = known > 0 ? counts.map((count) => count / known) : null;
  const agreement = agreementOf(samples.filter((sample) => sample.occupationIndex === index));
  return {
    occupationIndex: index,
    occupation,
    ...(sector === undefined ? {} : { sector }),
    target: [...target],
    counts,
    unknownCount: labels.length - known,
    total: labels.length,
    measured,
    flagged: measured === null,
    mae: measured ? meanAbsoluteError(measured, target) : null,
    kl: measured ? smoothedKl(target, counts) : null,
    tv: measured ? totalVariation(measured, target) : null,
    agreement: agreement.share,
    agreementSampleCount: agreement.sampleCount,
    unknownShare: labels.length > 0 ? (labels.length - known) / labels.length : null,
    shareIntervals: measured ? counts.map((count) => wilsonInterval(count, known)) : null,
  };
}

function countLabels(labels: readonly number[], k: number): number[] {
  const counts = new Array<number>(k).fill(0);
  for (const label of labels) if (label >= 0) counts[label]++;
  return counts;
}

/** Mean over categories of |measured_k - target_k|. */
export function meanAbsoluteError(measured: readonly number[], target: readonly number[]): number {
  return mean(measured.map((share, k) => Math.abs(share - target[k])));
}

/** Total variation distance: half the sum over categories of |measured_k - target_k|. */
export function totalVariation(measured: readonly number[], target: readonly number[]): number {
  return 0.5 * measured.reduce((sum, share, k) => sum + Math.abs(share - target[k]), 0);
}

/** KL(target || measured) in nats, with KL_PSEUDOCOUNT added to every count of `counts`. */
export function smoothedKl(target: readonly number[], counts: readonly number[]): number {
  const total = counts.reduce((a, b) => a + b, 0) + KL_PSEUDOCOUNT * counts.length;
  let kl = 0;
  target.forEach((p, k) => {
    if (p > 0) kl += p * Math.log(p / ((counts[k] + KL_PSEUDOCOUNT) / total));
  });
  return kl;
}

/** 95% Wilson score interval of the share `successes / trials`; trials must be positive. */
export function wilsonInterval(successes: number, trials: number): Interval {
  invariant(trials > 0, () => `Wilson interval needs trials > 0, got ${trials}`);
  const share = successes / trials;
  const z2 = Z_95 * Z_95;
  const denominator = 1 + z2 / trials;
  const center = (share + z2 / (2 * trials)) / denominator;
  const halfWidth =
    (Z_95 * Math.sqrt((share * (1 - share)) / trials + z2 / (4 * trials * trials))) / denominator;
  return { low: Math.max(0, center - halfWidth), high: Math.min(1, center + halfWidth) };
}

function agreementOf(samples: readonly MeasuredSample[]): {
  share: number | null;
  sampleCount: number;
} {
  let sampleCount = 0;
  let agreeing = 0;
  for (const sample of samples) {
    if (sample.steeringCategory === null || sample.textCategory === null) continue;
    sampleCount++;
    if (sample.steeringCategory === sample.textCategory) agreeing++;
  }
  return { share: sampleCount > 0 ? agreeing / sampleCount : null, sampleCount };
}

function meanOrNull(values: number[]): number | null {
  return values.length > 0 ? mean(values) : null;
}

/**
 * Resampling groups per occupation: all its responses, or with stratified steering draws one
 * group per drawn steering token, whose size the draws fixed.
 */
function bootstrapGroups(
  dataset: DatasetShape,
  samples: readonly MeasuredSample[],
  method: MeasurementMethod,
): number[][][] {
  const stratified = method.maeInterval === 'bootstrap-percentile-95-within-steering-strata';
  const groups = dataset.occupations.map(() => new Map<number, number[]>());
  for (const sample of samples) {
    const key = stratified ? (sample.steeringCategory ?? -1) : 0;
    const byKey = groups[sample.occupationIndex];
    const group = byKey.get(key) ?? [];
    group.push(sample.textCategory ?? -1);
    byKey.set(key, group);
  }
  return groups.map((byKey) => [...byKey.values()]);
}

/**
 * Percentile bootstrap of the dataset MAE. Each replicate resamples every occupation's
 * responses (unknown ones included) with replacement, group by group, and recomputes the
 * dataset MAE the same way as the point estimate, so an occupation whose resample is all
 * unknown is left out of that replicate. Occupations are fixed: only the responses within them
 * vary.
 */
function bootstrapMae(
  dataset: DatasetShape,
  groupsByOccupation: number[][][],
  method: MeasurementMethod,
): { maeInterval: Interval | null; maeBootstrapMean: number | null } {
  const k = dataset.categories.length;
  const random = seedrandom(String(method.bootstrapSeed));
  const replicateMaes: number[] = [];
  for (let rep = 0; rep < method.bootstrapReps; rep++) {
    const maes: number[] = [];
    groupsByOccupation.forEach((groups, i) => {
      if (groups.length === 0) return;
      const resampled = groups.flatMap((labels) =>
        sampleWithReplacement(labels, labels.length, random),
      );
      const counts = countLabels(resampled, k);
      const known = counts.reduce((a, b) => a + b, 0);
      if (known === 0) return;
      const measured = counts.map((count) => count / known);
      maes.push(meanAbsoluteError(measured, dataset.occupations[i].target));
    });
    if (maes.length > 0) replicateMaes.push(mean(maes));
  }
  if (replicateMaes.length < 2) return { maeInterval: null, maeBootstrapMean: null };
  replicateMaes.sort((a, b) => a - b);
  return {
    maeInterval: {
      low: quantileSorted(replicateMaes, 0.025),
      high: quantileSorted(replicateMaes, 0.975),
    },
    maeBootstrapMean: mean(replicateMaes),
  };
}
