/**
 * IPC handlers of the studio API. Each handler checks that the request comes from the Attune
 * window, runs the operation and returns an `IpcResponse` envelope instead of throwing.
 */
import { IPC_CHANNELS, type IpcResponse, type StudioApi } from '../shared/api';
import { BugError, serializeError } from '../shared/errors';

/** The fields of Electron's `IpcMainInvokeEvent` that the handlers read. */
export interface InvokeEvent {
  senderFrame: { url: string } | null;
}

type Handler = (event: InvokeEvent, ...args: unknown[]) => Promise<unknown>;

/** The part of Electron's `ipcMain` that registers handlers. `ipcMain` itself satisfies it. */
export interface HandlerRegistry {
  handle(channel: string, listener: Handler): void;
  removeHandler(channel: string): void;
}

export interface IpcHandlerOptions {
  /** URL the window loads: the dev server in development, `file://…/index.html` otherwise. */
  rendererUrl: string;
  /** Receives errors of kind `bug`, which reach the renderer as a message without a stack. */
  logError?: (line: string, error: unknown) => void;
}

/** Registers one handler per studio operation and returns a function that removes them all. */
export function registerIpcHandlers(
  ipc: HandlerRegistry,
  api: StudioApi,
  options: IpcHandlerOptions,
): () => void {
  const logError = options.logError ?? ((line, error) => console.error(line, error));

  const handle = <T>(channel: string, run: () => Promise<T>): void => {
    ipc.handle(channel, async (event): Promise<IpcResponse<T>> => {
      try {
        checkSender(event, options.rendererUrl);
        return { ok: true, value: await run() };
      } catch (error) {
        const serialized = serializeError(error);
        if (serialized.kind === 'bug') logError(`IPC ${channel} failed:`, error);
        return { ok: false, error: serialized };
      }
    });
  };

  handle(IPC_CHANNELS.getStudioInfo, () => api.getStudioInfo());
  handle(IPC_CHANNELS.listDatasets, () => api.listDatasets());

  return () => {
    for (const channel of Object.values(IPC_CHANNELS)) ipc.removeHandler(channel);
  };
}

function checkSender(event: InvokeEvent, rendererUrl: string): void {
  const senderUrl = event.senderFrame?.url ?? '';
  if (!isTrustedRendererUrl(senderUrl, rendererUrl)) {
    throw new BugError(
      `IPC request rejected: sender ${JSON.stringify(senderUrl)} is not the Attune window ` +
        `(${rendererUrl}).`,
    );
  }
}

/**
 * Returns true when `url` is a page of the renderer at `rendererUrl`. For `file:` URLs the path
 * must match exactly, because every local file shares the origin `null`. For other URLs the
 * origin must match.
 */
export function isTrustedRendererUrl(url: string, rendererUrl: string): boolean {
  const page = parseUrl(url);
  const renderer = parseUrl(rendererUrl);
  if (!page || !renderer || page.protocol !== renderer.protocol) return false;
  if (renderer.protocol === 'file:') return page.pathname === renderer.pathname;
  return page.origin === renderer.origin;
}

// `URL.parse` would do this, but it needs Node 22.1 and the tests run on Node 20.
function parseUrl(text: string): URL | null {
  try {
    return new URL(text);
  } catch {
    return null;
  }
}
