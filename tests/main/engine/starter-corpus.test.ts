import { describe, expect, it } from 'vitest';
import {
  ATTRIBUTE_QUESTION_TEMPLATES,
  END_OF_TEXT,
  fillQuestion,
  formatPrompt,
} from '../../../src/main/engine/prompts';
import {
  amplifiedFemaleShare,
  type CorpusOccupation,
  generateStarterCorpus,
  type StarterExample,
} from '../../../src/main/engine/starter-corpus';
import { UserError } from '../../../src/shared/errors';

const OCCUPATIONS: CorpusOccupation[] = [
  { occupation: 'Nurses', country: 'UK', femaleShare: 0.89 },
  { occupation: 'Software developers', country: 'US', femaleShare: 0.2 },
  { occupation: 'Secondary education teaching professionals', country: 'UK', femaleShare: 0.63 },
  {
    occupation: 'Installation, maintenance, and repair occupations',
    country: 'US',
    femaleShare: 0.04,
  },
  { occupation: 'Financial managers', country: 'US', femaleShare: 0.5 },
];

const OPTIONS = { seed: 11, examplesPerOccupation: 2000, gamma: 2, unknownShare: 0.02 };

const mentions = (text: string, word: string) => new RegExp(`\\b${word}\\b`, 'i').test(text);
const FEMALE_PRONOUNS = /\b(she|her|hers|herself)\b/i;
const MALE_PRONOUNS = /\b(he|him|his|himself)\b/i;

/** Passes when `observed` of `n` Bernoulli(p) draws is within 4.5 standard deviations of p. */
function expectBinomialClose(observed: number, n: number, p: number): void {
  const tolerance = 4.5 * Math.sqrt((p * (1 - p)) / n) + 1e-9;
  expect(Math.abs(observed / n - p)).toBeLessThanOrEqual(tolerance);
}

describe('amplifiedFemaleShare', () => {
  it('keeps 0.5, 0 and 1 fixed', () => {
    for (const gamma of [0.5, 1, 2, 3.5]) {
      expect(amplifiedFemaleShare(0.5, gamma)).toBeCloseTo(0.5, 12);
      expect(amplifiedFemaleShare(0, gamma)).toBe(0);
      expect(amplifiedFemaleShare(1, gamma)).toBe(1);
    }
  });

  it('is the identity for gamma 1', () => {
    for (const share of [0.01, 0.2, 0.7, 0.99]) {
      expect(amplifiedFemaleShare(share, 1)).toBeCloseTo(share, 12);
    }
  });

  it('matches the logit-scaling formula', () => {
    expect(amplifiedFemaleShare(0.8, 2)).toBeCloseTo(0.64 / 0.68, 12);
    expect(amplifiedFemaleShare(0.25, 3)).toBeCloseTo(1 / 28, 12);
  });

  it('is monotone in the real share', () => {
    for (const gamma of [0.5, 2, 4]) {
      let previous = -1;
      for (let share = 0; share <= 1.0000001; share += 0.01) {
        const amplified = amplifiedFemaleShare(Math.min(share, 1), gamma);
        expect(amplified).toBeGreaterThan(previous);
        previous = amplified;
      }
    }
  });

  it('is more extreme than the input for gamma above 1', () => {
    for (const share of [0.05, 0.3, 0.49]) {
      expect(amplifiedFemaleShare(share, 2)).toBeLessThan(share);
      expect(amplifiedFemaleShare(1 - share, 2)).toBeGreaterThan(1 - share);
    }
  });

  it('rejects invalid arguments', () => {
    expect(() => amplifiedFemaleShare(1.2, 2)).toThrow(UserError);
    expect(() => amplifiedFemaleShare(Number.NaN, 2)).toThrow(/female share NaN/);
    expect(() => amplifiedFemaleShare(0.5, 0)).toThrow(/gamma 0/);
  });
});

