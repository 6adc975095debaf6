/**
 * Strict CSV reading for target tables, on Papa Parse. Errors are UserErrors that name the
 * file, the 1-based line and the value.
 */

import { readFileSync } from 'node:fs';
import Papa from 'papaparse';
import { UserError } from '../../shared/errors';

/** One CSV data row: its cells by lower-case column name and the file line it starts on. */
export interface CsvRecord {
  line: number;
  cells: Record<string, string>;
}

export interface CsvTable {
  filePath: string;
  columns: string[];
  records: CsvRecord[];
}

/**
 * Reads a comma-separated file with a header row. Column names are trimmed and lowercased.
 * Blank lines are skipped, but line numbers still count them, as an editor does.
 */
export function readCsvFile(filePath: string): CsvTable {
  let text: string;
  try {
    text = readFileSync(filePath, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'was not found' : `could not be read (${code})`;
    throw new UserError(`CSV file ${filePath} ${reason}. Check the path.`, { cause: error });
  }
  return parseCsvText(filePath, text);
}

function parseCsvText(filePath: string, rawText: string): CsvTable {
  const text = rawText.replace(/^\uFEFF/, '').replace(/\r\n?/g, '\n');
  const rows = parseRows(filePath, text);
  const header = rows.shift();
  if (!header) throw new UserError(`${filePath} is empty; expected a header row and data rows.`);

  const columns = header.values.map((name) => name.trim().toLowerCase());
  const repeated = columns.find((name, i) => columns.indexOf(name) !== i);
  if (repeated !== undefined) {
    throw new UserError(
      `${filePath} line ${header.line}: column ${quote(repeated)} appears twice.`,
    );
  }
  const records = rows.map(({ values, line }) => toRecord(filePath, columns, values, line));
  return { filePath, columns, records };
}

/**
 * Splits `text` into rows of cells with the 1-based line each row starts on. Line numbers are
 * counted here because Papa Parse reports only character offsets. The cursor of a row is the
 * offset just past it, so a row starts at the first non-whitespace character after the
 * previous cursor.
 */
function parseRows(filePath: string, text: string): { values: string[]; line: number }[] {
  const rows: { values: string[]; line: number }[] = [];
  let scannedChar = 0;
  let lineAtScanned = 1;
  Papa.parse<string[]>(text, {
    delimiter: ',',
    skipEmptyLines: 'greedy',
    step: (result) => {
      let startChar = scannedChar;
      while (startChar < result.meta.cursor && /\s/.test(text[startChar])) startChar++;
      const line = lineAtScanned + countNewlines(text, scannedChar, startChar);
      lineAtScanned = line + countNewlines(text, startChar, result.meta.cursor);
      scannedChar = result.meta.cursor;

      const firstError = result.errors[0];
      if (firstError) {
        throw new UserError(`${filePath} line ${line}: invalid CSV (${firstError.message}).`);
      }
      rows.push({ values: result.data, line });
    },
  });
  return rows;
}

function countNewlines(text: string, startChar: number, endChar: number): number {
  let count = 0;
  for (let i = startChar; i < endChar; i++) if (text.charCodeAt(i) === 10) count++;
  return count;
}

function toRecord(filePath: string, columns: string[], values: string[], line: number): CsvRecord {
  if (values.length !== columns.length) {
    throw new UserError(
      `${filePath} line ${line}: expected ${columns.length} cells like the header, found ` +
        `${values.length}. Quote cells that contain commas.`,
    );
  }
  const cells: Record<string, string> = {};
  columns.forEach((name, i) => {
    cells[name] = values[i].trim();
  });
  return { line, cells };
}

/** Throws a UserError unless every column in `required` is present. */
export function requireColumns(table: CsvTable, required: readonly string[]): void {
  const missing = required.filter((name) => !table.columns.includes(name));
  if (missing.length === 0) return;
  throw new UserError(
    `${table.filePath}: missing column ${missing.map(quote).join(', ')}. ` +
      `Found columns: ${table.columns.map(quote).join(', ')}.`,
  );
}

const NUMBER_PATTERN = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** Parses a decimal cell strictly: no empty cells, thousands separators or units. */
export function parseNumberCell(table: CsvTable, record: CsvRecord, column: string): number {
  const raw = record.cells[column] ?? '';
  if (raw === '') {
    throw new UserError(`${table.filePath} line ${record.line}: column ${quote(column)} is empty.`);
  }
  if (!NUMBER_PATTERN.test(raw)) {
    throw new UserError(
      `${table.filePath} line ${record.line}: column ${quote(column)} has invalid number ` +
        `${quote(raw)}. Write a plain decimal such as 0.25 or 1200.`,
    );
  }
  return Number(raw);
}

/** Quotes a name or cell value for an error message. */
export function quote(text: string): string {
  return JSON.stringify(text);
}
