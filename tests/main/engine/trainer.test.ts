import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TrainingExample } from '../../../src/main/engine/batches';
import { loadModelFolder } from '../../../src/main/engine/checkpoint';
import type { LlamaModel } from '../../../src/main/engine/model';
import {
  readLatestCheckpoint,
  readTrainerState,
  saveTrainingCheckpoint,
} from '../../../src/main/engine/run-store';
import { softmax } from '../../../src/main/engine/sampler';
import type { TextTokenizer } from '../../../src/main/engine/tokenizer';
import {
  ALIGN_LOSS_DEFAULTS,
  type AlignmentLossConfig,
  frozenCopy,
  type StageConfig,
  type TrainerState,
  type TrainingContext,
  trainAlignment,
  trainSft,
} from '../../../src/main/engine/trainer';
import { CancelledError, UserError } from '../../../src/shared/errors';
import { useEngineBackend } from '../../helpers/backend';
import { makeTempDir, tinyCorpus, tinyModel, tinyTokenizer } from '../../helpers/tiny-model';

let tokenizer: TextTokenizer;
let steeringIds: number[];
/** 100 desirable and 100 undesirable examples, alternating. */
let examples: TrainingExample[];
let tempDir: string;

const STAGE: StageConfig = {
  epochs: 1,
  batchSize: 4,
  learningRate: 3e-3,
  warmupSteps: 2,
  decay: 'cosine',
  minLearningRateRatio: 0.1,
  weightDecay: 0.01,
  gradientClip: 1,
  checkpointEvery: 0,
  seed: 3,
};

const TARGET = [0.8, 0.2];

beforeAll(async () => {
  await useEngineBackend();
  tokenizer = await tinyTokenizer();
  // Digit steering tokens: "0" for male, "1" for female.
  steeringIds = ['0', '1'].map((digit) => tokenizer.encode(digit)[0]);
  const gendered = tinyCorpus()
    .filter((e) => e.gender !== null)
    .slice(0, 100);
  examples = gendered.flatMap((e) => {
    const category = e.gender === 'male' ? 0 : 1;
    const text = tokenizer.encode(e.response);
    const common = { promptIds: tokenizer.encode(e.prompt), target: TARGET, occupationIndex: 0 };
    const behind = (k: number) => [steeringIds[k], ...text, tokenizer.eosId];
    return [
      { ...common, responseIds: behind(category), desirable: true },
      { ...common, responseIds: behind(1 - category), desirable: false },
    ];
  });
  tempDir = await makeTempDir('trainer');
});

afterAll(async () => {
  await fs.rm(tempDir, { recursive: true, force: true });
});

function trainingContext(overrides: Partial<TrainingContext> = {}): TrainingContext {
  return { padId: tokenizer.eosId, steeringIds, ...overrides };
}

function snapshot(model: LlamaModel): Map<string, Float32Array> {
  return new Map(Object.entries(model.params).map(([n, p]) => [n, new Float32Array(p.dataSync())]));
}

function maxAbsDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let max = 0;
  for (const [name, values] of a) {
    const other = b.get(name) as Float32Array;
    for (let i = 0; i < values.length; i++) max = Math.max(max, Math.abs(values[i] - other[i]));
  }
  return max;
}

/** Mean over `prompts` of KL(target || softmax over the K steering logits at the last position). */
function steeringKl(model: LlamaModel, prompts: number[][]): number {
  let total = 0;
  for (const ids of prompts) {
    const row = tf.tidy(
      () =>
        model.forward(tf.tensor2d([ids], [1, ids.length], 'int32'), { lastOnly: true }).dataSync(), // [1, 1, V]
    );
    const q = softmax(steeringIds.map((id) => row[id]));
    total += TARGET.reduce((sum, p, k) => sum + p * Math.log(p / q[k]), 0);
  }
  return total / prompts.length;
}

/** Records the live tensor count after the given steps. */
function tensorCounter(steps: number[]) {
  const counts = new Map<number, number>();
  return {
    counts,
    onStep: (event: { step: number }) => {
      if (steps.includes(event.step)) counts.set(event.step, tf.memory().numTensors);
    },
  };
}

const KL_PLUS_KTO: AlignmentLossConfig = { ...ALIGN_LOSS_DEFAULTS };

