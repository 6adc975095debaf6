/**
 * Measurement summaries and the audit report of one run. Plain JSON data, so the same types
 * are written to report.json, sent over IPC and read by the renderer.
 *
 * Shares and distances are fractions in 0..1 (an MAE of 0.068 is 6.8 points). KL values are
 * in nats.
 */

/** Two-sided 95% interval of a share or a statistic. */
export interface Interval {
  low: number;
  high: number;
}

/** Settings behind the statistics of a MeasurementSummary, copied into every report. */
export interface MeasurementMethod {
  /** Words the text reader uses, e.g. "last whole-word category mention wins". */
  reader: string;
  /** Smoothing of counts before KL(target || measured), e.g. 0.5 added to every count. */
  klSmoothingPseudocount: number;
  shareInterval: 'wilson-95';
  /**
   * Percentile bootstrap over the responses; with stratified steering draws, within the groups
   * of responses that drew the same steering token.
   */
  maeInterval: 'bootstrap-percentile-95' | 'bootstrap-percentile-95-within-steering-strata';
  bootstrapReps: number;
  bootstrapSeed: number;
}

export interface OccupationMeasurement {
  occupationIndex: number;
  occupation: string;
  sector?: string;
  target: number[];
  /** Responses whose text names each category. */
  counts: number[];
  /** Responses whose text names no category. */
  unknownCount: number;
  /** All responses sampled for the occupation, unknown included. */
  total: number;
  /** counts / (total - unknownCount); null when no response named a category. */
  measured: number[] | null;
  /** True when `measured` is null, so the occupation is left out of the dataset means. */
  flagged: boolean;
  /** Mean over categories of |measured - target|. */
  mae: number | null;
  /** KL(target || measured) in nats, measured from smoothed counts (see MeasurementMethod). */
  kl: number | null;
  /** Total variation distance, half the L1 distance. */
  tv: number | null;
  /** Share of responses with both a steering category and a text category where they agree. */
  agreement: number | null;
  /** Responses with both a steering category and a text category. */
  agreementSampleCount: number;
  /** unknownCount / total; null when nothing was sampled. */
  unknownShare: number | null;
  /** 95% Wilson score interval of each category's measured share; null with `measured`. */
  shareIntervals: Interval[] | null;
}

export interface MeasurementSummary {
  datasetId: string;
  categories: string[];
  sampleCount: number;
  knownCount: number;
  unknownCount: number;
  unknownShare: number | null;
  /** Responses per category, pooled over occupations. */
  counts: number[];
  occupations: OccupationMeasurement[];
  /** Occupations with a measured distribution; the dataset means average over these. */
  measuredOccupationCount: number;
  /** Names of occupations whose responses named no category at all. */
  flaggedOccupations: string[];
  /** Mean over measured occupations of the occupation MAE. */
  mae: number | null;
  /** Bootstrap 95% interval of `mae`; null when fewer than two bootstrap replicates were valid. */
  maeInterval: Interval | null;
  /**
   * Mean of the bootstrap replicates of `mae`. Sampling noise biases MAE upward, most when
   * measured and target are close. This mean can then exceed `mae`, and the interval can lie
   * above it. The gap between the two estimates that bias.
   */
  maeBootstrapMean: number | null;
  kl: number | null;
  tv: number | null;
  /** Pooled steering token/text agreement; null when no response had a steering category. */
  agreement: number | null;
  agreementSampleCount: number;
  /**
   * The model's own steering distribution (softmax over the K steering logits, averaged over
   * the sampled prompts of each occupation) against the target, free of sampling noise. Present
   * only for steered generation.
   */
  steeringCalibration?: SteeringCalibration;
  method: MeasurementMethod;
}

export interface SteeringCalibration {
  /** Mean over occupations of the mean over categories of |steering share - target|. */
  mae: number;
  /** Mean steering softmax per occupation, in dataset order. */
  shares: number[][];
}

export type RunStatus = 'complete' | 'failed' | 'cancelled';

/** One logged training step. Fields other than `step` and `stage` may be absent. */
export interface TrainingHistoryRow {
  step: number;
  stage: string;
  loss?: number;
  klLoss?: number;
  ktoLoss?: number;
  z0?: number;
  lr?: number;
  tokensPerSec?: number;
  [field: string]: unknown;
}

export interface ExampleResponse {
  phase: 'before' | 'after';
  occupation: string;
  prompt: string;
  text: string;
  /** Category index of the sampled steering token; null when the model has none. */
  steeringCategory: number | null;
  /** Category index the reader found in the text; null for unknown. */
  textCategory: number | null;
}

export interface RunReport {
  status: RunStatus;
  /** Failure or cancellation message; absent for a complete run. */
  error?: string;
  /** ISO 8601 time the report was written. */
  createdAt: string;
  attuneVersion: string;
  commandLine: string[];
  model: {
    path: string;
    /** SHA-256 of the weights file, lower-case hex. */
    sha256: string;
    /** SHA-256 of tokenizer.json, lower-case hex. */
    tokenizerSha256?: string;
    parameterCount: number;
    /** Architecture summary: layer count, width, heads, vocabulary size and so on. */
    config: Record<string, unknown>;
  };
  /** The model training wrote, steering tokens included; absent when no training finished. */
  trainedModel?: {
    path: string;
    sha256: string;
    tokenizerSha256: string;
    /** The same model exported as GGUF, when the run was asked to. */
    gguf?: { path: string; type: string; sha256: string };
  };
  /** TensorFlow.js backend the run computed on, e.g. wasm. */
  backend?: string;
  dataset: {
    id: string;
    title: string;
    categories: string[];
    target: { kind: 'real' | 'uniform' | 'file'; source: string };
  };
  settings: {
    /** Sampling rounds per occupation; one response per occupation and round. */
    rounds: number;
    seed: number;
    temperature: number;
    topP: number;
    maxNewTokens: number;
    /**
     * Draw scheme of the steering token of a model with steering tokens: independent, or
     * stratified per occupation (same softmax per draw, category counts within one of N times the
     * mean probability). Absent in reports written before the option existed.
     */
    steeringDraws?: 'independent' | 'stratified';
    /** Prompt format used: `Q: <question>\nA:`, or the model's chat template with one user turn. */
    promptFormat?: 'qa' | 'chat';
    /** The chat template text, when the prompts were rendered with it; its hash is not the model's. */
    chatTemplate?: string;
    /** Training configuration as resolved by the trainer; null for a measurement-only run. */
    training: Record<string, unknown> | null;
  };
  /** Measurement of the model before training; absent when the run failed before it. */
  before?: MeasurementSummary;
  /** Measurement after training; absent for a measurement-only run or one that failed. */
  after?: MeasurementSummary;
  trainingHistory: TrainingHistoryRow[];
  /** Problems a complete run still shows, e.g. degraded text after training; empty when none. */
  warnings?: string[];
  examples: ExampleResponse[];
  /** Wall-clock durations in milliseconds, by phase name (e.g. samplingBefore, training). */
  timingsMs: Record<string, number>;
}
