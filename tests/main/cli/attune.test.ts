import { execFile } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadDataset } from '../../../src/main/engine/datasets';
import type { RunReport } from '../../../src/shared/report-types';
import { useEngineBackend } from '../../helpers/backend';
import { makeTempDir, writeTinyModelFolder } from '../../helpers/tiny-model';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const STARTER_MODEL = path.join(ROOT, 'resources', 'starter-model');

let tempDir: string;
let tinyDir: string;
let counter = 0;

interface CliResult {
  /** Exit code, or -1 when the process was killed (for example at the timeout). */
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `node --import tsx src/main/cli/index.ts ...args` from the repository root. */
function attune(
  args: string[],
  timeoutMs = 60_000,
  env: Record<string, string> = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    // The same process `npm run attune` starts; npx would overwrite INIT_CWD.
    const child = execFile(
      process.execPath,
      ['--import', 'tsx', 'src/main/cli/index.ts', ...args],
      {
        cwd: ROOT,
        timeout: timeoutMs,
        maxBuffer: 16 * 1024 * 1024,
        env: { ...process.env, ...env },
      },
      (_error, stdout, stderr) => {
        resolve({ code: child.exitCode ?? -1, stdout, stderr });
      },
    );
  });
}

function freshOut(): string {
  counter += 1;
  return path.join(tempDir, `out-${counter}`);
}

/** Asserts that no report exists in `outDir`, or that the one there has status failed. */
async function expectNoCompleteReport(outDir: string, what: string): Promise<void> {
  const file = path.join(outDir, 'report.json');
  if (!existsSync(file)) return;
  const report = JSON.parse(await fs.readFile(file, 'utf8')) as RunReport;
  expect(report.status, `${what}: status of the report left behind`).toBe('failed');
}

/** Writes a us-gender target CSV with `columns`, where `cell(i, column)` fills occupation i. */
async function writeTargetCsv(
  name: string,
  columns: string[],
  cell: (i: number, column: string) => string,
) {
  const occupations = loadDataset('us-gender').occupations.map((o) => o.occupation);
  const lines = [['occupation', ...columns].join(',')];
  occupations.forEach((occupation, i) => {
    lines.push([`"${occupation}"`, ...columns.map((c) => cell(i, c))].join(','));
  });
  const file = path.join(tempDir, name);
  await fs.writeFile(file, `${lines.join('\n')}\n`);
  return file;
}

beforeAll(async () => {
  await useEngineBackend();
  tempDir = await makeTempDir('cli');
  tinyDir = path.join(tempDir, 'tiny-model');
  await writeTinyModelFolder(tinyDir);
});

afterAll(async () => {
  await fs.rm(tempDir, { recursive: true, force: true });
});

