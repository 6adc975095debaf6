/**
 * GGUF files as engine models: hyperparameters from `{arch}.*` metadata, llama.cpp tensor names
 * mapped to the Hugging Face names the engine uses, and the RoPE layout converted.
 *
 * Layout facts this module relies on:
 * - A GGUF tensor of shape ne = [in, out] stores the same bytes as a PyTorch [out, in] matrix.
 *   The engine keeps linear weights as [in, out], so they are transposed at the boundary.
 * - llama.cpp's `llama` architecture rotates adjacent pairs (x0, x1), (x2, x3), ... while the
 *   Hugging Face layout rotates x_i with x_{i + E/2}. Converters therefore permute the rows of
 *   the q and k projections of each head: HF row j * E/2 + i is GGUF row 2i + j. `qwen2` uses
 *   the Hugging Face layout and needs no permutation.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { GGUFValueType } from '@huggingface/gguf';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../../shared/errors';
import type { LoadedModel, ModelMeta } from '../checkpoint';
import { LlamaModel, type ModelConfig, type Params, parameterShapes } from '../model';
import { assertFiniteWeights, assertModelFits, type LoadProgress } from '../model-memory';
import type { TextTokenizer } from '../tokenizer';
import { GgmlType, type GgmlTypeId, ggmlTypeName, isSupportedType } from './ggml-types';
import {
  type GgufHeader,
  type GgufTensorInfo,
  type GgufWriteTensor,
  readGgufHeader,
  readGgufTensor,
  writeGgufFile,
} from './gguf-file';
import { tokenizerFromGguf, tokenizerToGguf } from './gguf-tokenizer';

export type GgufExportType = 'f32' | 'f16' | 'q8_0';
export const GGUF_EXPORT_TYPES: readonly GgufExportType[] = ['f32', 'f16', 'q8_0'];

/** Metadata key holding attune.json (steering tokens, training settings) inside a GGUF. */
export const ATTUNE_META_KEY = 'attune.meta';

const ARCHITECTURES = ['llama', 'qwen2'] as const;

type TypedMetadata = Record<
  string,
  { value: unknown; type: GGUFValueType; subType?: GGUFValueType }
>;

/** llama.cpp name of an engine parameter, e.g. model.layers.3.mlp.up_proj.weight -> blk.3.ffn_up.weight. */
export function ggufTensorName(name: string): string {
  const fixed: Record<string, string> = {
    'model.embed_tokens.weight': 'token_embd.weight',
    'model.norm.weight': 'output_norm.weight',
    'lm_head.weight': 'output.weight',
  };
  if (fixed[name]) return fixed[name];
  const match = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
  const parts: Record<string, string> = {
    'input_layernorm.weight': 'attn_norm.weight',
    'post_attention_layernorm.weight': 'ffn_norm.weight',
    'self_attn.q_proj.weight': 'attn_q.weight',
    'self_attn.k_proj.weight': 'attn_k.weight',
    'self_attn.v_proj.weight': 'attn_v.weight',
    'self_attn.o_proj.weight': 'attn_output.weight',
    'self_attn.q_proj.bias': 'attn_q.bias',
    'self_attn.k_proj.bias': 'attn_k.bias',
    'self_attn.v_proj.bias': 'attn_v.bias',
    'mlp.gate_proj.weight': 'ffn_gate.weight',
    'mlp.up_proj.weight': 'ffn_up.weight',
    'mlp.down_proj.weight': 'ffn_down.weight',
  };
  const part = match ? parts[match[2]] : undefined;
  if (!match || !part) throw new UserError(`No GGUF tensor name is known for ${name}.`);
  return `blk.${match[1]}.${part}`;
}

