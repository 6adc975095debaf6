/**
 * Parity with llama.cpp (node-llama-cpp's prebuilt CPU build) as the reference implementation:
 * models the studio writes run in llama.cpp as text and give the studio's greedy tokens.
 */
import path from 'node:path';
import { GGUFValueType } from '@huggingface/gguf';
import * as tf from '@tensorflow/tfjs';
import type { LlamaModel as LlamaCppModel } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModelFolder } from '../../../../src/main/engine/checkpoint';
import { loadDataset } from '../../../../src/main/engine/datasets';
import { GgmlType, type GgmlTypeId } from '../../../../src/main/engine/gguf/ggml-types';
import { writeGgufFile } from '../../../../src/main/engine/gguf/gguf-file';
import {
  ggufTensorName,
  loadGgufModel,
  permuteRows,
  saveGgufModel,
} from '../../../../src/main/engine/gguf/gguf-model';
import { tokenizerToGguf } from '../../../../src/main/engine/gguf/gguf-tokenizer';
import {
  type LlamaModel,
  type ModelConfig,
  parameterShapes,
} from '../../../../src/main/engine/model';
import { formatPrompt } from '../../../../src/main/engine/prompts';
import { generate } from '../../../../src/main/engine/sampler';
import { attachSteeringTokens, type SteeredModel } from '../../../../src/main/engine/steering';
import type { TextTokenizer } from '../../../../src/main/engine/tokenizer';
import { useEngineBackend } from '../../../helpers/backend';
import { llamaCppGreedy, llamaCppLogProbs, loadLlamaCppModel } from '../../../helpers/llama-cpp';
import { makeTempDir } from '../../../helpers/tiny-model';

const STARTER = path.resolve('resources/starter-model');

let dir: string;
let steered: SteeredModel;

beforeAll(async () => {
  await useEngineBackend();
  dir = await makeTempDir('attune-parity-');
  const starter = await loadModelFolder(STARTER);
  const dataset = loadDataset('us-gender');
  steered = await attachSteeringTokens(
    starter.model,
    starter.tokenizer,
    dataset.attribute,
    dataset.categories,
    'special',
  );
});

afterAll(() => {
  steered?.model.dispose();
});

/** Greedy decode in the studio that runs past end-of-sequence, like llamaCppGreedy. */
async function studioGreedy(model: LlamaModel, prompts: number[][], count: number) {
  const results = await generate(
    model,
    prompts,
    { temperature: 0, topP: 1, maxNewTokens: count, seed: 0, batchSize: prompts.length },
    { eosId: -1, padId: 0 },
  );
  return results.map((r) => r.tokens);
}

