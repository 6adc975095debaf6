/**
 * Model folders in the Hugging Face layout: config.json, model.safetensors, tokenizer.json,
 * plus attune.json with the steering tokens and the settings that produced the model.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../shared/errors';
import { writeFolderAtomically } from './atomic';
import {
  LlamaModel,
  type ModelConfig,
  type Params,
  parameterShapes,
  validateConfig,
} from './model';
import type { Attribute } from './prompts';
import { decodeSafetensors, encodeSafetensors, type NamedTensor } from './safetensors';
import { TextTokenizer } from './tokenizer';

/** Steering tokens of one attribute, one per category, in category order. */
export interface SteeringInfo {
  attribute: Attribute;
  mode: 'digits' | 'special';
  categories: string[];
  tokens: string[];
  tokenIds: number[];
}

/** Contents of attune.json. */
export interface ModelMeta {
  steering?: SteeringInfo;
  /** Settings of the run that produced the weights, saved for audit. */
  training?: unknown;
  description?: string;
}

export interface LoadedModel {
  model: LlamaModel;
  tokenizer: TextTokenizer;
  meta: ModelMeta;
  /** SHA-256 of model.safetensors, hex. */
  weightsSha256: string;
  dir: string;
}

const LINEAR = /(_proj\.weight|lm_head\.weight)$/;

export function configToHf(config: ModelConfig, eosId: number): Record<string, unknown> {
  return {
    architectures: [config.architecture === 'qwen2' ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM'],
    model_type: config.architecture,
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    rope_theta: config.ropeTheta,
    rms_norm_eps: config.rmsNormEps,
    max_position_embeddings: config.maxPositions,
    tie_word_embeddings: config.tieWordEmbeddings,
    attention_bias: config.attentionBias,
    hidden_act: 'silu',
    eos_token_id: eosId,
    bos_token_id: eosId,
    torch_dtype: 'float32',
  };
}

export function configFromHf(hf: Record<string, unknown>, source: string): ModelConfig {
  const type = hf.model_type;
  if (type !== 'llama' && type !== 'qwen2') {
    throw new UserError(
      `${source}: model_type ${JSON.stringify(type)} is not supported; use llama or qwen2.`,
    );
  }
  const num = (key: string, fallback?: number): number => {
    const value = hf[key] ?? fallback;
    if (typeof value !== 'number')
      throw new UserError(`${source}: ${key} is missing or not a number.`);
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
    ropeTheta: num('rope_theta', 10000),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    maxPositions: num('max_position_embeddings', 2048),
    tieWordEmbeddings: Boolean(hf.tie_word_embeddings ?? false),
    attentionBias: Boolean(hf.attention_bias ?? type === 'qwen2'),
  };
  // Checked here so that an inconsistent config names config.json, not the weights file.
  validateConfig(config, source);
  return config;
}

/** Encodes parameters to safetensors bytes in the Hugging Face [out, in] layout. */
export function encodeParams(params: Params): Buffer {
  const tensors = new Map<string, NamedTensor>();
  for (const [name, variable] of Object.entries(params)) {
    const hf = LINEAR.test(name) ? tf.tidy(() => tf.transpose(variable)) : variable;
    tensors.set(name, { shape: hf.shape, data: hf.dataSync() as Float32Array });
    if (hf !== variable) hf.dispose();
  }
  return encodeSafetensors(tensors, { format: 'pt' });
}

/** Decodes safetensors bytes into engine-layout variables checked against `config`. */
export function decodeParams(buffer: Buffer, config: ModelConfig, source: string): Params {
  const { tensors } = decodeSafetensors(buffer, source);
  const params: Params = {};
  try {
    for (const [name, shape] of parameterShapes(config)) {
      const tensor = tensors.get(name);
      if (!tensor) throw new UserError(`${source}: tensor ${name} is missing.`);
      const hfShape = LINEAR.test(name) ? [shape[1], shape[0]] : shape;
      if (tensor.shape.join(',') !== hfShape.join(',')) {
        throw new UserError(
          `${source}: tensor ${name} has shape [${tensor.shape}], config.json implies [${hfShape}].`,
        );
      }
      const value = tf.tidy(() => {
        const t = tf.tensor(tensor.data, tensor.shape);
        return LINEAR.test(name) ? tf.transpose(t) : t;
      });
      params[name] = tf.variable(value, true);
      value.dispose();
    }
  } catch (error) {
    tf.dispose(Object.values(params));
    throw error;
  }
  return params;
}

/** Saves a model folder atomically: a killed process leaves the old folder or the new one. */
export async function saveModelFolder(
  dir: string,
  model: LlamaModel,
  tokenizer: TextTokenizer,
  meta: ModelMeta,
): Promise<void> {
  const files = new Map<string, string | Buffer>();
  files.set(
    'config.json',
    `${JSON.stringify(configToHf(model.config, tokenizer.eosId), null, 2)}\n`,
  );
  files.set('model.safetensors', encodeParams(model.params));
  files.set('tokenizer.json', JSON.stringify(tokenizer.toJSON()));
  files.set('attune.json', `${JSON.stringify(meta, null, 2)}\n`);
  await writeFolderAtomically(dir, files);
}

async function readRequired(file: string, what: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'is missing' : `cannot be read (${code})`;
    throw new UserError(`Model folder: ${what} ${file} ${reason}.`, { cause: error });
  }
}

function parseJson(buffer: Buffer, file: string): Record<string, unknown> {
  try {
    const value = JSON.parse(buffer.toString('utf8'));
    if (value && typeof value === 'object') return value as Record<string, unknown>;
  } catch (error) {
    throw new UserError(`${file} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  throw new UserError(`${file} must contain a JSON object.`);
}

/** Loads a model folder written by `saveModelFolder` or a Hugging Face single-file model. */
export async function loadModelFolder(dir: string): Promise<LoadedModel> {
  const stat = await fs.stat(dir).catch(() => null);
  if (!stat?.isDirectory()) {
    throw new UserError(`Model folder ${dir} does not exist or is not a folder.`);
  }
  const configFile = path.join(dir, 'config.json');
  const config = configFromHf(
    parseJson(await readRequired(configFile, 'config'), configFile),
    configFile,
  );
  const weightsFile = path.join(dir, 'model.safetensors');
  const weights = await readRequired(weightsFile, 'weights');
  const tokenizer = await TextTokenizer.load(dir);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new UserError(
      `${dir}: tokenizer.json has ${tokenizer.vocabSize} tokens but config.json vocab_size is ${config.vocabSize}.`,
    );
  }
  const metaFile = path.join(dir, 'attune.json');
  const metaBytes = await fs.readFile(metaFile).catch(() => null);
  const meta = metaBytes ? (parseJson(metaBytes, metaFile) as ModelMeta) : {};
  const params = decodeParams(weights, config, weightsFile);
  return {
    model: new LlamaModel(config, params),
    tokenizer,
    meta,
    weightsSha256: createHash('sha256').update(weights).digest('hex'),
    dir,
  };
}
