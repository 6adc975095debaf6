/**
 * Target statistics: the bundled occupation tables in resources/targets and target CSV files
 * written by analysts.
 *
 * Every reader checks its input and throws a UserError that names the file, the 1-based line
 * and the value, so a bad cell can be found and fixed in an editor.
 */

import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closest, distance } from 'fastest-levenshtein';
import { UserError } from '../../shared/errors';
import {
  type CsvRecord,
  type CsvTable,
  parseNumberCell,
  quote,
  readCsvFile,
  requireColumns,
} from './csv-table';

/** Maximum distance of a row's share sum from 1 before the row is rejected. */
export const SHARE_SUM_TOLERANCE = 0.01;

/** Environment variable that overrides where the bundled target tables are read from. */
export const TARGETS_DIR_ENV = 'ATTUNE_TARGETS_DIR';

const MARKER_FILE = 'us_gender_counts.csv';

/**
 * Returns the folder of the bundled target tables.
 *
 * Order: `ATTUNE_TARGETS_DIR`, then `resources/targets` in Electron's resources path (packaged
 * app), then the first `resources/targets` found walking up from this module (source tree, tsx,
 * and the bundled out/ folder).
 */
export function targetsDir(): string {
  const fromEnv = process.env[TARGETS_DIR_ENV];
  if (fromEnv) return resolve(fromEnv);
  const packaged = (process as { resourcesPath?: string }).resourcesPath;
  if (packaged && existsSync(join(packaged, 'targets', MARKER_FILE))) {
    return join(packaged, 'targets');
  }
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'resources', 'targets');
    if (existsSync(join(candidate, MARKER_FILE))) return candidate;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new UserError(
    `The bundled target tables (resources/targets/${MARKER_FILE}) were not found next to ` +
      `the program. Set ${TARGETS_DIR_ENV} to the folder that contains them.`,
  );
}

/** Row of a bundled reference count table: workers by sex for one occupation. */
export interface ReferenceCountRow {
  sector: string;
  occupation: string;
  /** `[male, female]`, in the table's unit (thousands for the US, jobs for the UK). */
  counts: [number, number];
}

/** Reads `us_gender_counts.csv` or `uk_gender_counts.csv` from the bundled tables. */
export function readReferenceCounts(country: 'US' | 'UK'): ReferenceCountRow[] {
  const table = readCsvFile(join(targetsDir(), `${country.toLowerCase()}_gender_counts.csv`));
  requireColumns(table, ['sector', 'occupation', 'male_count', 'female_count']);
  return table.records.map((record) => ({
    sector: record.cells.sector,
    occupation: record.cells.occupation,
    counts: [nonNegative(table, record, 'male_count'), nonNegative(table, record, 'female_count')],
  }));
}

/** Row of the BLS 2025 table; percentages are of everyone employed in the occupation. */
export interface BlsOccupationRow {
  occupation: string;
  totalEmployedThousands: number;
  pctWomen: number;
  pctWhite: number;
  pctBlack: number;
  pctAsian: number;
  /** Hispanic or Latino is an ethnicity; these workers are also counted in the race columns. */
  pctHispanic: number;
  year: number;
}

/** Reads `us_bls_occupations.csv` (BLS CPS Table 11, 2025 annual averages). */
export function readBlsOccupations(): BlsOccupationRow[] {
  const table = readCsvFile(join(targetsDir(), 'us_bls_occupations.csv'));
  const percentColumns = ['pct_women', 'pct_white', 'pct_black', 'pct_asian', 'pct_hispanic'];
  requireColumns(table, ['occupation', 'total_employed_thousands', ...percentColumns, 'year']);
  return table.records.map((record) => {
    const [women, white, black, asian, hispanic] = percentColumns.map((column) =>
      percentage(table, record, column),
    );
    return {
      occupation: record.cells.occupation,
      totalEmployedThousands: nonNegative(table, record, 'total_employed_thousands'),
      pctWomen: women,
      pctWhite: white,
      pctBlack: black,
      pctAsian: asian,
      pctHispanic: hispanic,
      year: parseNumberCell(table, record, 'year'),
    };
  });
}

