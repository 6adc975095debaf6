import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type LoadProgress,
  loadModelFolder,
  type ModelMeta,
  saveModelFolder,
} from '../../../src/main/engine/checkpoint';
import { countParameters, type LlamaModel, type ModelConfig } from '../../../src/main/engine/model';
import { decodeSafetensors, encodeSafetensors } from '../../../src/main/engine/safetensors';
import { TextTokenizer, type TokenizerOptions } from '../../../src/main/engine/tokenizer';
import { UserError } from '../../../src/shared/errors';
import { useEngineBackend } from '../../helpers/backend';
import {
  hfTensors,
  modelFromStored,
  type StoredDtype,
  type StoredTensor,
  safetensorsBytes,
  storeTensor,
  writeShardedWeights,
} from '../../helpers/hf-folder';
import { makeTempDir, tinyModel, tinyTokenizer } from '../../helpers/tiny-model';

let tokenizer: TextTokenizer;
/** `tokenizer` plus the special tokens of Llama 2, Llama 3 and Qwen2 chat models. */
let roleTokenizer: TextTokenizer;
let tempDir: string;
let counter = 0;

const TEXTS = [
  'Q: What is the gender of a typical worker in the occupation "Pharmacists" in the US?\nA:',
  ' This worker is female. She keeps learning new skills every year.<|endoftext|>',
  'Unseen: zebra 42 café',
];
const META: ModelMeta = { description: 'checkpoint test' };
const ROLE_TOKENS = [
  '<s>',
  '</s>',
  '<|begin_of_text|>',
  '<|eot_id|>',
  '<|im_start|>',
  '<|im_end|>',
];
const TEMPLATE =
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}";

