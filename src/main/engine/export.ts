/**
 * Export of any model the studio reads (starter, imported, trained) to a GGUF file or a
 * Hugging Face folder.
 */
import { promises as fs } from 'node:fs';
import { UserError } from '../../shared/errors';
import { saveModelFolder } from './checkpoint';
import { GGUF_EXPORT_TYPES, type GgufExportType, saveGgufModel } from './gguf/gguf-model';
import { type LoadModelOptions, loadModel } from './load-model';

export type ExportTarget =
  | { kind: 'gguf'; file: string; type: GgufExportType }
  | { kind: 'hf'; dir: string };

/** Loads `location` and writes it to `target`. Refuses an existing GGUF file or a non-empty folder. */
export async function exportModel(
  location: string,
  target: ExportTarget,
  options: LoadModelOptions = {},
): Promise<void> {
  if (target.kind === 'gguf') {
    if (!GGUF_EXPORT_TYPES.includes(target.type)) {
      throw new UserError(
        `Unknown GGUF weight type ${JSON.stringify(target.type)}; use ${GGUF_EXPORT_TYPES.join(', ')}.`,
      );
    }
    if (!/\.gguf$/i.test(target.file)) {
      throw new UserError(`GGUF output ${target.file} must be a file name ending in .gguf.`);
    }
    if (await fs.stat(target.file).catch(() => null)) {
      throw new UserError(
        `GGUF output ${target.file} already exists; name a new file, or move the old one away first.`,
      );
    }
  } else {
    const entries = await fs.readdir(target.dir).catch(() => null);
    if (entries && entries.length > 0) {
      throw new UserError(`Output folder ${target.dir} is not empty; choose a new folder.`);
    }
    const stat = await fs.stat(target.dir).catch(() => null);
    if (stat && !stat.isDirectory()) {
      throw new UserError(`Output folder ${target.dir} is a file; choose a folder path.`);
    }
  }
  const loaded = await loadModel(location, options);
  try {
    if (target.kind === 'gguf') {
      await saveGgufModel(target.file, loaded.model, loaded.tokenizer, loaded.meta, {
        type: target.type,
      });
    } else {
      await saveModelFolder(target.dir, loaded.model, loaded.tokenizer, loaded.meta);
    }
  } finally {
    loaded.model.dispose();
  }
}