/** Reads the model hyperparameters from `{arch}.*` metadata and the tensor list. */
export function configFromGguf(header: GgufHeader): ModelConfig {
  const { metadata, file } = header;
  const arch = metadata['general.architecture'];
  if (!ARCHITECTURES.includes(arch as (typeof ARCHITECTURES)[number])) {
    throw new UserError(
      `${file}: general.architecture ${JSON.stringify(arch)} is not supported; the studio runs ${ARCHITECTURES.join(' and ')}.`,
    );
  }
  const architecture = arch as ModelConfig['architecture'];
  const num = (key: string, fallback?: number): number => {
    const value = metadata[`${architecture}.${key}`] ?? fallback;
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw new UserError(
        `${file}: metadata ${architecture}.${key} is ${value === undefined ? 'missing' : `not a number (${JSON.stringify(value)})`}.`,
      );
    }
    return value;
  };
  const scaling = metadata[`${architecture}.rope.scaling.type`];
  if (scaling !== undefined && scaling !== 'none') {
    throw new UserError(
      `${file}: ${architecture}.rope.scaling.type is ${JSON.stringify(scaling)}; the studio supports plain RoPE only.`,
    );
  }
  const tensors = new Map(header.tensors.map((t) => [t.name, t]));
  const embedding = tensors.get('token_embd.weight');
  if (embedding?.shape.length !== 2) {
    throw new UserError(`${file}: tensor token_embd.weight is missing or not 2-D.`);
  }
  const hidden = num('embedding_length');
  const heads = num('attention.head_count');
  const gate = tensors.get('blk.0.ffn_gate.weight');
  const config: ModelConfig = {
    architecture,
    vocabSize: embedding.shape[1],
    hiddenSize: hidden,
    intermediateSize: num('feed_forward_length', gate?.shape[1]),
    numLayers: num('block_count'),
    numHeads: heads,
    numKvHeads: num('attention.head_count_kv', heads),
    headDim: num('attention.key_length', hidden / heads),
    ropeTheta: num('rope.freq_base', 10000),
    rmsNormEps: num('attention.layer_norm_rms_epsilon', 1e-5),
    maxPositions: num('context_length'),
    tieWordEmbeddings: !tensors.has('output.weight'),
    attentionBias: tensors.has('blk.0.attn_q.bias'),
  };
  // Float32 metadata reads back as 9.99999974737875e-6 for 1e-5. The engine config keeps the
  // shortest decimal with the same float32 value, as a config.json would.
  config.rmsNormEps = shortestFloat32(config.rmsNormEps);
  config.ropeTheta = shortestFloat32(config.ropeTheta);
  const valueLength = metadata[`${architecture}.attention.value_length`];
  if (valueLength !== undefined && valueLength !== config.headDim) {
    throw new UserError(
      `${file}: ${architecture}.attention.value_length (${valueLength}) differs from key_length (${config.headDim}); the studio needs them equal.`,
    );
  }
  const ropeDims = metadata[`${architecture}.rope.dimension_count`];
  if (ropeDims !== undefined && ropeDims !== config.headDim) {
    throw new UserError(
      `${file}: ${architecture}.rope.dimension_count (${ropeDims}) is not the head size (${config.headDim}); partial rotary embeddings are not supported.`,
    );
  }
  return config;
}

/** Returns the shortest decimal that rounds to the same float32 as `x`. */
function shortestFloat32(x: number): number {
  for (let digits = 1; digits <= 9; digits++) {
    const candidate = Number(x.toPrecision(digits));
    if (Math.fround(candidate) === Math.fround(x)) return candidate;
  }
  return x;
}

export interface GgufLoadOptions {
  onProgress?: (progress: LoadProgress) => void;
  /** Bytes the load may use; defaults to what the machine reports free. */
  availableBytes?: number;
}

/** Loads a llama or qwen2 GGUF file, dequantizing every tensor to float32. */
export async function loadGgufModel(
  file: string,
  options: GgufLoadOptions = {},
): Promise<LoadedModel> {
  const header = await readGgufHeader(file);
  const config = configFromGguf(header);
  const expected = expectedTensors(config);
  checkTensorList(header, expected);
  const parameterCount = [...expected.values()].reduce((sum, e) => sum + e.elements, 0);
  assertModelFits(parameterCount, file, { availableBytes: options.availableBytes });

  const tokenizer = await tokenizerFromGguf(header.metadata, file);
  if (tokenizer.vocabSize !== config.vocabSize) {
    throw new UserError(
      `${file}: tokenizer.ggml.tokens has ${tokenizer.vocabSize} entries but token_embd.weight has ${config.vocabSize} rows; the file is inconsistent.`,
    );
  }
  const meta = readAttuneMeta(header);
  const params: Params = {};
  const total = header.tensors.reduce((sum, t) => sum + t.byteLength, 0);
  let done = 0;
  try {
    for (const [name, { info, shape }] of expected) {
      const values = await readGgufTensor(header, info);
      assertFiniteWeights(values, info.name, file);
      const engine = toEngineLayout(name, values, shape, config);
      const value = tf.tensor(engine, shape);
      params[name] = tf.variable(value, true);
      value.dispose();
      done += info.byteLength;
      options.onProgress?.({ stage: 'read', done, total, unit: 'bytes', file });
    }
    return {
      model: new LlamaModel(config, params),
      tokenizer,
      meta,
      weightsSha256: await sha256OfFile(file),
      dir: file,
    };
  } catch (error) {
    tf.dispose(Object.values(params));
    throw error;
  }
}

interface ExpectedTensor {
  info: GgufTensorInfo;
  /** Engine-layout shape. */
  shape: number[];
  elements: number;
}

function expectedTensors(config: ModelConfig): Map<string, ExpectedTensor> {
  const map = new Map<string, ExpectedTensor>();
  for (const [name, shape] of parameterShapes(config)) {
    const elements = shape.reduce((a, b) => a * b, 1);
    map.set(name, { info: undefined as unknown as GgufTensorInfo, shape, elements });
  }
  return map;
}

