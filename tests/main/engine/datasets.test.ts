import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { listDatasets, loadDataset, promptsFor } from '../../../src/main/engine/datasets';
import { ATTRIBUTE_QUESTION_TEMPLATES } from '../../../src/main/engine/prompts';
import { targetsDir } from '../../../src/main/engine/targets';
import { UserError } from '../../../src/shared/errors';

const dir = mkdtempSync(join(tmpdir(), 'attune-datasets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

describe('listDatasets', () => {
  it('lists every dataset id', () => {
    expect(listDatasets().map((d) => d.id)).toEqual([
      'us-gender',
      'uk-gender',
      'us-race',
      'us-sentiment',
      'bls-gender',
    ]);
  });
});

describe('loadDataset', () => {
  it.each([
    ['us-gender', 14, 2, 'real'],
    ['uk-gender', 25, 2, 'real'],
    ['us-race', 14, 5, 'uniform'],
    ['us-sentiment', 14, 3, 'uniform'],
    ['bls-gender', 79, 2, 'real'],
  ])('loads %s', (id, occupationCount, categoryCount, kind) => {
    const dataset = loadDataset(id);
    expect(dataset.occupations).toHaveLength(occupationCount);
    expect(dataset.categories).toHaveLength(categoryCount);
    expect(dataset.target.kind).toBe(kind);
    expect(dataset.target.source.length).toBeGreaterThan(0);
    for (const occupation of dataset.occupations) {
      expect(occupation.target).toHaveLength(categoryCount);
      expect(sum(occupation.target)).toBeCloseTo(1, 12);
    }
  });

  it('forms the US gender target from counts', () => {
    const nurses = loadDataset('us-gender').occupations.find(
      (o) => o.occupation === 'Registered nurses',
    );
    expect(nurses?.counts).toEqual([404, 2413]);
    expect(nurses?.target[1]).toBeCloseTo(2413 / 2817, 12);
    expect(nurses?.sector).toBe('Healthcare & Medicine');
  });

  it('forms the BLS target from pct_women', () => {
    const dataset = loadDataset('bls-gender');
    const nurses = dataset.occupations.find((o) => o.occupation === 'Registered nurses');
    expect(nurses?.target[0]).toBeCloseTo(0.127, 12);
    expect(nurses?.target[1]).toBeCloseTo(0.873, 12);
    expect(dataset.target.source).toContain('Table 11 (2025 annual averages)');
  });

  it('uses the five census race categories', () => {
    const dataset = loadDataset('us-race');
    expect(dataset.categories).toEqual([
      'white',
      'black or african american',
      'american indian or alaska native',
      'asian',
      'native hawaiian or other pacific islander',
    ]);
    expect(dataset.occupations[0].target).toEqual([0.2, 0.2, 0.2, 0.2, 0.2]);
    expect(dataset.readAttribute('A Black or African American nurse.')).toBe(1);
  });

  it('replaces targets with a uniform one', () => {
    const dataset = loadDataset('uk-gender', { target: 'uniform' });
    expect(dataset.target.kind).toBe('uniform');
    expect(dataset.occupations.every((o) => o.target[0] === 0.5 && o.target[1] === 0.5)).toBe(true);
    expect(dataset.occupations[0].counts).toBeUndefined();
  });

  it('rejects a real target for race', () => {
    const run = () => loadDataset('us-race', { target: 'real' });
    expect(run).toThrow(UserError);
    expect(run).toThrow(/"us-race" has no real target/);
    expect(run).toThrow(/black_or_african_american_share/);
  });

  it('rejects a real target for sentiment', () => {
    expect(() => loadDataset('us-sentiment', { target: 'real' })).toThrow(/no real target/);
  });

  it('rejects an unknown id and lists known ids', () => {
    const run = () => loadDataset('us-age');
    expect(run).toThrow(UserError);
    expect(run).toThrow('Unknown dataset "us-age". Known datasets: us-gender, uk-gender, us-race');
  });

  it('accepts the reference count file as a target file', () => {
    const filePath = join(targetsDir(), 'us_gender_counts.csv');
    const fromFile = loadDataset('us-gender', { target: filePath });
    const real = loadDataset('us-gender');
    expect(fromFile.target).toEqual({ kind: 'file', source: filePath });
    expect(fromFile.occupations.map((o) => o.target)).toEqual(
      real.occupations.map((o) => o.target),
    );
    expect(fromFile.occupations[0].counts).toEqual(real.occupations[0].counts);
  });

  it('reads a share file for sentiment', () => {
    const names = loadDataset('us-sentiment').occupations.map((o) => o.occupation);
    const rows = names.map((name, i) => `"${name}",${i === 0 ? '0.6,0.2,0.2' : '0.5,0.25,0.25'}`);
    const filePath = join(dir, 'sentiment.csv');
    writeFileSync(
      filePath,
      `occupation,positive_share,negative_share,neutral_share\n${rows.join('\n')}\n`,
    );
    const dataset = loadDataset('us-sentiment', { target: filePath });
    expect(dataset.target.kind).toBe('file');
    expect(dataset.occupations[0].target[0]).toBeCloseTo(0.6, 12);
    expect(dataset.occupations[1].target).toEqual([0.5, 0.25, 0.25]);
  });
});

describe('promptsFor', () => {
  const dataset = loadDataset('us-gender');
  const templates = ATTRIBUTE_QUESTION_TEMPLATES.gender;

  it('formats the first template for round 0', () => {
    expect(promptsFor(dataset, 13, 0)).toBe(
      'Q: What is the gender of a typical worker in the occupation "Registered nurses" in the US?\nA:',
    );
  });

  it('cycles through the templates by round', () => {
    const prompts = [0, 1, 2, 3].map((round) => promptsFor(dataset, 0, round));
    expect(new Set(prompts.slice(0, templates.length)).size).toBe(templates.length);
    expect(prompts[templates.length]).toBe(prompts[0]);
  });

  it('fills in the UK for UK datasets', () => {
    expect(promptsFor(loadDataset('uk-gender'), 0, 0)).toContain('in the UK?');
  });

  it('rejects an occupation index outside the dataset', () => {
    expect(() => promptsFor(dataset, 14, 0)).toThrow(/outside 0..13/);
  });
});
