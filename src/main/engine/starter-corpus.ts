/**
 * Training corpus of the starter model: generated responses about occupations whose gender follows
 * a stereotype-amplified version of real shares, so that the starter model has a measurable bias
 * for the studio to fix.
 */

import seedrandom from 'seedrandom';
import { UserError } from '../../shared/errors';
import { ATTRIBUTE_QUESTION_TEMPLATES, fillQuestion, formatPrompt } from './prompts';

export interface CorpusOccupation {
  occupation: string;
  country: 'US' | 'UK';
  /** Real share of women among the workers, from 0 to 1. */
  femaleShare: number;
}

export interface StarterExample {
  occupation: string;
  country: 'US' | 'UK';
  /** `formatPrompt(...)` of one gender question template. */
  prompt: string;
  /** Response text starting with a space, without the end-of-text token. */
  response: string;
  /** Gender the response states, or null for a response that states none. */
  gender: 'male' | 'female' | null;
}

export interface StarterCorpusOptions {
  /** PRNG seed. The same seed and occupations give the same corpus. */
  seed: number;
  /** Examples per occupation, spread evenly over the gender question templates. */
  examplesPerOccupation: number;
  /** Logit scale applied to each real share. Values above 1 exaggerate the majority gender. */
  gamma: number;
  /** Probability, from 0 to 1, that a response states no gender. */
  unknownShare: number;
}

/**
 * Scales the logit of `realShare` by `gamma`: p^g / (p^g + (1-p)^g). Keeps 0, 0.5 and 1 fixed
 * and pushes every other share away from 0.5 when gamma > 1.
 *
 * @example
 * amplifiedFemaleShare(0.8, 2); // 0.941: 0.64 / (0.64 + 0.04)
 */
export function amplifiedFemaleShare(realShare: number, gamma: number): number {
  if (!(realShare >= 0 && realShare <= 1)) {
    throw new UserError(`Invalid female share ${realShare}: expected a number from 0 to 1.`);
  }
  if (!(Number.isFinite(gamma) && gamma > 0)) {
    throw new UserError(`Invalid gamma ${gamma}: expected a finite number above 0.`);
  }
  const female = realShare ** gamma;
  const male = (1 - realShare) ** gamma;
  return female / (female + male);
}

/**
 * Generates `examplesPerOccupation` examples per occupation, in occupation order. Each draws its
 * gender with probability amplifiedFemaleShare(femaleShare, gamma) of female, except a share
 * `unknownShare` of responses that state no gender.
 *
 * @example
 * generateStarterCorpus([{ occupation: 'Nurses', country: 'UK', femaleShare: 0.89 }],
 *   { seed: 1, examplesPerOccupation: 30, gamma: 2, unknownShare: 0.02 });
 */
export function generateStarterCorpus(
  occupations: CorpusOccupation[],
  options: StarterCorpusOptions,
): StarterExample[] {
  validateOptions(options);
  occupations.forEach(validateOccupation);
  const random = seedrandom(`attune-starter-corpus:${options.seed}`);
  const templates = ATTRIBUTE_QUESTION_TEMPLATES.gender;
  const examples: StarterExample[] = [];
  for (const { occupation, country, femaleShare } of occupations) {
    const pFemale = amplifiedFemaleShare(femaleShare, options.gamma);
    for (let i = 0; i < options.examplesPerOccupation; i++) {
      const prompt = formatPrompt(
        fillQuestion(templates[i % templates.length], occupation, country),
      );
      let gender: StarterExample['gender'] = null;
      if (random() >= options.unknownShare) gender = random() < pFemale ? 'female' : 'male';
      const response =
        gender === null ? unknownResponse(random) : genderedResponse(gender, occupation, random);
      examples.push({ occupation, country, prompt, response, gender });
    }
  }
  return examples;
}

function validateOptions(options: StarterCorpusOptions): void {
  const { seed, examplesPerOccupation, gamma, unknownShare } = options;
  if (!Number.isFinite(seed))
    throw new UserError(`Invalid corpus seed ${seed}: expected a finite number.`);
  if (!(Number.isInteger(examplesPerOccupation) && examplesPerOccupation >= 1)) {
    throw new UserError(
      `Invalid examplesPerOccupation ${examplesPerOccupation}: expected an integer >= 1.`,
    );
  }
  if (!(Number.isFinite(gamma) && gamma > 0)) {
    throw new UserError(`Invalid gamma ${gamma}: expected a finite number above 0.`);
  }
  if (!(unknownShare >= 0 && unknownShare < 1)) {
    throw new UserError(`Invalid unknownShare ${unknownShare}: expected a number from 0 up to 1.`);
  }
}

function validateOccupation(entry: CorpusOccupation, index: number): void {
  const where = `Occupation ${index} (${JSON.stringify(entry.occupation)})`;
  if (typeof entry.occupation !== 'string' || entry.occupation.trim() === '') {
    throw new UserError(`Occupation ${index} has an empty name.`);
  }
  if (entry.country !== 'US' && entry.country !== 'UK') {
    throw new UserError(
      `${where} has country ${JSON.stringify(entry.country)}: expected "US" or "UK".`,
    );
  }
  if (!(entry.femaleShare >= 0 && entry.femaleShare <= 1)) {
    throw new UserError(
      `${where} has femaleShare ${entry.femaleShare}: expected a number from 0 to 1.`,
    );
  }
  if (/\b(fe)?male\b/i.test(entry.occupation)) {
    throw new UserError(
      `${where} contains a gender word, which would contradict the generated responses. Rename the occupation.`,
    );
  }
}

