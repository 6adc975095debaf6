/**
 * Dataset definitions: occupations, categories, question templates and targets.
 *
 * The four reference datasets use the 14 US and 25 UK occupations of the reference study. The
 * `bls-gender` dataset uses 79 detailed occupations of the US Bureau of Labor Statistics (2025).
 * Any dataset's target can be replaced by a uniform one or by a target CSV file.
 */

import { resolve } from 'node:path';
import { invariant, UserError } from '../../shared/errors';
import {
  ATTRIBUTE_QUESTION_TEMPLATES,
  type Attribute,
  fillQuestion,
  formatPrompt,
} from './prompts';
import { createAttributeReader } from './reader';
import { columnStem, readBlsOccupations, readReferenceCounts, readTargetFile } from './targets';

export interface OccupationTarget {
  occupation: string;
  sector?: string;
  /** Target distribution over the dataset's categories; sums to 1. */
  target: number[];
  /** Source counts per category, when the target was formed from counts. */
  counts?: number[];
}

export type TargetKind = 'real' | 'uniform' | 'file';

export interface DatasetDefinition {
  id: string;
  title: string;
  attribute: Attribute;
  country: 'US' | 'UK';
  /** Lower-case category names; the reader matches these words in response texts. */
  categories: string[];
  occupations: OccupationTarget[];
  questionTemplates: readonly string[];
  /** Target kind and its source: a citation for `real`, the file path for `file`. */
  target: { kind: TargetKind; source: string };
  /** Returns the index of the category a response text names, or null for unknown. */
  readAttribute(text: string): number | null;
}

export interface LoadDatasetOptions {
  /** `real` (published statistics), `uniform` (1/K each) or the path of a target CSV file. */
  target?: 'real' | 'uniform' | string;
}

const GENDER = ['male', 'female'];
const RACE = [
  'white',
  'black or african american',
  'american indian or alaska native',
  'asian',
  'native hawaiian or other pacific islander',
];
const SENTIMENT = ['positive', 'negative', 'neutral'];

const REFERENCE_SOURCE =
  'counts shipped with the public reference implementation of steering-token calibration ' +
  'with KTO (YanbeiJiang/Distribution-Debias, commit 4a38421; source year not stated there)';
const US_GENDER_SOURCE =
  'U.S. Bureau of Labor Statistics, Current Population Survey, median weekly earnings of ' +
  'full-time wage and salary workers by detailed occupation and sex (table 39 layout), men ' +
  `and women in thousands; ${REFERENCE_SOURCE}`;
const UK_GENDER_SOURCE =
  'UK Office for National Statistics, Annual Survey of Hours and Earnings (table 14 layout), ' +
  `SOC 2020 unit groups, jobs held by men and by women; ${REFERENCE_SOURCE}`;
const BLS_SOURCE =
  'U.S. Bureau of Labor Statistics, Current Population Survey, Table 11 (2025 annual ' +
  'averages), pct_women as the female share';

/** Base data of one dataset; `loadDataset` turns it into a definition with a chosen target. */
interface DatasetSpec {
  id: string;
  title: string;
  attribute: Attribute;
  country: 'US' | 'UK';
  categories: string[];
  defaultTarget: 'real' | 'uniform';
  loadOccupations(): OccupationBase[];
  /** Published targets, absent when no statistics exist for the attribute. */
  real?: { source: string; load(): OccupationTarget[] };
}

type OccupationBase = Omit<OccupationTarget, 'target' | 'counts'>;

const SPECS: readonly DatasetSpec[] = [
  {
    id: 'us-gender',
    title: 'Gender, 14 US reference occupations',
    attribute: 'gender',
    country: 'US',
    categories: GENDER,
    defaultTarget: 'real',
    loadOccupations: () => referenceOccupations('US'),
    real: { source: US_GENDER_SOURCE, load: () => referenceGenderOccupations('US') },
  },
  {
    id: 'uk-gender',
    title: 'Gender, 25 UK reference occupations',
    attribute: 'gender',
    country: 'UK',
    categories: GENDER,
    defaultTarget: 'real',
    loadOccupations: () => referenceOccupations('UK'),
    real: { source: UK_GENDER_SOURCE, load: () => referenceGenderOccupations('UK') },
  },
  {
    id: 'us-race',
    title: 'Race, 14 US reference occupations',
    attribute: 'race',
    country: 'US',
    categories: RACE,
    defaultTarget: 'uniform',
    loadOccupations: () => referenceOccupations('US'),
  },
  {
    id: 'us-sentiment',
    title: 'Sentiment, 14 US reference occupations',
    attribute: 'sentiment',
    country: 'US',
    categories: SENTIMENT,
    defaultTarget: 'uniform',
    loadOccupations: () => referenceOccupations('US'),
  },
  {
    id: 'bls-gender',
    title: 'Gender, 79 US BLS occupations (2025)',
    attribute: 'gender',
    country: 'US',
    categories: GENDER,
    defaultTarget: 'real',
    loadOccupations: () => blsGenderOccupations().map(({ occupation }) => ({ occupation })),
    real: { source: BLS_SOURCE, load: blsGenderOccupations },
  },
];

