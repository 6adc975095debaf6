/**
 * Memory a model load needs, the check that rejects a model this machine cannot hold before any
 * weight is read, and the progress events of a load.
 */
import os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { invariant, UserError } from '../../shared/errors';

/** Progress of `loadModelFolder`: bytes read from the weight files, then tensors converted. */
export interface LoadProgress {
  stage: 'read' | 'convert';
  done: number;
  total: number;
  unit: 'bytes' | 'tensors';
  /** Weight file being read or converted. */
  file: string;
}

/**
 * Largest WebAssembly heap of @tensorflow/tfjs-backend-wasm 4.22: `getHeapMax()` in
 * wasm-out/tfjs-backend-wasm.js returns 4 GiB minus one 64 KiB page.
 */
export const WASM_HEAP_MAX_BYTES = 4_294_901_760;

/** Size of one read buffer of the weight loader. */
export const READ_CHUNK_BYTES = 8 * 1024 * 1024;

/**
 * Upper bound of the loader's reusable buffers: two raw chunks (a tensor and the embedding it is
 * compared with) and two float32 copies of 16-bit chunks, each twice the raw size.
 */
const LOAD_BUFFER_BYTES = 6 * READ_CHUNK_BYTES;

/**
 * Estimates the bytes of memory a load takes at its peak. The rule: 4 bytes per parameter for
 * the float32 weights the backend keeps, plus a float32 copy of the largest tensor (built in
 * JavaScript before the backend copies it), plus the read buffers. Without
 * `largestTensorElements`, the largest tensor is taken as a third of the parameters, because the
 * token embedding of small Llama and Qwen2 models is about that share (Qwen2.5-0.5B: 136M of 494M).
 */
export function estimateLoadBytes(
  parameterCount: number,
  largestTensorElements = Math.ceil(parameterCount / 3),
): number {
  return 4 * parameterCount + 4 * largestTensorElements + LOAD_BUFFER_BYTES;
}

export interface FitOptions {
  /** Bytes the load may use; defaults to the memory the OS reports free to this process. */
  availableBytes?: number;
  /** Elements of the largest tensor, when known; see `estimateLoadBytes`. */
  largestTensorElements?: number;
  /** TensorFlow.js backend that will hold the weights; defaults to the active one. */
  backend?: string;
}

/**
 * Throws a UserError when loading `parameterCount` float32 parameters would exceed the memory
 * available, or on the wasm backend the 4 GiB heap. Typed arrays live outside V8's heap, so
 * V8's heap limit plays no part. `source` names the weight file in the message.
 */
export function assertModelFits(
  parameterCount: number,
  source: string,
  options: FitOptions = {},
): void {
  invariant(
    Number.isSafeInteger(parameterCount) && parameterCount >= 0,
    () => `assertModelFits: parameterCount must be a non-negative integer, got ${parameterCount}.`,
  );
  const needed = estimateLoadBytes(parameterCount, options.largestTensorElements);
  const available = options.availableBytes ?? availableMemoryBytes();
  const systemShortfall = needed / Math.max(available, 1);
  const backend = options.backend ?? tf.getBackend();
  if (backend === 'wasm') {
    // Tensors already loaded (a reference model, say) share the one heap.
    const inUse = tf.getBackend() === 'wasm' ? tf.memory().numBytes : 0;
    const wasmFree = Math.max(WASM_HEAP_MAX_BYTES - inUse, 0);
    const weightBytes = 4 * parameterCount;
    const wasmShortfall = weightBytes / Math.max(wasmFree, 1);
    if (wasmShortfall > 1 && wasmShortfall >= systemShortfall) {
      throw new UserError(wasmMessage(parameterCount, source, weightBytes, wasmFree, inUse));
    }
  }
  if (systemShortfall > 1) {
    const limitSet = options.availableBytes !== undefined;
    throw new UserError(systemMessage(parameterCount, source, needed, available, limitSet));
  }
}

/**
 * Returns the free memory of this process. `process.availableMemory()` (Node 20.13+) also applies
 * cgroup limits on Linux.
 */
export function availableMemoryBytes(): number {
  const fromProcess = process.availableMemory?.();
  return typeof fromProcess === 'number' && fromProcess > 0 ? fromProcess : os.freemem();
}

function systemMessage(
  parameterCount: number,
  source: string,
  needed: number,
  available: number,
  limitSet: boolean,
): string {
  const where = limitSet
    ? 'is the memory limit set for this load'
    : `is free on this machine (${formatBytes(os.totalmem())} total)`;
  return (
    `${source}: not enough memory to load ${formatCount(parameterCount)} parameters. ` +
    `As float32 they need about ${formatBytes(needed)} (${needed} bytes, counting conversion ` +
    `buffers), but ${formatBytes(available)} (${available} bytes) ${where}. ` +
    'Choose a model with fewer parameters or close other programs. A quantized file needs the ' +
    'same memory, because the engine expands every weight to float32.'
  );
}

function wasmMessage(
  parameterCount: number,
  source: string,
  weightBytes: number,
  wasmFree: number,
  inUse: number,
): string {
  const maxParameters = Math.floor(wasmFree / 4);
  return (
    `${source}: ${formatCount(parameterCount)} parameters need ${formatBytes(weightBytes)} ` +
    `(${weightBytes} bytes) of WebAssembly memory as float32, but the wasm backend ` +
    '(@tensorflow/tfjs-backend-wasm) addresses at most 4 GiB, and ' +
    `${formatBytes(wasmFree)} (${wasmFree} bytes) of it is free (${formatBytes(inUse)} holds ` +
    'tensors already loaded). Install @tensorflow/tfjs-node, whose native backend has no 4 GiB ' +
    `limit, or choose a model with at most about ${formatCount(maxParameters)} parameters.`
  );
}

function formatCount(count: number): string {
  return count.toLocaleString('en-US');
}

function formatBytes(bytes: number): string {
  const gib = bytes / 2 ** 30;
  return gib >= 1 ? `${gib.toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/**
 * Throws a UserError naming `tensor` and `source` when `values` contains NaN or infinity. Such a
 * model generates only garbage, and would otherwise measure as a model that names no category.
 */
export function assertFiniteWeights(values: Float32Array, tensor: string, source: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      throw new UserError(
        `${source}: tensor ${tensor} contains ${values[i]} at element ${i}, so the weights are invalid. Download or export the model again.`,
      );
    }
  }
}
