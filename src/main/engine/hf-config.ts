/**
 * config.json of a Hugging Face transformers model (LlamaForCausalLM, Qwen2ForCausalLM) to and
 * from the engine's ModelConfig. Only what the engine implements is accepted: plain RoPE, silu
 * (SwiGLU), full attention, biases on the q, k and v projections at most.
 */
import { UserError } from '../../shared/errors';
import { type ModelConfig, validateConfig } from './model';

/** Token ids config.json and generation_config.json record. `bosId` is absent when there is no BOS. */
export interface TokenRoleIds {
  eosId: number;
  bosId?: number;
}

export interface ParsedHfConfig {
  config: ModelConfig;
  /** `torch_dtype` (transformers 4) or `dtype` (transformers 5) as written, or null. */
  torchDtype: string | null;
  /** `eos_token_id`; the first one when config.json lists several. */
  eosTokenId?: number;
}

/**
 * Builds the config.json that transformers 4.x and 5.x read for this architecture. The BOS id
 * is written as null when there is none, because LlamaConfig would otherwise default it to 1.
 */
export function configToHf(
  config: ModelConfig,
  eosId: number,
  bosId?: number,
): Record<string, unknown> {
  const common = {
    architectures: [config.architecture === 'qwen2' ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    model_type: config.architecture,
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    hidden_act: 'silu',
    rope_theta: config.ropeTheta,
    rope_scaling: null,
    rms_norm_eps: config.rmsNormEps,
    max_position_embeddings: config.maxPositions,
    tie_word_embeddings: config.tieWordEmbeddings,
    // Qwen2 in transformers always has q/k/v biases and ignores this key. The exporter writes
    // zero biases when the engine model has none, and the loader reads the key back.
    attention_bias: config.attentionBias,
    attention_dropout: 0,
    eos_token_id: eosId,
    bos_token_id: bosId ?? null,
    torch_dtype: 'float32',
    use_cache: true,
  };
  if (config.architecture === 'qwen2') return { ...common, use_sliding_window: false };
  return { ...common, mlp_bias: false };
}

/** Parses config.json content; `source` names the file in errors. */
export function configFromHf(hf: Record<string, unknown>, source: string): ModelConfig {
  return parseHfConfig(hf, source).config;
}

/** Parses config.json content and rejects features the engine does not implement. */
export function parseHfConfig(hf: Record<string, unknown>, source: string): ParsedHfConfig {
  const type = hf.model_type;
  if (type !== 'llama' && type !== 'qwen2') {
    throw new UserError(
      `${source}: model_type ${JSON.stringify(type)} is not supported; use llama or qwen2.`,
    );
  }
  rejectUnsupportedFeatures(hf, type, source);
  const num = (key: string, fallback?: number): number => {
    const value = hf[key] ?? fallback;
    if (typeof value !== 'number') {
      throw new UserError(`${source}: ${key} is missing or not a number.`);
    }
    return value;
  };
  const heads = num('num_attention_heads');
  const hidden = num('hidden_size');
  const config: ModelConfig = {
    architecture: type,
    vocabSize: num('vocab_size'),
    hiddenSize: hidden,
    intermediateSize: num('intermediate_size'),
    numLayers: num('num_hidden_layers'),
    numHeads: heads,
    numKvHeads: num('num_key_value_heads', heads),
    headDim: num('head_dim', hidden / heads),
    ropeTheta: ropeTheta(hf, source),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    // The defaults of LlamaConfig and Qwen2Config in transformers.
    maxPositions: num('max_position_embeddings', type === 'qwen2' ? 32768 : 2048),
    tieWordEmbeddings: flag(hf, 'tie_word_embeddings', false, source),
    attentionBias: flag(hf, 'attention_bias', type === 'qwen2', source),
  };
  // Checked here so that an inconsistent config names config.json, not the weights file.
  validateConfig(config, source);
  const dtype = hf.torch_dtype ?? hf.dtype;
  return {
    config,
    torchDtype: typeof dtype === 'string' ? dtype : null,
    eosTokenId: firstId(hf.eos_token_id),
  };
}

function rejectUnsupportedFeatures(
  hf: Record<string, unknown>,
  type: 'llama' | 'qwen2',
  source: string,
): void {
  const act = hf.hidden_act ?? 'silu';
  // transformers maps "swish" to the same SiLU function.
  if (act !== 'silu' && act !== 'swish') {
    throw new UserError(
      `${source}: hidden_act ${JSON.stringify(act)} is not supported; the engine implements SwiGLU with silu.`,
    );
  }
  const scaling = hf.rope_scaling ?? null;
  if (scaling !== null && !isDefaultRope(scaling)) {
    throw new UserError(
      `${source}: rope_scaling ${JSON.stringify(scaling)} is not supported; the engine implements plain RoPE without scaling. ` +
        'Use a model whose config.json has "rope_scaling": null.',
    );
  }
  if (type === 'qwen2' && hf.use_sliding_window === true) {
    throw new UserError(
      `${source}: use_sliding_window is true; the engine has no sliding-window attention. ` +
        'Use a model with "use_sliding_window": false.',
    );
  }
  if (type === 'llama' && hf.mlp_bias === true) {
    throw new UserError(
      `${source}: mlp_bias is true; the engine has no biases on gate_proj, up_proj and down_proj.`,
    );
  }
}

/** Reads rope_theta, or rope_parameters.rope_theta as transformers 5 writes it. */
function ropeTheta(hf: Record<string, unknown>, source: string): number {
  const parameters = hf.rope_parameters ?? null;
  if (parameters !== null) {
    if (!isDefaultRope(parameters)) {
      throw new UserError(
        `${source}: rope_parameters ${JSON.stringify(parameters)} is not supported; the engine implements plain RoPE (rope_type "default").`,
      );
    }
    const theta = (parameters as Record<string, unknown>).rope_theta;
    if (typeof theta === 'number') return theta;
  }
  const theta = hf.rope_theta ?? 10000;
  if (typeof theta !== 'number') throw new UserError(`${source}: rope_theta is not a number.`);
  return theta;
}

/** True for `{ rope_type: "default" }` (or the older `type` key), which is plain RoPE. */
function isDefaultRope(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const record = value as Record<string, unknown>;
  const kind = record.rope_type ?? record.type;
  if (kind !== 'default') return false;
  const allowed = new Set(['rope_type', 'type', 'rope_theta']);
  return Object.keys(record).every((key) => allowed.has(key));
}

function flag(
  hf: Record<string, unknown>,
  key: string,
  fallback: boolean,
  source: string,
): boolean {
  const value = hf[key] ?? fallback;
  if (typeof value !== 'boolean') {
    throw new UserError(`${source}: ${key} must be true or false, got ${JSON.stringify(value)}.`);
  }
  return value;
}

/** Returns a token id, or the first of a list of ids, as config files store `eos_token_id`. */
export function firstId(value: unknown): number | undefined {
  const id = Array.isArray(value) ? value[0] : value;
  return Number.isInteger(id) && (id as number) >= 0 ? (id as number) : undefined;
}
