/**
 * Builders for Hugging Face model folders as real downloads lay them out: tensors in the
 * [out, in] layout, stored as F32, F16 or BF16, in one safetensors file or in shards with an
 * index. Values are truncated to the stored precision here, independently of the loader's
 * decoder, so a test has the exact float32 weights the loader must produce.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import {
  LlamaModel,
  type ModelConfig,
  type Params,
  parameterShapes,
} from '../../src/main/engine/model';

export type StoredDtype = 'F32' | 'F16' | 'BF16';

/** One tensor as a file stores it. `values` are the float32 values its bytes stand for. */
export interface StoredTensor {
  name: string;
  shape: number[];
  dtype: string;
  bytes: Buffer;
  values: Float32Array;
}

const TRANSPOSED = /(_proj\.weight|lm_head\.weight)$/;

/** Parameters of `model` in the Hugging Face layout (linear weights [out, in]). */
export function hfTensors(
  model: LlamaModel,
): Map<string, { shape: number[]; values: Float32Array }> {
  const out = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const [name, variable] of Object.entries(model.params)) {
    const hf = TRANSPOSED.test(name) ? tf.tidy(() => tf.transpose(variable)) : variable;
    out.set(name, { shape: [...hf.shape], values: new Float32Array(hf.dataSync()) });
    if (hf !== variable) hf.dispose();
  }
  return out;
}

/** Stores `values` as `dtype`, truncating toward zero to the nearest representable value. */
export function storeTensor(
  name: string,
  shape: number[],
  values: Float32Array,
  dtype: StoredDtype,
): StoredTensor {
  if (dtype === 'F32') {
    const copy = new Float32Array(values);
    return { name, shape, dtype, bytes: Buffer.from(copy.buffer), values: copy };
  }
  const words = new Uint16Array(values.length);
  const stored = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const half = dtype === 'BF16' ? toBfloat16(values[i]) : toFloat16(values[i]);
    words[i] = half.bits;
    stored[i] = half.value;
  }
  return { name, shape, dtype, bytes: Buffer.from(words.buffer), values: stored };
}

/** Truncates to bfloat16: the upper 16 bits of the float32. */
function toBfloat16(value: number): { bits: number; value: number } {
  const view = new DataView(new ArrayBuffer(4));
  view.setFloat32(0, value);
  const bits = view.getUint32(0) >>> 16;
  view.setUint32(0, bits << 16);
  return { bits, value: view.getFloat32(0) };
}

/** Truncates to IEEE binary16 (finite values below 65520 only, which test weights are). */
function toFloat16(value: number): { bits: number; value: number } {
  const negative = value < 0 || Object.is(value, -0);
  const sign = negative ? -1 : 1;
  const signBit = negative ? 0x8000 : 0;
  const magnitude = Math.abs(value);
  if (magnitude < 2 ** -14) {
    const fraction = Math.floor(magnitude / 2 ** -24);
    return { bits: signBit | fraction, value: sign * fraction * 2 ** -24 };
  }
  let exponent = Math.floor(Math.log2(magnitude));
  if (2 ** exponent > magnitude) exponent -= 1;
  if (2 ** (exponent + 1) <= magnitude) exponent += 1;
  const fraction = Math.floor((magnitude / 2 ** exponent - 1) * 1024);
  return {
    bits: signBit | ((exponent + 15) << 10) | fraction,
    value: sign * (1 + fraction / 1024) * 2 ** exponent,
  };
}

/** Serialises stored tensors in order, with an unpadded header as some writers produce. */
export function safetensorsBytes(tensors: StoredTensor[]): Buffer {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const tensor of tensors) {
    const end = offset + tensor.bytes.length;
    header[tensor.name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, end] };
    offset = end;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length), 0);
  return Buffer.concat([prefix, json, ...tensors.map((t) => t.bytes)]);
}

/**
 * Writes `shards` (file name to tensors) and model.safetensors.index.json into `dir`.
 * `weightMap` defaults to the true location of every tensor.
 */
export async function writeShardedWeights(
  dir: string,
  shards: Map<string, StoredTensor[]>,
  weightMap?: Record<string, string>,
): Promise<string[]> {
  const map: Record<string, string> = {};
  let totalSize = 0;
  const files: string[] = [];
  for (const [file, tensors] of shards) {
    for (const tensor of tensors) {
      map[tensor.name] = file;
      totalSize += tensor.bytes.length;
    }
    await fs.writeFile(path.join(dir, file), safetensorsBytes(tensors));
    files.push(path.join(dir, file));
  }
  const index = { metadata: { total_size: totalSize }, weight_map: weightMap ?? map };
  await fs.writeFile(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  return files;
}

/**
 * Builds a model whose weights are the `values` of the stored tensors that `config` has parameters
 * for; other tensors are left out. The caller owns the model.
 */
export function modelFromStored(config: ModelConfig, tensors: StoredTensor[]): LlamaModel {
  const names = parameterShapes(config);
  const params: Params = {};
  for (const tensor of tensors) {
    if (!names.has(tensor.name)) continue;
    const value = tf.tidy(() => {
      const hf = tf.tensor(tensor.values, tensor.shape);
      return TRANSPOSED.test(tensor.name) ? tf.transpose(hf) : hf;
    });
    params[tensor.name] = tf.variable(value, true);
    value.dispose();
  }
  return new LlamaModel(config, params);
}
