import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/main/engine/backend';

/** Starts the same backend the engine selects (wasm on machines without libtensorflow). */
export async function useEngineBackend(): Promise<typeof tf> {
  await selectBackend();
  return tf;
}