describe('attune CLI rejects bad input', () => {
  it('unknown dataset lists known ones', async () => {
    const out = freshOut();
    const result = await attune(['run', '--dataset', 'nope', '--model', tinyDir, '--out', out]);
    expect(result.code, 'exit code of a user error').toBe(1);
    expect(result.stderr, 'names the dataset').toContain('Unknown dataset "nope"');
    expect(result.stderr, 'lists the known datasets').toMatch(
      /Known datasets: us-gender, uk-gender, us-race/,
    );
    expect(result.stderr, 'no stack trace').not.toMatch(/\n\s+at /);
    await expectNoCompleteReport(out, 'unknown dataset');
  });

  it('ends --json output with an error event', async () => {
    const out = freshOut();
    const result = await attune(['measure', '--dataset', 'nope', '--out', out, '--json']);
    expect(result.code).toBe(1);
    const last = JSON.parse(result.stdout.trim().split('\n').at(-1) ?? '{}');
    expect(last.type).toBe('error');
    expect(last.kind).toBe('user');
    expect(last.message).toContain('Unknown dataset "nope"');
  });

  it('rejects a missing model folder', async () => {
    const out = freshOut();
    const missing = path.join(tempDir, 'no-such-model');
    const result = await attune(['run', '--model', missing, '--out', out, '--rounds', '1']);
    expect(result.code, 'exit code').toBe(1);
    expect(result.stderr, 'names the path').toContain(`Model ${missing} does not exist`);
    expect(result.stderr, 'says what to pass').toContain('or a .gguf file');
    await expectNoCompleteReport(out, 'missing model');
  });

  it('rejects bad config.json', async () => {
    const corrupt = path.join(tempDir, 'corrupt-model');
    await fs.cp(tinyDir, corrupt, { recursive: true });
    await fs.writeFile(path.join(corrupt, 'config.json'), '{"model_type": ');
    const out = freshOut();
    const result = await attune(['measure', '--model', corrupt, '--out', out, '--rounds', '1']);
    expect(result.code, 'exit code').toBe(1);
    expect(result.stderr, 'names the file').toContain(
      `${path.join(corrupt, 'config.json')} is not valid JSON`,
    );
    await expectNoCompleteReport(out, 'corrupt model');
  });

  it('rejects non-number target cell', async () => {
    const file = await writeTargetCsv('bad-number.csv', ['male_share', 'female_share'], (i, c) =>
      i === 4 && c === 'female_share' ? 'abc' : '0.5',
    );
    const out = freshOut();
    const result = await attune(['run', '--model', tinyDir, '--target', file, '--out', out]);
    expect(result.code, 'exit code').toBe(1);
    expect(result.stderr, 'names the file and line').toContain(`${file} line 6`);
    expect(result.stderr, 'names the column and value').toMatch(
      /"female_share" has invalid number "abc"/,
    );
    await expectNoCompleteReport(out, 'non-number');
  });

  it('rejects negative target count', async () => {
    const file = await writeTargetCsv('negative.csv', ['male_count', 'female_count'], (i, c) =>
      i === 2 && c === 'male_count' ? '-5' : '10',
    );
    const out = freshOut();
    const result = await attune(['run', '--model', tinyDir, '--target', file, '--out', out]);
    expect(result.code, 'exit code').toBe(1);
    expect(result.stderr, 'names the file and line').toContain(`${file} line 4`);
    expect(result.stderr, 'names the value').toMatch(/negative count "-5"/);
    await expectNoCompleteReport(out, 'negative count');
  });

  it('rejects target share outside 0..1', async () => {
    const file = await writeTargetCsv('share.csv', ['male_share', 'female_share'], (i, c) => {
      if (i !== 9) return '0.5';
      return c === 'male_share' ? '1.5' : '-0.5';
    });
    const out = freshOut();
    const result = await attune(['run', '--model', tinyDir, '--target', file, '--out', out]);
    expect(result.code, 'exit code').toBe(1);
    expect(result.stderr, 'names the file and line').toContain(`${file} line 11`);
    expect(result.stderr, 'names the value').toMatch(
      /"male_share" has share "1\.5" outside 0\.\.1/,
    );
    await expectNoCompleteReport(out, 'share outside 0..1');
  });

  it('rejects a non-empty --out without --resume', async () => {
    const out = freshOut();
    await fs.mkdir(out);
    await fs.writeFile(path.join(out, 'report.json'), '{"mine": true}');
    const result = await attune(['measure', '--model', tinyDir, '--out', out, '--rounds', '1']);
    expect(result.code, 'exit code').toBe(1);
    expect(result.stderr, 'names the folder and the fix').toContain(
      `Output folder ${out} is not empty`,
    );
    expect(result.stderr, 'mentions --resume').toContain('--resume');
    expect(await fs.readdir(out), 'files in the folder').toEqual(['report.json']);
    expect(await fs.readFile(path.join(out, 'report.json'), 'utf8'), 'file content').toBe(
      '{"mine": true}',
    );
  });

  it('rejects an option value out of range', async () => {
    const result = await attune(['run', '--top-p', '1.5', '--model', tinyDir, '--out', freshOut()]);
    expect(result.code, 'exit code').toBe(1);
    expect(result.stderr, 'names the option and value').toMatch(
      /--top-p must be a number in \[0, 1\], got "1\.5"/,
    );
  });
});

