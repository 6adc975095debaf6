/**
 * The self-contained report.html: inline CSS, charts as inline SVG, no scripts and no
 * external files. Every piece of text from the report goes through `escapeHtml`.
 */

import type {
  ExampleResponse,
  MeasurementSummary,
  OccupationMeasurement,
  RunReport,
  TrainingHistoryRow,
} from '../../shared/report-types';
import {
  definitionList,
  escapeValue,
  formatDuration,
  formatExponent,
  formatFixed,
  formatPercent,
  formatWhole,
  humanLabel,
  MISSING,
  section,
} from './report-format';
import {
  modelList,
  samplingSettingsList,
  trainedModelList,
  trainingSettingsBlock,
} from './report-settings-html';

export { escapeHtml } from './report-format';

const e = escapeValue;

export interface ReportCharts {
  shareSvg: string | null;
  lossSvg: string | null;
}

/** Maximum training-history rows in the HTML table; report.json keeps every row. */
const MAX_HISTORY_ROWS = 60;

/** Builds the whole report page. `charts` are SVG strings rendered by report-charts.ts. */
export function renderReportHtml(report: RunReport, charts: ReportCharts): string {
  const title = `Attune report: ${report.dataset.title} (${statusWord(report)})`;
  return [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${e(title)}</title><style>${CSS}</style></head><body>`,
    statusBanner(report),
    `<h1>${e(report.dataset.title)}</h1>`,
    section('Model', modelList(report)),
    section('Trained model', trainedModelList(report)),
    section('Dataset and target', datasetList(report)),
    section('Results', resultsTable(report)),
    section('Shares per occupation', chartBlock(report, charts.shareSvg)),
    section('Per occupation', occupationTable(report)),
    section('Sampling settings', samplingSettingsList(report)),
    section('Training settings', trainingSettingsBlock(report.settings.training)),
    section('Training history', trainingBlock(report.trainingHistory, charts.lossSvg)),
    section('Example responses', examplesTable(report)),
    section('Timings', timingsList(report.timingsMs)),
    section('Method', methodNotes(report)),
    footer(report),
    '</body></html>',
  ].join('\n');
}

function statusWord(report: RunReport): string {
  return report.status === 'complete' ? 'complete' : report.status.toUpperCase();
}

function statusBanner(report: RunReport): string {
  if (report.status === 'complete') {
    const scope = report.after ? 'before and after training' : 'measurement only, no training';
    const warnings = report.warnings ?? [];
    if (warnings.length === 0) return `<div class="banner ok">Run complete (${scope}).</div>`;
    const items = warnings.map((w) => `<li>${e(w)}</li>`).join('');
    return (
      `<div class="banner bad" role="alert"><strong>Run complete (${scope}), with warnings.</strong>` +
      `<ul>${items}</ul></div>`
    );
  }
  const verb = report.status === 'failed' ? 'FAILED' : 'CANCELLED';
  const message = report.error ? `<div class="error">${e(report.error)}</div>` : '';
  return (
    `<div class="banner bad" role="alert"><strong>Run ${verb}.</strong> This report is ` +
    `incomplete: results below, if any, are partial and must not be read as a finished run.` +
    `${message}</div>`
  );
}

function datasetList(report: RunReport): string {
  const { dataset } = report;
  return definitionList([
    ['Dataset', `<code>${e(dataset.id)}</code> ${e(dataset.title)}`],
    ['Categories', dataset.categories.map((c, i) => `${i}: ${e(c)}`).join(', ')],
    ['Target', e(dataset.target.kind)],
    ['Target source', e(dataset.target.source)],
  ]);
}

function resultsTable(report: RunReport): string {
  const phases: [string, MeasurementSummary | undefined][] = [
    ['Before', report.before],
    ['After', report.after],
  ];
  const present = phases.filter(([, summary]) => summary);
  if (present.length === 0) return '<p class="missing">No measurement was completed.</p>';
  const metricRows: [string, (s: MeasurementSummary) => string][] = [
    ['Responses', (s) => e(s.sampleCount)],
    ['Naming a category', (s) => e(s.knownCount)],
    [
      'Unknown (left out of shares)',
      (s) => `${e(s.unknownCount)} (${formatPercent(s.unknownShare)})`,
    ],
    ['Occupations measured', (s) => `${s.measuredOccupationCount} of ${s.occupations.length}`],
    ['MAE [95% CI]', (s) => `<strong>${formatFixed(s.mae)}</strong> ${interval(s)}`],
    ['KL(target ‖ measured), nats', (s) => formatFixed(s.kl)],
    ['Total variation', (s) => formatFixed(s.tv)],
    [
      'Steering token/text agreement',
      (s) => `${formatPercent(s.agreement)} (n = ${s.agreementSampleCount})`,
    ],
    [
      'Steering softmax MAE (no sampling noise)',
      (s) => (s.steeringCalibration ? formatFixed(s.steeringCalibration.mae) : MISSING),
    ],
  ];
  const head = `<tr><th></th>${present.map(([name]) => `<th>${name}</th>`).join('')}</tr>`;
  const body = metricRows
    .map(([label, cell]) => {
      const cells = present.map(([, s]) => `<td>${cell(s as MeasurementSummary)}</td>`).join('');
      return `<tr><th>${e(label)}</th>${cells}</tr>`;
    })
    .join('\n');
  return (
    `<table class="results">${head}\n${body}</table>` +
    maeIntervalNote(present) +
    flaggedNote(present)
  );
}

function interval(summary: MeasurementSummary): string {
  const ci = summary.maeInterval;
  return ci ? `[${formatFixed(ci.low)}, ${formatFixed(ci.high)}]` : `[${MISSING}]`;
}

function maeIntervalNote(present: [string, MeasurementSummary | undefined][]): string {
  const below = present
    .filter(([, s]) => s?.mae != null && s.maeInterval && s.mae < s.maeInterval.low)
    .map(([name]) => name);
  const belowNote =
    below.length > 0 ? ` Here the ${below.join(' and ')} estimate lies below its interval.` : '';
  const withinStrata = present.some(
    ([, s]) => s?.method.maeInterval === 'bootstrap-percentile-95-within-steering-strata',
  );
  const strataNote = withinStrata
    ? ' With stratified steering draws the responses are resampled within the groups that drew the same steering token, whose sizes the draws fix.'
    : '';
  return (
    `<p class="note">MAE 95% CI: a bootstrap percentile interval over the responses.${strataNote} ` +
    'Because MAE is an absolute value, resampling noise pushes bootstrap values upward, so the ' +
    `point estimate can sit at or near the lower bound, or even below it.${belowNote}</p>`
  );
}

function flaggedNote(present: [string, MeasurementSummary | undefined][]): string {
  return present
    .filter(([, s]) => s && s.flaggedOccupations.length > 0)
    .map(([name, s]) => {
      const names = (s as MeasurementSummary).flaggedOccupations.map(e).join(', ');
      return `<p class="warn">${name}: no response named a category for ${names}; these are left out of the means.</p>`;
    })
    .join('');
}

function chartBlock(report: RunReport, svg: string | null): string {
  if (!svg) return '<p class="missing">No measured shares to plot.</p>';
  const k = report.dataset.categories.length;
  const what =
    k === 2 ? `the share of "${e(report.dataset.categories[1])}"` : 'the share of each category';
  const series = report.after ? 'target, before and after training' : 'target and before training';
  return `<p>Dots show ${what}: ${series}, with 95% Wilson intervals.</p><div class="chart">${svg}</div>`;
}

function shares(values: number[] | null): string {
  return values ? values.map((v) => formatFixed(v, 2)).join(' / ') : MISSING;
}

function occupationCells(row: OccupationMeasurement | undefined): string {
  if (!row) return `<td>${MISSING}</td>`.repeat(4);
  const flag = row.flagged ? ' class="warn"' : '';
  return (
    `<td${flag}>${shares(row.measured)}</td><td>${row.total}</td>` +
    `<td>${row.unknownCount}</td><td>${formatFixed(row.mae)}</td>`
  );
}

function occupationTable(report: RunReport): string {
  const reference = report.before ?? report.after;
  if (!reference) return '<p class="missing">No measurement was completed.</p>';
  const categories = report.dataset.categories.map(e).join(' / ');
  const phaseHead = (name: string) =>
    `<th>${name}: shares</th><th>${name}: n</th><th>${name}: unknown</th><th>${name}: MAE</th>`;
  const head = `<tr><th>Occupation</th><th>Target</th>${phaseHead('Before')}${report.after ? phaseHead('After') : ''}</tr>`;
  const body = reference.occupations
    .map((row, i) => {
      const after = report.after ? occupationCells(report.after.occupations[i]) : '';
      return `<tr><td>${e(row.occupation)}</td><td>${shares(row.target)}</td>${occupationCells(report.before?.occupations[i])}${after}</tr>`;
    })
    .join('\n');
  return `<p>Shares are listed as ${categories}.</p><table class="occupations">${head}\n${body}</table>`;
}

/** Training-history columns in display order, each with the format of its numbers. */
const HISTORY_COLUMNS: [keyof TrainingHistoryRow & string, (value: number) => string][] = [
  ['step', (v) => (Number.isInteger(v) ? String(v) : formatFixed(v, 1))],
  ['stage', String],
  ['loss', (v) => formatFixed(v, 4)],
  ['klLoss', (v) => formatFixed(v, 4)],
  ['ktoLoss', (v) => formatFixed(v, 4)],
  ['z0', (v) => formatFixed(v, 4)],
  ['lr', (v) => formatExponent(v)],
  ['tokensPerSec', formatWhole],
];

function trainingBlock(history: TrainingHistoryRow[], svg: string | null): string {
  if (history.length === 0) return '<p>No training steps were recorded.</p>';
  const stride = Math.ceil(history.length / MAX_HISTORY_ROWS);
  const shown = history.filter((_, i) => i % stride === 0 || i === history.length - 1);
  // Columns that no logged step has, such as the KL loss of an SFT-only run, are left out.
  const columns = HISTORY_COLUMNS.filter(([key]) => history.some((row) => row[key] != null));
  const head = `<tr>${columns.map(([key]) => `<th>${e(humanLabel(key))}</th>`).join('')}</tr>`;
  const cell = (value: unknown, format: (value: number) => string) =>
    typeof value === 'number' ? e(format(value)) : e(value ?? MISSING);
  const body = shown
    .map((row) => {
      const cells = columns.map(([key, format]) => `<td>${cell(row[key], format)}</td>`);
      return `<tr>${cells.join('')}</tr>`;
    })
    .join('\n');
  const note =
    stride > 1
      ? `<p>Every ${stride}th of ${history.length} steps shown; report.json has all.</p>`
      : '';
  const chart = svg ? `<div class="chart">${svg}</div>` : '';
  return `${chart}${note}<table class="history">${head}\n${body}</table>`;
}

function examplesTable(report: RunReport): string {
  if (report.examples.length === 0) return '<p>No example responses were recorded.</p>';
  const name = (category: number | null) =>
    category === null ? 'unknown' : e(report.dataset.categories[category] ?? category);
  const head =
    '<tr><th>Phase</th><th>Occupation</th><th>Prompt</th><th>Response</th><th>Steering</th><th>Read</th></tr>';
  const body = report.examples
    .map(
      (ex: ExampleResponse) =>
        `<tr><td>${e(ex.phase)}</td><td>${e(ex.occupation)}</td><td><pre>${e(ex.prompt)}</pre></td>` +
        `<td><pre>${e(ex.text)}</pre></td><td>${ex.steeringCategory === null ? MISSING : name(ex.steeringCategory)}</td>` +
        `<td>${name(ex.textCategory)}</td></tr>`,
    )
    .join('\n');
  return `<table class="examples">${head}\n${body}</table>`;
}

function timingsList(timings: Record<string, number>): string {
  const entries = Object.entries(timings);
  if (entries.length === 0) return '<p>No timings were recorded.</p>';
  return definitionList(entries.map(([phase, ms]) => [humanLabel(phase), e(formatDuration(ms))]));
}

function methodNotes(report: RunReport): string {
  const method = (report.before ?? report.after)?.method;
  if (!method) return '<p class="missing">No measurement was completed.</p>';
  return (
    '<ul>' +
    `<li>Category of a response: read from its text (${e(method.reader)}), never from its steering token.</li>` +
    '<li>Responses that name no category are unknown: counted above, but left out of the denominator of the shares.</li>' +
    '<li>MAE: per occupation, the mean over categories of |measured − target|; the dataset MAE is the mean over measured occupations. A value of 0.068 is 6.8 points.</li>' +
    `<li>KL(target ‖ measured): natural log, with ${e(method.klSmoothingPseudocount)} added to every category count before the measured shares are formed (for KL only), so a category never named gives a finite value.</li>` +
    '<li>Total variation: half the sum over categories of |measured − target|.</li>' +
    '<li>Share intervals: 95% Wilson score intervals.</li>' +
    `<li>MAE interval: percentile bootstrap, ${e(method.bootstrapReps)} replicates (seed ${e(method.bootstrapSeed)}), resampling responses within each occupation. Sampling noise biases MAE upward when measured and target are close, so the interval can lie above the point estimate; the bootstrap mean (${bootstrapMeans(report)}) shows the size of that bias.</li>` +
    '</ul>'
  );
}

function bootstrapMeans(report: RunReport): string {
  const phases: [string, MeasurementSummary | undefined][] = [
    ['before', report.before],
    ['after', report.after],
  ];
  return phases
    .filter(([, summary]) => summary)
    .map(([name, summary]) => `${name} ${formatFixed(summary?.maeBootstrapMean)}`)
    .join(', ');
}

function footer(report: RunReport): string {
  return (
    `<footer>Written ${e(report.createdAt)} by Attune ${e(report.attuneVersion)}. ` +
    `Command: <code>${e(report.commandLine.join(' '))}</code></footer>`
  );
}

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 0 16px 32px; color: #1a1a1a; }
h1 { font-size: 22px; } h2 { font-size: 17px; border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; margin: 14px 0 4px; }
.banner { margin: 16px 0; padding: 12px 16px; border-radius: 6px; font-size: 16px; }
.banner.ok { background: #e7f5e9; border: 1px solid #2e7d32; color: #1b5e20; }
.banner.bad { background: #c62828; color: #fff; border: 2px solid #8e0000; }
.banner .error { margin-top: 6px; font-family: ui-monospace, monospace; white-space: pre-wrap; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; } dt { font-weight: 600; } dd { margin: 0; }
dd dl { margin: 0; } .note { color: #444; font-size: 13px; max-width: 760px; } dd .note { margin: 2px 0 0; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } .results td { min-width: 160px; } .history td, .settings td { font-variant-numeric: tabular-nums; }
.history td:not(:nth-child(2)) { text-align: right; } .occupations td:not(:first-child) { white-space: nowrap; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 12px; }
details { margin: 8px 0; } summary { cursor: pointer; color: #444; }
.examples pre { max-width: 420px; } code { font-size: 12px; word-break: break-all; }
.warn { color: #b71c1c; } .missing { color: #666; font-style: italic; } .chart { overflow-x: auto; }
footer { margin-top: 24px; color: #555; font-size: 12px; }
`;
