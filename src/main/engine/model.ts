/**
 * Llama-family decoder in TensorFlow.js: RMSNorm, rotary position embeddings (Hugging Face
 * "rotate half" layout), grouped-query attention, SwiGLU feed-forward, optional q/k/v biases
 * (Qwen2) and a tied or untied output head.
 *
 * Shapes: B batch, T new positions, S key positions (cache + new), H query heads, G kv heads,
 * R = H / G query heads per kv head, E head size, D model width, F feed-forward width,
 * V vocabulary.
 *
 * Linear weights are stored as [in, out] so that `x @ w` needs no transpose; checkpoints store
 * the Hugging Face [out, in] layout and transpose at the boundary.
 */
import * as tf from '@tensorflow/tfjs';
import { invariant, UserError } from '../../shared/errors';
import { embed, linear, matMul, rmsNorm, rotateHalfMatrix } from './ops';

export interface ModelConfig {
  architecture: 'llama' | 'qwen2';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  ropeTheta: number;
  rmsNormEps: number;
  maxPositions: number;
  tieWordEmbeddings: boolean;
  /** Biases on the q, k and v projections (Qwen2). */
  attentionBias: boolean;
}

export type Params = Record<string, tf.Variable>;

/** Per-layer attention keys and values [B, G, S, E]; owned by the cache until `dispose`. */
export class KVCache {
  keys: (tf.Tensor4D | null)[];
  values: (tf.Tensor4D | null)[];
  /** Mask per row of the key positions that hold real tokens (1) or padding (0), growing each step. */
  keyValid: Uint8Array[];

  constructor(numLayers: number, batchSize: number) {
    this.keys = new Array(numLayers).fill(null);
    this.values = new Array(numLayers).fill(null);
    this.keyValid = Array.from({ length: batchSize }, () => new Uint8Array(0));
  }

  get length(): number {
    return this.keyValid[0]?.length ?? 0;
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t?.dispose();
    this.keys.fill(null);
    this.values.fill(null);
  }
}

export interface ForwardOptions {
  /** Position id of every new token, row-major [B * T]; defaults to cache length + 0..T-1. */
  positions?: Int32Array;
  /** Whether each new token is real (1) or padding (0), row-major [B * T]; defaults to all real. */
  tokenValid?: Uint8Array;
  /** Decode incrementally: attend to and extend this cache. */
  cache?: KVCache;
  /** Return logits of the last position only ([B, 1, V]); saves the head on long prompts. */
  lastOnly?: boolean;
}

export function validateConfig(config: ModelConfig, source: string): void {
  const positive = [
    'vocabSize',
    'hiddenSize',
    'intermediateSize',
    'numLayers',
    'numHeads',
    'numKvHeads',
    'headDim',
    'maxPositions',
  ] as const;
  for (const key of positive) {
    const value = config[key];
    if (!Number.isInteger(value) || value <= 0) {
      throw new UserError(`${source}: ${key} must be a positive integer, got ${value}.`);
    }
  }
  if (config.numHeads % config.numKvHeads !== 0) {
    throw new UserError(
      `${source}: numHeads (${config.numHeads}) must be a multiple of numKvHeads (${config.numKvHeads}).`,
    );
  }
  if (config.headDim % 2 !== 0) {
    throw new UserError(
      `${source}: headDim must be even for rotary embeddings, got ${config.headDim}.`,
    );
  }
}

