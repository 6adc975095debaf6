import { promises as fs } from 'node:fs';
import path from 'node:path';
import { GGUFValueType } from '@huggingface/gguf';
import * as tf from '@tensorflow/tfjs';
import seedrandom from 'seedrandom';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GgmlType } from '../../../../src/main/engine/gguf/ggml-types';
import { readGgufHeader, writeGgufFile } from '../../../../src/main/engine/gguf/gguf-file';
import {
  configFromGguf,
  ggufTensorName,
  loadGgufModel,
  saveGgufModel,
} from '../../../../src/main/engine/gguf/gguf-model';
import { tokenizerToGguf } from '../../../../src/main/engine/gguf/gguf-tokenizer';
import { loadModel } from '../../../../src/main/engine/load-model';
import { type LlamaModel, parameterShapes } from '../../../../src/main/engine/model';
import type { TextTokenizer } from '../../../../src/main/engine/tokenizer';
import { UserError } from '../../../../src/shared/errors';
import { useEngineBackend } from '../../../helpers/backend';
import { makeTempDir, tinyModel, tinyTokenizer } from '../../../helpers/tiny-model';

let dir: string;
let tokenizer: TextTokenizer;
let model: LlamaModel;
let valid: string;

beforeAll(async () => {
  await useEngineBackend();
  dir = await makeTempDir('gguf-model');
  tokenizer = await tinyTokenizer();
  model = tinyModel(tokenizer.vocabSize, 3, { architecture: 'qwen2', attentionBias: true });
  valid = path.join(dir, 'valid.gguf');
  await saveGgufModel(valid, model, tokenizer, { description: 'tiny' }, { type: 'f32' });
});

afterAll(async () => {
  model.dispose();
  await fs.rm(dir, { recursive: true, force: true });
});

/** Rewrites `valid.gguf` with `edit` applied to its metadata and tensor list. */
async function variant(
  name: string,
  edit: (
    metadata: Record<string, { value: unknown; type: GGUFValueType; subType?: GGUFValueType }>,
    tensors: { name: string; shape: number[]; type: number; values: Float32Array }[],
  ) => void,
): Promise<string> {
  const tensors = [];
  for (const [param, shape] of parameterShapes(model.config)) {
    const values = model.params[param].dataSync() as Float32Array;
    const ggShape = param === 'model.embed_tokens.weight' ? [shape[1], shape[0]] : shape;
    tensors.push({ name: ggufTensorName(param), shape: ggShape, type: GgmlType.F32, values });
  }
  const u32 = (value: number) => ({ value, type: GGUFValueType.UINT32 });
  const c = model.config;
  const metadata: Record<string, { value: unknown; type: GGUFValueType; subType?: GGUFValueType }> =
    {
      'general.architecture': { value: 'qwen2', type: GGUFValueType.STRING },
      'qwen2.context_length': u32(c.maxPositions),
      'qwen2.embedding_length': u32(c.hiddenSize),
      'qwen2.block_count': u32(c.numLayers),
      'qwen2.feed_forward_length': u32(c.intermediateSize),
      'qwen2.attention.head_count': u32(c.numHeads),
      'qwen2.attention.head_count_kv': u32(c.numKvHeads),
      ...tokenizerToGguf(tokenizer),
    };
  edit(metadata, tensors);
  const file = path.join(dir, `${name}.gguf`);
  await writeGgufFile(file, metadata as never, tensors as never);
  return file;
}

async function loadError(file: string): Promise<Error> {
  try {
    const loaded = await loadGgufModel(file);
    loaded.model.dispose();
  } catch (error) {
    return error as Error;
  }
  throw new Error(`${file} loaded without error`);
}