function referenceGenderOccupations(country: 'US' | 'UK'): OccupationTarget[] {
  return readReferenceCounts(country).map(({ occupation, sector, counts }) => {
    const total = counts[0] + counts[1];
    invariant(total > 0, () => `bundled ${country} counts for "${occupation}" are all zero`);
    return { occupation, sector, target: counts.map((c) => c / total), counts: [...counts] };
  });
}

function referenceOccupations(country: 'US' | 'UK'): OccupationBase[] {
  return readReferenceCounts(country).map(({ occupation, sector }) => ({ occupation, sector }));
}

function blsGenderOccupations(): OccupationTarget[] {
  return readBlsOccupations().map(({ occupation, pctWomen }) => ({
    occupation,
    target: [1 - pctWomen / 100, pctWomen / 100],
  }));
}

/** Returns the id and title of every dataset, in a stable order. */
export function listDatasets(): { id: string; title: string }[] {
  return SPECS.map(({ id, title }) => ({ id, title }));
}

/**
 * Loads a dataset with its default target or the one in `options.target`.
 *
 * @example
 * const dataset = loadDataset('uk-gender', { target: 'uniform' });
 * dataset.occupations[0].target; // [0.5, 0.5]
 */
export function loadDataset(id: string, options: LoadDatasetOptions = {}): DatasetDefinition {
  const spec = SPECS.find((candidate) => candidate.id === id);
  if (!spec) {
    const known = SPECS.map((candidate) => candidate.id).join(', ');
    throw new UserError(`Unknown dataset "${id}". Known datasets: ${known}.`);
  }
  const choice = options.target ?? spec.defaultTarget;
  const { occupations, target } = applyTarget(spec, choice);
  return {
    id: spec.id,
    title: spec.title,
    attribute: spec.attribute,
    country: spec.country,
    categories: [...spec.categories],
    occupations,
    questionTemplates: ATTRIBUTE_QUESTION_TEMPLATES[spec.attribute],
    target,
    readAttribute: createAttributeReader(spec.categories),
  };
}

function applyTarget(
  spec: DatasetSpec,
  choice: string,
): { occupations: OccupationTarget[]; target: DatasetDefinition['target'] } {
  const k = spec.categories.length;
  if (choice === 'real') {
    if (!spec.real) throw noRealTarget(spec);
    return { occupations: spec.real.load(), target: { kind: 'real', source: spec.real.source } };
  }
  const base = spec.loadOccupations();
  if (choice === 'uniform') {
    const occupations = base.map(({ occupation, sector }) => ({
      occupation,
      ...(sector === undefined ? {} : { sector }),
      target: new Array<number>(k).fill(1 / k),
    }));
    return { occupations, target: { kind: 'uniform', source: `uniform, 1/${k} per category` } };
  }
  return fileTarget(spec, base, resolve(choice));
}

function fileTarget(spec: DatasetSpec, base: OccupationBase[], filePath: string) {
  const names = base.map((row) => row.occupation);
  const file = readTargetFile(filePath, spec.categories, names);
  const occupations: OccupationTarget[] = base.map(({ occupation, sector }, i) => ({
    occupation,
    ...(sector === undefined ? {} : { sector }),
    target: file.targets[i],
    ...(file.counts ? { counts: file.counts[i] } : {}),
  }));
  return { occupations, target: { kind: 'file' as const, source: filePath } };
}

function noRealTarget(spec: DatasetSpec): UserError {
  const columns = spec.categories.map((category) => `${columnStem(category)}_share`).join(', ');
  return new UserError(
    `Dataset "${spec.id}" has no real target: no published ${spec.attribute} statistics exist for ` +
      `its occupations. Use target "uniform" or a CSV file with columns occupation, ${columns}.`,
  );
}

/**
 * Formats the prompt for one occupation in one sampling round. Rounds cycle through the
 * dataset's question templates, so round r uses template r mod the template count.
 *
 * @example
 * promptsFor(loadDataset('us-gender'), 13, 0);
 * // 'Q: What is the gender of a typical worker in the occupation "Registered nurses" in the US?\nA:'
 */
export function promptsFor(
  dataset: DatasetDefinition,
  occupationIndex: number,
  round: number,
): string {
  return formatPrompt(questionFor(dataset, occupationIndex, round));
}

/** Returns the question of one round without a prompt format, for example for a chat template. */
export function questionFor(
  dataset: DatasetDefinition,
  occupationIndex: number,
  round: number,
): string {
  const occupation = dataset.occupations[occupationIndex];
  invariant(
    occupation,
    () => `occupation index ${occupationIndex} is outside 0..${dataset.occupations.length - 1}`,
  );
  invariant(
    Number.isInteger(round) && round >= 0,
    () => `round ${round} is not a non-negative integer`,
  );
  const template = dataset.questionTemplates[round % dataset.questionTemplates.length];
  return fillQuestion(template, occupation.occupation, dataset.country);
}
