import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadDataset, promptsFor } from '../../../src/main/engine/datasets';
import { type MeasuredSample, summarizeMeasurement } from '../../../src/main/engine/metrics';
import { writeReport } from '../../../src/main/engine/report';
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
      training: { steps: 5 },
    },
    before: summarizeMeasurement(dataset, samplesFor(2), { bootstrapReps: 200 }),
    after: summarizeMeasurement(dataset, samplesFor(3), { bootstrapReps: 200 }),
    trainingHistory: [
      { step: 0, stage: 'sft', loss: 2.5, lr: 1e-4, tokensPerSec: 800 },
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
    timingsMs: { samplingBefore: 1500, training: 4200 },
    ...overrides,
  };
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
});
