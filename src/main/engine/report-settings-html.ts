/**
 * The report.html sections that identify the models and list the run settings: model and
 * trained model with what each SHA-256 covers, sampling settings, training settings.
 */

import type { MeasurementSummary, RunReport } from '../../shared/report-types';
import {
  definitionList,
  escapeHtml,
  escapeValue,
  formatSettingValue,
  humanLabel,
  rawJson,
} from './report-format';

const e = escapeValue;

type Row = [string, string];

const FOLDER_HASH_NOTE =
  'Covers the weights only: model.safetensors, or for a sharded model its shards ' +
  'concatenated in file-name order.';
const GGUF_HASH_NOTE = 'Covers the whole file: weights and tokenizer.';

/** Tensor types the GGUF writer uses for each export type. */
const GGUF_TYPE_NOTES: Record<string, string> = {
  f32: 'all tensors 32-bit float',
  f16: 'matrices 16-bit float, vectors 32-bit float',
  q8_0:
    'matrices 8-bit Q8_0 (16-bit float where a row length is not a multiple of 32), ' +
    'vectors 32-bit float',
};

/** Training stages shown side by side, in the order they run. */
const STAGES: Row[] = [
  ['sft', 'Stage 1: SFT'],
  ['align', 'Stage 2: alignment'],
];

