/**
 * The main-process implementation of the studio API. It calls the engine directly and imports
 * nothing from Electron, so tests and the CLI can construct it under plain Node.
 */
import type { StudioApi } from '../shared/api';
import { listDatasets } from './engine/datasets';

export interface StudioServiceOptions {
  /** Application version, `app.getVersion()` in Electron. */
  version: string;
  /** Defaults to `process.platform`. */
  platform?: string;
  /** Name of the engine's TensorFlow.js backend, or null while the engine has not started. */
  backend?: () => string | null;
}

export function createStudioService(options: StudioServiceOptions): StudioApi {
  const platform = options.platform ?? process.platform;
  const backend = options.backend ?? (() => null);
  return {
    getStudioInfo: async () => ({ version: options.version, backend: backend(), platform }),
    // NOTE: engine calls run on the main thread. Sampling and training must move to a worker
    // before they are exposed here, or the window stops responding while they run.
    listDatasets: async () => listDatasets(),
  };
}
