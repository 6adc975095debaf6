/**
 * The settings a run folder was started with, kept in run-settings.json so that `--resume`
 * continues the same run: a resumed run with other settings would train and report a mixture.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../../shared/errors';
import { writeFileAtomically } from './atomic';
import type { RunOptions } from './pipeline';

export const RUN_SETTINGS_FILE = 'run-settings.json';

/** Settings that decide what a run samples and trains; output and export paths are left out. */
export function runSettings(options: RunOptions): Record<string, unknown> {
  const stage = ({ checkpointEvery: _, ...rest }: RunOptions['sft']) => rest;
  return {
    model: options.modelDir,
    dataset: options.datasetId,
    target: options.target ?? null,
    rounds: options.rounds,
    seed: options.seed,
    steering: options.steeringMode,
    sampling: options.sampling,
    steeringDraws: options.steeringDraws,
    promptFormat: options.promptFormat,
    sft: stage(options.sft),
    align: stage(options.align),
    loss: options.loss,
  };
}

export async function saveRunSettings(options: RunOptions): Promise<void> {
  const file = path.join(options.outDir, RUN_SETTINGS_FILE);
  await writeFileAtomically(file, `${JSON.stringify(runSettings(options), null, 2)}\n`);
}

/**
 * Throws a UserError listing every setting that differs from the ones the run in `outDir` was
 * started with. Runs written before the file existed are not checked.
 */
export async function checkResumeSettings(options: RunOptions): Promise<void> {
  const file = path.join(options.outDir, RUN_SETTINGS_FILE);
  const text = await fs.readFile(file, 'utf8').catch(() => null);
  if (text === null) return;
  let saved: Record<string, unknown>;
  try {
    saved = JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new UserError(
      `Cannot resume: ${file} is not valid JSON (${(error as Error).message}). Start a new run with another --out.`,
    );
  }
  const differences = diff(saved, runSettings(options), '');
  if (differences.length > 0) {
    throw new UserError(
      `Cannot resume the run in ${options.outDir} with other settings: ${differences.join('; ')}. ` +
        'Resume with the options it was started with, or start a new run with another --out.',
    );
  }
}

function diff(before: unknown, now: unknown, key: string): string[] {
  if (isRecord(before) && isRecord(now)) {
    // Keys the saved file lacks came with later versions; their defaults match the old runs.
    return Object.keys(before).flatMap((k) => diff(before[k], now[k], key ? `${key}.${k}` : k));
  }
  if (JSON.stringify(before) === JSON.stringify(now)) return [];
  return [`${key} was ${JSON.stringify(before)}, now ${JSON.stringify(now)}`];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