function nonNegative(table: CsvTable, record: CsvRecord, column: string): number {
  const value = parseNumberCell(table, record, column);
  if (value < 0) {
    throw new UserError(
      `${table.filePath} line ${record.line}: column ${quote(column)} has negative count ` +
        `${quote(record.cells[column])}. Counts must be 0 or more.`,
    );
  }
  return value;
}

function percentage(table: CsvTable, record: CsvRecord, column: string): number {
  const value = parseNumberCell(table, record, column);
  if (value < 0 || value > 100) {
    throw new UserError(
      `${table.filePath} line ${record.line}: column ${quote(column)} has percentage ` +
        `${quote(record.cells[column])} outside 0..100.`,
    );
  }
  return value;
}

/** Target distributions read from a file, in the order of the dataset's occupations. */
export interface FileTargets {
  kind: 'share' | 'count';
  targets: number[][];
  /** Raw counts per occupation; present only for count files. */
  counts?: number[][];
}

/**
 * Reads a wide target CSV for `categories` over exactly the given `occupations`.
 *
 * The file has an `occupation` column and, for every category, either `<category>_share`
 * (0..1, each row summing to 1 within 0.01, then rescaled to sum to 1) or `<category>_count`
 * (0 or more, normalised per row). Spaces in category names become underscores in column
 * names. Other columns are ignored, so the bundled reference count tables are valid target
 * files for the gender datasets. Occupations match after trimming, collapsing whitespace and
 * lowercasing, and every dataset occupation must appear exactly once.
 */
export function readTargetFile(
  filePath: string,
  categories: readonly string[],
  occupations: readonly string[],
): FileTargets {
  if (!existsSync(filePath)) {
    throw new UserError(
      `Target ${filePath} is neither "real", "uniform" nor an existing CSV file. Pass --target real, --target uniform, or the path of a CSV file.`,
    );
  }
  const table = readCsvFile(filePath);
  requireColumns(table, ['occupation']);
  const kind = detectTargetKind(table, categories);
  const columns = categories.map((category) => `${columnStem(category)}_${kind}`);
  const rowByOccupation = matchOccupations(table, occupations);
  const rows = occupations.map((_, i) => rowByOccupation[i]);
  if (kind === 'share') {
    return { kind, targets: rows.map((record) => readShareRow(table, record, columns)) };
  }
  const counts = rows.map((record) => columns.map((column) => nonNegative(table, record, column)));
  counts.forEach((row, i) => {
    requireSomeCount(table, rows[i], columns, row);
  });
  return { kind, targets: counts.map(normalizeCounts), counts };
}

/** Column-name stem of a category: lowercased, spaces as underscores. */
export function columnStem(category: string): string {
  return category.trim().toLowerCase().replace(/\s+/g, '_');
}

function detectTargetKind(table: CsvTable, categories: readonly string[]): 'share' | 'count' {
  const stems = categories.map(columnStem);
  const hasAll = (suffix: string) =>
    stems.every((stem) => table.columns.includes(`${stem}_${suffix}`));
  const hasAny = (suffix: string) =>
    stems.some((stem) => table.columns.includes(`${stem}_${suffix}`));
  const shares = hasAll('share');
  const counts = hasAll('count');
  const expected =
    `one column per category, either ${stems.map((s) => quote(`${s}_share`)).join(', ')} ` +
    `or ${stems.map((s) => quote(`${s}_count`)).join(', ')}`;
  if ((shares && hasAny('count')) || (counts && hasAny('share'))) {
    throw new UserError(`${table.filePath}: mixes share and count columns; expected ${expected}.`);
  }
  if (shares) return 'share';
  if (counts) return 'count';
  const suffix = hasAny('count') && !hasAny('share') ? 'count' : 'share';
  const missing = stems
    .map((stem) => `${stem}_${suffix}`)
    .filter((c) => !table.columns.includes(c));
  throw new UserError(
    `${table.filePath}: missing column ${missing.map(quote).join(', ')}; expected ${expected}. ` +
      `Found columns: ${table.columns.map(quote).join(', ')}.`,
  );
}

