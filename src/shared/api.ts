/**
 * The typed studio API that the renderer calls, and the IPC channel for each operation.
 *
 * One implementation lives in the main process. The preload exposes it as `window.attune` with
 * one function per operation, so the renderer never names a channel.
 */
import { deserializeError, type SerializedError } from './errors';

export interface StudioInfo {
  /** Application version from package.json. */
  version: string;
  /** TensorFlow.js backend the engine runs on, or null while the engine has not started. */
  backend: string | null;
  /** Node.js platform name, e.g. `linux`, `darwin`, `win32`. */
  platform: string;
}

export interface DatasetSummary {
  id: string;
  title: string;
}

export interface StudioApi {
  getStudioInfo(): Promise<StudioInfo>;
  listDatasets(): Promise<DatasetSummary[]>;
}

export type StudioOperation = keyof StudioApi;

/** IPC channel name of each operation. */
export const IPC_CHANNELS = {
  getStudioInfo: 'studio:get-info',
  listDatasets: 'studio:list-datasets',
} as const satisfies Record<StudioOperation, string>;

export type StudioChannel = (typeof IPC_CHANNELS)[StudioOperation];

/** Value returned by the studio operation `K`. */
export type StudioResult<K extends StudioOperation> = Awaited<ReturnType<StudioApi[K]>>;

/**
 * Envelope that every IPC handler returns. Electron passes only the message of an error thrown in
 * an `ipcMain.handle` handler to the renderer, so failures travel as data and keep their kind.
 */
export type IpcResponse<T> = { ok: true; value: T } | { ok: false; error: SerializedError };

/**
 * The functions the preload exposes as `window.attune`: one per operation, each resolving to the
 * response envelope. The envelope stays a plain object because `contextBridge` copies only the
 * message of a thrown error into the page, so `UserError` and `BugError` would arrive as `Error`.
 */
export type StudioBridge = {
  [K in StudioOperation]: (
    ...args: Parameters<StudioApi[K]>
  ) => Promise<IpcResponse<StudioResult<K>>>;
};

/** Returns the value of a successful response, or throws the error it carries with its kind. */
export function unwrapResponse<T>(response: IpcResponse<T>): T {
  if (response.ok) return response.value;
  throw deserializeError(response.error);
}

/** Wraps a bridge in the studio API, rebuilding errors in the caller's own JavaScript context. */
export function createStudioClient(bridge: StudioBridge): StudioApi {
  return {
    getStudioInfo: async () => unwrapResponse(await bridge.getStudioInfo()),
    listDatasets: async () => unwrapResponse(await bridge.listDatasets()),
  };
}