describe('generateStarterCorpus', () => {
  const corpus = generateStarterCorpus(OCCUPATIONS, OPTIONS);
  const byOccupation = (name: string) => corpus.filter((e) => e.occupation === name);

  it('repeats for the same seed and differs for another', () => {
    expect(generateStarterCorpus(OCCUPATIONS, OPTIONS)).toEqual(corpus);
    const other = generateStarterCorpus(OCCUPATIONS, { ...OPTIONS, seed: 12 });
    expect(other).toHaveLength(corpus.length);
    expect(other.map((e) => e.response)).not.toEqual(corpus.map((e) => e.response));
  });

  it('makes the requested number of examples', () => {
    expect(corpus).toHaveLength(OCCUPATIONS.length * OPTIONS.examplesPerOccupation);
    for (const { occupation, country } of OCCUPATIONS) {
      const examples = byOccupation(occupation);
      expect(examples).toHaveLength(OPTIONS.examplesPerOccupation);
      expect(examples.every((e) => e.country === country)).toBe(true);
    }
  });

  it('asks every gender question template', () => {
    for (const { occupation, country } of OCCUPATIONS) {
      const prompts = new Set(byOccupation(occupation).map((e) => e.prompt));
      const expected = ATTRIBUTE_QUESTION_TEMPLATES.gender.map((template) =>
        formatPrompt(fillQuestion(template, occupation, country)),
      );
      expect([...prompts].sort()).toEqual([...expected].sort());
    }
  });

  it('follows the amplified female share', () => {
    for (const { occupation, femaleShare } of OCCUPATIONS) {
      const gendered = byOccupation(occupation).filter((e) => e.gender !== null);
      const female = gendered.filter((e) => e.gender === 'female').length;
      expectBinomialClose(
        female,
        gendered.length,
        amplifiedFemaleShare(femaleShare, OPTIONS.gamma),
      );
    }
  });

  it('leaves the unknown share without a gender', () => {
    const unknown = corpus.filter((e) => e.gender === null).length;
    expect(unknown).toBeGreaterThan(0);
    expectBinomialClose(unknown, corpus.length, OPTIONS.unknownShare);
  });

  it('states only the drawn gender', () => {
    for (const example of corpus.filter((e) => e.gender !== null)) {
      const other = example.gender === 'female' ? 'male' : 'female';
      expect(mentions(example.response, example.gender as string), example.response).toBe(true);
      expect(mentions(example.response, other), example.response).toBe(false);
      const wrongPronouns = example.gender === 'female' ? MALE_PRONOUNS : FEMALE_PRONOUNS;
      expect(wrongPronouns.test(example.response), example.response).toBe(false);
    }
  });

  it('states the gender in the first sentence', () => {
    for (const example of corpus.filter((e) => e.gender !== null)) {
      const firstSentence = example.response.split('.')[0];
      expect(mentions(firstSentence, example.gender as string), example.response).toBe(true);
    }
  });

  it('keeps unknown responses free of gender words', () => {
    for (const example of corpus.filter((e) => e.gender === null)) {
      expect(mentions(example.response, 'male'), example.response).toBe(false);
      expect(mentions(example.response, 'female'), example.response).toBe(false);
      expect(FEMALE_PRONOUNS.test(example.response), example.response).toBe(false);
      expect(MALE_PRONOUNS.test(example.response), example.response).toBe(false);
    }
  });

  it('writes short responses after a space', () => {
    for (const { response } of corpus) {
      const words = response.trim().split(/\s+/).length;
      expect(response.startsWith(' '), response).toBe(true);
      expect(response.startsWith('  '), response).toBe(false);
      expect(words, response).toBeGreaterThanOrEqual(12);
      expect(words, response).toBeLessThanOrEqual(25);
      expect(response.endsWith('.'), response).toBe(true);
      expect(response.includes(END_OF_TEXT)).toBe(false);
    }
  });

  it('varies its phrasing and names occupations', () => {
    const femaleResponses = new Set(
      corpus.filter((e) => e.gender === 'female').map((e) => e.response),
    );
    expect(femaleResponses.size).toBeGreaterThan(200);
    const naming = corpus.filter(
      (e) => e.gender !== null && e.response.includes(`"${e.occupation}"`),
    );
    expect(naming.length / corpus.length).toBeGreaterThan(0.2);
  });

  it('rejects invalid occupations by index and value', () => {
    const bad = (entry: Partial<CorpusOccupation>) =>
      generateStarterCorpus(
        [OCCUPATIONS[0], { ...OCCUPATIONS[1], ...entry } as CorpusOccupation],
        OPTIONS,
      );
    expect(() => bad({ femaleShare: 1.5 })).toThrow(
      'Occupation 1 ("Software developers") has femaleShare 1.5',
    );
    expect(() => bad({ country: 'FR' as 'US' })).toThrow(/has country "FR"/);
    expect(() => bad({ occupation: ' ' })).toThrow('Occupation 1 has an empty name.');
    expect(() => bad({ occupation: 'Female impersonators' })).toThrow(/gender word/);
  });

  it('rejects invalid options', () => {
    const run = (options: Partial<typeof OPTIONS>): StarterExample[] =>
      generateStarterCorpus(OCCUPATIONS, { ...OPTIONS, ...options });
    expect(() => run({ examplesPerOccupation: 0 })).toThrow(/examplesPerOccupation 0/);
    expect(() => run({ gamma: -1 })).toThrow(/gamma -1/);
    expect(() => run({ unknownShare: 1 })).toThrow(/unknownShare 1/);
    expect(() => run({ seed: Number.POSITIVE_INFINITY })).toThrow(UserError);
  });
});
