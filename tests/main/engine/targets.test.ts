import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  readBlsOccupations,
  readReferenceCounts,
  readTargetFile,
  targetsDir,
} from '../../../src/main/engine/targets';
import { UserError } from '../../../src/shared/errors';

const dir = mkdtempSync(join(tmpdir(), 'attune-targets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileCount = 0;
function writeCsv(text: string): string {
  const filePath = join(dir, `target-${fileCount++}.csv`);
  writeFileSync(filePath, text);
  return filePath;
}

const GENDER = ['male', 'female'];
const OCCUPATIONS = ['Nurses', 'Cooks', 'Pilots'];

function errorOf(run: () => unknown): UserError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(UserError);
    return error as UserError;
  }
  throw new Error('expected a UserError, but nothing was thrown');
}

function targetError(text: string, categories = GENDER, occupations = OCCUPATIONS) {
  const filePath = writeCsv(text);
  return {
    filePath,
    message: errorOf(() => readTargetFile(filePath, categories, occupations)).message,
  };
}

describe('readTargetFile', () => {
  it('reads shares in dataset order', () => {
    const filePath = writeCsv(
      'occupation,male_share,female_share\nCooks,0.5,0.5\nPilots,0.9,0.1\nNurses,0.1,0.9\n',
    );
    const result = readTargetFile(filePath, GENDER, OCCUPATIONS);
    expect(result.kind).toBe('share');
    expect(result.targets).toEqual([
      [0.1, 0.9],
      [0.5, 0.5],
      [0.9, 0.1],
    ]);
    expect(result.counts).toBeUndefined();
  });

  it('rescales shares within tolerance to sum to 1', () => {
    const filePath = writeCsv(
      'occupation,male_share,female_share\nNurses,0.1,0.895\nCooks,0.5,0.5\nPilots,0.9,0.1\n',
    );
    const [nurses] = readTargetFile(filePath, GENDER, OCCUPATIONS).targets;
    expect(nurses[0] + nurses[1]).toBeCloseTo(1, 12);
    expect(nurses[0]).toBeCloseTo(0.1 / 0.995, 12);
  });

  it('normalises counts and keeps them', () => {
    const filePath = writeCsv(
      'sector,occupation,male_count,female_count\nx,Nurses,1,3\nx,Cooks,5,5\nx,Pilots,9,0\n',
    );
    const result = readTargetFile(filePath, GENDER, OCCUPATIONS);
    expect(result.kind).toBe('count');
    expect(result.targets[0]).toEqual([0.25, 0.75]);
    expect(result.targets[2]).toEqual([1, 0]);
    expect(result.counts).toEqual([
      [1, 3],
      [5, 5],
      [9, 0],
    ]);
  });

  it('maps spaces in categories to underscores', () => {
    const filePath = writeCsv(
      'occupation,black_or_african_american_share,asian_share\nNurses,0.4,0.6\n',
    );
    const result = readTargetFile(filePath, ['black or african american', 'asian'], ['Nurses']);
    expect(result.targets).toEqual([[0.4, 0.6]]);
  });

  it('matches occupations ignoring case and spacing', () => {
    const filePath = writeCsv('Occupation,Male_Share,Female_Share\n  nurses ,0.1,0.9\n');
    expect(readTargetFile(filePath, GENDER, ['Nurses']).targets).toEqual([[0.1, 0.9]]);
  });

  it('rejects an invalid number with file, line and value', () => {
    const { filePath, message } = targetError(
      'occupation,male_share,female_share\nNurses,0.1,0.9\nCooks,abc,0.5\nPilots,0.9,0.1\n',
    );
    expect(message).toContain(filePath);
    expect(message).toContain('line 3');
    expect(message).toContain('"abc"');
    expect(message).toContain('male_share');
  });

  it('rejects an empty cell', () => {
    const { message } = targetError('occupation,male_share,female_share\nNurses,,0.9\n', GENDER, [
      'Nurses',
    ]);
    expect(message).toContain('line 2');
    expect(message).toContain('"male_share" is empty');
  });

  it('rejects a negative count', () => {
    const { filePath, message } = targetError(
      'occupation,male_count,female_count\nNurses,3,1\nCooks,2,-5\nPilots,1,1\n',
    );
    expect(message).toContain(filePath);
    expect(message).toContain('line 3');
    expect(message).toContain('"-5"');
    expect(message).toContain('negative');
  });

  it('rejects a share outside 0..1', () => {
    const { filePath, message } = targetError(
      'occupation,male_share,female_share\nNurses,1.5,-0.5\nCooks,0.5,0.5\nPilots,0.9,0.1\n',
    );
    expect(message).toContain(filePath);
    expect(message).toContain('line 2');
    expect(message).toContain('"1.5"');
    expect(message).toContain('outside 0..1');
  });

  it('rejects shares that do not sum to 1', () => {
    const { filePath, message } = targetError(
      'occupation,male_share,female_share\nNurses,0.1,0.9\nCooks,0.5,0.4\nPilots,0.9,0.1\n',
    );
    expect(message).toContain(filePath);
    expect(message).toContain('line 3');
    expect(message).toContain('"Cooks"');
    expect(message).toContain('sum to 0.9');
  });

  it('rejects a row of zero counts', () => {
    const { filePath, message } = targetError(
      'occupation,male_count,female_count\nNurses,3,1\nCooks,1,1\nPilots,0,0\n',
    );
    expect(message).toContain(filePath);
    expect(message).toContain('line 4');
    expect(message).toContain('"Pilots"');
    expect(message).toContain('all counts');
  });

  it('rejects a missing category column', () => {
    const { filePath, message } = targetError('occupation,male_share\nNurses,1\n');
    expect(message).toContain(filePath);
    expect(message).toContain('missing column "female_share"');
  });

  it('rejects a missing occupation column', () => {
    const { message } = targetError('job,male_share,female_share\nNurses,0.5,0.5\n');
    expect(message).toContain('missing column "occupation"');
    expect(message).toContain('"job"');
  });

  it('rejects mixed share and count columns', () => {
    const { message } = targetError(
      'occupation,male_share,female_share,male_count\nNurses,0.5,0.5,1\n',
    );
    expect(message).toContain('mixes share and count columns');
  });

  it('names missing, unknown and duplicate occupations', () => {
    const { filePath, message } = targetError(
      'occupation,male_share,female_share\nNurse,0.1,0.9\nCooks,0.5,0.5\ncooks,0.5,0.5\n',
    );
    expect(message).toContain(filePath);
    expect(message).toContain('missing occupation "Nurses", "Pilots"');
    expect(message).toContain('line 2: unknown occupation "Nurse" (did you mean "Nurses"?)');
    expect(message).toContain('line 4: duplicate occupation "cooks", first given on line 3');
  });

  it('suggests nothing for a distant name', () => {
    const { message } = targetError(
      'occupation,male_share,female_share\nAstronauts,0.1,0.9\nCooks,0.5,0.5\nPilots,0.9,0.1\nNurses,0.1,0.9\n',
    );
    expect(message).toContain('unknown occupation "Astronauts"');
    expect(message).not.toContain('did you mean');
  });
});

describe('bundled tables', () => {
  it('are found from the source tree', () => {
    expect(targetsDir()).toMatch(/resources[/\\]targets$/);
  });

  it('read the reference counts', () => {
    const us = readReferenceCounts('US');
    const uk = readReferenceCounts('UK');
    expect(us).toHaveLength(14);
    expect(uk).toHaveLength(25);
    expect(us.find((row) => row.occupation === 'Registered nurses')?.counts).toEqual([404, 2413]);
    expect(uk[0].occupation).toBe('Vehicle technicians, mechanics and electricians');
  });

  it('read the BLS table', () => {
    const rows = readBlsOccupations();
    expect(rows).toHaveLength(79);
    const nurses = rows.find((row) => row.occupation === 'Registered nurses');
    expect(nurses?.pctWomen).toBe(87.3);
    expect(nurses?.year).toBe(2025);
  });
});