describe('trainSft', () => {
  it('live tensors flat over 50 steps', async () => {
    const model = tinyModel(tokenizer.vocabSize, 1);
    const counter = tensorCounter([5, 50]);
    const result = await trainSft(
      model,
      examples,
      { ...STAGE, epochs: 2 },
      trainingContext(counter),
    );
    expect(result.steps, 'steps: 100 desirable examples / 4 per batch * 2 epochs').toBe(50);
    expect(counter.counts.get(50), 'tensors after step 50 against step 5').toBe(
      counter.counts.get(5),
    );
    model.dispose();
  });

  it('three steps: finite loss, new weights', async () => {
    const model = tinyModel(tokenizer.vocabSize, 1);
    const before = snapshot(model);
    const few = examples.filter((e) => e.desirable).slice(0, 12);
    const result = await trainSft(model, few, STAGE, trainingContext());
    expect(result.steps, 'steps').toBe(3);
    for (const event of result.history) {
      expect(Number.isFinite(event.loss), `loss at step ${event.step}: ${event.loss}`).toBe(true);
    }
    // An untrained model over 320 tokens starts near ln(320) = 5.77 nats per token.
    expect(result.history[0].loss, 'first loss near ln(V)').toBeGreaterThan(5);
    const after = snapshot(model);
    for (const [name, values] of before) {
      const changed = values.some((v, i) => v !== (after.get(name) as Float32Array)[i]);
      expect(changed, `parameter ${name} changed`).toBe(true);
    }
    model.dispose();
  });

  it('cancel then resume matches straight run', async () => {
    const config = { ...STAGE, epochs: 1, batchSize: 8 }; // 12 steps
    const straight = tinyModel(tokenizer.vocabSize, 4);
    await trainSft(straight, examples, config, trainingContext());
    const expected = snapshot(straight);
    straight.dispose();

    const runDir = path.join(tempDir, 'sft-cancel');
    const cancelled = tinyModel(tokenizer.vocabSize, 4);
    const saved = await cancelAfter(5, cancelled, runDir, (ctx) =>
      trainSft(cancelled, examples, config, ctx),
    );
    cancelled.dispose();
    expect(
      saved.map((s) => s.step),
      'checkpoints saved',
    ).toEqual([5]);

    const { model, state } = await loadLatest(runDir, 'sft', 5);
    await trainSft(model, examples, config, trainingContext({ resume: state }));
    // The wasm backend is bit-exact for the same shapes and inputs, so the difference is 0.
    expect(maxAbsDiff(snapshot(model), expected), 'max abs diff to the uninterrupted run').toBe(0);
    model.dispose();
  });
});

