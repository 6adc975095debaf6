/**
 * One entry point for every model the studio reads: a model folder (Hugging Face layout, the
 * studio's own included) or a GGUF file.
 */
import { promises as fs } from 'node:fs';
import { UserError } from '../../shared/errors';
import { type LoadedModel, loadModelFolder } from './checkpoint';
import { loadGgufModel } from './gguf/gguf-model';
import type { LoadProgress } from './model-memory';

export interface LoadModelOptions {
  onProgress?: (progress: LoadProgress) => void;
  /** Bytes the load may use; defaults to what the machine reports free. */
  availableBytes?: number;
}

/** Loads `location`: a folder with config.json, or a .gguf file. */
export async function loadModel(
  location: string,
  options: LoadModelOptions = {},
): Promise<LoadedModel> {
  const stat = await fs.stat(location).catch(() => null);
  if (!stat) {
    throw new UserError(
      `Model ${location} does not exist. Pass a model folder (config.json, model.safetensors, tokenizer.json) or a .gguf file.`,
    );
  }
  if (stat.isDirectory()) return loadModelFolder(location, options);
  if (/\.gguf$/i.test(location)) return loadGgufModel(location, options);
  throw new UserError(
    `Model ${location} is a file but not a .gguf file. Pass a GGUF file or a model folder.`,
  );
}
