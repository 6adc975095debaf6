/**
 * Model folders in the Hugging Face layout: config.json, generation_config.json,
 * model.safetensors (or an index and shards when loading), tokenizer.json and
 * tokenizer_config.json, plus attune.json with the steering tokens and the settings that
 * produced the model. Folders written here load in transformers as LlamaForCausalLM or
 * Qwen2ForCausalLM.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../shared/errors';
import { writeFolderAtomically } from './atomic';
import { configToHf, parseHfConfig } from './hf-config';
import {
  GENERATION_CONFIG_FILE,
  generationConfigFor,
  loadFolderTokenizer,
  TOKENIZER_CONFIG_FILE,
  tokenizerConfigFor,
  tokenizerJsonFor,
} from './hf-tokenizer-config';
import { WEIGHTS_FILE } from './hf-weight-layout';
import { LINEAR, readModelWeights, type WeightLoadOptions } from './hf-weights';
import { LlamaModel, type ModelConfig, type Params } from './model';
import type { Attribute } from './prompts';
import { encodeSafetensors, type NamedTensor } from './safetensors';
import { type TextTokenizer, TOKENIZER_FILE } from './tokenizer';

export { configFromHf, configToHf } from './hf-config';
export type { LoadProgress } from './model-memory';

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
  /** SHA-256 (hex) of model.safetensors, or of the shards concatenated in `weightFiles` order. */
  weightsSha256: string;
  /** Weight files read, in hashing order; set by `loadModelFolder`. */
  weightFiles?: string[];
  /** `torch_dtype` of config.json, the precision the weights were stored in; null when absent. */
  torchDtype?: string | null;
  dir: string;
}

export type LoadOptions = WeightLoadOptions;

/**
 * Encodes parameters to safetensors bytes in the Hugging Face [out, in] layout. With `config`,
 * it adds the all-zero biases transformers expects and the engine lacks: q/k/v biases of a
 * Qwen2 model without attention bias, and o_proj biases of a Llama model with attention bias.
 */
export function encodeParams(params: Params, config?: ModelConfig): Buffer {
  const tensors = new Map<string, NamedTensor>();
  for (const [name, variable] of Object.entries(params)) {
    const hf = LINEAR.test(name) ? tf.tidy(() => tf.transpose(variable)) : variable;
    tensors.set(name, { shape: hf.shape, data: hf.dataSync() as Float32Array });
    if (hf !== variable) hf.dispose();
  }
  if (config) {
    for (const [name, size] of zeroBiases(config)) {
      tensors.set(name, { shape: [size], data: new Float32Array(size) });
    }
  }
  return encodeSafetensors(tensors, { format: 'pt' });
}

function zeroBiases(config: ModelConfig): [string, number][] {
  const biases: [string, number][] = [];
  const qSize = config.numHeads * config.headDim;
  const kvSize = config.numKvHeads * config.headDim;
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.self_attn.`;
    if (config.architecture === 'qwen2' && !config.attentionBias) {
      biases.push([`${p}q_proj.bias`, qSize], [`${p}k_proj.bias`, kvSize]);
      biases.push([`${p}v_proj.bias`, kvSize]);
    }
    if (config.architecture === 'llama' && config.attentionBias) {
      biases.push([`${p}o_proj.bias`, config.hiddenSize]);
    }
  }
  return biases;
}

/** Builds the files of a model folder, keyed by file name. */
export function modelFolderFiles(
  model: LlamaModel,
  tokenizer: TextTokenizer,
  meta: ModelMeta,
): Map<string, string | Buffer> {
  const roles = { eosId: tokenizer.eosId, bosId: tokenizer.bosId };
  const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;
  return new Map<string, string | Buffer>([
    ['config.json', json(configToHf(model.config, roles.eosId, roles.bosId))],
    [GENERATION_CONFIG_FILE, json(generationConfigFor(roles))],
    [WEIGHTS_FILE, encodeParams(model.params, model.config)],
    [TOKENIZER_FILE, JSON.stringify(tokenizerJsonFor(tokenizer))],
    [TOKENIZER_CONFIG_FILE, json(tokenizerConfigFor(tokenizer, model.config.maxPositions))],
    ['attune.json', json(meta)],
  ]);
}

/** Saves a model folder atomically: a killed process leaves the old folder or the new one. */
export async function saveModelFolder(
  dir: string,
  model: LlamaModel,
  tokenizer: TextTokenizer,
  meta: ModelMeta,
): Promise<void> {
  await writeFolderAtomically(dir, modelFolderFiles(model, tokenizer, meta));
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

/**
 * Loads a model folder written by `saveModelFolder` or downloaded from the Hugging Face Hub
 * (llama or qwen2; one safetensors file or an index and shards; F32, F16 or BF16). Throws a
 * UserError before reading any weight when the model does not fit in memory.
 */
export async function loadModelFolder(
  dir: string,
  options: LoadOptions = {},
): Promise<LoadedModel> {
  const stat = await fs.stat(dir).catch(() => null);
  if (!stat?.isDirectory()) {
    throw new UserError(`Model folder ${dir} does not exist or is not a folder.`);
  }
  const configFile = path.join(dir, 'config.json');
  const parsed = parseHfConfig(
    parseJson(await readRequired(configFile, 'config'), configFile),
    configFile,
  );
  const config = parsed.config;
  const tokenizer = await loadFolderTokenizer(dir, parsed.eosTokenId);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new UserError(
      `${dir}: tokenizer.json has ${tokenizer.vocabSize} tokens but config.json vocab_size is ${config.vocabSize}.`,
    );
  }
  const metaFile = path.join(dir, 'attune.json');
  const metaBytes = await fs.readFile(metaFile).catch(() => null);
  const meta = metaBytes ? (parseJson(metaBytes, metaFile) as ModelMeta) : {};
  const weights = await readModelWeights(dir, config, options);
  return {
    model: new LlamaModel(config, weights.params),
    tokenizer,
    meta,
    weightsSha256: weights.sha256,
    weightFiles: weights.files,
    torchDtype: parsed.torchDtype,
    dir,
  };
}
