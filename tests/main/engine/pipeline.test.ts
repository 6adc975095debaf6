import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelFolder, saveModelFolder } from '../../../src/main/engine/checkpoint';
import {
  prepareRun,
  RUN_DEFAULTS,
  type RunEvent,
  type RunOptions,
  runPipeline,
} from '../../../src/main/engine/pipeline';
import { readLatestCheckpoint } from '../../../src/main/engine/run-store';
import { CancelledError, UserError } from '../../../src/shared/errors';
import type { RunReport } from '../../../src/shared/report-types';
import { useEngineBackend } from '../../helpers/backend';
import { makeTempDir, pretrainedTinyModel, tinyTokenizer } from '../../helpers/tiny-model';

let tempDir: string;
let modelDir: string;

beforeAll(async () => {
  await useEngineBackend();
  tempDir = await makeTempDir('pipeline');
  modelDir = path.join(tempDir, 'input-model');
  const tokenizer = await tinyTokenizer();
  const model = await pretrainedTinyModel(tokenizer);
  await saveModelFolder(modelDir, model, tokenizer, { description: 'pretrained tiny test model' });
  model.dispose();
});

afterAll(async () => {
  await fs.rm(tempDir, { recursive: true, force: true });
});

function options(outName: string, overrides: Partial<RunOptions> = {}): RunOptions {
  // No warm-up, so that every step, the first included, changes the weights.
  const stage = { epochs: 1, batchSize: 8, checkpointEvery: 0, warmupSteps: 0 };
  return {
    ...RUN_DEFAULTS,
    modelDir,
    datasetId: 'us-gender',
    outDir: path.join(tempDir, outName),
    rounds: 4,
    seed: 2,
    sampling: { temperature: 0.5, topP: 1, maxNewTokens: 40, batchSize: 64 },
    sft: { ...RUN_DEFAULTS.sft, ...stage, learningRate: 1e-3 },
    align: { ...RUN_DEFAULTS.align, ...stage, learningRate: 1e-3 },
    commandLine: ['test'],
    ...overrides,
  };
}

async function readReport(outDir: string): Promise<RunReport> {
  return JSON.parse(await fs.readFile(path.join(outDir, 'report.json'), 'utf8')) as RunReport;
}

async function weightsDiff(dirA: string, dirB: string): Promise<number> {
  const [a, b] = await Promise.all([loadModelFolder(dirA), loadModelFolder(dirB)]);
  let max = 0;
  for (const [name, param] of Object.entries(a.model.params)) {
    const x = param.dataSync();
    const y = b.model.params[name].dataSync();
    for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs(x[i] - y[i]));
  }
  a.model.dispose();
  b.model.dispose();
  return max;
}