/** Names and engine-layout shapes of every parameter of `config`. */
export function parameterShapes(config: ModelConfig): Map<string, number[]> {
  const { hiddenSize: d, intermediateSize: f, headDim: e, vocabSize: v } = config;
  const qSize = config.numHeads * e;
  const kvSize = config.numKvHeads * e;
  const shapes = new Map<string, number[]>();
  shapes.set('model.embed_tokens.weight', [v, d]);
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    shapes.set(`${p}input_layernorm.weight`, [d]);
    shapes.set(`${p}self_attn.q_proj.weight`, [d, qSize]);
    shapes.set(`${p}self_attn.k_proj.weight`, [d, kvSize]);
    shapes.set(`${p}self_attn.v_proj.weight`, [d, kvSize]);
    if (config.attentionBias) {
      shapes.set(`${p}self_attn.q_proj.bias`, [qSize]);
      shapes.set(`${p}self_attn.k_proj.bias`, [kvSize]);
      shapes.set(`${p}self_attn.v_proj.bias`, [kvSize]);
    }
    shapes.set(`${p}self_attn.o_proj.weight`, [qSize, d]);
    shapes.set(`${p}post_attention_layernorm.weight`, [d]);
    shapes.set(`${p}mlp.gate_proj.weight`, [d, f]);
    shapes.set(`${p}mlp.up_proj.weight`, [d, f]);
    shapes.set(`${p}mlp.down_proj.weight`, [f, d]);
  }
  shapes.set('model.norm.weight', [d]);
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [d, v]);
  return shapes;
}

/**
 * Initialises parameters the GPT-2 way: normal(0, 0.02), residual output projections scaled by
 * 1/sqrt(2 * layers), norms at 1, biases at 0. The caller owns the returned variables.
 */
export function initParams(config: ModelConfig, seed: number): Params {
  const params: Params = {};
  let n = 0;
  const residualStd = 0.02 / Math.sqrt(2 * config.numLayers);
  for (const [name, shape] of parameterShapes(config)) {
    n += 1;
    let init: tf.Tensor;
    if (name.endsWith('norm.weight')) init = tf.ones(shape);
    else if (name.endsWith('.bias')) init = tf.zeros(shape);
    else {
      const std = /o_proj|down_proj/.test(name) ? residualStd : 0.02;
      init = tf.randomNormal(shape, 0, std, 'float32', seed * 1000 + n);
    }
    params[name] = tf.variable(init, true);
    init.dispose();
  }
  return params;
}

export function countParameters(params: Params): number {
  return Object.values(params).reduce((sum, p) => sum + p.size, 0);
}

/** A decoder bound to its parameters. Tensors it returns belong to the caller. */
export class LlamaModel {
  readonly config: ModelConfig;
  readonly params: Params;
  private readonly rotateHalf: tf.Tensor2D;
  private readonly inverseFrequencies: Float64Array;

  constructor(config: ModelConfig, params: Params) {
    validateConfig(config, 'model config');
    for (const [name, shape] of parameterShapes(config)) {
      const param = params[name];
      if (!param) throw new UserError(`Model weights are missing tensor ${name}.`);
      if (param.shape.join(',') !== shape.join(',')) {
        throw new UserError(
          `Model tensor ${name} has shape [${param.shape}], expected [${shape}] from the config.`,
        );
      }
    }
    this.config = config;
    this.params = params;
    this.rotateHalf = rotateHalfMatrix(config.headDim);
    this.inverseFrequencies = Float64Array.from(
      { length: config.headDim / 2 },
      (_, i) => config.ropeTheta ** (-(2 * i) / config.headDim),
    );
  }

  /** Trainable variables in a fixed order. */
  variables(): tf.Variable[] {
    return Object.values(this.params);
  }

