import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  loadModelFolder,
  type ModelMeta,
  saveModelFolder,
} from '../../../src/main/engine/checkpoint';
import type { LlamaModel, ModelConfig } from '../../../src/main/engine/model';
import { decodeSafetensors, encodeSafetensors } from '../../../src/main/engine/safetensors';
import type { TextTokenizer } from '../../../src/main/engine/tokenizer';
import { UserError } from '../../../src/shared/errors';
import { useEngineBackend } from '../../helpers/backend';
import { makeTempDir, tinyModel, tinyTokenizer } from '../../helpers/tiny-model';

let tokenizer: TextTokenizer;
let tempDir: string;
let counter = 0;

const TEXTS = [
  'Q: What is the gender of a typical worker in the occupation "Pharmacists" in the US?\nA:',
  ' This worker is female. She keeps learning new skills every year.<|endoftext|>',
  'Unseen: zebra 42 café',
];
const META: ModelMeta = { description: 'checkpoint test' };

beforeAll(async () => {
  await useEngineBackend();
  tokenizer = await tinyTokenizer();
  tempDir = await makeTempDir('checkpoint');
});

afterAll(async () => {
  await fs.rm(tempDir, { recursive: true, force: true });
});

function freshDir(): string {
  counter += 1;
  return path.join(tempDir, `model-${counter}`);
}