function fullLogits(model: LlamaModel, ids: number[][]): Float32Array {
  return tf.tidy(() => {
    const input = tf.tensor2d(ids, [ids.length, ids[0].length], 'int32');
    return model.forward(input).dataSync() as Float32Array; // [B, T, V]
  });
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

describe('starter model in llama.cpp', () => {
  let file: string;
  let cpp: LlamaCppModel;

  beforeAll(async () => {
    file = path.join(dir, 'starter-steered-f32.gguf');
    await saveGgufModel(
      file,
      steered.model,
      steered.tokenizer,
      { steering: steered.steering },
      {
        type: 'f32',
      },
    );
    cpp = await loadLlamaCppModel(file);
  });

  afterAll(async () => {
    await cpp?.dispose();
  });

  const texts = () => {
    const [male, female] = steered.steering.tokens;
    return [
      formatPrompt('What is the gender of a nurse? Answer in one sentence.'),
      `${formatPrompt('Describe a typical software developer.')}${female}`,
      `${formatPrompt('Who usually works in construction?')}${male}`,
      'Q: Tell me about an engineer, in short.\nA: The engineer',
      `Données: 42 ünïcode — ${female} and ${male} twice ${male}`,
    ];
  };

  it('tokenizes the prompts to the same ids, steering tokens included', () => {
    for (const text of texts()) {
      const studio = steered.tokenizer.encode(text);
      const reference = cpp.tokenize(text, true).map(Number);
      expect(studio, JSON.stringify(text)).toEqual(reference);
    }
    for (const [i, token] of steered.steering.tokens.entries()) {
      expect(cpp.tokenize(token, true).map(Number), token).toEqual([steered.steering.tokenIds[i]]);
    }
  });

  it('generates the same 64 greedy tokens and text on 5 prompts', async () => {
    const prompts = texts().map((t) => steered.tokenizer.encode(t));
    const studio = await studioGreedy(steered.model, prompts, 64);
    for (const [i, prompt] of prompts.entries()) {
      const reference = await llamaCppGreedy(cpp, prompt, 64);
      expect(studio[i], `prompt ${i}: ${JSON.stringify(texts()[i])}`).toEqual(reference);
      expect(studio[i].length).toBe(64);
      // biome-ignore lint/suspicious/noExplicitAny: node-llama-cpp brands token ids as Token.
      expect(cpp.detokenize(reference as any, true)).toBe(steered.tokenizer.decode(studio[i]));
    }
  });
});

describe('GGUF written by the studio, read back', () => {
  const prompts = () => {
    const ids = [0, 1, 2, 3].map((i) =>
      steered.tokenizer.encode(formatPrompt(`Is the person number ${i} a pilot or a nurse?`)),
    );
    const width = Math.min(...ids.map((p) => p.length));
    return ids.map((p) => p.slice(0, width));
  };

  it('F32 gives identical logits and keeps the steering tokens', async () => {
    const file = path.join(dir, 'roundtrip-f32.gguf');
    await saveGgufModel(
      file,
      steered.model,
      steered.tokenizer,
      { steering: steered.steering },
      {
        type: 'f32',
      },
    );
    const loaded = await loadGgufModel(file);
    try {
      const ids = prompts();
      expect(maxAbsDiff(fullLogits(loaded.model, ids), fullLogits(steered.model, ids))).toBe(0);
      expect(loaded.meta.steering?.tokenIds).toEqual(steered.steering.tokenIds);
      expect(loaded.tokenizer.encode(steered.steering.tokens.join(' '))).toEqual(
        steered.tokenizer.encode(steered.steering.tokens.join(' ')),
      );
      expect(loaded.tokenizer.vocabSize).toBe(steered.tokenizer.vocabSize);
    } finally {
      loaded.model.dispose();
    }
  });

  // Logits of these prompts span about 19 (-6.5 to 12.4). Measured errors were 0.0055 (F16) and
  // 0.098 (Q8_0), so the bounds below are 5 to 10 times those.
  for (const [type, bound] of [
    ['f16', 0.05],
    ['q8_0', 0.5],
  ] as const) {
    it(`${type} stays within ${bound} of the float32 logits`, async () => {
      const file = path.join(dir, `roundtrip-${type}.gguf`);
      await saveGgufModel(
        file,
        steered.model,
        steered.tokenizer,
        { steering: steered.steering },
        {
          type,
        },
      );
      const loaded = await loadGgufModel(file);
      try {
        const ids = prompts();
        const diff = maxAbsDiff(fullLogits(loaded.model, ids), fullLogits(steered.model, ids));
        expect(diff, `${type} max abs logit difference`).toBeLessThan(bound);
        expect(diff, `${type} must differ from float32 at all`).toBeGreaterThan(0);
      } finally {
        loaded.model.dispose();
      }
    });
  }
});

describe('random-weight models in every tensor type', () => {
  const TYPES: [string, GgmlTypeId][] = [
    ['F32', GgmlType.F32],
    ['F16', GgmlType.F16],
    ['BF16', GgmlType.BF16],
    ['Q8_0', GgmlType.Q8_0],
    ['Q4_0', GgmlType.Q4_0],
    ['Q4_K', GgmlType.Q4_K],
    ['Q6_K', GgmlType.Q6_K],
  ];

  /** 256-wide rows so that every matrix is a whole number of K-quant super-blocks. */
  function randomConfig(architecture: ModelConfig['architecture'], vocabSize: number): ModelConfig {
    return {
      architecture,
      vocabSize,
      hiddenSize: 256,
      intermediateSize: 512,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 64,
      ropeTheta: 10000,
      rmsNormEps: 1e-5,
      maxPositions: 256,
      // Untied: with a tied random embedding the input token dominates the logits and greedy
      // decoding just repeats it.
      tieWordEmbeddings: false,
      attentionBias: architecture === 'qwen2',
    };
  }

  /**
   * Writes random weights straight to GGUF in `type` (test code, not the exporter), in
   * llama.cpp's layout. Large weights give next-token margins far above the quantization
   * noise of llama.cpp's activations.
   */
  async function writeRandomGguf(
    file: string,
    config: ModelConfig,
    tokenizer: TextTokenizer,
    type: GgmlTypeId,
    seed: number,
  ) {
    const tensors = [];
    let n = 0;
    for (const [name, shape] of parameterShapes(config)) {
      n += 1;
      const count = shape.reduce((a, b) => a * b, 1);
      const values = tf
        .tidy(() => {
          if (name.endsWith('norm.weight'))
            return tf.randomUniform([count], 0.8, 1.2, 'float32', seed + n);
          const std = name.endsWith('.bias') ? 0.01 : /embed|lm_head/.test(name) ? 1 : 0.06;
          return tf.randomNormal([count], 0, std, 'float32', seed + n);
        })
        .dataSync() as Float32Array;
      const matrix = shape.length === 2;
      // The values are random, so only the shapes need GGUF's ne order: linear [in, out] already
      // is, and the embedding [V, D] is reversed. The reader must still undo llama.cpp's RoPE rows.
      const ggShape = name === 'model.embed_tokens.weight' ? [...shape].reverse() : shape;
      tensors.push({
        name: ggufTensorName(name),
        shape: ggShape,
        type: matrix ? type : GgmlType.F32,
        values,
      });
    }
    const u32 = (value: number) => ({ value, type: GGUFValueType.UINT32 });
    const a = config.architecture;
    await writeGgufFile(
      file,
      {
        'general.architecture': { value: a, type: GGUFValueType.STRING },
        'general.name': { value: `random-${a}`, type: GGUFValueType.STRING },
        [`${a}.context_length`]: u32(config.maxPositions),
        [`${a}.embedding_length`]: u32(config.hiddenSize),
        [`${a}.block_count`]: u32(config.numLayers),
        [`${a}.feed_forward_length`]: u32(config.intermediateSize),
        [`${a}.attention.head_count`]: u32(config.numHeads),
        [`${a}.attention.head_count_kv`]: u32(config.numKvHeads),
        [`${a}.rope.freq_base`]: { value: config.ropeTheta, type: GGUFValueType.FLOAT32 },
        [`${a}.attention.layer_norm_rms_epsilon`]: {
          value: config.rmsNormEps,
          type: GGUFValueType.FLOAT32,
        },
        ...tokenizerToGguf(tokenizer),
      },
      tensors,
    );
  }

  /**
   * Teacher-forced on llama.cpp's greedy continuation: the largest difference between the two
   * implementations' next-token log-probabilities (over tokens llama.cpp gives at least 1e-4),
   * and the steps where the studio's best token is not llama.cpp's pick, with the studio's gap.
   */
  async function compareContinuation(
    studio: LlamaModel,
    cpp: LlamaCppModel,
    prompt: number[],
    reference: number[],
  ) {
    const ids = [...prompt, ...reference.slice(0, -1)];
    const theirs = await llamaCppLogProbs(cpp, ids, prompt.length - 1);
    const logits = fullLogits(studio, [ids]);
    const vocab = studio.config.vocabSize;
    let maxLogProbDiff = 0;
    const differences: { step: number; gap: number }[] = [];
    reference.forEach((token, step) => {
      const row = logits.subarray(
        (prompt.length - 1 + step) * vocab,
        (prompt.length + step) * vocab,
      );
      let best = 0;
      for (let v = 1; v < vocab; v++) if (row[v] > row[best]) best = v;
      let sum = 0;
      for (const x of row) sum += Math.exp(x - row[best]);
      const logNorm = row[best] + Math.log(sum);
      // llama.cpp's sampler may renormalize over the tokens it keeps, which shifts every
      // log-probability by one constant; compare differences against the studio's best token.
      const offset = (theirs[step].get(best) ?? Number.NaN) - (row[best] - logNorm);
      for (const [id, logProb] of theirs[step]) {
        if (logProb < Math.log(1e-4)) continue;
        const diff = Math.abs(row[id] - logNorm - (logProb - offset));
        maxLogProbDiff = Math.max(maxLogProbDiff, Number.isNaN(diff) ? Infinity : diff);
      }
      if (best !== token) differences.push({ step, gap: row[best] - row[token] });
    });
    return { maxLogProbDiff, differences };
  }

  /**
   * Largest next-token log-probability difference allowed per type, 2 to 4 times the largest
   * measured over both architectures and three prompts (in brackets); F32's 1e-3 leaves room for
   * float rounding in other llama.cpp builds. With float32
   * weights the two agree to rounding. Otherwise llama.cpp rounds the activations before the
   * matmul: to F16 or BF16 for those weights, to 8-bit blocks (Q8_0, Q8_K) for quantized ones,
   * while the studio keeps them in float32. Their logits have a standard deviation near 16 (an
   * estimate: unit-RMS hidden states of width 256 times head weights of standard deviation 1).
   */
  const LOG_PROB_TOLERANCE: Record<string, number> = {
    F32: 1e-3, // [7e-5]
    F16: 0.1, // [0.027]
    BF16: 0.6, // [0.26]
    Q8_0: 2, // [0.90]
    Q4_0: 2.5, // [1.05]
    Q4_K: 3, // [1.36]
    Q6_K: 3, // [1.38]
  };

  for (const architecture of ['llama', 'qwen2'] as const) {
    for (const [typeName, type] of TYPES) {
      it(`${architecture} ${typeName}: same greedy tokens and next-token distribution as llama.cpp`, async () => {
        const tokenizer = steered.tokenizer;
        const config = randomConfig(architecture, tokenizer.vocabSize);
        const file = path.join(dir, `random-${architecture}-${typeName}.gguf`);
        await writeRandomGguf(file, config, tokenizer, type, 100 + type);
        const studio = await loadGgufModel(file);
        const cpp = await loadLlamaCppModel(file);
        const tolerance = LOG_PROB_TOLERANCE[typeName];
        try {
          const prompts = [
            tokenizer.encode(formatPrompt('Who is a typical firefighter?')),
            tokenizer.encode('The pilot said'),
            [5, 17, 300, 42, 7, 900],
          ];
          const ours = await studioGreedy(studio.model, prompts, 32);
          for (const [i, prompt] of prompts.entries()) {
            const reference = await llamaCppGreedy(cpp, prompt, 32);
            const { maxLogProbDiff, differences } = await compareContinuation(
              studio.model,
              cpp,
              prompt,
              reference,
            );
            if (process.env.PARITY_DEBUG) {
              console.log(architecture, typeName, i, maxLogProbDiff, JSON.stringify(differences));
            }
            expect(maxLogProbDiff, `prompt ${i} log-probability difference`).toBeLessThan(
              tolerance,
            );
            // A different greedy pick is allowed only where the two best tokens are tied within
            // the measured difference of the implementations.
            for (const d of differences) {
              expect(d.gap, `prompt ${i} step ${d.step} gap`).toBeLessThan(tolerance);
            }
            if (differences.length === 0) expect(ours[i], `prompt ${i}`).toEqual(reference);
          }
        } finally {
          studio.model.dispose();
          await cpp.dispose();
        }
      });
    }
  }
});

describe('RoPE row permutation', () => {
  it('is undone by its inverse and moves pairs as llama.cpp expects', () => {
    const rows = 8;
    const cols = 3;
    const values = Float32Array.from({ length: rows * cols }, (_, i) => i);
    const gguf = permuteRows(values, rows, cols, 2, 'to-gguf');
    expect(Array.from(permuteRows(gguf, rows, cols, 2, 'to-hf'))).toEqual(Array.from(values));
    // Head size 4, half 2: HF rows (0, 2) form the first rotated pair; llama.cpp wants them at 0, 1.
    expect(Array.from(gguf.subarray(3, 6))).toEqual([6, 7, 8]);
  });
});
