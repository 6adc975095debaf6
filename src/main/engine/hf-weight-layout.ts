/** Location of the weights in a Hugging Face model folder: one safetensors file, or an index of shards. */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../../shared/errors';

export const WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';

export interface WeightLayout {
  /** File named in errors about the weights as a whole: the single file or the index. */
  source: string;
  /** Absolute paths of the weight files, in reading and hashing order. */
  files: string[];
  /** The index of a sharded folder: tensor name to absolute shard path. */
  index?: { file: string; weightMap: Map<string, string> };
}

/**
 * Finds the weights of `dir`. model.safetensors wins over an index, as in transformers; shards
 * are read in file-name order, which is shard order for the usual model-0000N-of-0000M names.
 */
export async function locateWeights(dir: string): Promise<WeightLayout> {
  const single = path.join(dir, WEIGHTS_FILE);
  if (await exists(single)) return { source: single, files: [single] };
  const indexFile = path.join(dir, WEIGHTS_INDEX_FILE);
  if (!(await exists(indexFile))) {
    throw new UserError(
      `Model folder: weights ${single} is missing, and there is no ${WEIGHTS_INDEX_FILE} either.`,
    );
  }
  const weightMap = parseIndex(await readIndex(indexFile), dir, indexFile);
  const files = [...new Set(weightMap.values())].sort();
  return { source: indexFile, files, index: { file: indexFile, weightMap } };
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

async function readIndex(indexFile: string): Promise<unknown> {
  try {
    return JSON.parse(await fs.readFile(indexFile, 'utf8'));
  } catch (error) {
    throw new UserError(`${indexFile} is not valid JSON: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

function parseIndex(json: unknown, dir: string, indexFile: string): Map<string, string> {
  const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new UserError(`${indexFile}: "weight_map" is missing or not an object.`);
  }
  const map = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    // A shard name is a file in the model folder; a path elsewhere is rejected.
    const plain =
      typeof shard === 'string' &&
      shard === path.basename(shard) &&
      shard !== '..' &&
      shard !== '.';
    if (!plain) {
      throw new UserError(
        `${indexFile}: tensor ${tensor} maps to ${JSON.stringify(shard)}, which is not a file name in the model folder.`,
      );
    }
    map.set(tensor, path.join(dir, shard));
  }
  if (map.size === 0) throw new UserError(`${indexFile}: "weight_map" lists no tensors.`);
  return map;
}
