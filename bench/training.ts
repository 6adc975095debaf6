/**
 * Training throughput of one stage: `warmup` untimed steps, then `timed` steps through the real
 * `trainSft` / `trainAlignment` loop (AdamW, clipping and progress events included).
 */
import { median } from 'simple-statistics';
import type { TrainingExample } from '../src/main/engine/batches';
import {
  ALIGN_DEFAULTS,
  ALIGN_LOSS_DEFAULTS,
  frozenCopy,
  SFT_DEFAULTS,
  type StageConfig,
  type TrainingContext,
  type TrainingStage,
  type TrainingStepEvent,
  trainAlignment,
  trainSft,
} from '../src/main/engine/trainer';
import { invariant } from '../src/shared/errors';
import type { BenchModel } from './fixture';

export interface TrainingResult {
  stage: TrainingStage;
  batchSize: number;
  warmupSteps: number;
  timedSteps: number;
  /** Non-padding tokens of the timed steps' batches (prompt and response, one less per row). */
  tokens: number;
  /** Wall time of the timed steps, `betweenSteps` excluded. */
  wallSeconds: number;
  tokensPerSecond: number;
  /** Median of the trainer's own step time (pack, loss, gradients, AdamW), in milliseconds. */
  medianStepMs: number;
  /** tokens / (timedSteps * batchSize): the T of the attention FLOP term. */
  meanSequenceLength: number;
  /** Non-padding tokens and wall time of each timed step. */
  perStep: { tokens: number; seconds: number }[];
}

interface TimedEvent {
  /** When the step began: after the previous step's event and `betweenSteps` call. */
  start: number;
  end: number;
  event: TrainingStepEvent;
}

export interface TrainingRunOptions {
  signal?: AbortSignal;
  /** Called after every step's event; its time counts toward no step. */
  betweenSteps?: () => void;
}

/**
 * Trains `bench.model` in place for warmup + timed steps of `batchSize` examples. Stage 'sft'
 * trains on the desirable examples; stage 'align' on all, against a frozen copy of the model.
 */
export async function measureTraining(
  stage: TrainingStage,
  bench: BenchModel,
  examples: readonly TrainingExample[],
  steps: { warmup: number; timed: number; batchSize: number },
  options: TrainingRunOptions = {},
): Promise<TrainingResult> {
  invariant(steps.warmup >= 1, () => 'training needs at least one warm-up step');
  const { batchSize } = steps;
  const count = batchSize * (steps.warmup + steps.timed);
  const pool = stage === 'sft' ? examples.filter((e) => e.desirable) : examples;
  invariant(pool.length >= count, () => `${stage} needs ${count} examples, got ${pool.length}`);
  const chosen = pool.slice(0, count);
  const timeline: TimedEvent[] = [];
  let start = performance.now();
  const context: TrainingContext = {
    padId: bench.tokenizer.eosId,
    steeringIds: bench.steering.tokenIds,
    signal: options.signal,
    onStep: (event) => {
      timeline.push({ start, end: performance.now(), event });
      options.betweenSteps?.();
      start = performance.now();
    },
  };
  await runStage(stage, bench, chosen, batchSize, context);
  return summarize(stage, timeline, steps);
}

async function runStage(
  stage: TrainingStage,
  bench: BenchModel,
  examples: TrainingExample[],
  batchSize: number,
  context: TrainingContext,
): Promise<void> {
  const defaults = stage === 'sft' ? SFT_DEFAULTS : ALIGN_DEFAULTS;
  // One epoch over exactly warmup + timed batches; no checkpoints.
  const config: StageConfig = { ...defaults, epochs: 1, batchSize, checkpointEvery: 0 };
  if (stage === 'sft') {
    await trainSft(bench.model, examples, config, context);
    return;
  }
  const reference = frozenCopy(bench.model);
  try {
    await trainAlignment(bench.model, reference, examples, config, ALIGN_LOSS_DEFAULTS, context);
  } finally {
    reference.dispose();
  }
}

function summarize(
  stage: TrainingStage,
  timeline: TimedEvent[],
  steps: { warmup: number; timed: number; batchSize: number },
): TrainingResult {
  const timed = timeline.slice(steps.warmup);
  const perStep = timed.map(({ start, end, event }) => ({
    tokens: event.tokens,
    seconds: (end - start) / 1000,
  }));
  const tokens = perStep.reduce((sum, step) => sum + step.tokens, 0);
  const wallSeconds = perStep.reduce((sum, step) => sum + step.seconds, 0);
  return {
    stage,
    batchSize: steps.batchSize,
    warmupSteps: steps.warmup,
    timedSteps: timed.length,
    tokens,
    wallSeconds,
    tokensPerSecond: tokens / wallSeconds,
    medianStepMs: median(timed.map(({ event }) => event.stepTimeMs)),
    meanSequenceLength: tokens / (timed.length * steps.batchSize),
    perStep,
  };
}
