import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadDataset, promptsFor } from '../../../src/main/engine/datasets';
import { type MeasuredSample, summarizeMeasurement } from '../../../src/main/engine/metrics';
import { writeReport } from '../../../src/main/engine/report';
import {
  formatDuration,
  formatExponent,
  formatSettingValue,
  humanLabel,
} from '../../../src/main/engine/report-format';
import { BugError } from '../../../src/shared/errors';
import type { RunReport } from '../../../src/shared/report-types';

const root = mkdtempSync(join(tmpdir(), 'attune-report-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const HOSTILE = 'Cooks <script>alert("x")</script> & chefs';

// Two real occupations of us-gender plus one with HTML in its name.
const base = loadDataset('us-gender');
const dataset = {
  ...base,
  occupations: [
    base.occupations[0],
    base.occupations[13],
    { occupation: HOSTILE, target: [0.5, 0.5] },
  ],
};

function samplesFor(femaleEvery: number): MeasuredSample[] {
  const samples: MeasuredSample[] = [];
  for (let i = 0; i < dataset.occupations.length; i++) {
    for (let round = 0; round < 20; round++) {
      const text =
        round % 7 === 6
          ? ' A worker.'
          : round % femaleEvery === 0
            ? ' A female worker.'
            : ' A male worker.';
      const textCategory = dataset.readAttribute(text);
      const prompt = promptsFor(dataset, i, round);
      samples.push({
        occupationIndex: i,
        round,
        prompt,
        text,
        steeringCategory: textCategory,
        textCategory,
      });
    }
  }
  return samples;
}

function makeReport(overrides: Partial<RunReport> = {}): RunReport {
  return {
    status: 'complete',
    createdAt: '2025-06-01T12:00:00.000Z',
    attuneVersion: '0.1.0',
    commandLine: ['attune', 'run', '--dataset', 'us-gender', '--note', '<b>bold</b>'],
    model: {
      path: '/models/starter & co.gguf',
      sha256: 'f'.repeat(64),
      parameterCount: 1234567,
      config: { layers: 4, note: '<i>x</i>' },
    },
    dataset: {
      id: dataset.id,
      title: dataset.title,
      categories: dataset.categories,
      target: dataset.target,
    },
    settings: {
      rounds: 20,
      seed: 3,
      temperature: 1,
      topP: 0.95,
      maxNewTokens: 24,
      steeringDraws: 'stratified',
      training: {
        steering: { attribute: 'gender', tokens: ['<|gender:male|>', '<|gender:female|>'] },
        sft: { epochs: 4, batchSize: 32, learningRate: 0.0015, warmupSteps: 10 },
        align: { epochs: 2, batchSize: 32, learningRate: 0.0001, warmupSteps: 10 },
        loss: { mode: 'kl+kto', klWeight: 4, beta: 1 },
      },
    },
    before: summarizeMeasurement(dataset, samplesFor(2), { bootstrapReps: 200 }),
    after: summarizeMeasurement(dataset, samplesFor(3), { bootstrapReps: 200 }),
    trainingHistory: [
      { step: 0, stage: 'sft', loss: 2.5, lr: 1e-4, tokensPerSec: 1234.56 },
      { step: 1, stage: 'kto', loss: 1.5, klLoss: 0.4, ktoLoss: 0.5, z0: 0.1, lr: 1e-4 },
    ],
    examples: [
      {
        phase: 'before',
        occupation: HOSTILE,
        prompt: promptsFor(dataset, 2, 0),
        text: ' A female worker </td> "quoted"',
        steeringCategory: 1,
        textCategory: 1,
      },
    ],
    timingsMs: { samplingBefore: 1500, training: 125_000, exportGguf: 7_380_000 },
    ...overrides,
  };
}

const TRAINED: NonNullable<RunReport['trainedModel']> = {
  path: '/runs/one/model',
  sha256: '1'.repeat(64),
  tokenizerSha256: '2'.repeat(64),
  gguf: { path: '/runs/one/aligned <q8>.gguf', type: 'q8_0', sha256: '3'.repeat(64) },
};

/** Returns the body of the section headed `heading`, up to its closing tag. */
function sectionOf(html: string, heading: string): string {
  const start = html.indexOf(`<h2>${heading}</h2>`);
  if (start < 0) throw new Error(`report.html has no section "${heading}"`);
  return html.slice(start, html.indexOf('</section>', start));
}

let runCount = 0;
async function write(report: RunReport) {
  const outDir = join(root, `run-${runCount++}`, 'nested');
  const paths = await writeReport(outDir, report);
  return { outDir, ...paths, html: readFileSync(paths.htmlPath, 'utf8') };
}

describe('writeReport', () => {
  it('writes parseable JSON equal to the report', async () => {
    const report = makeReport();
    const { jsonPath } = await write(report);
    expect(JSON.parse(readFileSync(jsonPath, 'utf8'))).toEqual(report);
  });

  it('leaves no temporary files', async () => {
    const { outDir } = await write(makeReport());
    expect(readdirSync(outDir).sort()).toEqual(['report.html', 'report.json']);
  });

  it('escapes every text value in the HTML', async () => {
    const { html } = await write(makeReport());
    expect(html).not.toContain('<script');
    expect(html).not.toContain('<b>bold</b>');
    expect(html).not.toContain('<i>x</i>');
    expect(html).toContain('Cooks &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; chefs');
    expect(html).toContain('/models/starter &amp; co.gguf');
    expect(html).toContain('A female worker &lt;/td&gt; &quot;quoted&quot;');
  });

  it('shows the model hash, target source and results', async () => {
    const report = makeReport();
    const { html } = await write(report);
    expect(html).toContain('f'.repeat(64));
    expect(html).toContain('Registered nurses');
    expect(html).toContain('Current Population Survey');
    expect(html).toContain('Run complete (before and after training).');
    expect(html).toContain(`<strong>${report.before?.mae?.toFixed(3)}</strong>`);
    expect(html).toContain(`<strong>${report.after?.mae?.toFixed(3)}</strong>`);
    expect(html).toContain('MAE [95% CI]');
    expect(html).toContain('Steering token/text agreement');
  });

  it('embeds the charts as inline SVG', async () => {
    const { html } = await write(makeReport());
    expect(html.match(/<svg/g)?.length).toBe(2);
  });

  it('references no external resource', async () => {
    const { html } = await write(makeReport());
    const withoutNamespaces = html.replace(/xmlns(:\w+)?="[^"]*"/g, '');
    expect(withoutNamespaces).not.toMatch(/https?:/);
    expect(html).not.toMatch(/<link|<img|src=/);
  });

  it('shows a failure banner for a failed run', async () => {
    const { html } = await write(
      makeReport({ status: 'failed', error: 'Training step 3: loss is NaN <x>', after: undefined }),
    );
    expect(html).toContain('class="banner bad"');
    expect(html).toContain('Run FAILED.');
    expect(html).toContain('Training step 3: loss is NaN &lt;x&gt;');
    expect(html).not.toContain('Run complete');
    expect(html).toContain(
      '<title>Attune report: Gender, 14 US reference occupations (FAILED)</title>',
    );
  });

  it('shows a failure banner for a cancelled run', async () => {
    const { html } = await write(makeReport({ status: 'cancelled', after: undefined }));
    expect(html).toContain('class="banner bad"');
    expect(html).toContain('Run CANCELLED.');
    expect(html).not.toContain('Run complete');
  });

  it('writes a failed run without measurements', async () => {
    const { html, jsonPath } = await write(
      makeReport({
        status: 'failed',
        error: 'Model file is invalid.',
        before: undefined,
        after: undefined,
      }),
    );
    expect(html).toContain('Run FAILED.');
    expect(html).toContain('No measurement was completed.');
    expect(JSON.parse(readFileSync(jsonPath, 'utf8')).before).toBeUndefined();
  });

  it('marks a measurement-only run', async () => {
    const { html } = await write(makeReport({ after: undefined, trainingHistory: [] }));
    expect(html).toContain('Run complete (measurement only, no training).');
    expect(html.match(/<svg/g)?.length).toBe(1);
  });

  it('rejects a complete report without a measurement', async () => {
    await expect(writeReport(join(root, 'bad'), makeReport({ before: undefined }))).rejects.toThrow(
      BugError,
    );
  });

  it('shows the GGUF export in the trained model section', async () => {
    const { html } = await write(makeReport({ trainedModel: TRAINED }));
    const trained = sectionOf(html, 'Trained model');
    expect(trained).toContain(
      '<dt>GGUF export</dt><dd><code>/runs/one/aligned &lt;q8&gt;.gguf</code>',
    );
    expect(trained).toContain('<dt>GGUF weight type</dt><dd><code>q8_0</code>');
    expect(trained).toContain(`<dt>GGUF SHA-256</dt><dd><code>${'3'.repeat(64)}</code>`);
    expect(trained).toContain('Covers the whole file: weights and tokenizer.');
    expect(trained).toContain(`<code>${'1'.repeat(64)}</code>`);
    expect(trained).toContain(`<code>${'2'.repeat(64)}</code>`);
  });

  it('says when the trained model has no GGUF export', async () => {
    const { html } = await write(makeReport({ trainedModel: { ...TRAINED, gguf: undefined } }));
    const trained = sectionOf(html, 'Trained model');
    expect(trained).toContain('<dt>GGUF export</dt><dd>none</dd>');
    expect(trained).not.toContain('GGUF SHA-256');
  });

  it('says why there is no trained model', async () => {
    const measured = await write(
      makeReport({
        after: undefined,
        trainingHistory: [],
        settings: { ...makeReport().settings, training: null },
      }),
    );
    expect(sectionOf(measured.html, 'Trained model')).toContain('this run measured only');
    const failed = await write(makeReport({ status: 'failed', after: undefined }));
    expect(sectionOf(failed.html, 'Trained model')).toContain('training did not finish');
  });

  it('labels a GGUF model as a file', async () => {
    const report = makeReport();
    const { html } = await write({
      ...report,
      model: { ...report.model, tokenizerSha256: report.model.sha256 },
    });
    const model = sectionOf(html, 'Model');
    expect(model).toContain('<dt>Model file</dt><dd><code>/models/starter &amp; co.gguf</code>');
    expect(model).not.toContain('Model folder');
    expect(model).toContain('Covers the whole file: weights and tokenizer.');
    expect(model).toContain('because a GGUF file contains its tokenizer');
  });

  it('labels a model folder and what its hash covers', async () => {
    const report = makeReport();
    const { html } = await write({
      ...report,
      model: { ...report.model, path: '/models/llama', tokenizerSha256: 'e'.repeat(64) },
    });
    const model = sectionOf(html, 'Model');
    expect(model).toContain('<dt>Model folder</dt><dd><code>/models/llama</code>');
    expect(model).not.toContain('Model file');
    expect(model).toContain('model.safetensors, or for a sharded model its shards');
    expect(model).toContain(`<dt>Tokenizer SHA-256</dt><dd><code>${'e'.repeat(64)}</code>`);
    expect(model).toContain('Covers tokenizer.json.');
  });

  it('shows the model configuration as a list', async () => {
    const model = sectionOf((await write(makeReport())).html, 'Model');
    expect(model).toContain('<dt>Layers</dt><dd>4</dd>');
    expect(model).toContain('<details><summary>Raw JSON</summary>');
  });

  it('formats training history numbers', async () => {
    const history = sectionOf((await write(makeReport())).html, 'Training history');
    expect(history).toContain('<tr><td>0</td><td>sft</td><td>2.5000</td>');
    expect(history).toContain('<td>1.0e-4</td>');
    expect(history).not.toContain('0.0001');
    expect(history).not.toContain('<td>0.0000</td><td>1.0e-4');
    expect(history).toContain('<td>1,235</td>');
    expect(history).toContain('<td>0.4000</td><td>0.5000</td><td>0.1000</td>');
    expect(history).not.toMatch(/<td>\d+\.0+<\/td><td>(sft|kto)/);
  });

  it('uses human headers instead of field names', async () => {
    const { html } = await write(makeReport());
    for (const field of ['klLoss', 'ktoLoss', 'tokensPerSec', 'samplingBefore', 'exportGguf']) {
      expect(html).not.toContain(field);
    }
    const history = sectionOf(html, 'Training history');
    expect(history).toContain('<th>KL loss</th><th>KTO loss</th>');
    expect(history).toContain('<th>Learning rate</th><th>Tokens/s</th>');
    expect(history).toMatch(/<text[^>]*>KL loss<\/text>/);
    const timings = sectionOf(html, 'Timings');
    expect(timings).toContain('<dt>Sampling before</dt><dd>1.5 s</dd>');
    expect(timings).toContain('<dt>Training</dt><dd>2 min 5 s</dd>');
    expect(timings).toContain('<dt>GGUF export</dt><dd>2 h 3 min</dd>');
  });

  it('leaves out history columns no step logged', async () => {
    const history = sectionOf(
      (await write(makeReport({ trainingHistory: [{ step: 3, stage: 'sft', loss: 1.25 }] }))).html,
      'Training history',
    );
    expect(history).toContain('<tr><th>Step</th><th>Stage</th><th>Loss</th></tr>');
    expect(history).toContain('<tr><td>3</td><td>sft</td><td>1.2500</td></tr>');
  });

  it('shows training settings as tables and lists', async () => {
    const settings = sectionOf((await write(makeReport())).html, 'Training settings');
    expect(settings).toContain('<th>Stage 1: SFT</th><th>Stage 2: alignment</th>');
    expect(settings).toContain(
      '<tr><th>Peak learning rate</th><td>1.5e-3</td><td>1.0e-4</td></tr>',
    );
    expect(settings).toContain('<tr><th>Batch size</th><td>32</td><td>32</td></tr>');
    expect(settings).toContain('<dt>KL weight</dt><dd>4</dd>');
    expect(settings).toContain(
      '<dt>Tokens</dt><dd>&lt;|gender:male|&gt;, &lt;|gender:female|&gt;</dd>',
    );
    expect(settings).toContain('<details><summary>Training settings as JSON</summary>');
    expect(settings).toContain('&quot;learningRate&quot;: 0.0015');
  });

  it('explains the steering token draws', async () => {
    const stratified = sectionOf((await write(makeReport())).html, 'Sampling settings');
    expect(stratified).toContain('<code>stratified</code>');
    expect(stratified).toContain('share one random offset over 20 equal strata');
    expect(stratified).toContain('within one of 20 times the model&#39;s mean probability');
    const report = makeReport();
    const independent = sectionOf(
      (await write({ ...report, settings: { ...report.settings, steeringDraws: 'independent' } }))
        .html,
      'Sampling settings',
    );
    expect(independent).toContain('<code>independent</code>');
    expect(independent).toContain('One independent draw from the softmax per round');
    expect(independent).not.toContain('strata');
  });

  it('explains the MAE interval', async () => {
    const results = sectionOf((await write(makeReport())).html, 'Results');
    expect(results).toContain('a bootstrap percentile interval over the responses');
    expect(results).toContain('the point estimate can sit at or near the lower bound');
  });

  it('names the phase whose MAE lies below its interval', async () => {
    const report = makeReport();
    const after = report.after as NonNullable<RunReport['after']>;
    const { html } = await write({
      ...report,
      after: { ...after, mae: 0.011, maeInterval: { low: 0.026, high: 0.058 } },
    });
    expect(sectionOf(html, 'Results')).toContain(
      'Here the After estimate lies below its interval.',
    );
  });
});

describe('report formatting', () => {
  it('writes learning rates in exponent form', () => {
    expect(formatExponent(0.0001)).toBe('1.0e-4');
    expect(formatExponent(0.00015000000000000001)).toBe('1.5e-4');
    expect(formatExponent(0.00125, 17)).toBe('1.25e-3');
    expect(formatExponent(0)).toBe('0');
    expect(formatExponent(Number.NaN)).toBe('–');
    expect(formatSettingValue('learningRate', 0.0001)).toBe('1.0e-4');
    expect(formatSettingValue('rmsNormEps', 1e-5)).toBe('1.0e-5');
    expect(formatSettingValue('weightDecay', 0.01)).toBe('0.01');
  });

  it('writes durations in seconds, minutes or hours', () => {
    expect(formatDuration(1112)).toBe('1.1 s');
    expect(formatDuration(59_940)).toBe('59.9 s');
    expect(formatDuration(59_960)).toBe('1 min 0 s');
    expect(formatDuration(420_239)).toBe('7 min 0 s');
    expect(formatDuration(3_600_000)).toBe('1 h 0 min');
  });

  it('turns field names into labels', () => {
    expect(humanLabel('klLoss')).toBe('KL loss');
    expect(humanLabel('samplingBefore')).toBe('Sampling before');
    expect(humanLabel('minLearningRateRatio')).toBe('Final learning rate (fraction of peak)');
    expect(humanLabel('skippedUnfinished')).toBe('Skipped unfinished');
    expect(humanLabel('tokenIds')).toBe('Token IDs');
    expect(humanLabel('max_new_tokens')).toBe('Max new tokens');
  });
});