describe('loadGgufModel', () => {
  it('reads back the exported config', async () => {
    const loaded = await loadModel(valid);
    try {
      expect(loaded.model.config).toEqual(model.config);
      expect(loaded.dir).toBe(valid);
      expect(loaded.weightsSha256).toMatch(/^[0-9a-f]{64}$/);
    } finally {
      loaded.model.dispose();
    }
  });

  it('keeps a model without BOS without one', async () => {
    const loaded = await loadGgufModel(valid);
    try {
      expect(tokenizer.options.bosToken, 'the source has no BOS').toBeUndefined();
      expect(loaded.tokenizer.options.bosToken).toBeUndefined();
      expect(loaded.tokenizer.promptPrefix).toEqual([]);
    } finally {
      loaded.model.dispose();
    }
  });

  it('reports progress up to the tensor bytes', async () => {
    const events: { done: number; total: number }[] = [];
    const loaded = await loadGgufModel(valid, { onProgress: (p) => events.push(p) });
    loaded.model.dispose();
    expect(events.length).toBe(parameterShapes(model.config).size);
    expect(events.at(-1)?.done).toBe(events.at(-1)?.total);
  });

  it('refuses before reading weights when memory is short', async () => {
    const events: unknown[] = [];
    const error = await loadGgufModel(valid, {
      availableBytes: 1000,
      onProgress: (p) => events.push(p),
    }).catch((e: unknown) => e as Error);
    expect(error).toBeInstanceOf(UserError);
    expect((error as Error).message).toContain(valid);
    expect((error as Error).message).toMatch(/parameters/);
    expect(events, 'no tensor read').toEqual([]);
  });

  it('refuses an unsupported architecture', async () => {
    const file = await variant('gemma', (m) => {
      m['general.architecture'] = { value: 'gemma', type: GGUFValueType.STRING };
    });
    const error = await loadError(file);
    expect(error).toBeInstanceOf(UserError);
    expect(error.message).toContain(file);
    expect(error.message).toContain('general.architecture "gemma" is not supported');
  });

  it('refuses an unsupported tensor type', async () => {
    const file = path.join(dir, 'q5k.gguf');
    const bytes = await fs.readFile(valid);
    const header = await readGgufHeader(valid);
    // Retype the first tensor's info in place: its type field is the uint32 before its offset.
    const first = header.tensors[0];
    const nameBytes = Buffer.from(first.name, 'utf8');
    const at = bytes.indexOf(nameBytes) + nameBytes.length + 4 + 8 * first.shape.length;
    bytes.writeUInt32LE(13, at); // Q5_K
    await fs.writeFile(file, bytes);
    const error = await loadError(file);
    expect(error).toBeInstanceOf(UserError);
    expect(error.message).toContain(file);
    expect(error.message).toMatch(/Q5_K/);
  });

  it('refuses a tokenizer that does not match the embedding', async () => {
    const file = await variant('short-vocab', (m) => {
      const tokens = m['tokenizer.ggml.tokens'].value as string[];
      const types = m['tokenizer.ggml.token_type'].value as number[];
      // Drop a merge-free token from the end: the last entry is <|endoftext|>, keep ids intact.
      m['tokenizer.ggml.tokens'] = { ...m['tokenizer.ggml.tokens'], value: tokens.slice(0, -1) };
      m['tokenizer.ggml.token_type'] = {
        ...m['tokenizer.ggml.token_type'],
        value: types.slice(0, -1),
      };
      m['tokenizer.ggml.eos_token_id'] = { value: 0, type: GGUFValueType.UINT32 };
      m['tokenizer.ggml.bos_token_id'] = { value: 0, type: GGUFValueType.UINT32 };
    });
    const error = await loadError(file);
    expect(error).toBeInstanceOf(UserError);
    expect(error.message).toContain(file);
    expect(error.message).toMatch(/tokenizer\.ggml\.tokens has \d+ entries but token_embd\.weight/);
  });

  it('refuses a missing tensor and a wrong shape, naming them', async () => {
    const missing = await variant('missing', (_, tensors) => {
      tensors.splice(
        tensors.findIndex((t) => t.name === 'blk.1.ffn_up.weight'),
        1,
      );
    });
    expect((await loadError(missing)).message).toContain('tensor blk.1.ffn_up.weight is missing');
    const shaped = await variant('shape', (m) => {
      m['qwen2.feed_forward_length'] = { value: 48, type: GGUFValueType.UINT32 };
    });
    expect((await loadError(shaped)).message).toMatch(/tensor blk\.0\.ffn_gate\.weight has shape/);
  });

  it('refuses weights holding NaN, naming the tensor', async () => {
    const file = await variant('nan', (_, tensors) => {
      const up = tensors.find((t) => t.name === 'blk.0.ffn_up.weight');
      if (!up) throw new Error('no blk.0.ffn_up.weight');
      up.values = Float32Array.from(up.values);
      up.values[7] = Number.NaN;
    });
    const error = await loadError(file);
    expect(error).toBeInstanceOf(UserError);
    expect(error.message).toContain(
      `${file}: tensor blk.0.ffn_up.weight contains NaN at element 7`,
    );
  });

  it('refuses rope scaling and a missing hyperparameter', async () => {
    const scaled = await variant('scaled', (m) => {
      m['qwen2.rope.scaling.type'] = { value: 'yarn', type: GGUFValueType.STRING };
    });
    expect((await loadError(scaled)).message).toContain('qwen2.rope.scaling.type is "yarn"');
    const header = await readGgufHeader(scaled);
    expect(() => configFromGguf(header)).toThrow(UserError);
    const noHeads = await variant('no-heads', (m) => {
      delete m['qwen2.attention.head_count'];
    });
    expect((await loadError(noHeads)).message).toContain(
      'metadata qwen2.attention.head_count is missing',
    );
  });

  it('gives a correct load or a clear error for every byte-flipped file', async () => {
    const bytes = await fs.readFile(valid);
    const header = await readGgufHeader(valid);
    // Most flips land in the metadata and tensor infos, where they change what is read.
    const headerEnd = header.tensors[0].offset;
    const rng = seedrandom('flips');
    const file = path.join(dir, 'flipped.gguf');
    const outcomes = { loaded: 0, rejected: 0 };
    for (let round = 0; round < 120; round++) {
      const copy = Buffer.from(bytes);
      const flips = 1 + Math.floor(rng() * 4);
      for (let f = 0; f < flips; f++) {
        const at = rng() < 0.85 ? Math.floor(rng() * headerEnd) : Math.floor(rng() * copy.length);
        copy[at] ^= 1 << Math.floor(rng() * 8);
      }
      const truncated = rng() < 0.1 ? copy.subarray(0, Math.floor(rng() * copy.length)) : copy;
      await fs.writeFile(file, truncated);
      const before = tf.memory().numTensors;
      try {
        const loaded = await loadGgufModel(file);
        loaded.model.dispose();
        outcomes.loaded += 1;
      } catch (error) {
        expect(error, `round ${round}: ${(error as Error).stack}`).toBeInstanceOf(UserError);
        expect((error as Error).message, `round ${round}`).toContain(file);
        outcomes.rejected += 1;
      }
      expect(tf.memory().numTensors, `round ${round} leaked tensors`).toBe(before);
    }
    expect(outcomes.rejected).toBeGreaterThan(20);
    expect(outcomes.loaded).toBeGreaterThan(0);
  });
});
