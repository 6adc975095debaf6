/**
 * Building blocks of report.html: HTML escaping and markup helpers, then number, duration and
 * label formatting. The formatting functions return plain text, so the caller still escapes it.
 */

export function escapeHtml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

/** Escapes any value, converted to a string, for HTML text or an attribute. */
export function escapeValue(value: unknown): string {
  return escapeHtml(String(value));
}

const e = escapeValue;

/** Wraps `body`, already HTML, in a section with an escaped heading. */
export function section(heading: string, body: string): string {
  return `<section><h2>${e(heading)}</h2>\n${body}\n</section>`;
}

/** Builds a definition list from pairs of a plain-text term and a description in HTML. */
export function definitionList(items: [string, string][]): string {
  const rows = items.map(([term, value]) => `<dt>${e(term)}</dt><dd>${value}</dd>`).join('');
  return `<dl>${rows}</dl>`;
}

/** Shows `value` as indented JSON in a collapsed <details> block. */
export function rawJson(value: unknown, summary = 'Raw JSON'): string {
  const text = e(JSON.stringify(value, null, 2));
  return `<details><summary>${e(summary)}</summary><pre>${text}</pre></details>`;
}

/** Text shown for a missing or non-finite number. */
export const MISSING = '–';

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** Formats `value` with `digits` decimals, e.g. a loss as 0.2817. */
export function formatFixed(value: number | null | undefined, digits = 3): string {
  return isFiniteNumber(value) ? value.toFixed(digits) : MISSING;
}

/** Formats a fraction as a percentage with one decimal, e.g. 0.028 as 2.8%. */
export function formatPercent(value: number | null | undefined): string {
  return isFiniteNumber(value) ? `${(100 * value).toFixed(1)}%` : MISSING;
}

/** Formats `value` rounded to a whole number with thousands separators, e.g. 1,036. */
export function formatWhole(value: number | null | undefined): string {
  return isFiniteNumber(value) ? Math.round(value).toLocaleString('en-US') : MISSING;
}

/**
 * Formats `value` in exponent form with at least one decimal and at most `significantDigits`
 * significant digits, e.g. 0.0001 as 1.0e-4, and 0.00125 as 1.25e-3 with three digits. Zero
 * stays 0.
 */
export function formatExponent(value: number | null | undefined, significantDigits = 2): string {
  if (!isFiniteNumber(value)) return MISSING;
  if (value === 0) return '0';
  const [mantissa, power] = Number(value.toPrecision(significantDigits)).toExponential().split('e');
  return `${mantissa.includes('.') ? mantissa : `${mantissa}.0`}e${power}`;
}

/** Formats a duration: tenths of a second below one minute, then minutes, then hours. */
export function formatDuration(ms: number): string {
  if (!isFiniteNumber(ms)) return MISSING;
  const tenths = Math.round(ms / 100);
  if (tenths < 600) return `${(tenths / 10).toFixed(1)} s`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  const minutes = Math.round(seconds / 60);
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** Labels of keys whose split camelCase words would be wrong or unclear. */
const LABELS: Record<string, string> = {
  lr: 'Learning rate',
  tokensPerSec: 'Tokens/s',
  z0: 'KTO z0',
  exportGguf: 'GGUF export',
  vocabSize: 'Vocabulary size',
  numLayers: 'Layers',
  numHeads: 'Attention heads',
  numKvHeads: 'Key/value heads',
  headDim: 'Head dimension',
  ropeTheta: 'RoPE theta',
  rmsNormEps: 'RMSNorm epsilon',
  tieWordEmbeddings: 'Tied word embeddings',
  learningRate: 'Peak learning rate',
  warmupSteps: 'Warm-up steps',
  minLearningRateRatio: 'Final learning rate (fraction of peak)',
  weightDecay: 'Weight decay (AdamW)',
  gradientClip: 'Max gradient norm',
  checkpointEvery: 'Checkpoint every (steps, 0 = end only)',
  beta: 'KTO beta',
};

/** Words written in capitals when a key is split into words. */
const ACRONYMS: Record<string, string> = {
  kl: 'KL',
  kto: 'KTO',
  sft: 'SFT',
  gguf: 'GGUF',
  kv: 'KV',
  id: 'ID',
  ids: 'IDs',
  mae: 'MAE',
  tv: 'TV',
};

/**
 * Turns a camelCase or snake_case key into a sentence-case label, e.g. klLoss as "KL loss" and
 * samplingBefore as "Sampling before". Hand-written: the label table and acronym list are the
 * substance, and the camelCase split is one regular expression.
 */
export function humanLabel(key: string): string {
  const known = LABELS[key];
  if (known) return known;
  const words = key
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .split(/[\s_-]+/)
    .filter((word) => word.length > 0)
    .map((word) => word.toLowerCase());
  return words
    .map((word, i) => ACRONYMS[word] ?? (i === 0 ? word[0].toUpperCase() + word.slice(1) : word))
    .join(' ');
}

function isLearningRateKey(key: string): boolean {
  return key === 'lr' || /learningrate$/i.test(key);
}

/**
 * Formats a setting or configuration value. Learning rates and fractions below 0.001 get the
 * exponent form with all significant digits, other numbers stay as written, booleans become yes
 * or no, and arrays of plain values a comma-separated list. Objects fall back to compact JSON.
 */
export function formatSettingValue(key: string, value: unknown): string {
  if (typeof value === 'number') {
    const small = value !== 0 && Math.abs(value) < 1e-3 && !Number.isInteger(value);
    return isLearningRateKey(key) || small ? formatExponent(value, 17) : String(value);
  }
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (typeof value === 'string') return value;
  if (value === null || value === undefined) return MISSING;
  if (Array.isArray(value) && value.every((item) => typeof item !== 'object' || item === null)) {
    return value.map((item) => formatSettingValue(key, item)).join(', ');
  }
  return JSON.stringify(value);
}
