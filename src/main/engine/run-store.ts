/**
 * Files of one run folder: samples, training checkpoints and the pointer to the newest one.
 *
 *   <run>/before-samples.json        measurement of the input model, reused on resume
 *   <run>/checkpoints/<stage>-step-000120/   model folder + trainer-state.json + optimizer.safetensors
 *   <run>/checkpoints/latest.json    { stage, step, dir } of the newest complete checkpoint
 *   <run>/stage1-model/              the stage-1 result, the frozen KTO reference
 *   <run>/model/                     the trained model
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../../shared/errors';
import { writeFileAtomically, writeFolderAtomically } from './atomic';
import { type ModelMeta, modelFolderFiles } from './checkpoint';
import type { LlamaModel } from './model';
import type { AdamWState } from './optimizer';
import { decodeSafetensors, encodeSafetensors, type NamedTensor } from './safetensors';
import type { TextTokenizer } from './tokenizer';
import type { TrainerState } from './trainer';

export interface LatestCheckpoint {
  stage: TrainerState['stage'];
  step: number;
  totalSteps: number;
  dir: string;
}

/** Checkpoints kept per stage; older ones are removed after a newer one is complete. */
const KEEP_PER_STAGE = 2;

export function checkpointsDir(runDir: string): string {
  return path.join(runDir, 'checkpoints');
}

/** Writes a checkpoint folder atomically, then points latest.json at it. */
export async function saveTrainingCheckpoint(
  runDir: string,
  model: LlamaModel,
  tokenizer: TextTokenizer,
  meta: ModelMeta,
  state: TrainerState,
): Promise<string> {
  const name = `${state.stage}-step-${String(state.step).padStart(6, '0')}`;
  const dir = path.join(checkpointsDir(runDir), name);
  const moments = new Map<string, NamedTensor>();
  for (const [param, moment] of Object.entries(state.optimizer.moments)) {
    moments.set(`m/${param}`, { shape: moment.shape, data: moment.m });
    moments.set(`v/${param}`, { shape: moment.shape, data: moment.v });
  }
  const files = modelFolderFiles(model, tokenizer, meta);
  files.set('optimizer.safetensors', encodeSafetensors(moments));
  files.set(
    'trainer-state.json',
    `${JSON.stringify({ stage: state.stage, step: state.step, totalSteps: state.totalSteps, optimizerStep: state.optimizer.step }, null, 2)}\n`,
  );
  await writeFolderAtomically(dir, files);
  const latest: LatestCheckpoint = {
    stage: state.stage,
    step: state.step,
    totalSteps: state.totalSteps,
    dir: name,
  };
  await writeFileAtomically(
    path.join(checkpointsDir(runDir), 'latest.json'),
    `${JSON.stringify(latest, null, 2)}\n`,
  );
  await pruneCheckpoints(runDir, state.stage);
  return dir;
}

async function pruneCheckpoints(runDir: string, stage: string): Promise<void> {
  const entries = await fs.readdir(checkpointsDir(runDir));
  const ours = entries.filter((e) => new RegExp(`^${stage}-step-\\d{6}$`).test(e)).sort();
  for (const old of ours.slice(0, -KEEP_PER_STAGE)) {
    await fs.rm(path.join(checkpointsDir(runDir), old), { recursive: true, force: true });
  }
}

export async function readLatestCheckpoint(runDir: string): Promise<LatestCheckpoint | null> {
  const file = path.join(checkpointsDir(runDir), 'latest.json');
  const text = await fs.readFile(file, 'utf8').catch(() => null);
  if (text === null) return null;
  try {
    const latest = JSON.parse(text) as LatestCheckpoint;
    if (!['sft', 'align'].includes(latest.stage) || !Number.isInteger(latest.step))
      throw new Error('bad fields');
    return latest;
  } catch (error) {
    throw new UserError(
      `${file} is corrupt (${(error as Error).message}); remove it to start training over.`,
    );
  }
}

/** Reads the optimizer moments and step count of a checkpoint folder. */
export async function readTrainerState(checkpointDir: string): Promise<TrainerState> {
  const stateFile = path.join(checkpointDir, 'trainer-state.json');
  const momentsFile = path.join(checkpointDir, 'optimizer.safetensors');
  let state: {
    stage: TrainerState['stage'];
    step: number;
    totalSteps: number;
    optimizerStep: number;
  };
  try {
    state = JSON.parse(await fs.readFile(stateFile, 'utf8'));
  } catch (error) {
    throw new UserError(
      `Checkpoint state ${stateFile} is missing or corrupt: ${(error as Error).message}`,
    );
  }
  const buffer = await fs.readFile(momentsFile).catch((error) => {
    throw new UserError(
      `Checkpoint optimizer state ${momentsFile} cannot be read: ${error.message}`,
    );
  });
  const { tensors } = decodeSafetensors(buffer, momentsFile);
  const moments: AdamWState['moments'] = {};
  for (const [name, tensor] of tensors) {
    const [kind, param] = [name.slice(0, 1), name.slice(2)];
    moments[param] ??= { m: new Float32Array(0), v: new Float32Array(0), shape: tensor.shape };
    if (kind === 'm') moments[param].m = tensor.data;
    else moments[param].v = tensor.data;
  }
  return {
    stage: state.stage,
    step: state.step,
    totalSteps: state.totalSteps,
    optimizer: { step: state.optimizerStep, moments },
  };
}