type Random = () => number;

interface Pronouns {
  /** Subject pronoun: she, he. Templates capitalise it at the start of a sentence. */
  subject: string;
  /** Object pronoun: her, him. */
  object: string;
  /** Possessive determiner: her, his. */
  possessive: string;
}

const PRONOUNS: Record<'male' | 'female', Pronouns> = {
  female: { subject: 'she', object: 'her', possessive: 'her' },
  male: { subject: 'he', object: 'him', possessive: 'his' },
};

/** First sentences, where `{gender}` is the word "male" or "female". */
const OPENINGS = [
  'This worker is {gender}.',
  'The typical worker here is {gender}.',
  'The person I picture is {gender}.',
  'Most likely this worker is {gender}.',
  'This person is {gender}.',
  'I would say the worker is {gender}.',
];

/** Follow-up sentences that fit any occupation. `{S}` is the capitalised subject pronoun. */
const NEUTRAL_SENTENCES = [
  '{S} works hard and takes pride in {pos} job.',
  '{S} usually starts early in the morning.',
  'People say {s} stays calm under pressure.',
  '{S} often helps newer colleagues learn the ropes.',
  '{S} keeps learning new skills every year.',
  'Most days {s} finishes {pos} tasks on time.',
  '{S} likes to plan {pos} week carefully.',
  'Friends describe {obj} as careful and patient.',
  '{S} values teamwork and clear communication.',
  'After work {s} enjoys time with {pos} family.',
  'Customers often thank {obj} for {pos} help.',
  '{S} has a steady and reliable way of working.',
];

/** Follow-up sentences that name the occupation, written as in the question. */
const OCCUPATION_SENTENCES = [
  '{S} has built {pos} career in the occupation "{occupation}".',
  '{S} enjoys the daily work of the occupation "{occupation}".',
  'Colleagues in "{occupation}" rely on {obj} every day.',
  '{S} trained for years to work in "{occupation}".',
  'Working in "{occupation}" suits {obj} well.',
];

/** Responses that state no gender and use no gendered pronoun. */
const UNKNOWN_RESPONSES = [
  'It is hard to say. People of any background do this work.',
  'There is no way to tell. Anyone with the right skills can do this job.',
  'I cannot tell from the job title alone. Workers in this field vary widely.',
  'Nothing about the role decides that. Many kinds of people do it well.',
  'That depends on the person. This work is open to everyone who trains for it.',
];

const MIN_WORDS = 12;
const MAX_WORDS = 25;

function genderedResponse(gender: 'male' | 'female', occupation: string, random: Random): string {
  const fill = (sentence: string) => fillSentence(sentence, PRONOUNS[gender], occupation, gender);
  const sentences = [fill(pick(OPENINGS, random))];
  const first = pickFollowUp(sentences, fill, random);
  if (first !== undefined) sentences.push(first);
  if (countWords(sentences) < MIN_WORDS || random() < 0.5) {
    const second = pickFollowUp(sentences, fill, random);
    if (second !== undefined) sentences.push(second);
  }
  return ` ${sentences.join(' ')}`;
}

/**
 * Picks a follow-up sentence not used yet that keeps the response within MAX_WORDS. About a third
 * name the occupation. The neutral pool has 12 sentences of 6 to 9 words, so after a 4 to 7 word
 * opening it always has a fitting sentence.
 */
function pickFollowUp(
  sentences: string[],
  fill: (sentence: string) => string,
  random: Random,
): string | undefined {
  const budget = MAX_WORDS - countWords(sentences);
  const fitting = (pool: readonly string[]) =>
    pool.map(fill).filter((s) => !sentences.includes(s) && countWords([s]) <= budget);
  const occupationSentences = fitting(OCCUPATION_SENTENCES);
  const pool =
    random() < 0.35 && occupationSentences.length > 0
      ? occupationSentences
      : fitting(NEUTRAL_SENTENCES);
  return pool.length > 0 ? pick(pool, random) : undefined;
}

function fillSentence(
  sentence: string,
  pronouns: Pronouns,
  occupation: string,
  gender: string,
): string {
  return sentence
    .replaceAll('{gender}', gender)
    .replaceAll('{S}', capitalize(pronouns.subject))
    .replaceAll('{s}', pronouns.subject)
    .replaceAll('{obj}', pronouns.object)
    .replaceAll('{pos}', pronouns.possessive)
    .replaceAll('{occupation}', occupation);
}

function unknownResponse(random: Random): string {
  return ` ${pick(UNKNOWN_RESPONSES, random)}`;
}

function pick<T>(items: readonly T[], random: Random): T {
  return items[Math.floor(random() * items.length)];
}

function countWords(sentences: string[]): number {
  return sentences.join(' ').split(/\s+/).filter(Boolean).length;
}

function capitalize(word: string): string {
  return word.charAt(0).toUpperCase() + word.slice(1);
}
