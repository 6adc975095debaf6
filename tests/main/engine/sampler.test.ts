import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LlamaModel } from '../../../src/main/engine/model';
import {
  type GenerationResult,
  generate,
  type SamplingOptions,
  softmax,
} from '../../../src/main/engine/sampler';
import type { TextTokenizer } from '../../../src/main/engine/tokenizer';
import { CancelledError, UserError } from '../../../src/shared/errors';
import { useEngineBackend } from '../../helpers/backend';
import { tinyCorpus, tinyModel, tinyTokenizer } from '../../helpers/tiny-model';

let tokenizer: TextTokenizer;
let model: LlamaModel;
/** Prompts of three different lengths, so batches are left-padded. */
let prompts: number[][];
let steeringIds: number[];

const SAMPLING: SamplingOptions = {
  temperature: 1,
  topP: 1,
  maxNewTokens: 12,
  seed: 5,
  batchSize: 6,
};

beforeAll(async () => {
  await useEngineBackend();
  tokenizer = await tinyTokenizer();
  model = tinyModel(tokenizer.vocabSize, 2);
  // Scaling the head gives peaked next-token distributions, so greedy picks have clear margins
  // and the steering probabilities are far from uniform. Scaling the query and key projections
  // sharpens attention, so a wrong position or mask changes the picks.
  for (const [name, param] of Object.entries(model.params)) {
    const factor = name === 'lm_head.weight' ? 20 : /[qk]_proj/.test(name) ? 12 : 1;
    if (factor !== 1) param.assign(tf.tidy(() => tf.mul(param, factor)));
  }
  const corpus = tinyCorpus();
  prompts = [0, 1, 2, 80, 81, 160, 161, 162].map((i) => tokenizer.encode(corpus[i].prompt));
  steeringIds = ['0', '1'].map((digit) => tokenizer.encode(digit)[0]);
});

afterAll(() => {
  model.dispose();
});

function context(overrides: { eosId?: number; steering?: boolean } = {}) {
  return {
    eosId: overrides.eosId ?? tokenizer.eosId,
    padId: tokenizer.eosId,
    steeringIds: overrides.steering ? steeringIds : undefined,
  };
}

/** Logits of the last position of `ids`, from a full forward pass without cache or padding. */
function lastLogits(ids: number[]): Float32Array {
  return tf.tidy(() => {
    const input = tf.tensor2d([ids], [1, ids.length], 'int32');
    return model.forward(input, { lastOnly: true }).dataSync() as Float32Array; // [1, 1, V]
  });
}

function argmaxWithMargin(row: Float32Array): { index: number; margin: number } {
  const order = Array.from(row.keys()).sort((a, b) => row[b] - row[a]);
  return { index: order[0], margin: row[order[0]] - row[order[1]] };
}

function summary(results: GenerationResult[]) {
  return results.map((r) => ({ tokens: r.tokens, category: r.steeringCategory }));
}