/** Logits [1, T, V] of a fixed id sequence, as a plain array. */
function logitsOf(model: LlamaModel): Float32Array {
  return tf.tidy(() => {
    const ids = tf.tensor2d([[5, 17, 200, 3, 99, 42, 7]], [1, 7], 'int32');
    return model.forward(ids).dataSync() as Float32Array;
  });
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

/** Saves a tiny model into a new folder and returns the folder and the model's logits. */
async function savedFolder(seed = 1, overrides: Partial<ModelConfig> = {}) {
  const dir = freshDir();
  const model = tinyModel(tokenizer.vocabSize, seed, overrides);
  const logits = logitsOf(model);
  const config = model.config;
  await saveModelFolder(dir, model, tokenizer, META);
  model.dispose();
  return { dir, logits, config };
}

async function expectLoadError(dir: string, pattern: RegExp, what: string): Promise<void> {
  const load = loadModelFolder(dir);
  await expect(load, `${what}: error class`).rejects.toThrow(UserError);
  await expect(load, `${what}: message`).rejects.toThrow(pattern);
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('saveModelFolder and loadModelFolder', () => {
  it('round-trips logits and tokenizer exactly', async () => {
    const variants: Partial<ModelConfig>[] = [
      {},
      { architecture: 'qwen2', attentionBias: true, tieWordEmbeddings: true },
    ];
    for (const overrides of variants) {
      const { dir, logits, config } = await savedFolder(3, overrides);
      const loaded = await loadModelFolder(dir);
      const label = JSON.stringify(overrides);
      expect(loaded.model.config, `${label} config`).toEqual(config);
      expect(maxAbsDiff(logitsOf(loaded.model), logits), `${label} logits max abs diff`).toBe(0);
      for (const text of TEXTS) {
        expect(loaded.tokenizer.encode(text), `${label} encode ${JSON.stringify(text)}`).toEqual(
          tokenizer.encode(text),
        );
        const ids = tokenizer.encode(text);
        expect(loaded.tokenizer.decode(ids), `${label} decode`).toBe(tokenizer.decode(ids));
      }
      expect(loaded.meta, `${label} attune.json`).toEqual(META);
      expect(loaded.weightsSha256, `${label} weights hash`).toMatch(/^[0-9a-f]{64}$/);
      loaded.model.dispose();
    }
  });

  it('rejects a missing folder', async () => {
    const dir = path.join(tempDir, 'does-not-exist');
    await expectLoadError(
      dir,
      new RegExp(`Model folder ${escapeRegExp(dir)} does not exist`),
      'missing folder',
    );
  });

  it('rejects a missing config.json', async () => {
    const { dir } = await savedFolder();
    await fs.rm(path.join(dir, 'config.json'));
    const file = escapeRegExp(path.join(dir, 'config.json'));
    await expectLoadError(dir, new RegExp(`${file} is missing`), 'missing config.json');
  });

  it('rejects a missing model.safetensors', async () => {
    const { dir } = await savedFolder();
    await fs.rm(path.join(dir, 'model.safetensors'));
    const file = escapeRegExp(path.join(dir, 'model.safetensors'));
    await expectLoadError(dir, new RegExp(`${file} is missing`), 'missing model.safetensors');
  });

  it('rejects invalid JSON in config.json', async () => {
    const { dir } = await savedFolder();
    await fs.writeFile(path.join(dir, 'config.json'), '{"model_type": "llama",');
    const file = escapeRegExp(path.join(dir, 'config.json'));
    await expectLoadError(dir, new RegExp(`${file} is not valid JSON`), 'invalid JSON');
  });

  it('rejects inconsistent config.json values', async () => {
    const { dir } = await savedFolder();
    const file = path.join(dir, 'config.json');
    const config = JSON.parse(await fs.readFile(file, 'utf8'));
    await fs.writeFile(file, JSON.stringify({ ...config, num_attention_heads: 3 }));
    await expectLoadError(
      dir,
      new RegExp(`${escapeRegExp(file)}: numHeads \\(3\\) must be a multiple`),
      'heads',
    );
  });

  it('rejects a truncated model.safetensors naming the tensor', async () => {
    const { dir } = await savedFolder();
    const file = path.join(dir, 'model.safetensors');
    const bytes = await fs.readFile(file);
    await fs.writeFile(file, bytes.subarray(0, Math.floor(bytes.length / 2)));
    await expectLoadError(
      dir,
      new RegExp(`${escapeRegExp(file)}: tensor \\S+ data_offsets .* truncated`),
      'truncated',
    );
  });

  it('rejects a header length larger than the file', async () => {
    const { dir } = await savedFolder();
    const file = path.join(dir, 'model.safetensors');
    const bytes = await fs.readFile(file);
    bytes.writeBigUInt64LE(BigInt(bytes.length * 2), 0);
    await fs.writeFile(file, bytes);
    await expectLoadError(
      dir,
      new RegExp(`${escapeRegExp(file)}: header length \\d+ exceeds the file size`),
      'header',
    );
  });

  it('rejects a tensor with the wrong shape naming it', async () => {
    const { dir } = await savedFolder();
    const file = path.join(dir, 'model.safetensors');
    const { tensors } = decodeSafetensors(await fs.readFile(file), file);
    tensors.set('model.norm.weight', { shape: [33], data: new Float32Array(33) });
    await fs.writeFile(file, encodeSafetensors(tensors));
    await expectLoadError(
      dir,
      new RegExp(
        `${escapeRegExp(file)}: tensor model\\.norm\\.weight has shape \\[33\\], config\\.json implies \\[32\\]`,
      ),
      'wrong shape',
    );
  });

  it('rejects a missing tensor naming it', async () => {
    const { dir } = await savedFolder();
    const file = path.join(dir, 'model.safetensors');
    const { tensors } = decodeSafetensors(await fs.readFile(file), file);
    tensors.delete('model.layers.1.mlp.up_proj.weight');
    await fs.writeFile(file, encodeSafetensors(tensors));
    await expectLoadError(
      dir,
      new RegExp(
        `${escapeRegExp(file)}: tensor model\\.layers\\.1\\.mlp\\.up_proj\\.weight is missing`,
      ),
      'missing tensor',
    );
  });

  it('ignores stale temporary files', async () => {
    const { dir, logits } = await savedFolder(5);
    // A killed folder write leaves `<dir>.tmp-*`; a killed file write leaves `<file>.tmp-*`.
    const staleFolder = `${dir}.tmp-99999-deadbeef`;
    await fs.mkdir(staleFolder);
    await fs.writeFile(path.join(staleFolder, 'config.json'), '{ half written');
    await fs.writeFile(path.join(dir, 'model.safetensors.tmp-99999-cafe0000'), Buffer.alloc(17));
    await fs.writeFile(path.join(dir, 'config.json.tmp-99999-cafe0001'), '{');
    const loaded = await loadModelFolder(dir);
    expect(maxAbsDiff(logitsOf(loaded.model), logits), 'logits with stale siblings').toBe(0);
    // Writing again over the folder also succeeds with the stale sibling in place.
    await saveModelFolder(dir, loaded.model, loaded.tokenizer, META);
    loaded.model.dispose();
    const reloaded = await loadModelFolder(dir);
    expect(maxAbsDiff(logitsOf(reloaded.model), logits), 'logits after rewriting').toBe(0);
    reloaded.model.dispose();
  });

  it('replaces an existing folder whole', async () => {
    const { dir } = await savedFolder(1);
    await fs.writeFile(path.join(dir, 'leftover.txt'), 'from an older model');
    const second = tinyModel(tokenizer.vocabSize, 2, { tieWordEmbeddings: true });
    const secondLogits = logitsOf(second);
    await saveModelFolder(dir, second, tokenizer, { description: 'second' });
    second.dispose();
    const files = (await fs.readdir(dir)).sort();
    expect(files, 'folder contents').toEqual([
      'attune.json',
      'config.json',
      'model.safetensors',
      'tokenizer.json',
    ]);
    const siblings = (await fs.readdir(tempDir)).filter((name) =>
      name.startsWith(`${path.basename(dir)}.`),
    );
    expect(siblings, 'temporary siblings left behind').toEqual([]);
    const loaded = await loadModelFolder(dir);
    expect(loaded.meta.description, 'attune.json of the second model').toBe('second');
    expect(loaded.model.config.tieWordEmbeddings, 'config of the second model').toBe(true);
    expect(maxAbsDiff(logitsOf(loaded.model), secondLogits), 'logits of the second model').toBe(0);
    loaded.model.dispose();
  });
});
