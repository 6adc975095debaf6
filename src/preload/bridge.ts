/**
 * Builds the `window.attune` bridge from an IPC invoke function. Kept free of Electron imports so
 * tests can drive it with an in-process registry.
 */
import {
  IPC_CHANNELS,
  type IpcResponse,
  type StudioBridge,
  type StudioChannel,
} from '../shared/api';

export type Invoke = (channel: StudioChannel, ...args: unknown[]) => Promise<unknown>;

/** Returns one function per studio operation. No function takes a channel name from the page. */
export function createStudioBridge(invoke: Invoke): StudioBridge {
  const call = <T>(channel: StudioChannel) => invoke(channel) as Promise<IpcResponse<T>>;
  return {
    getStudioInfo: () => call(IPC_CHANNELS.getStudioInfo),
    listDatasets: () => call(IPC_CHANNELS.listDatasets),
  };
}