describe('generate', () => {
  it('same seed repeats across batch sizes', async () => {
    const options = { ...SAMPLING, seed: 9 };
    const first = await generate(model, prompts, options, context({ steering: true }));
    const again = await generate(model, prompts, options, context({ steering: true }));
    expect(summary(again), 'second run with the same seed').toEqual(summary(first));
    for (const batchSize of [1, 3, 8]) {
      const batched = await generate(
        model,
        prompts,
        { ...options, batchSize },
        context({ steering: true }),
      );
      expect(summary(batched), `batch size ${batchSize} against 6`).toEqual(summary(first));
    }
  });

  it('different seed gives different tokens', async () => {
    const a = await generate(model, prompts, { ...SAMPLING, seed: 1 }, context());
    const b = await generate(model, prompts, { ...SAMPLING, seed: 2 }, context());
    expect(summary(b), 'seeds 1 and 2 gave the same tokens').not.toEqual(summary(a));
  });

  it('decodes greedily at temperature 0', async () => {
    const options = { ...SAMPLING, temperature: 0 };
    const results = await generate(model, prompts, options, context({ eosId: -1 }));
    results.forEach((result, p) => {
      expect(result.tokens.length, `prompt ${p} token count`).toBe(options.maxNewTokens);
      const sequence = [...prompts[p]];
      result.tokens.forEach((token, step) => {
        const { index, margin } = argmaxWithMargin(lastLogits(sequence));
        expect(token, `prompt ${p} step ${step} (top-2 margin ${margin})`).toBe(index);
        sequence.push(token);
      });
    });
  });

  it('equals greedy with top-p 1e-6', async () => {
    const greedy = await generate(model, prompts, { ...SAMPLING, temperature: 0 }, context());
    const nucleus = await generate(model, prompts, { ...SAMPLING, topP: 1e-6 }, context());
    expect(summary(nucleus), 'top-p 1e-6 against temperature 0').toEqual(summary(greedy));
  });

  it('stops at end-of-sequence', async () => {
    // Greedy runs without a reachable end-of-sequence id, then with a token the first runs
    // produce as end-of-sequence: each row must stop right before its first occurrence.
    const options = { ...SAMPLING, temperature: 0, maxNewTokens: 16 };
    const baseline = await generate(model, prompts, options, context({ eosId: -1 }));
    const counts = new Map<number, number>();
    for (const r of baseline)
      for (const t of new Set(r.tokens.slice(1))) counts.set(t, (counts.get(t) ?? 0) + 1);
    const [stopId] = [...counts.entries()].sort((a, b) => b[1] - a[1])[0];
    const stopped = await generate(model, prompts, options, context({ eosId: stopId }));
    let finishedRows = 0;
    baseline.forEach((base, p) => {
      const cut = base.tokens.indexOf(stopId);
      const result = stopped[p];
      expect(result.tokens, `prompt ${p} tokens exclude end-of-sequence`).not.toContain(stopId);
      if (cut === -1) {
        expect(result.finished, `prompt ${p} never produced it`).toBe(false);
        expect(result.tokens, `prompt ${p} unchanged`).toEqual(base.tokens);
      } else {
        finishedRows += 1;
        expect(result.finished, `prompt ${p} finished`).toBe(true);
        expect(result.tokens, `prompt ${p} cut at step ${cut}`).toEqual(base.tokens.slice(0, cut));
      }
    });
    expect(finishedRows, 'rows that reached end-of-sequence').toBeGreaterThanOrEqual(2);
  });

  it('respects max new tokens', async () => {
    for (const maxNewTokens of [1, 5]) {
      const results = await generate(
        model,
        prompts,
        { ...SAMPLING, maxNewTokens },
        context({ eosId: -1 }),
      );
      for (const [p, r] of results.entries()) {
        expect(r.tokens.length, `prompt ${p}, max ${maxNewTokens}`).toBe(maxNewTokens);
        expect(r.finished, `prompt ${p}, max ${maxNewTokens} finished`).toBe(false);
      }
    }
  });

  it('samples the steering token first', async () => {
    const many = Array.from({ length: 60 }, (_, i) => prompts[i % prompts.length]);
    const results = await generate(
      model,
      many,
      { ...SAMPLING, maxNewTokens: 3 },
      context({ steering: true }),
    );

    results.forEach((r, i) => {
      expect(steeringIds, `request ${i} first token ${r.tokens[0]}`).toContain(r.tokens[0]);
      expect(r.steeringCategory, `request ${i} category`).not.toBeNull();
      expect(r.tokens[0], `request ${i} category matches token`).toBe(
        steeringIds[r.steeringCategory ?? -1],
      );
      const probs = r.steeringProbs ?? [];
      expect(probs.length, `request ${i} probability count`).toBe(2);
      expect(Math.abs(probs[0] + probs[1] - 1), `request ${i} probabilities sum`).toBeLessThan(
        1e-6,
      );
    });

    // The probabilities are the softmax over the steering logits of a full forward pass.
    const full = lastLogits(prompts[0]);
    const expected = softmax(steeringIds.map((id) => full[id]));
    expect(
      Math.abs((results[0].steeringProbs ?? [])[0] - expected[0]),
      'probs against forward pass',
    ).toBeLessThan(1e-4);

    // Draws follow the probabilities: mean of the draws near the mean probability (binomial, 4 sd).
    const meanProb = results.reduce((s, r) => s + (r.steeringProbs ?? [0])[0], 0) / results.length;
    const meanDrawn = results.filter((r) => r.steeringCategory === 0).length / results.length;
    expect(
      Math.abs(meanDrawn - meanProb),
      `drawn ${meanDrawn} against prob ${meanProb}`,
    ).toBeLessThan(4 * Math.sqrt(0.25 / results.length));
  });

  it('takes the steering draw from steeringUniforms and keeps the text stream', async () => {
    const many = Array.from({ length: 40 }, (_, i) => prompts[i % prompts.length]);
    const options = { ...SAMPLING, maxNewTokens: 6 };
    const free = await generate(model, many, options, context({ steering: true }));
    // Uniform 0 always picks category 0, a uniform just below 1 always picks the last one.
    const uniforms = many.map((_, i) => (i % 2 === 0 ? 0 : 1 - 1e-9));
    const forced = await generate(model, many, options, {
      ...context({ steering: true }),
      steeringUniforms: uniforms,
    });
    forced.forEach((r, i) => {
      expect(r.steeringCategory, `request ${i} category`).toBe(i % 2 === 0 ? 0 : 1);
    });
    // Where the forced draw equals the free one, the text after it is the same token for token.
    const same = forced.filter((r, i) => r.steeringCategory === free[i].steeringCategory);
    expect(same.length, 'requests whose draw did not change').toBeGreaterThan(5);
    forced.forEach((r, i) => {
      if (r.steeringCategory === free[i].steeringCategory) {
        expect(r.tokens, `request ${i} text`).toEqual(free[i].tokens);
      }
    });
    await expect(
      generate(model, many, options, {
        ...context({ steering: true }),
        steeringUniforms: [0.5],
      }),
    ).rejects.toThrow(/1 steering draws for 40 prompts/);
  });

  it('never samples ids at or above vocabLimit', async () => {
    // At temperature 1000 every id is about equally likely, so 480 draws hit the top 40 ids
    // with probability 1 - (7/8)^480 unless they are excluded.
    const limit = model.config.vocabSize - 40;
    const many = Array.from({ length: 40 }, (_, i) => prompts[i % prompts.length]);
    const options = { ...SAMPLING, temperature: 1000, maxNewTokens: 12 };
    const free = await generate(model, many, options, { ...context(), eosId: -1 });
    expect(
      free.flatMap((r) => r.tokens).some((t) => t >= limit),
      'ids past the limit',
    ).toBe(true);
    const limited = await generate(model, many, options, {
      ...context(),
      eosId: -1,
      vocabLimit: limit,
    });
    for (const r of limited) for (const t of r.tokens) expect(t).toBeLessThan(limit);
  });

  it('rejects bad options naming the value', async () => {
    const cases: [Partial<SamplingOptions>, RegExp][] = [
      [{ temperature: -1 }, /temperature.*-1/],
      [{ topP: 0 }, /top-p.*got 0\b/],
      [{ topP: 1.5 }, /top-p.*1\.5/],
      [{ maxNewTokens: 0 }, /max new tokens.*got 0\b/],
    ];
    for (const [bad, message] of cases) {
      const run = generate(model, prompts, { ...SAMPLING, ...bad }, context());
      await expect(run, JSON.stringify(bad)).rejects.toThrow(UserError);
      await expect(run, JSON.stringify(bad)).rejects.toThrow(message);
    }
  });

  it('rejects prompt beyond max positions', async () => {
    const long = Array.from(
      { length: model.config.maxPositions },
      (_, i) => prompts[0][i % prompts[0].length],
    );
    const run = generate(model, [prompts[0], long], SAMPLING, context());
    await expect(run, 'prompt of max positions tokens').rejects.toThrow(UserError);
    await expect(run, 'message names the limit').rejects.toThrow(
      /exceeds the model's 128 positions/,
    );
  });

  it('stops with CancelledError when aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    const run = generate(model, prompts, SAMPLING, { ...context(), signal: controller.signal });
    await expect(run, 'aborted signal').rejects.toThrow(CancelledError);
  });

  it('frees every tensor it creates', async () => {
    await generate(model, prompts.slice(0, 2), SAMPLING, context());
    const before = tf.memory().numTensors;
    await generate(model, prompts, SAMPLING, context({ steering: true }));
    expect(tf.memory().numTensors, 'live tensors after a second run').toBe(before);
  });
});