function readShareRow(table: CsvTable, record: CsvRecord, columns: string[]): number[] {
  const shares = columns.map((column) => {
    const value = parseNumberCell(table, record, column);
    if (value < 0 || value > 1) {
      throw new UserError(
        `${table.filePath} line ${record.line}: column ${quote(column)} has share ` +
          `${quote(record.cells[column])} outside 0..1. Write shares as fractions (0.25, not 25).`,
      );
    }
    return value;
  });
  const sum = shares.reduce((a, b) => a + b, 0);
  if (Math.abs(sum - 1) > SHARE_SUM_TOLERANCE) {
    throw new UserError(
      `${table.filePath} line ${record.line}: shares for ${quote(record.cells.occupation)} sum ` +
        `to ${round(sum)}, expected 1 within ${SHARE_SUM_TOLERANCE}.`,
    );
  }
  return shares.map((share) => share / sum);
}

function requireSomeCount(table: CsvTable, record: CsvRecord, columns: string[], counts: number[]) {
  if (counts.some((count) => count > 0)) return;
  throw new UserError(
    `${table.filePath} line ${record.line}: all counts for ${quote(record.cells.occupation)} ` +
      `are 0 (${columns.join(', ')}), so no share can be formed. Give at least one positive count.`,
  );
}

function normalizeCounts(counts: number[]): number[] {
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.map((count) => count / total);
}

function round(value: number): number {
  return Math.round(value * 1e6) / 1e6;
}

function occupationKey(name: string): string {
  return name.trim().replace(/\s+/g, ' ').toLowerCase();
}

/** Maps each dataset occupation index to its file row, or throws listing every mismatch. */
function matchOccupations(table: CsvTable, occupations: readonly string[]): CsvRecord[] {
  const indexByKey = new Map(occupations.map((name, i) => [occupationKey(name), i]));
  const found: (CsvRecord | undefined)[] = occupations.map(() => undefined);
  const problems: string[] = [];
  for (const record of table.records) {
    const name = record.cells.occupation;
    const index = indexByKey.get(occupationKey(name));
    if (name === '') {
      problems.push(`line ${record.line}: the occupation cell is empty`);
    } else if (index === undefined) {
      problems.push(
        `line ${record.line}: unknown occupation ${quote(name)}${suggest(name, occupations)}`,
      );
    } else if (found[index]) {
      problems.push(
        `line ${record.line}: duplicate occupation ${quote(name)}, first given on line ${found[index].line}`,
      );
    } else {
      found[index] = record;
    }
  }
  const missing = occupations.filter((_, i) => !found[i]);
  if (missing.length > 0) problems.unshift(`missing occupation ${listSome(missing.map(quote))}`);
  if (problems.length > 0) {
    const shown = problems.slice(0, MAX_LISTED_PROBLEMS);
    if (problems.length > shown.length) shown.push(`and ${problems.length - shown.length} more`);
    throw new UserError(
      `${table.filePath}: the occupations do not match the dataset (${occupations.length} ` +
        `expected, each once):\n  ${shown.join('\n  ')}`,
    );
  }
  return found as CsvRecord[];
}

const MAX_LISTED_PROBLEMS = 12;

function listSome(items: string[]): string {
  const shown = items.slice(0, MAX_LISTED_PROBLEMS).join(', ');
  return items.length > MAX_LISTED_PROBLEMS
    ? `${shown} and ${items.length - MAX_LISTED_PROBLEMS} more`
    : shown;
}

/** Returns ` (did you mean "X"?)` when a dataset occupation is within a few edits of `name`. */
function suggest(name: string, occupations: readonly string[]): string {
  const best = closest(occupationKey(name), occupations.map(occupationKey));
  const maxEdits = Math.max(2, Math.floor(0.3 * best.length));
  if (distance(occupationKey(name), best) > maxEdits) return '';
  const original = occupations.find((candidate) => occupationKey(candidate) === best);
  return ` (did you mean ${quote(original ?? best)}?)`;
}