describe('trainAlignment', () => {
  it('live tensors flat over 50 steps', async () => {
    const policy = tinyModel(tokenizer.vocabSize, 1);
    const reference = frozenCopy(policy);
    const counter = tensorCounter([5, 50]);
    const result = await trainAlignment(
      policy,
      reference,
      examples,
      STAGE,
      KL_PLUS_KTO,
      trainingContext(counter),
    );
    expect(result.steps, 'steps: 200 examples / 4 per batch').toBe(50);
    expect(counter.counts.get(50), 'tensors after step 50 against step 5').toBe(
      counter.counts.get(5),
    );
    const last = result.history.at(-1);
    expect(Number.isFinite(last?.klLoss), 'KL term reported').toBe(true);
    expect(Number.isFinite(last?.ktoLoss), 'KTO term reported').toBe(true);
    expect(Number.isFinite(last?.z0), 'z0 reported').toBe(true);
    policy.dispose();
    reference.dispose();
  });

  it('KL only moves steering toward target', async () => {
    const policy = tinyModel(tokenizer.vocabSize, 6);
    const reference = frozenCopy(policy);
    const prompts = [...new Set(examples.map((e) => e.promptIds.join(',')))].map((s) =>
      s.split(',').map(Number),
    );
    const before = steeringKl(policy, prompts);
    const config = { ...STAGE, batchSize: 8, learningRate: 1e-2 }; // 25 steps
    await trainAlignment(
      policy,
      reference,
      examples,
      config,
      { ...KL_PLUS_KTO, mode: 'kl-only' },
      trainingContext(),
    );
    const after = steeringKl(policy, prompts);
    expect(before, 'KL to the target before training').toBeGreaterThan(0.1);
    expect(after, `KL to the target after training (before ${before})`).toBeLessThan(before / 2);
    policy.dispose();
    reference.dispose();
  });

  it('cancel then resume matches straight run', async () => {
    const config = { ...STAGE, batchSize: 8, epochs: 1 }; // 25 steps
    const straight = tinyModel(tokenizer.vocabSize, 7);
    const straightReference = frozenCopy(straight);
    await trainAlignment(
      straight,
      straightReference,
      examples,
      config,
      KL_PLUS_KTO,
      trainingContext(),
    );
    const expected = snapshot(straight);
    straight.dispose();
    straightReference.dispose();

    const runDir = path.join(tempDir, 'align-cancel');
    const cancelled = tinyModel(tokenizer.vocabSize, 7);
    const cancelledReference = frozenCopy(cancelled);
    const train = (ctx: TrainingContext) =>
      trainAlignment(cancelled, cancelledReference, examples, config, KL_PLUS_KTO, ctx);
    const saved = await cancelAfter(9, cancelled, runDir, train);
    cancelled.dispose();
    expect(
      saved.map((s) => s.step),
      'checkpoints saved',
    ).toEqual([9]);

    const { model, state } = await loadLatest(runDir, 'align', 9);
    await trainAlignment(
      model,
      cancelledReference,
      examples,
      config,
      KL_PLUS_KTO,
      trainingContext({ resume: state }),
    );
    // The wasm backend is bit-exact for the same shapes and inputs, so the difference is 0.
    expect(maxAbsDiff(snapshot(model), expected), 'max abs diff to the uninterrupted run').toBe(0);
    model.dispose();
    cancelledReference.dispose();
  });

  it('rejects batch size 1', async () => {
    const policy = tinyModel(tokenizer.vocabSize, 1);
    const reference = frozenCopy(policy);
    const run = trainAlignment(
      policy,
      reference,
      examples,
      { ...STAGE, batchSize: 1 },
      KL_PLUS_KTO,
      trainingContext(),
    );
    await expect(run, 'batch size 1').rejects.toThrow(UserError);
    await expect(run, 'message names the setting and the reason').rejects.toThrow(
      /align setting batchSize must be an integer >= 2 \(KTO estimates z0 from pairs.*got 1/,
    );
    policy.dispose();
    reference.dispose();
  });

  it('finite loss on desirable-only batches', async () => {
    const policy = tinyModel(tokenizer.vocabSize, 1);
    const reference = frozenCopy(policy);
    const desirable = examples.filter((e) => e.desirable).slice(0, 8);
    const result = await trainAlignment(
      policy,
      reference,
      desirable,
      STAGE,
      KL_PLUS_KTO,
      trainingContext(),
    );
    expect(result.steps, 'steps').toBe(2);
    for (const event of result.history) {
      expect(Number.isFinite(event.loss), `loss at step ${event.step}: ${event.loss}`).toBe(true);
      expect(
        Number.isFinite(event.ktoLoss),
        `KTO loss at step ${event.step}: ${event.ktoLoss}`,
      ).toBe(true);
    }
    policy.dispose();
    reference.dispose();
  });
});

/**
 * Runs `train` with an abort after `step`, saving checkpoints into `runDir`. Expects a
 * CancelledError and returns the states that were saved.
 */
async function cancelAfter(
  step: number,
  model: LlamaModel,
  runDir: string,
  train: (context: TrainingContext) => Promise<unknown>,
): Promise<TrainerState[]> {
  const controller = new AbortController();
  const saved: TrainerState[] = [];
  const context = trainingContext({
    signal: controller.signal,
    onStep: (event) => {
      if (event.step === step) controller.abort();
    },
    saveCheckpoint: async (state) => {
      saved.push(state);
      await saveTrainingCheckpoint(runDir, model, tokenizer, {}, state);
    },
  });
  await expect(train(context), 'training aborted by the signal').rejects.toThrow(CancelledError);
  return saved;
}

async function loadLatest(runDir: string, stage: TrainerState['stage'], step: number) {
  const latest = await readLatestCheckpoint(runDir);
  expect(latest?.stage, 'latest checkpoint stage').toBe(stage);
  expect(latest?.step, 'latest checkpoint step').toBe(step);
  const dir = path.join(runDir, 'checkpoints', latest?.dir ?? '');
  const state = await readTrainerState(dir);
  expect(state.optimizer.step, 'optimizer steps in the checkpoint').toBe(step);
  const { model } = await loadModelFolder(dir);
  return { model, state };
}
