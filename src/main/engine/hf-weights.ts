/**
 * Weights of a Hugging Face model folder: model.safetensors, or model.safetensors.index.json
 * with its shards. Every header is read and checked first, then the memory check runs, then each
 * file is read once front to back in chunks: hashed, and converted to engine-layout variables.
 *
 * A download may carry tensors beyond the engine's parameters. `rotary_emb.inv_freq` buffers are
 * skipped. `lm_head.weight` of a tied model must equal the embedding. A projection bias the
 * engine lacks (Llama's o_proj.bias with attention_bias, Qwen2's q/k/v biases with
 * attention_bias false) must be all zeros. Any other tensor is an error.
 */
import { createHash, type Hash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../shared/errors';
import { locateWeights, type WeightLayout } from './hf-weight-layout';
import { type ModelConfig, type Params, parameterShapes } from './model';
import {
  assertFiniteWeights,
  assertModelFits,
  type LoadProgress,
  READ_CHUNK_BYTES,
} from './model-memory';
import {
  bytesPerElement,
  decodeFloat32Into,
  elementCount,
  floatDtype,
  readExactly,
  readSafetensorsHeader,
  type SafetensorsHeader,
  type TensorEntry,
} from './safetensors';

/** Engine parameters stored [in, out]; checkpoints store the Hugging Face [out, in] layout. */
export const LINEAR = /(_proj\.weight|lm_head\.weight)$/;
const INV_FREQ = /(^|\.)rotary_emb\.inv_freq$/;
const PROJECTION_BIAS =
  /^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.bias$/;
const EMBEDDING = 'model.embed_tokens.weight';

export interface WeightLoadOptions {
  onProgress?: (progress: LoadProgress) => void;
  /** Bytes the load may use; see `assertModelFits`. */
  availableBytes?: number;
}

export interface LoadedWeights {
  /** Engine-layout variables; the caller owns them. */
  params: Params;
  /** SHA-256 (hex) of the weight files concatenated in `files` order. */
  sha256: string;
  files: string[];
}

interface Shard {
  file: string;
  handle: FileHandle;
  size: number;
  header: SafetensorsHeader;
  headerBytes: Buffer;
}

interface Located {
  shard: Shard;
  entry: TensorEntry;
}

/** Action the loader takes for one stored tensor. */
type Plan =
  | { kind: 'param'; name: string; shape: number[] }
  | { kind: 'skip' }
  | { kind: 'tied'; embedding: Located }
  | { kind: 'zero' };

/** Reads the weights of `dir` for `config`. Throws a UserError naming the file and tensor. */
export async function readModelWeights(
  dir: string,
  config: ModelConfig,
  options: WeightLoadOptions = {},
): Promise<LoadedWeights> {
  const layout = await locateWeights(dir);
  const shards: Shard[] = [];
  try {
    for (const file of layout.files) shards.push(await openShard(file, layout));
    const located = locateTensors(shards, layout);
    const plans = planTensors(located, config, layout);
    assertWeightsFit(config, layout.source, options.availableBytes);
    const parameterTensorCount = parameterShapes(config).size;
    const reader = new WeightReader(shards, parameterTensorCount, options.onProgress);
    try {
      for (const shard of shards) await reader.readShard(shard, plans);
    } catch (error) {
      tf.dispose(Object.values(reader.params));
      throw error;
    }
    return { params: reader.params, sha256: reader.hash.digest('hex'), files: layout.files };
  } finally {
    await Promise.all(shards.map((shard) => shard.handle.close()));
  }
}

/** Runs the memory check with the exact parameter count and largest tensor of `config`. */
function assertWeightsFit(config: ModelConfig, source: string, availableBytes?: number): void {
  const counts = [...parameterShapes(config).values()].map(elementCount);
  const parameterCount = counts.reduce((a, b) => a + b, 0);
  const largestTensorElements = Math.max(...counts);
  assertModelFits(parameterCount, source, { availableBytes, largestTensorElements });
}

async function openShard(file: string, layout: WeightLayout): Promise<Shard> {
  let handle: FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'is missing' : `cannot be read (${code})`;
    const listed = layout.index ? `, listed in ${layout.index.file},` : '';
    throw new UserError(`Model folder: weights ${file}${listed} ${reason}.`, { cause: error });
  }
  try {
    const { size } = await handle.stat();
    const { header, headerBytes } = await readSafetensorsHeader(handle, size, file);
    return { file, handle, size, header, headerBytes };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Maps every stored tensor to its shard, checking that the index and the shards agree. */
function locateTensors(shards: Shard[], layout: WeightLayout): Map<string, Located> {
  const located = new Map<string, Located>();
  const index = layout.index;
  for (const shard of shards) {
    for (const entry of shard.header.tensors.values()) {
      const mapped = index?.weightMap.get(entry.name);
      if (index && mapped === undefined) {
        throw new UserError(`${shard.file}: tensor ${entry.name} is not listed in ${index.file}.`);
      }
      if (index && mapped !== shard.file) {
        throw new UserError(
          `${shard.file}: tensor ${entry.name} is stored here, but ${index.file} maps it to ` +
            `${path.basename(mapped ?? '')}; each tensor must be stored in one shard.`,
        );
      }
      located.set(entry.name, { shard, entry });
    }
  }
  for (const [name, file] of index?.weightMap ?? []) {
    if (!located.has(name)) {
      throw new UserError(
        `${index?.file}: tensor ${name} is mapped to ${path.basename(file)}, which does not contain it.`,
      );
    }
  }
  return located;
}

function planTensors(
  located: Map<string, Located>,
  config: ModelConfig,
  layout: WeightLayout,
): Map<string, Plan> {
  const plans = new Map<string, Plan>();
  for (const [name, shape] of parameterShapes(config)) {
    const found = located.get(name);
    if (!found) throw new UserError(`${layout.source}: tensor ${name} is missing.`);
    checkEntry(found, LINEAR.test(name) ? [shape[1], shape[0]] : shape);
    plans.set(name, { kind: 'param', name, shape });
  }
  for (const [name, found] of located) {
    if (plans.has(name)) continue;
    plans.set(name, planExtra(name, found, located, config));
  }
  return plans;
}

function planExtra(
  name: string,
  found: Located,
  located: Map<string, Located>,
  config: ModelConfig,
): Plan {
  const file = found.shard.file;
  if (INV_FREQ.test(name)) return { kind: 'skip' };
  if (name === 'lm_head.weight' && config.tieWordEmbeddings) {
    const embedding = located.get(EMBEDDING) as Located;
    checkEntry(found, embedding.entry.shape);
    return { kind: 'tied', embedding };
  }
  if (PROJECTION_BIAS.test(name) && found.entry.shape.length === 1) {
    floatDtype(found.entry, file);
    return { kind: 'zero' };
  }
  throw new UserError(
    `${file}: tensor ${name} is not a parameter of the ${config.architecture} model that ` +
      'config.json describes; the engine cannot use it. Check that config.json belongs to these weights.',
  );
}

function checkEntry({ shard, entry }: Located, expected: number[]): void {
  if (entry.shape.join(',') !== expected.join(',')) {
    throw new UserError(
      `${shard.file}: tensor ${entry.name} has shape [${entry.shape}], config.json implies [${expected}].`,
    );
  }
  floatDtype(entry, shard.file);
}

/** Reads shards front to back, hashing every byte and applying each tensor's plan. */
class WeightReader {
  readonly params: Params = {};
  readonly hash: Hash = createHash('sha256');
  private readonly chunk = new Uint8Array(READ_CHUNK_BYTES);
  private otherChunk: Uint8Array | null = null;
  private readonly totalBytes: number;
  private bytesDone = 0;
  private converted = 0;

  constructor(
    shards: Shard[],
    private readonly parameterTensorCount: number,
    private readonly onProgress: WeightLoadOptions['onProgress'],
  ) {
    this.totalBytes = shards.reduce((sum, shard) => sum + shard.size, 0);
  }

  async readShard(shard: Shard, plans: Map<string, Plan>): Promise<void> {
    this.hash.update(shard.headerBytes);
    this.advance(shard.file, shard.headerBytes.length);
    const entries = [...shard.header.tensors.values()].sort((a, b) => a.begin - b.begin);
    for (const entry of entries) {
      const plan = plans.get(entry.name) as Plan;
      if (plan.kind === 'param') await this.readParam(shard, entry, plan);
      else if (plan.kind === 'tied') await this.readTied(shard, entry, plan.embedding);
      else if (plan.kind === 'zero') await this.readZero(shard, entry);
      else await this.forEachChunk(shard, entry, 1, () => {});
    }
  }

  private async readParam(
    shard: Shard,
    entry: TensorEntry,
    plan: { name: string; shape: number[] },
  ): Promise<void> {
    const dtype = floatDtype(entry, shard.file);
    const values = new Float32Array(elementCount(entry.shape)); // engine layout
    const transpose = LINEAR.test(plan.name);
    const [rows, cols] = entry.shape; // Hugging Face [out, in]
    let scratch: Float32Array | null = null;
    await this.forEachChunk(shard, entry, bytesPerElement(dtype), (bytes, first, count) => {
      if (!transpose) {
        decodeFloat32Into(bytes, dtype, values.subarray(first, first + count));
        return;
      }
      scratch = scratch && scratch.length >= count ? scratch : new Float32Array(count);
      const decoded = scratch.subarray(0, count);
      decodeFloat32Into(bytes, dtype, decoded);
      // Element (r, c) of [out, in] goes to (c, r) of the engine's [in, out].
      let r = Math.floor(first / cols);
      let c = first % cols;
      for (let i = 0; i < count; i++) {
        values[c * rows + r] = decoded[i];
        c += 1;
        if (c === cols) {
          c = 0;
          r += 1;
        }
      }
    });
    assertFiniteWeights(values, entry.name, shard.file);
    const tensor = tf.tensor(values, plan.shape, 'float32');
    this.params[plan.name] = tf.variable(tensor, true);
    tensor.dispose();
    this.converted += 1;
    this.onProgress?.({
      stage: 'convert',
      done: this.converted,
      total: this.parameterTensorCount,
      unit: 'tensors',
      file: shard.file,
    });
  }

  /** Checks that a tied model's lm_head.weight equals the embedding, element by element. */
  private async readTied(shard: Shard, entry: TensorEntry, embedding: Located): Promise<void> {
    const dtype = floatDtype(entry, shard.file);
    const embeddingDtype = floatDtype(embedding.entry, embedding.shard.file);
    const embeddingWidth = bytesPerElement(embeddingDtype);
    this.otherChunk ??= new Uint8Array(READ_CHUNK_BYTES);
    const other = this.otherChunk;
    await this.forEachChunk(shard, entry, bytesPerElement(dtype), async (bytes, first, count) => {
      const embeddingBytes = other.subarray(0, count * embeddingWidth);
      const position =
        embedding.shard.header.dataStart + embedding.entry.begin + first * embeddingWidth;
      await readExactly(embedding.shard.handle, embeddingBytes, position, embedding.shard.file);
      const equal =
        dtype === embeddingDtype
          ? Buffer.from(bytes).equals(Buffer.from(embeddingBytes))
          : decodedEqual(bytes, dtype, embeddingBytes, embeddingDtype, count);
      if (!equal) {
        throw new UserError(
          `${shard.file}: tensor lm_head.weight differs from ${EMBEDDING}, but config.json sets ` +
            'tie_word_embeddings to true. Set it to false if the output head is separate.',
        );
      }
    });
  }

  private async readZero(shard: Shard, entry: TensorEntry): Promise<void> {
    const dtype = floatDtype(entry, shard.file);
    await this.forEachChunk(shard, entry, bytesPerElement(dtype), (bytes, _first, count) => {
      const values = new Float32Array(count);
      decodeFloat32Into(bytes, dtype, values);
      if (values.some((v) => v !== 0)) {
        const advice = /\.[qkv]_proj\.bias$/.test(entry.name)
          ? 'config.json sets attention_bias to false, so the model would run without it. If the ' +
            'model uses these biases (Qwen2 models always do), set attention_bias to true in config.json.'
          : 'the engine has no such bias, so it cannot run this model.';
        throw new UserError(
          `${shard.file}: tensor ${entry.name} has non-zero values, but ${advice}`,
        );
      }
    });
  }

  /** Reads the tensor's bytes in chunks of whole elements; `visit` gets element offsets. */
  private async forEachChunk(
    shard: Shard,
    entry: TensorEntry,
    width: number,
    visit: (bytes: Uint8Array, first: number, count: number) => void | Promise<void>,
  ): Promise<void> {
    const step = READ_CHUNK_BYTES - (READ_CHUNK_BYTES % width);
    for (let offset = entry.begin; offset < entry.end; offset += step) {
      const length = Math.min(step, entry.end - offset);
      const bytes = this.chunk.subarray(0, length);
      await readExactly(shard.handle, bytes, shard.header.dataStart + offset, shard.file);
      this.hash.update(bytes);
      await visit(bytes, (offset - entry.begin) / width, length / width);
      this.advance(shard.file, length);
    }
  }

  private advance(file: string, bytes: number): void {
    this.bytesDone += bytes;
    this.onProgress?.({
      stage: 'read',
      done: this.bytesDone,
      total: this.totalBytes,
      unit: 'bytes',
      file,
    });
  }
}

function decodedEqual(
  a: Uint8Array,
  aDtype: Parameters<typeof decodeFloat32Into>[1],
  b: Uint8Array,
  bDtype: Parameters<typeof decodeFloat32Into>[1],
  count: number,
): boolean {
  const left = new Float32Array(count);
  const right = new Float32Array(count);
  decodeFloat32Into(a, aDtype, left);
  decodeFloat32Into(b, bDtype, right);
  return left.every((value, i) => value === right[i]);
}
