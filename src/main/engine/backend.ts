import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';

/** Outcome of backend selection, logged once at start. */
export interface BackendInfo {
  name: string;
  /** Reason each earlier candidate was skipped, in the order tried. */
  skipped: { candidate: string; reason: string }[];
}

type Loader = () => Promise<string>;

// Native packages register the 'tensorflow' backend when their binary loads. They download
// libtensorflow at install time, so they are optional dependencies and usually absent.
const CANDIDATES: { candidate: string; load: Loader }[] = [
  { candidate: '@tensorflow/tfjs-node-gpu', load: () => loadNative('@tensorflow/tfjs-node-gpu') },
  { candidate: '@tensorflow/tfjs-node', load: () => loadNative('@tensorflow/tfjs-node') },
  { candidate: '@tensorflow/tfjs-backend-wasm', load: loadWasm },
  { candidate: 'cpu', load: loadCpu },
];

async function loadNative(packageName: string): Promise<string> {
  // Importing a package whose binding is absent registers its kernels and then throws, which
  // leaves duplicate-registration warnings behind; check for the binding first.
  const binding = findNativeBinding(packageName);
  if (!binding) throw new Error('its native binding is absent (libtensorflow was not installed)');
  await import(/* @vite-ignore */ packageName);
  if (!(await tf.setBackend('tensorflow'))) throw new Error('the tensorflow backend did not start');
  return 'tensorflow';
}

function findNativeBinding(packageName: string): string | null {
  let root: string;
  try {
    const require = createRequire(import.meta.url);
    root = path.dirname(require.resolve(`${packageName}/package.json`));
  } catch {
    throw new Error('not installed');
  }
  const lib = path.join(root, 'lib');
  if (!existsSync(lib)) return null;
  for (const entry of readdirSync(lib)) {
    const candidate = path.join(lib, entry, 'tfjs_binding.node');
    if (entry.startsWith('napi-v') && existsSync(candidate)) return candidate;
  }
  return null;
}

async function loadWasm(): Promise<string> {
  await import('@tensorflow/tfjs-backend-wasm');
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not start');
  return 'wasm';
}

async function loadCpu(): Promise<string> {
  if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend did not start');
  return 'cpu';
}

let selected: Promise<BackendInfo> | null = null;

/**
 * Selects the fastest TensorFlow.js backend that loads: tfjs-node-gpu, tfjs-node, wasm, cpu.
 * Runs once per process; later calls return the first result. `ATTUNE_BACKEND=wasm` (or any
 * candidate's backend name) skips the earlier candidates.
 */
export function selectBackend(log: (line: string) => void = () => {}): Promise<BackendInfo> {
  if (!selected) selected = trySelect(log);
  return selected;
}

async function trySelect(log: (line: string) => void): Promise<BackendInfo> {
  const forced = process.env.ATTUNE_BACKEND;
  const skipped: BackendInfo['skipped'] = [];
  for (const { candidate, load } of CANDIDATES) {
    if (
      forced &&
      !candidate.endsWith(forced) &&
      !(forced === 'tensorflow' && candidate.includes('node'))
    ) {
      skipped.push({ candidate, reason: `ATTUNE_BACKEND=${forced}` });
      continue;
    }
    try {
      const name = await load();
      await tf.ready();
      const info = { name, skipped };
      log(describeBackend(info));
      return info;
    } catch (error) {
      skipped.push({ candidate, reason: firstLine(error) });
    }
  }
  throw new Error(`No TensorFlow.js backend could start: ${JSON.stringify(skipped)}`);
}

export function describeBackend(info: BackendInfo): string {
  const reasons = info.skipped.map((s) => `${s.candidate} skipped (${s.reason})`);
  return [`backend: ${info.name}`, ...reasons].join('; ');
}

function firstLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split('\n')[0].slice(0, 200);
}