describe('attune CLI commands', () => {
  it('lists the datasets', async () => {
    const result = await attune(['datasets']);
    expect(result.code, 'exit code').toBe(0);
    expect(result.stdout, 'us-gender line').toMatch(
      /^us-gender\s+Gender, 14 US reference occupations$/m,
    );
    expect(result.stdout.trim().split('\n').length, 'one line per dataset').toBe(5);
  });

  it('measures without training', async () => {
    const out = freshOut();
    const args = [
      'measure',
      '--model',
      tinyDir,
      '--out',
      out,
      '--rounds',
      '2',
      '--max-new-tokens',
      '8',
    ];
    const result = await attune([...args, '--json']);
    expect(result.code, `exit code (stderr: ${result.stderr})`).toBe(0);
    const report = JSON.parse(
      await fs.readFile(path.join(out, 'report.json'), 'utf8'),
    ) as RunReport;
    expect(report.status, 'report status').toBe('complete');
    expect(report.before?.occupations.length, 'occupations measured').toBe(14);
    expect(report.after, 'after measurement').toBeUndefined();
    expect(existsSync(path.join(out, 'report.html')), 'report.html').toBe(true);
    const events = result.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    expect(
      events.some((e) => e.type === 'sample/progress'),
      'JSON progress events',
    ).toBe(true);
  });

  it('runs end to end on starter model', async () => {
    expect(
      existsSync(path.join(STARTER_MODEL, 'model.safetensors')),
      `starter model in ${STARTER_MODEL}`,
    ).toBe(true);
    const out = freshOut();
    const gguf = path.join(tempDir, 'trained.gguf');
    const args = ['run', '--model', STARTER_MODEL, '--out', out, '--rounds', '4'];
    const tiny = ['--sft-epochs', '1', '--align-epochs', '1', '--train-batch', '8'];
    const exportArgs = ['--export-gguf', gguf, '--export-type', 'q8_0'];
    const result = await attune([...args, ...tiny, ...exportArgs], 110_000);
    expect(result.code, `exit code (stderr: ${result.stderr.slice(-2000)})`).toBe(0);
    const report = JSON.parse(
      await fs.readFile(path.join(out, 'report.json'), 'utf8'),
    ) as RunReport;
    expect(report.status, 'report status').toBe('complete');
    expect(report.before, 'before measurement').toBeDefined();
    expect(report.after, 'after measurement').toBeDefined();
    expect(existsSync(path.join(out, 'report.html')), 'report.html').toBe(true);
    expect(existsSync(path.join(out, 'model', 'model.safetensors')), 'trained model').toBe(true);
    expect(result.stdout, 'before summary line').toMatch(/^before: MAE /m);
    expect(result.stdout, 'after summary line').toMatch(/^after: {2}MAE /m);
    expect(report.trainedModel?.gguf?.path, 'GGUF export in the report').toBe(gguf);
    expect(report.trainedModel?.gguf?.type).toBe('q8_0');

    // The exported GGUF measures in its own right, with the steering tokens it was trained with.
    const again = freshOut();
    const measured = await attune(['measure', '--model', gguf, '--out', again, '--rounds', '2']);
    expect(measured.code, `measure GGUF (stderr: ${measured.stderr.slice(-2000)})`).toBe(0);
    const second = JSON.parse(
      await fs.readFile(path.join(again, 'report.json'), 'utf8'),
    ) as RunReport;
    expect(second.model.path).toBe(gguf);
    expect(second.before?.agreement, 'steering tokens read back from the GGUF').not.toBeNull();
  }, 120_000);
});

describe('attune export', () => {
  it('writes the starter model to GGUF and to a Hugging Face folder', async () => {
    const gguf = path.join(tempDir, 'starter-f16.gguf');
    const toGguf = await attune(['export', '--model', STARTER_MODEL, '--gguf', gguf]);
    expect(toGguf.code, `exit code (stderr: ${toGguf.stderr.slice(-2000)})`).toBe(0);
    expect(toGguf.stdout).toContain(`wrote ${gguf}`);
    const hf = path.join(tempDir, 'starter-from-gguf');
    const toHf = await attune(['export', '--model', gguf, '--hf', hf]);
    expect(toHf.code, `exit code (stderr: ${toHf.stderr.slice(-2000)})`).toBe(0);
    for (const file of ['config.json', 'model.safetensors', 'tokenizer.json']) {
      expect(existsSync(path.join(hf, file)), file).toBe(true);
    }
  });

  it('resolves relative paths against the folder npm was run in', async () => {
    // npm run starts scripts in the package root and passes the caller's folder as INIT_CWD.
    const result = await attune(['export', '--gguf', 'relative.gguf', '--type', 'f32'], 60_000, {
      INIT_CWD: tempDir,
    });
    expect(result.code, `exit code (stderr: ${result.stderr.slice(-2000)})`).toBe(0);
    expect(existsSync(path.join(tempDir, 'relative.gguf')), 'file in INIT_CWD').toBe(true);
    expect(existsSync(path.join(ROOT, 'relative.gguf')), 'nothing in the package root').toBe(false);
  });

  it('refuses a target that is not a .gguf file, or both targets', async () => {
    const bad = await attune([
      'export',
      '--model',
      STARTER_MODEL,
      '--gguf',
      path.join(tempDir, 'x.bin'),
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('must be a file name ending in .gguf');
    const both = await attune(['export', '--gguf', 'a.gguf', '--hf', 'b']);
    expect(both.code).toBe(1);
    expect(both.stderr).toContain('Pass exactly one of --gguf <file> or --hf <dir>.');
  });
});