/** Headings of the other training-settings groups. */
const GROUP_LABELS: Record<string, string> = {
  steering: 'Steering tokens',
  loss: 'Stage 2 loss',
  examples: 'Training examples',
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function code(text: string): string {
  return `<code>${e(text)}</code>`;
}

function withNote(html: string, note: string): string {
  return `${html}<p class="note">${e(note)}</p>`;
}

export function isGgufPath(modelPath: string): boolean {
  return /\.gguf$/i.test(modelPath);
}

/** Lists the model the run loaded: path, hashes, backend, size and architecture. */
export function modelList(report: RunReport): string {
  const { model } = report;
  const gguf = isGgufPath(model.path);
  const rows: Row[] = [
    [gguf ? 'Model file' : 'Model folder', code(model.path)],
    ['SHA-256', withNote(code(model.sha256), gguf ? GGUF_HASH_NOTE : FOLDER_HASH_NOTE)],
  ];
  if (model.tokenizerSha256 !== undefined) {
    const note =
      gguf && model.tokenizerSha256 === model.sha256
        ? 'The hash of the model file, because a GGUF file contains its tokenizer.'
        : 'Covers tokenizer.json.';
    rows.push(['Tokenizer SHA-256', withNote(code(model.tokenizerSha256), note)]);
  }
  if (report.backend !== undefined) rows.push(['Backend', code(report.backend)]);
  rows.push(['Parameters', e(model.parameterCount.toLocaleString('en-US'))]);
  rows.push(['Configuration', settingHtml('config', model.config) + rawJson(model.config)]);
  return definitionList(rows);
}

/** Lists the model training wrote and its GGUF export, or states why there is none. */
export function trainedModelList(report: RunReport): string {
  const trained = report.trainedModel;
  if (!trained) {
    const reason =
      report.status === 'complete' && report.settings.training === null
        ? 'this run measured only'
        : 'training did not finish';
    return `<p class="missing">No trained model: ${reason}.</p>`;
  }
  const rows: Row[] = [
    ['Model folder', code(trained.path)],
    ['SHA-256', withNote(code(trained.sha256), 'Covers the weights file model.safetensors.')],
    ['Tokenizer SHA-256', withNote(code(trained.tokenizerSha256), 'Covers tokenizer.json.')],
  ];
  const { gguf } = trained;
  if (gguf) {
    const typeNote = GGUF_TYPE_NOTES[gguf.type];
    rows.push(['GGUF export', code(gguf.path)]);
    rows.push([
      'GGUF weight type',
      typeNote ? withNote(code(gguf.type), typeNote) : code(gguf.type),
    ]);
    rows.push(['GGUF SHA-256', withNote(code(gguf.sha256), GGUF_HASH_NOTE)]);
  } else {
    rows.push(['GGUF export', 'none']);
  }
  return definitionList(rows);
}

/** Lists the sampling settings, with a sentence on how steering tokens were drawn. */
export function samplingSettingsList(report: RunReport): string {
  const { settings } = report;
  return definitionList([
    ['Rounds per occupation', e(settings.rounds)],
    ['Seed', e(settings.seed)],
    ['Temperature', e(settings.temperature)],
    ['Top-p', e(settings.topP)],
    ['Max new tokens', e(settings.maxNewTokens)],
    ['Steering token draws', steeringDraws(report)],
    [
      'Prompt format',
      report.settings.promptFormat === 'chat'
        ? "the model's chat template, with the question as one user message" +
          (report.settings.chatTemplate
            ? `<details><summary>template</summary><pre>${escapeHtml(report.settings.chatTemplate)}</pre></details>`
            : '')
        : 'Q: &lt;question&gt; then a new line and A:',
    ],
  ]);
}

function steeringDraws(report: RunReport): string {
  const { rounds, steeringDraws: draws } = report.settings;
  const notes: string[] = [];
  if (draws === 'stratified') {
    notes.push(
      `Each occupation's rounds share one random offset over ${rounds} equal strata, so each ` +
        `category's count stays within one of ${rounds} times the model's mean probability ` +
        '(each draw still follows the softmax).',
    );
  } else {
    notes.push('One independent draw from the softmax per round, as in the reference study.');
  }
  if (draws === undefined) {
    notes.push(
      'Not recorded: the report predates the setting, which then always drew independently.',
    );
  }
  const summaries = [report.before, report.after].filter(
    (s): s is MeasurementSummary => s !== undefined,
  );
  if (summaries.length > 0 && summaries.every((s) => !s.steeringCalibration)) {
    notes.push('The model had no steering tokens, so this setting had no effect.');
  }
  return withNote(code(draws ?? 'independent'), notes.join(' '));
}

/**
 * Shows the resolved training configuration: the stage settings side by side, the other groups
 * as definition lists, and the raw JSON in a collapsed block.
 */
export function trainingSettingsBlock(training: Record<string, unknown> | null): string {
  if (!training) {
    return (
      '<p>No training settings were recorded (a measurement-only run, or the run stopped ' +
      'before training).</p>'
    );
  }
  const stages = STAGES.filter(([key]) => isRecord(training[key]));
  const parts: string[] = [];
  for (const [key, value] of Object.entries(training)) {
    if (stages.some(([stage]) => stage === key)) {
      // All stages share one table, placed where the first of them appears.
      if (stages[0][0] === key)
        parts.push(`<h3>Training stages</h3>${stageTable(training, stages)}`);
      continue;
    }
    parts.push(`<h3>${e(GROUP_LABELS[key] ?? humanLabel(key))}</h3>${settingHtml(key, value)}`);
  }
  parts.push(rawJson(training, 'Training settings as JSON'));
  return parts.join('\n');
}

function stageTable(training: Record<string, unknown>, stages: Row[]): string {
  const settingsOf = (stage: string) => training[stage] as Record<string, unknown>;
  const keys = [...new Set(stages.flatMap(([stage]) => Object.keys(settingsOf(stage))))];
  const head = `<tr><th>Setting</th>${stages.map(([, label]) => `<th>${e(label)}</th>`).join('')}</tr>`;
  const body = keys
    .map((key) => {
      const cells = stages.map(([stage]) => `<td>${settingHtml(key, settingsOf(stage)[key])}</td>`);
      return `<tr><th>${e(humanLabel(key))}</th>${cells.join('')}</tr>`;
    })
    .join('\n');
  return `<table class="settings">${head}\n${body}</table>`;
}

/** Renders one setting: an object as a nested definition list, anything else as text. */
function settingHtml(key: string, value: unknown): string {
  if (!isRecord(value)) return e(formatSettingValue(key, value));
  const rows = Object.entries(value).map(([k, v]): Row => [humanLabel(k), settingHtml(k, v)]);
  return definitionList(rows);
}