/** Fills in each expected tensor's info; every tensor must be present with its shape and type. */
function checkTensorList(header: GgufHeader, expected: Map<string, ExpectedTensor>): void {
  const { file } = header;
  const byName = new Map(header.tensors.map((t) => [t.name, t]));
  const used = new Set<string>();
  for (const [name, entry] of expected) {
    const ggufName = ggufTensorName(name);
    const info = byName.get(ggufName);
    if (!info) throw new UserError(`${file}: tensor ${ggufName} is missing.`);
    const want = ggufShape(name, entry.shape);
    if (info.shape.join(',') !== want.join(',')) {
      throw new UserError(
        `${file}: tensor ${ggufName} has shape [${info.shape}], but the metadata implies [${want}].`,
      );
    }
    if (!isSupportedType(info.type)) {
      throw new UserError(
        `${file}: tensor ${ggufName} has type ${ggmlTypeName(info.type)}, which the studio cannot read; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K.`,
      );
    }
    entry.info = info;
    used.add(ggufName);
  }
  const extra = header.tensors.find((t) => !used.has(t.name));
  if (extra) {
    throw new UserError(
      `${file}: tensor ${extra.name} is not part of a plain ${header.metadata['general.architecture']} model; the studio cannot run it.`,
    );
  }
}

/** GGUF ne order of an engine parameter: the reverse of the PyTorch shape. */
function ggufShape(name: string, engineShape: number[]): number[] {
  if (engineShape.length === 1) return engineShape;
  // Embedding [V, D] is PyTorch [V, D]; linear [in, out] is PyTorch [out, in].
  return name === 'model.embed_tokens.weight' ? [engineShape[1], engineShape[0]] : engineShape;
}

function isLinear(name: string): boolean {
  return name.endsWith('.weight') && /_proj\.|lm_head/.test(name);
}

/** Returns the head count of a q or k tensor whose rows llama.cpp permutes for RoPE, else null. */
function ropeHeads(name: string, config: ModelConfig): number | null {
  if (config.architecture !== 'llama') return null;
  if (/self_attn\.q_proj\./.test(name)) return config.numHeads;
  if (/self_attn\.k_proj\./.test(name)) return config.numKvHeads;
  return null;
}

/** Converts GGUF values (PyTorch layout, llama.cpp RoPE rows) to the engine layout. */
function toEngineLayout(
  name: string,
  values: Float32Array,
  shape: number[],
  config: ModelConfig,
): Float32Array {
  const heads = ropeHeads(name, config);
  if (!isLinear(name)) {
    return heads === null ? values : permuteRows(values, values.length, 1, heads, 'to-hf');
  }
  const [inSize, outSize] = shape;
  const rows = heads === null ? values : permuteRows(values, outSize, inSize, heads, 'to-hf');
  return transpose(rows, outSize, inSize);
}

/** Converts an engine parameter to the GGUF layout: the inverse of `toEngineLayout`. */
function toGgufLayout(
  name: string,
  values: Float32Array,
  shape: number[],
  config: ModelConfig,
): Float32Array {
  const heads = ropeHeads(name, config);
  if (!isLinear(name)) {
    return heads === null ? values : permuteRows(values, values.length, 1, heads, 'to-gguf');
  }
  const [inSize, outSize] = shape;
  const hf = transpose(values, inSize, outSize);
  return heads === null ? hf : permuteRows(hf, outSize, inSize, heads, 'to-gguf');
}

/**
 * Reorders the rows of a [rows, cols] matrix head by head between the Hugging Face RoPE layout
 * (row j * E/2 + i of a head) and llama.cpp's (row 2i + j).
 */
export function permuteRows(
  values: Float32Array,
  rows: number,
  cols: number,
  heads: number,
  direction: 'to-hf' | 'to-gguf',
): Float32Array {
  const size = rows / heads;
  const half = size / 2;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const hfRow = h * size + j * half + i;
        const ggufRow = h * size + 2 * i + j;
        const [from, to] = direction === 'to-hf' ? [ggufRow, hfRow] : [hfRow, ggufRow];
        out.set(values.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = values[base + c];
  }
  return out;
}

function readAttuneMeta(header: GgufHeader): ModelMeta {
  const text = header.metadata[ATTUNE_META_KEY];
  if (text === undefined) return {};
  try {
    const value = JSON.parse(String(text));
    if (value && typeof value === 'object') return value as ModelMeta;
  } catch {
    // Reported below.
  }
  throw new UserError(`${header.file}: metadata ${ATTUNE_META_KEY} is not a JSON object.`);
}

export interface GgufSaveOptions {
  type: GgufExportType;
  name?: string;
}