beforeAll(async () => {
  await useEngineBackend();
  tokenizer = await tinyTokenizer();
  roleTokenizer = (await tokenizer.withAddedSpecialTokens(ROLE_TOKENS)).tokenizer;
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
  const load = loadModelFolder(dir, { availableBytes: 2 ** 40 });
  await expect(load, `${what}: error class`).rejects.toThrow(UserError);
  await expect(load, `${what}: message`).rejects.toThrow(pattern);
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('saveModelFolder and loadModelFolder', () => {
  it('round-trips logits and tokenizer exactly', async () => {
    const variants: Partial<ModelConfig>[] = [
      {},
      { architecture: 'qwen2', attentionBias: true, tieWordEmbeddings: true },
      // transformers gives Qwen2 q/k/v biases and Llama an o_proj bias here; zeros are written.
      { architecture: 'qwen2', attentionBias: false },
      { attentionBias: true },
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
      const weights = await fs.readFile(path.join(dir, 'model.safetensors'));
      const fileHash = createHash('sha256').update(weights).digest('hex');
      expect(loaded.weightsSha256, `${label} weights hash`).toBe(fileHash);
      expect(loaded.torchDtype, `${label} torch_dtype`).toBe('float32');
      expect(loaded.tokenizer.options, `${label} tokenizer roles`).toEqual({
        eosToken: '<|endoftext|>',
        addBosToken: false,
      });
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
      'generation_config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
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

async function readJson(file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await fs.readFile(file, 'utf8'));
}

/** Builds a tokenizer with the given roles over the vocabulary of `roleTokenizer`. */
function withRoles(options: TokenizerOptions): Promise<TextTokenizer> {
  return TextTokenizer.fromJSON(roleTokenizer.toJSON(), 'role tokenizer', options);
}

describe('saveModelFolder output for transformers', () => {
  it('writes config, tokenizer and generation files', async () => {
    const roles = await withRoles({
      eosToken: '</s>',
      bosToken: '<s>',
      addBosToken: true,
      chatTemplate: TEMPLATE,
    });
    const dir = freshDir();
    const model = tinyModel(roles.vocabSize, 2);
    await saveModelFolder(dir, model, roles, META);
    model.dispose();

    const eosId = roles.tokenToId('</s>');
    const bosId = roles.tokenToId('<s>');
    const config = await readJson(path.join(dir, 'config.json'));
    expect(config.torch_dtype, 'torch_dtype').toBe('float32');
    expect(config.eos_token_id, 'config eos').toBe(eosId);
    expect(config.bos_token_id, 'config bos').toBe(bosId);
    expect(config.architectures, 'architectures').toEqual(['LlamaForCausalLM']);

    const generation = await readJson(path.join(dir, 'generation_config.json'));
    expect(generation, 'generation_config.json').toEqual({
      bos_token_id: bosId,
      eos_token_id: eosId,
    });

    const tokenizerConfig = await readJson(path.join(dir, 'tokenizer_config.json'));
    expect(tokenizerConfig.eos_token, 'eos_token').toBe('</s>');
    expect(tokenizerConfig.bos_token, 'bos_token').toBe('<s>');
    expect(tokenizerConfig.add_bos_token, 'add_bos_token').toBe(true);
    expect(tokenizerConfig.chat_template, 'chat_template').toBe(TEMPLATE);
    expect(tokenizerConfig.tokenizer_class, 'tokenizer_class').toBe('PreTrainedTokenizerFast');
    const decoder = tokenizerConfig.added_tokens_decoder as Record<string, Record<string, unknown>>;
    expect(decoder[String(bosId)], 'added token <s>').toEqual({
      content: '<s>',
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    });
    expect(Object.keys(decoder).length, 'every added token').toBe(ROLE_TOKENS.length + 1);
    const extra = tokenizerConfig.additional_special_tokens as string[];
    expect(extra, 'roles are not extra special tokens').not.toContain('<s>');
    expect(extra, 'other special tokens').toContain('<|im_end|>');

    const tokenizerJson = await readJson(path.join(dir, 'tokenizer.json'));
    const postProcessor = tokenizerJson.post_processor as { type: string; processors: unknown[] };
    expect(postProcessor.type, 'post-processor wraps the ByteLevel one').toBe('Sequence');
    expect(postProcessor.processors[1], 'BOS template').toMatchObject({
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>' } }, { Sequence: { id: 'A' } }],
      special_tokens: { '<s>': { ids: [bosId] } },
    });

    const loaded = await loadModelFolder(dir);
    expect(loaded.tokenizer.options, 'roles read back').toEqual({
      eosToken: '</s>',
      bosToken: '<s>',
      addBosToken: true,
      chatTemplate: TEMPLATE,
    });
    expect(loaded.tokenizer.promptPrefix, 'prompt prefix').toEqual([bosId]);
    expect(loaded.tokenizer.encode(TEXTS[0]), 'encoding').toEqual(roles.encode(TEXTS[0]));
    loaded.model.dispose();
  });

  it('writes a BOS id only when there is a BOS', async () => {
    const { dir } = await savedFolder(4);
    const config = await readJson(path.join(dir, 'config.json'));
    expect(config.eos_token_id, 'eos').toBe(tokenizer.eosId);
    expect(config.bos_token_id, 'bos').toBeNull();
    const tokenizerConfig = await readJson(path.join(dir, 'tokenizer_config.json'));
    expect(tokenizerConfig.bos_token, 'bos_token').toBeNull();
    expect(tokenizerConfig.add_bos_token, 'add_bos_token').toBe(false);
    expect('chat_template' in tokenizerConfig, 'no chat_template').toBe(false);
  });
});

/** Splits a model into two shards: layer 0 and the embedding as `first`, the rest as `second`. */
function splitModel(
  model: LlamaModel,
  first: StoredDtype,
  second: StoredDtype,
): { shards: Map<string, StoredTensor[]>; tensors: StoredTensor[] } {
  const one: StoredTensor[] = [];
  const two: StoredTensor[] = [];
  for (const [name, { shape, values }] of hfTensors(model)) {
    const inFirst = name === 'model.embed_tokens.weight' || name.startsWith('model.layers.0.');
    (inFirst ? one : two).push(storeTensor(name, shape, values, inFirst ? first : second));
  }
  const half = model.config.headDim / 2;
  const invFreq = Float32Array.from({ length: half }, (_, i) => 1 / 10000 ** (i / half));
  one.push(storeTensor('model.layers.0.self_attn.rotary_emb.inv_freq', [half], invFreq, 'F32'));
  const shards = new Map([
    ['model-00001-of-00002.safetensors', one],
    ['model-00002-of-00002.safetensors', two],
  ]);
  return { shards, tensors: [...one, ...two] };
}

/** Saves a folder and builds two shards (F16, then BF16) to replace its model.safetensors. */
async function shardedFolder(overrides: Partial<ModelConfig> = {}) {
  const { dir, config } = await savedFolder(6, overrides);
  await fs.rm(path.join(dir, 'model.safetensors'));
  const model = tinyModel(tokenizer.vocabSize, 6, overrides);
  const { shards, tensors } = splitModel(model, 'F16', 'BF16');
  model.dispose();
  return { dir, config, shards, tensors };
}

describe('loadModelFolder with sharded weights', () => {
  it('reads F16 and BF16 shards exactly', async () => {
    const { dir, config, shards, tensors } = await shardedFolder();
    const files = await writeShardedWeights(dir, shards);
    const expected = modelFromStored(config, tensors);
    const expectedLogits = logitsOf(expected);

    const events: LoadProgress[] = [];
    const loaded = await loadModelFolder(dir, { onProgress: (p) => events.push({ ...p }) });
    expect(maxAbsDiff(logitsOf(loaded.model), expectedLogits), 'logits max abs diff').toBe(0);
    expect(loaded.weightFiles, 'weight files').toEqual(files);

    const bytes = await Promise.all(files.map((file) => fs.readFile(file)));
    const hash = createHash('sha256').update(Buffer.concat(bytes)).digest('hex');
    expect(loaded.weightsSha256, 'hash of the shards in order').toBe(hash);

    const reads = events.filter((e) => e.stage === 'read');
    const totalBytes = bytes.reduce((sum, b) => sum + b.length, 0);
    expect(reads.at(-1), 'last read event').toMatchObject({ done: totalBytes, total: totalBytes });
    expect(
      reads.every((e, i) => i === 0 || e.done > reads[i - 1].done),
      'bytes grow',
    ).toBe(true);
    expect(new Set(reads.map((e) => e.file)), 'both shards reported').toEqual(new Set(files));

    const converts = events.filter((e) => e.stage === 'convert');
    const paramCount = Object.keys(expected.params).length;
    expect(
      converts.map((e) => e.done),
      'one event per tensor',
    ).toEqual(Array.from({ length: paramCount }, (_, i) => i + 1));
    expect(
      converts.every((e) => e.total === paramCount && e.unit === 'tensors'),
      'totals',
    ).toBe(true);
    expected.dispose();
    loaded.model.dispose();
  });

  it('rejects a tensor the index maps to the wrong shard', async () => {
    const { dir, shards } = await shardedFolder();
    const map: Record<string, string> = {};
    for (const [file, tensors] of shards) for (const t of tensors) map[t.name] = file;
    map['model.norm.weight'] = 'model-00001-of-00002.safetensors';
    await writeShardedWeights(dir, shards, map);
    await expectLoadError(
      dir,
      new RegExp(
        `${escapeRegExp(path.join(dir, 'model-00002-of-00002.safetensors'))}: tensor model\\.norm\\.weight is stored here, but ${escapeRegExp(path.join(dir, 'model.safetensors.index.json'))} maps it to model-00001-of-00002\\.safetensors`,
      ),
      'wrong shard',
    );
  });

  it('rejects a tensor stored in two shards', async () => {
    const { dir, shards } = await shardedFolder();
    const second = shards.get('model-00002-of-00002.safetensors') as StoredTensor[];
    const first = shards.get('model-00001-of-00002.safetensors') as StoredTensor[];
    second.push(first.find((t) => t.name === 'model.embed_tokens.weight') as StoredTensor);
    const map: Record<string, string> = {};
    for (const [file, tensors] of shards) for (const t of tensors) map[t.name] ??= file;
    await writeShardedWeights(dir, shards, map);
    await expectLoadError(
      dir,
      /model-00002-of-00002\.safetensors: tensor model\.embed_tokens\.weight is stored here, but .* maps it to model-00001-of-00002\.safetensors; each tensor must be stored in one shard/,
      'duplicate',
    );
  });

  it('rejects a tensor missing from a shard', async () => {
    const { dir, shards } = await shardedFolder();
    const map: Record<string, string> = {};
    for (const [file, tensors] of shards) for (const t of tensors) map[t.name] = file;
    const second = shards.get('model-00002-of-00002.safetensors') as StoredTensor[];
    second.splice(
      second.findIndex((t) => t.name === 'model.layers.1.mlp.down_proj.weight'),
      1,
    );
    await writeShardedWeights(dir, shards, map);
    const index = escapeRegExp(path.join(dir, 'model.safetensors.index.json'));
    await expectLoadError(
      dir,
      new RegExp(
        `${index}: tensor model\\.layers\\.1\\.mlp\\.down_proj\\.weight is mapped to model-00002-of-00002\\.safetensors, which does not contain it`,
      ),
      'missing from shard',
    );
  });

  it('rejects a tensor in no shard', async () => {
    const { dir, shards } = await shardedFolder();
    const second = shards.get('model-00002-of-00002.safetensors') as StoredTensor[];
    second.splice(
      second.findIndex((t) => t.name === 'model.norm.weight'),
      1,
    );
    await writeShardedWeights(dir, shards);
    const index = escapeRegExp(path.join(dir, 'model.safetensors.index.json'));
    await expectLoadError(
      dir,
      new RegExp(`${index}: tensor model\\.norm\\.weight is missing`),
      'missing everywhere',
    );
  });

  it('rejects a tensor not listed in the index', async () => {
    const { dir, shards } = await shardedFolder();
    const map: Record<string, string> = {};
    for (const [file, tensors] of shards) for (const t of tensors) map[t.name] = file;
    delete map['model.layers.0.input_layernorm.weight'];
    await writeShardedWeights(dir, shards, map);
    await expectLoadError(
      dir,
      /model-00001-of-00002\.safetensors: tensor model\.layers\.0\.input_layernorm\.weight is not listed in .*model\.safetensors\.index\.json/,
      'unlisted',
    );
  });

  it('rejects a missing shard file', async () => {
    const { dir, shards } = await shardedFolder();
    await writeShardedWeights(dir, shards);
    const shard = path.join(dir, 'model-00002-of-00002.safetensors');
    await fs.rm(shard);
    await expectLoadError(
      dir,
      new RegExp(`weights ${escapeRegExp(shard)}, listed in .*index\\.json, is missing`),
      'missing shard',
    );
  });

  it('rejects a shard name outside the folder', async () => {
    const { dir, shards } = await shardedFolder();
    const map: Record<string, string> = {};
    for (const [file, tensors] of shards) for (const t of tensors) map[t.name] = file;
    map['model.norm.weight'] = '../elsewhere.safetensors';
    await writeShardedWeights(dir, shards, map);
    await expectLoadError(
      dir,
      /index\.json: tensor model\.norm\.weight maps to "\.\.\/elsewhere\.safetensors", which is not a file name in the model folder/,
      'path outside',
    );
  });

  it('rejects an unsupported dtype naming the tensor', async () => {
    const { dir, shards } = await shardedFolder();
    const first = shards.get('model-00001-of-00002.safetensors') as StoredTensor[];
    const at = first.findIndex((t) => t.name === 'model.layers.0.input_layernorm.weight');
    // Same byte width as F32, so only the dtype is wrong.
    const norm = storeTensor(first[at].name, first[at].shape, first[at].values, 'F32');
    first[at] = { ...norm, dtype: 'I32' };
    await writeShardedWeights(dir, shards);
    await expectLoadError(
      dir,
      /model-00001-of-00002\.safetensors: tensor model\.layers\.0\.input_layernorm\.weight has dtype I32; supported are F32, F16, BF16/,
      'I32',
    );
  });
});

/** Rewrites the single weights file of `dir` with `tensors` (F32 unless stated). */
async function rewriteWeights(dir: string, tensors: StoredTensor[]): Promise<string> {
  const file = path.join(dir, 'model.safetensors');
  await fs.writeFile(file, safetensorsBytes(tensors));
  return file;
}

function storedF32(model: LlamaModel): StoredTensor[] {
  return [...hfTensors(model)].map(([name, t]) => storeTensor(name, t.shape, t.values, 'F32'));
}

describe('loadModelFolder with extra tensors', () => {
  it('rejects an unexpected tensor naming it', async () => {
    const { dir } = await savedFolder(7);
    const model = tinyModel(tokenizer.vocabSize, 7);
    const tensors = storedF32(model);
    model.dispose();
    tensors.push(
      storeTensor('model.layers.0.self_attn.q_norm.weight', [8], new Float32Array(8), 'F32'),
    );
    const file = await rewriteWeights(dir, tensors);
    await expectLoadError(
      dir,
      new RegExp(
        `${escapeRegExp(file)}: tensor model\\.layers\\.0\\.self_attn\\.q_norm\\.weight is not a parameter of the llama model`,
      ),
      'unexpected',
    );
  });

  it('ignores lm_head.weight equal to a tied embedding', async () => {
    const { dir, config } = await savedFolder(8, { tieWordEmbeddings: true });
    const model = tinyModel(tokenizer.vocabSize, 8, { tieWordEmbeddings: true });
    const tensors = storedF32(model);
    model.dispose();
    const embedding = tensors.find((t) => t.name === 'model.embed_tokens.weight') as StoredTensor;
    // The embedding is BF16 and the head an F32 copy of the same values.
    const asBf16 = storeTensor(embedding.name, embedding.shape, embedding.values, 'BF16');
    const head = storeTensor('lm_head.weight', embedding.shape, asBf16.values, 'F32');
    const stored = [...tensors.filter((t) => t !== embedding), asBf16, head];
    await rewriteWeights(dir, stored);
    const expected = modelFromStored(config, stored);
    const loaded = await loadModelFolder(dir);
    expect(maxAbsDiff(logitsOf(loaded.model), logitsOf(expected)), 'logits').toBe(0);
    expect('lm_head.weight' in loaded.model.params, 'no separate head').toBe(false);
    expected.dispose();
    loaded.model.dispose();
  });

  it('rejects lm_head.weight that differs from a tied embedding', async () => {
    const { dir } = await savedFolder(9, { tieWordEmbeddings: true });
    const model = tinyModel(tokenizer.vocabSize, 9, { tieWordEmbeddings: true });
    const tensors = storedF32(model);
    model.dispose();
    const embedding = tensors.find((t) => t.name === 'model.embed_tokens.weight') as StoredTensor;
    const values = new Float32Array(embedding.values);
    values[values.length - 1] += 1;
    tensors.push(storeTensor('lm_head.weight', embedding.shape, values, 'F32'));
    const file = await rewriteWeights(dir, tensors);
    const liveTensors = tf.memory().numTensors;
    await expectLoadError(
      dir,
      new RegExp(
        `${escapeRegExp(file)}: tensor lm_head\\.weight differs from model\\.embed_tokens\\.weight, but config\\.json sets tie_word_embeddings to true`,
      ),
      'different head',
    );
    expect(tf.memory().numTensors, 'tensors of the failed load disposed').toBe(liveTensors);
  });

  it('rejects a non-zero bias the engine lacks', async () => {
    const overrides = { architecture: 'qwen2', attentionBias: false } as const;
    const { dir } = await savedFolder(10, overrides);
    const file = path.join(dir, 'model.safetensors');
    const { tensors } = decodeSafetensors(await fs.readFile(file), file);
    expect(tensors.has('model.layers.1.self_attn.k_proj.bias'), 'zero bias written').toBe(true);
    const bias = tensors.get('model.layers.1.self_attn.k_proj.bias') as { data: Float32Array };
    bias.data[3] = 0.5;
    await fs.writeFile(file, encodeSafetensors(tensors));
    await expectLoadError(
      dir,
      new RegExp(
        `${escapeRegExp(file)}: tensor model\\.layers\\.1\\.self_attn\\.k_proj\\.bias has non-zero values, but config\\.json sets attention_bias to false`,
      ),
      'non-zero bias',
    );
  });
});

describe('loadModelFolder with Hugging Face downloads', () => {
  it('loads a Qwen2 download with BF16 weights', async () => {
    const dir = freshDir();
    await fs.mkdir(dir, { recursive: true });
    const overrides = {
      architecture: 'qwen2',
      attentionBias: true,
      tieWordEmbeddings: true,
    } as const;
    const model = tinyModel(roleTokenizer.vocabSize, 11, overrides);
    const stored = [...hfTensors(model)].map(([name, t]) =>
      storeTensor(name, t.shape, t.values, 'BF16'),
    );
    await fs.writeFile(path.join(dir, 'model.safetensors'), safetensorsBytes(stored));
    const imEnd = roleTokenizer.tokenToId('<|im_end|>') as number;
    const config = model.config;
    model.dispose();

    await fs.writeFile(
      path.join(dir, 'config.json'),
      JSON.stringify({
        architectures: ['Qwen2ForCausalLM'],
        attention_dropout: 0.0,
        bos_token_id: tokenizer.eosId,
        eos_token_id: imEnd,
        hidden_act: 'silu',
        hidden_size: config.hiddenSize,
        initializer_range: 0.02,
        intermediate_size: config.intermediateSize,
        max_position_embeddings: 32768,
        max_window_layers: 21,
        model_type: 'qwen2',
        num_attention_heads: config.numHeads,
        num_hidden_layers: config.numLayers,
        num_key_value_heads: config.numKvHeads,
        rms_norm_eps: config.rmsNormEps,
        rope_scaling: null,
        rope_theta: config.ropeTheta,
        sliding_window: 32768,
        tie_word_embeddings: true,
        torch_dtype: 'bfloat16',
        transformers_version: '4.43.1',
        use_cache: true,
        use_sliding_window: false,
        vocab_size: config.vocabSize,
      }),
    );

    await fs.writeFile(path.join(dir, 'tokenizer.json'), JSON.stringify(roleTokenizer.toJSON()));
    await fs.writeFile(
      path.join(dir, 'tokenizer_config.json'),
      JSON.stringify({
        add_prefix_space: false,
        bos_token: null,
        chat_template: TEMPLATE,
        clean_up_tokenization_spaces: false,
        eos_token: '<|im_end|>',
        errors: 'replace',
        model_max_length: 131072,
        pad_token: '<|endoftext|>',
        split_special_tokens: false,
        tokenizer_class: 'Qwen2Tokenizer',
        unk_token: null,
      }),
    );

    const expected = modelFromStored({ ...config, maxPositions: 32768 }, stored);
    const loaded = await loadModelFolder(dir);
    expect(maxAbsDiff(logitsOf(loaded.model), logitsOf(expected)), 'logits').toBe(0);
    expect(loaded.torchDtype, 'torch_dtype').toBe('bfloat16');
    expect(loaded.model.config.maxPositions, 'max positions').toBe(32768);
    expect(loaded.meta, 'no attune.json').toEqual({});
    expect(loaded.tokenizer.eosId, 'eos').toBe(imEnd);
    expect(loaded.tokenizer.bosId, 'no BOS').toBeUndefined();
    expect(loaded.tokenizer.promptPrefix, 'no prefix').toEqual([]);
    expect(loaded.tokenizer.options.chatTemplate, 'chat template').toBe(TEMPLATE);
    expected.dispose();
    loaded.model.dispose();
  });

  it('rejects a config with rope_scaling', async () => {
    const { dir } = await savedFolder();
    const file = path.join(dir, 'config.json');
    const config = await readJson(file);
    const scaling = { factor: 8, rope_type: 'llama3', original_max_position_embeddings: 8192 };
    await fs.writeFile(file, JSON.stringify({ ...config, rope_scaling: scaling }));
    await expectLoadError(
      dir,
      new RegExp(
        `${escapeRegExp(file)}: rope_scaling \\{"factor":8,"rope_type":"llama3",.*\\} is not supported; the engine implements plain RoPE`,
      ),
      'rope_scaling',
    );
  });

  it('refuses before reading when memory is short', async () => {
    const { dir } = await savedFolder(12);
    const model = tinyModel(tokenizer.vocabSize, 12);
    const count = countParameters(model.params);
    model.dispose();
    const events: LoadProgress[] = [];
    const load = loadModelFolder(dir, {
      availableBytes: 1_000_000,
      onProgress: (p) => events.push(p),
    });
    await expect(load, 'error class').rejects.toThrow(UserError);
    await expect(load, 'message').rejects.toThrow(
      new RegExp(
        `^${escapeRegExp(path.join(dir, 'model.safetensors'))}: not enough memory to load ${count.toLocaleString('en-US')} parameters`,
      ),
    );
    expect(events, 'no weight read').toEqual([]);
  });
});

/** Saves a folder with the role tokenizer, then replaces tokenizer_config.json by `config`. */
async function folderWithTokenizerConfig(
  config: Record<string, unknown> | null,
  tokenizerJson: Record<string, unknown> = roleTokenizer.toJSON() as Record<string, unknown>,
): Promise<string> {
  const dir = freshDir();
  const model = tinyModel(roleTokenizer.vocabSize, 13);
  await saveModelFolder(dir, model, roleTokenizer, META);
  model.dispose();
  const file = path.join(dir, 'tokenizer_config.json');
  if (config === null) await fs.rm(file);
  else await fs.writeFile(file, JSON.stringify(config));
  await fs.writeFile(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
  return dir;
}

async function loadedTokenizer(dir: string): Promise<TextTokenizer> {
  const loaded = await loadModelFolder(dir);
  loaded.model.dispose();
  return loaded.tokenizer;
}

describe('loadModelFolder tokenizer roles', () => {
  it('reads Llama 2 style roles', async () => {
    const dir = await folderWithTokenizerConfig({
      add_bos_token: true,
      add_eos_token: false,
      bos_token: { __type: 'AddedToken', content: '<s>', lstrip: false, normalized: false },
      eos_token: { __type: 'AddedToken', content: '</s>', lstrip: false, normalized: false },
      chat_template: [
        { name: 'tool_use', template: 'tools' },
        { name: 'default', template: TEMPLATE },
      ],
      tokenizer_class: 'LlamaTokenizer',
    });
    const loaded = await loadedTokenizer(dir);
    expect(loaded.eosToken, 'eos').toBe('</s>');
    expect(loaded.promptPrefix, 'BOS prefix').toEqual([roleTokenizer.tokenToId('<s>')]);
    expect(loaded.options.chatTemplate, 'default template').toBe(TEMPLATE);
  });

  it('adds BOS the tokenizer.json post-processor adds', async () => {
    const json = roleTokenizer.toJSON() as Record<string, unknown>;
    const bos = '<|begin_of_text|>';
    const bosId = roleTokenizer.tokenToId(bos) as number;
    const template = {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
    };
    const dir = await folderWithTokenizerConfig(
      { bos_token: bos, eos_token: '<|eot_id|>', tokenizer_class: 'PreTrainedTokenizerFast' },
      {
        ...json,
        post_processor: { type: 'Sequence', processors: [json.post_processor, template] },
      },
    );
    const loaded = await loadedTokenizer(dir);
    expect(loaded.eosToken, 'eos').toBe('<|eot_id|>');
    expect(loaded.options.addBosToken, 'add_bos_token inferred').toBe(true);
    expect(loaded.promptPrefix, 'BOS prefix').toEqual([bosId]);
  });

  it('adds BOS by default for LlamaTokenizerFast', async () => {
    const dir = await folderWithTokenizerConfig({
      bos_token: '<s>',
      eos_token: '</s>',
      tokenizer_class: 'LlamaTokenizerFast',
    });
    const loaded = await loadedTokenizer(dir);
    expect(loaded.promptPrefix).toEqual([roleTokenizer.tokenToId('<s>')]);
  });

  it('falls back to generation_config.json for EOS', async () => {
    const dir = await folderWithTokenizerConfig({ bos_token: null });
    const eot = roleTokenizer.tokenToId('<|eot_id|>') as number;
    await fs.writeFile(
      path.join(dir, 'generation_config.json'),
      JSON.stringify({ eos_token_id: [eot, tokenizer.eosId], do_sample: true }),
    );
    const loaded = await loadedTokenizer(dir);
    expect(loaded.eosToken, 'first generation eos').toBe('<|eot_id|>');
    expect(loaded.eosId, 'eos id').toBe(eot);
  });

  it('falls back to config.json for EOS', async () => {
    const dir = await folderWithTokenizerConfig(null);
    await fs.rm(path.join(dir, 'generation_config.json'));
    const file = path.join(dir, 'config.json');
    const imEnd = roleTokenizer.tokenToId('<|im_end|>') as number;
    await fs.writeFile(file, JSON.stringify({ ...(await readJson(file)), eos_token_id: imEnd }));
    expect((await loadedTokenizer(dir)).eosToken, 'config eos').toBe('<|im_end|>');
  });

  it('prefers chat_template.jinja', async () => {
    const dir = await folderWithTokenizerConfig({ eos_token: '</s>', chat_template: 'inline' });
    await fs.writeFile(path.join(dir, 'chat_template.jinja'), TEMPLATE);
    expect((await loadedTokenizer(dir)).options.chatTemplate).toBe(TEMPLATE);
  });

  it('rejects invalid role fields', async () => {
    const file = (dir: string) => escapeRegExp(path.join(dir, 'tokenizer_config.json'));
    const unknown = await folderWithTokenizerConfig({ eos_token: '<|none|>' });
    await expectLoadError(
      unknown,
      new RegExp(
        `the eos token "<\\|none\\|>" is not in its vocabulary\\. The token is set in ${file(unknown)}`,
      ),
      'unknown token',
    );
    const mistyped = await folderWithTokenizerConfig({ eos_token: 7 });
    await expectLoadError(
      mistyped,
      new RegExp(
        `${file(mistyped)}: eos_token must be a string or an object with a string "content", got 7`,
      ),
      'mistyped token',
    );
    const template = await folderWithTokenizerConfig({ chat_template: { default: 'x' } });
    await expectLoadError(
      template,
      new RegExp(`${file(template)}: chat_template must be a string or a list`),
      'template',
    );
    const badId = await folderWithTokenizerConfig({});
    await fs.writeFile(path.join(badId, 'generation_config.json'), '{"eos_token_id": 99999}');
    await expectLoadError(
      badId,
      /generation_config\.json: eos_token_id 99999 is not a token of .*tokenizer\.json/,
      'generation id',
    );
  });
});