  /**
   * Runs the decoder on `ids` [B, T] and returns logits [B, T, V] ([B, 1, V] with `lastOnly`).
   * With a cache, the new keys and values are appended to it (the cache keeps them).
   */
  forward(ids: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    const [batch, time] = ids.shape;
    const cache = options.cache;
    const past = cache?.length ?? 0;
    const positions = options.positions ?? defaultPositions(batch, time, past);
    const tokenValid = options.tokenValid ?? new Uint8Array(batch * time).fill(1);
    if (cache) appendValid(cache, tokenValid, batch, time);
    const keyValid = cache ? cache.keyValid : splitRows(tokenValid, batch, time);
    const { cos, sin } = this.rotary(positions, batch, time);
    const mask = attentionMask(keyValid, past, time);
    let h: tf.Tensor = embed(this.params['model.embed_tokens.weight'] as tf.Tensor2D, ids); // [B, T, D]
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      h = this.block(h, layer, cos, sin, mask, cache);
    }
    tf.dispose([cos, sin, mask]);
    if (options.lastOnly) h = tf.slice(h, [0, time - 1, 0], [batch, 1, -1]); // [B, 1, D]
    h = rmsNorm(h, this.params['model.norm.weight'] as tf.Tensor1D, this.config.rmsNormEps);
    return linear(h, this.headWeight()) as tf.Tensor3D; // [B, T, V]
  }

  private headWeight(): tf.Tensor2D {
    if (!this.config.tieWordEmbeddings) return this.params['lm_head.weight'] as tf.Tensor2D;
    return tf.transpose(this.params['model.embed_tokens.weight']) as tf.Tensor2D; // [D, V]
  }

  private block(
    x: tf.Tensor,
    layer: number,
    cos: tf.Tensor,
    sin: tf.Tensor,
    mask: tf.Tensor,
    cache?: KVCache,
  ): tf.Tensor {
    const p = `model.layers.${layer}.`;
    const eps = this.config.rmsNormEps;
    const attnIn = rmsNorm(x, this.params[`${p}input_layernorm.weight`] as tf.Tensor1D, eps);
    const h = tf.add(x, this.attention(attnIn, layer, cos, sin, mask, cache));
    const mlpIn = rmsNorm(
      h,
      this.params[`${p}post_attention_layernorm.weight`] as tf.Tensor1D,
      eps,
    );
    return tf.add(h, this.feedForward(mlpIn, p));
  }

  private feedForward(x: tf.Tensor, prefix: string): tf.Tensor {
    const w = (name: string) => this.params[`${prefix}mlp.${name}.weight`] as tf.Tensor2D;
    const gate = linear(x, w('gate_proj')); // [B, T, F]
    const up = linear(x, w('up_proj')); // [B, T, F]
    return linear(tf.mul(tf.mul(gate, tf.sigmoid(gate)), up), w('down_proj')); // [B, T, D]
  }

  private attention(
    x: tf.Tensor,
    layer: number,
    cos: tf.Tensor,
    sin: tf.Tensor,
    mask: tf.Tensor,
    cache?: KVCache,
  ): tf.Tensor {
    const { numHeads: heads, numKvHeads: kvHeads, headDim: e } = this.config;
    const [batch, time] = x.shape as [number, number];
    const p = `model.layers.${layer}.self_attn.`;
    const project = (name: string, count: number) => {
      const bias = this.params[`${p}${name}.bias`] as tf.Tensor1D | undefined;
      const y = linear(x, this.params[`${p}${name}.weight`] as tf.Tensor2D, bias); // [B, T, n*E]
      return tf.transpose(tf.reshape(y, [batch, time, count, e]), [0, 2, 1, 3]); // [B, n, T, E]
    };
    let q = this.rope(project('q_proj', heads), cos, sin); // [B, H, T, E]
    let k = this.rope(project('k_proj', kvHeads), cos, sin); // [B, G, T, E]
    let v = project('v_proj', kvHeads); // [B, G, T, E]
    if (cache) [k, v] = appendToCache(cache, layer, k, v); // [B, G, S, E]
    const keyLength = k.shape[2] as number;
    const group = heads / kvHeads;
    // Query heads h*R..h*R+R-1 share kv head h, so [B, H, T, E] regroups as [B, G, R*T, E].
    q = tf.reshape(q, [batch, kvHeads, group * time, e]);
    let scores = tf.mul(matMul(q, tf.transpose(k, [0, 1, 3, 2])), 1 / Math.sqrt(e)); // [B, G, R*T, S]
    scores = tf.add(tf.reshape(scores, [batch, kvHeads, group, time, keyLength]), mask); // [B, G, R, T, S]
    const weights = tf.reshape(tf.softmax(scores), [batch, kvHeads, group * time, keyLength]);
    const context = tf.reshape(matMul(weights, v), [batch, heads, time, e]); // [B, H, T, E]
    const merged = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [batch, time, heads * e]);
    return linear(merged, this.params[`${p}o_proj.weight`] as tf.Tensor2D); // [B, T, D]
  }

  private rope(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor {
    const rotated = tf.reshape(linear(x, this.rotateHalf), x.shape);
    return tf.add(tf.mul(x, cos), tf.mul(rotated, sin));
  }

  /** cos and sin [B, 1, T, E] for the given position ids. */
  private rotary(positions: Int32Array, batch: number, time: number) {
    const e = this.config.headDim;
    const half = e / 2;
    const cos = new Float32Array(batch * time * e);
    const sin = new Float32Array(batch * time * e);
    for (let n = 0; n < batch * time; n++) {
      for (let i = 0; i < half; i++) {
        const angle = positions[n] * this.inverseFrequencies[i];
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        cos[n * e + i] = c;
        cos[n * e + i + half] = c;
        sin[n * e + i] = s;
        sin[n * e + i + half] = s;
      }
    }
    return {
      cos: tf.tensor4d(cos, [batch, 1, time, e]),
      sin: tf.tensor4d(sin, [batch, 1, time, e]),
    };
  }

  dispose(): void {
    tf.dispose(Object.values(this.params));
    this.rotateHalf.dispose();
  }
}