/**
 * Writes `model` and `tokenizer` as a GGUF file llama.cpp runs, atomically. Matrices take `type`
 * (Q8_0 only where rows are a whole number of 32-value blocks, else F16); norms and biases stay
 * F32. Steering tokens in `meta` are marked as control tokens.
 */
export async function saveGgufModel(
  file: string,
  model: LlamaModel,
  tokenizer: TextTokenizer,
  meta: ModelMeta,
  options: GgufSaveOptions,
): Promise<void> {
  if (!GGUF_EXPORT_TYPES.includes(options.type)) {
    throw new UserError(
      `Unknown GGUF weight type ${JSON.stringify(options.type)}; use ${GGUF_EXPORT_TYPES.join(', ')}.`,
    );
  }
  const { config } = model;
  const tensors: GgufWriteTensor[] = [];
  for (const [name, shape] of parameterShapes(config)) {
    const values = model.params[name].dataSync() as Float32Array;
    const ggShape = ggufShape(name, shape);
    tensors.push({
      name: ggufTensorName(name),
      shape: ggShape,
      type: matrixType(options.type, ggShape),
      values: toGgufLayout(name, values, shape, config),
    });
  }
  const metadata: TypedMetadata = {
    ...modelMetadata(config, options),
    ...paddedTokenizerMetadata(tokenizer, meta, config.vocabSize),
    [ATTUNE_META_KEY]: { value: JSON.stringify(meta), type: GGUFValueType.STRING },
  };
  await fs.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await writeGgufFile(file, metadata, tensors);
}

function matrixType(type: GgufExportType, shape: number[]): GgmlTypeId {
  if (shape.length === 1) return GgmlType.F32;
  if (type === 'f32') return GgmlType.F32;
  if (type === 'q8_0' && shape[0] % 32 === 0) return GgmlType.Q8_0;
  return GgmlType.F16;
}

/** llama.cpp's general.file_type: 0 all F32, 1 mostly F16, 7 mostly Q8_0. */
const FILE_TYPE: Record<GgufExportType, number> = { f32: 0, f16: 1, q8_0: 7 };

function modelMetadata(config: ModelConfig, options: GgufSaveOptions): TypedMetadata {
  const arch = config.architecture;
  const u32 = (value: number) => ({ value, type: GGUFValueType.UINT32 });
  const f32 = (value: number) => ({ value, type: GGUFValueType.FLOAT32 });
  return {
    'general.architecture': { value: arch, type: GGUFValueType.STRING },
    'general.name': { value: options.name ?? 'attune-model', type: GGUFValueType.STRING },
    'general.file_type': u32(FILE_TYPE[options.type]),
    [`${arch}.vocab_size`]: u32(config.vocabSize),
    [`${arch}.context_length`]: u32(config.maxPositions),
    [`${arch}.embedding_length`]: u32(config.hiddenSize),
    [`${arch}.block_count`]: u32(config.numLayers),
    [`${arch}.feed_forward_length`]: u32(config.intermediateSize),
    [`${arch}.attention.head_count`]: u32(config.numHeads),
    [`${arch}.attention.head_count_kv`]: u32(config.numKvHeads),
    [`${arch}.attention.key_length`]: u32(config.headDim),
    [`${arch}.attention.value_length`]: u32(config.headDim),
    [`${arch}.rope.dimension_count`]: u32(config.headDim),
    [`${arch}.rope.freq_base`]: f32(config.ropeTheta),
    [`${arch}.attention.layer_norm_rms_epsilon`]: f32(config.rmsNormEps),
  };
}

/**
 * Tokenizer metadata with one entry per embedding row: rows past the tokenizer's vocabulary
 * (padding some checkpoints carry) become unused placeholder tokens, because llama.cpp requires
 * the token list and the embedding to have the same length.
 */
function paddedTokenizerMetadata(
  tokenizer: TextTokenizer,
  meta: ModelMeta,
  vocabSize: number,
): TypedMetadata {
  const metadata = tokenizerToGguf(tokenizer, {
    controlTokenIds: meta.steering?.mode === 'special' ? meta.steering.tokenIds : [],
  }) as TypedMetadata;
  const extra = vocabSize - tokenizer.vocabSize;
  if (extra <= 0) return metadata;
  const pad = <T>(key: string, make: (id: number) => T) => {
    const entry = metadata[key];
    if (!entry) return;
    const list = entry.value as T[];
    metadata[key] = {
      ...entry,
      value: [...list, ...Array.from({ length: extra }, (_, i) => make(tokenizer.vocabSize + i))],
    };
  };
  pad('tokenizer.ggml.tokens', (id) => `[PAD${id}]`);
  pad('tokenizer.ggml.token_type', () => 5);
  pad('tokenizer.ggml.scores', () => -1e9);
  return metadata;
}

async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
