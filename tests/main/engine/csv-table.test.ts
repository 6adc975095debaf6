import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseNumberCell, readCsvFile } from '../../../src/main/engine/csv-table';
import { UserError } from '../../../src/shared/errors';

const dir = mkdtempSync(join(tmpdir(), 'attune-csv-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileCount = 0;
function writeCsv(text: string): string {
  const filePath = join(dir, `table-${fileCount++}.csv`);
  writeFileSync(filePath, text);
  return filePath;
}

function readError(text: string): string {
  const filePath = writeCsv(text);
  try {
    readCsvFile(filePath);
  } catch (error) {
    expect(error).toBeInstanceOf(UserError);
    expect((error as Error).message).toContain(filePath);
    return (error as Error).message;
  }
  throw new Error('expected a UserError, but nothing was thrown');
}

describe('readCsvFile', () => {
  it('trims and lowercases column names', () => {
    const table = readCsvFile(writeCsv(' Occupation ,Male_Share\nNurses, 0.1 \n'));
    expect(table.columns).toEqual(['occupation', 'male_share']);
    expect(table.records[0].cells).toEqual({ occupation: 'Nurses', male_share: '0.1' });
  });

  it('reads CRLF files and a byte order mark', () => {
    const table = readCsvFile(writeCsv('\uFEFFoccupation,share\r\nNurses,0.1\r\nCooks,0.2\r\n'));
    expect(table.columns).toEqual(['occupation', 'share']);
    expect(table.records.map((record) => record.cells.share)).toEqual(['0.1', '0.2']);
    expect(table.records.map((record) => record.line)).toEqual([2, 3]);
  });

  it('counts blank and multi-line rows in line numbers', () => {
    const table = readCsvFile(
      writeCsv('occupation,share\n\n"Nurses",0.1\n"Co\noks",0.5\n  \nPilots,0.2\n'),
    );
    expect(table.records.map((record) => record.line)).toEqual([3, 4, 7]);
    expect(table.records[1].cells.occupation).toBe('Co\noks');
  });

  it('rejects a row with too many cells', () => {
    const message = readError('occupation,share\nNurses,0.1,7\n');
    expect(message).toContain('line 2');
    expect(message).toContain('expected 2 cells');
  });

  it('rejects an unterminated quote', () => {
    const message = readError('occupation,share\n\n"Nurses,0.1\n');
    expect(message).toContain('line 3');
    expect(message).toContain('invalid CSV');
  });

  it('rejects a repeated column', () => {
    const message = readError('occupation,share,Share\nNurses,0.1,0.9\n');
    expect(message).toContain('line 1');
    expect(message).toContain('"share" appears twice');
  });

  it('rejects an empty file', () => {
    expect(readError('\n')).toContain('is empty');
  });

  it('rejects a file that does not exist', () => {
    const filePath = join(dir, 'absent.csv');
    expect(() => readCsvFile(filePath)).toThrow(UserError);
    expect(() => readCsvFile(filePath)).toThrow(`CSV file ${filePath} was not found`);
  });
});

describe('parseNumberCell', () => {
  const filePath = writeCsv('value\n0.25\n1200\n-3\n1e-3\n.5\n"1,200"\n12%\nabc\n');
  const table = readCsvFile(filePath);

  it('parses plain decimals', () => {
    const values = table.records
      .slice(0, 5)
      .map((record) => parseNumberCell(table, record, 'value'));
    expect(values).toEqual([0.25, 1200, -3, 0.001, 0.5]);
  });

  it.each([
    [5, '1,200'],
    [6, '12%'],
    [7, 'abc'],
  ])('rejects record %i (%s)', (index, raw) => {
    const record = table.records[index];
    const run = () => parseNumberCell(table, record, 'value');
    expect(run).toThrow(UserError);
    expect(run).toThrow(`line ${record.line}: column "value" has invalid number "${raw}"`);
  });
});