describe('runPipeline', () => {
  it('full run trains and measures twice', async () => {
    const events: RunEvent[] = [];
    const run = options('full');
    const result = await runPipeline(run, { onEvent: (e) => events.push(e) });
    const report = await readReport(run.outDir);
    expect(report.status, 'report status').toBe('complete');
    expect(report.before?.occupations.length, 'before: occupations measured').toBe(14);
    expect(report.after, 'after measurement').toBeDefined();
    expect(existsSync(result.htmlPath), 'report.html written').toBe(true);
    const phases = events.filter((e) => e.type === 'phase').map((e) => e.phase);
    expect(phases, 'phases in order').toEqual([
      'load',
      'measure-before',
      'examples',
      'sft',
      'align',
      'measure-after',
    ]);
    const stages = new Set(report.trainingHistory.map((h) => h.stage));
    expect([...stages], 'history of both stages').toEqual(['sft', 'align']);
    const training = report.settings.training as { examples: { desirable: number } };
    expect(training.examples.desirable, 'desirable examples').toBeGreaterThanOrEqual(8);

    const trained = await loadModelFolder(path.join(run.outDir, 'model'));
    expect(trained.meta.steering?.tokens, 'steering tokens in attune.json').toEqual([
      '<|gender:male|>',
      '<|gender:female|>',
    ]);
    expect(report.trainedModel?.sha256, 'trained weights hash').toBe(trained.weightsSha256);
    expect(report.trainedModel?.tokenizerSha256, 'trained tokenizer hash').toMatch(
      /^[0-9a-f]{64}$/,
    );
    expect(report.model.tokenizerSha256, 'input tokenizer hash').toMatch(/^[0-9a-f]{64}$/);
    expect(report.backend, 'backend recorded').toMatch(/^(tensorflow|wasm|cpu)$/);
    expect(trained.model.config.vocabSize, 'vocabulary grown by two').toBe(
      (report.model.config.vocabSize as number) + 2,
    );
    trained.model.dispose();
  });

  it('resumed run equals uninterrupted run', async () => {
    const run = options('cancelled');
    const controller = new AbortController();
    const onEvent = (event: RunEvent) => {
      if (event.type === 'train/step' && event.stage === 'align' && event.step === 1)
        controller.abort();
    };
    await expect(
      runPipeline(run, { onEvent, signal: controller.signal }),
      'cancelled run',
    ).rejects.toThrow(CancelledError);
    const cancelled = await readReport(run.outDir);
    expect(cancelled.status, 'report status after cancel').toBe('cancelled');
    const latest = await readLatestCheckpoint(run.outDir);
    expect(latest?.stage, 'checkpoint stage').toBe('align');
    expect(latest?.step, 'checkpoint step').toBe(1);

    // Other settings would train and report a mixture of two runs.
    const changed = {
      ...run,
      resume: true,
      seed: 9,
      loss: { ...run.loss, mode: 'kl-only' as const },
    };
    await expect(prepareRun(changed), 'resume with other settings').rejects.toThrow(
      /with other settings: seed was 2, now 9; loss\.mode was "kl\+kto", now "kl-only"/,
    );
    await runPipeline({ ...run, resume: true });
    const resumed = await readReport(run.outDir);
    expect(resumed.status, 'report status after resume').toBe('complete');
    // The uninterrupted run of the previous test used the same settings and seed.
    const full = path.join(tempDir, 'full');
    if (!existsSync(path.join(full, 'model'))) await runPipeline(options('full'));
    // The wasm backend is bit-exact for the same shapes and inputs, so the difference is 0.
    const diff = await weightsDiff(path.join(run.outDir, 'model'), path.join(full, 'model'));
    expect(diff, 'max abs diff to the uninterrupted run').toBe(0);
    const fullReport = await readReport(full);
    expect(resumed.after?.mae, 'MAE after training').toBe(fullReport.after?.mae);
    const steps = (r: RunReport) => r.trainingHistory.map((h) => `${h.stage}:${h.step}`);
    expect(steps(resumed), 'whole training history after resume').toEqual(steps(fullReport));
  });

  it('measures only, without training', async () => {
    const run = options('measure', { measureOnly: true });
    const result = await runPipeline(run);
    const report = await readReport(run.outDir);
    expect(report.status, 'report status').toBe('complete');
    expect(report.before, 'before measurement').toBeDefined();
    expect(report.after, 'after measurement').toBeUndefined();
    expect(report.trainingHistory, 'training history').toEqual([]);
    expect(result.modelDir, 'model folder').toBeNull();
    expect(existsSync(path.join(run.outDir, 'model')), 'model folder on disk').toBe(false);
  });

  it('failure writes a failed report', async () => {
    const run = options('failed', {
      sampling: { temperature: 1, topP: 1, maxNewTokens: 120, batchSize: 64 },
    });
    await expect(runPipeline(run), 'prompt plus 120 tokens exceeds 128 positions').rejects.toThrow(
      UserError,
    );
    const report = await readReport(run.outDir);
    expect(report.status, 'report status').toBe('failed');
    expect(report.error, 'report error').toMatch(/exceeds the model's 128 positions/);
  });
});

describe('prepareRun', () => {
  it('rejects non-empty output folder untouched', async () => {
    const outDir = path.join(tempDir, 'busy');
    await fs.mkdir(outDir);
    await fs.writeFile(path.join(outDir, 'notes.txt'), 'keep me');
    const run = options('busy');
    await expect(prepareRun(run), 'error class').rejects.toThrow(UserError);
    await expect(runPipeline(run), 'message').rejects.toThrow(/busy is not empty.*--resume/);
    expect(await fs.readdir(outDir), 'files in the folder').toEqual(['notes.txt']);
    expect(await fs.readFile(path.join(outDir, 'notes.txt'), 'utf8'), 'file content').toBe(
      'keep me',
    );
  });

  it('reuses a folder holding only a failed report', async () => {
    const failed = options('failed-before-sampling');
    await fs.mkdir(failed.outDir, { recursive: true });
    await fs.writeFile(path.join(failed.outDir, 'report.json'), '{"status": "failed"}');
    await expect(prepareRun(failed), 'failed report').resolves.toBeDefined();
    const complete = options('complete-report');
    await fs.mkdir(complete.outDir, { recursive: true });
    await fs.writeFile(path.join(complete.outDir, 'report.json'), '{"status": "complete"}');
    await expect(prepareRun(complete), 'complete report').rejects.toThrow(/is not empty/);
  });

  it('rejects an export that would overwrite a file', async () => {
    const existing = path.join(tempDir, 'existing.gguf');
    await fs.writeFile(existing, 'keep me');
    const exportTo = (file: string) =>
      options('export-check', { exportGguf: { file, type: 'f16' } });
    await expect(prepareRun(exportTo(existing)), 'existing file').rejects.toThrow(
      /existing\.gguf already exists; name a new file/,
    );
    expect(await fs.readFile(existing, 'utf8'), 'file kept').toBe('keep me');
    const model = options('export-model', {
      modelDir: existing,
      exportGguf: { file: existing, type: 'f16' },
    });
    await expect(prepareRun(model), 'input model').rejects.toThrow(/is the input model/);
    await expect(prepareRun(exportTo(path.join(tempDir, 'model.bin'))), 'suffix').rejects.toThrow(
      /must name a file ending in \.gguf/,
    );
  });

  it('rejects an output folder that cannot be written', async () => {
    const file = path.join(tempDir, 'a-file');
    await fs.writeFile(file, 'not a folder');
    const under = options('x', { outDir: path.join(file, 'run') });
    await expect(prepareRun(under), 'out under a file').rejects.toThrow(
      /--out: cannot write in .*a-file\/run \((ENOTDIR|EEXIST)\)/,
    );
    const exportUnder = options('export-under-file', {
      exportGguf: { file: path.join(file, 'm.gguf'), type: 'f16' },
    });
    await expect(prepareRun(exportUnder), 'export under a file').rejects.toThrow(
      /--export-gguf: cannot write in/,
    );
  });

  it('explains resume of a run stopped before sampling', async () => {
    const run = options('stopped-early', { resume: true });
    await fs.mkdir(run.outDir, { recursive: true });
    await fs.writeFile(path.join(run.outDir, 'report.json'), '{"status": "cancelled"}');
    await expect(prepareRun(run)).rejects.toThrow(
      /Nothing to resume .*stopped-early: the run stopped before its first measurement was saved\. Run the same command without --resume/,
    );
    await expect(
      prepareRun({ ...run, resume: false }),
      'a new run may reuse it',
    ).resolves.toBeDefined();
  });

  it('rejects resume without a run', async () => {
    const run = options('nothing-to-resume', { resume: true });
    await expect(prepareRun(run), 'message').rejects.toThrow(
      /Cannot resume: .*before-samples\.json is missing/,
    );
  });

  it('rejects bad settings naming them', async () => {
    const cases: [Partial<RunOptions>, RegExp][] = [
      [{ datasetId: 'nope' }, /Unknown dataset "nope". Known datasets: us-gender/],
      [{ rounds: 0 }, /rounds must be an integer from 1 to 100000, got 0/],
      [{ sampling: { ...options('x').sampling, topP: 2 } }, /top-p must be in \(0, 1\], got 2/],
      [
        { align: { ...options('x').align, batchSize: 1 } },
        /align setting batchSize must be an integer >= 2/,
      ],
    ];
    for (const [bad, message] of cases) {
      await expect(prepareRun(options('bad', bad)), JSON.stringify(bad)).rejects.toThrow(message);
    }
    expect(existsSync(path.join(tempDir, 'bad')), 'no output folder created').toBe(false);
  });
});