function defaultPositions(batch: number, time: number, past: number): Int32Array {
  const positions = new Int32Array(batch * time);
  for (let b = 0; b < batch; b++) for (let t = 0; t < time; t++) positions[b * time + t] = past + t;
  return positions;
}

function splitRows(flat: Uint8Array, batch: number, time: number): Uint8Array[] {
  return Array.from({ length: batch }, (_, b) => flat.subarray(b * time, (b + 1) * time));
}

function appendValid(cache: KVCache, tokenValid: Uint8Array, batch: number, time: number) {
  invariant(
    cache.keyValid.length === batch,
    () => `KV cache holds ${cache.keyValid.length} rows, the batch has ${batch}`,
  );
  cache.keyValid = cache.keyValid.map((row, b) => {
    const grown = new Uint8Array(row.length + time);
    grown.set(row);
    grown.set(tokenValid.subarray(b * time, (b + 1) * time), row.length);
    return grown;
  });
}

/**
 * Additive mask [B, 1, 1, T, S]: 0 where new token t may attend to key s (causal and real),
 * -1e9 elsewhere. Key s is new token t's own position when s = past + t.
 */
function attentionMask(keyValid: Uint8Array[], past: number, time: number): tf.Tensor {
  const batch = keyValid.length;
  const keyLength = past + time;
  const values = new Float32Array(batch * time * keyLength);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < time; t++) {
      const row = (b * time + t) * keyLength;
      for (let s = 0; s < keyLength; s++) {
        const allowed = s <= past + t && keyValid[b][s] === 1;
        values[row + s] = allowed ? 0 : -1e9;
      }
    }
  }
  return tf.tensor(values, [batch, 1, 1, time, keyLength]);
}

function appendToCache(
  cache: KVCache,
  layer: number,
  k: tf.Tensor,
  v: tf.Tensor,
): [tf.Tensor4D, tf.Tensor4D] {
  const oldK = cache.keys[layer];
  const oldV = cache.values[layer];
  const newK = (oldK ? tf.concat([oldK, k], 2) : k.clone()) as tf.Tensor4D;
  const newV = (oldV ? tf.concat([oldV, v], 2) : v.clone()) as tf.Tensor4D;
  tf.keep(newK);
  tf.keep(newV);
  oldK?.dispose();
  oldV?.dispose();
  cache.keys[layer] = newK;
  cache.values[layer] = newV;
  return [newK, newV];
}
