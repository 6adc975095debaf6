import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { listDatasets } from '../../src/main/engine/datasets';
import {
  type HandlerRegistry,
  type InvokeEvent,
  isTrustedRendererUrl,
  registerIpcHandlers,
} from '../../src/main/ipc';
import { createStudioService } from '../../src/main/studio';
import { createStudioBridge } from '../../src/preload/bridge';
import { createStudioClient, IPC_CHANNELS, type StudioApi } from '../../src/shared/api';
import { BugError, CancelledError, UserError } from '../../src/shared/errors';

const RENDERER_URL = 'file:///opt/attune/out/renderer/index.html';
const VERSION = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;

type Listener = (event: InvokeEvent, ...args: unknown[]) => Promise<unknown>;

/**
 * In-process stand-in for `ipcMain` and `ipcRenderer.invoke`, because the Electron executable is
 * not installed here. Responses pass through `structuredClone`, the algorithm Electron IPC
 * serializes with, so a value that cannot cross IPC fails here too.
 */
class InProcessIpc implements HandlerRegistry {
  readonly handlers = new Map<string, Listener>();

  handle(channel: string, listener: Listener): void {
    if (this.handlers.has(channel))
      throw new Error(`A handler for '${channel}' is already registered.`);
    this.handlers.set(channel, listener);
  }

  removeHandler(channel: string): void {
    this.handlers.delete(channel);
  }

  async invoke(channel: string, senderUrl: string | null, ...args: unknown[]): Promise<unknown> {
    const listener = this.handlers.get(channel);
    if (!listener) throw new Error(`No handler registered for '${channel}'`);
    const event = { senderFrame: senderUrl === null ? null : { url: senderUrl } };
    return structuredClone(await listener(event, ...args));
  }
}

const disposers: (() => void)[] = [];
afterEach(() => {
  for (const dispose of disposers.splice(0)) dispose();
});

/** Connects `api` through handlers, bridge and client, as the desktop window does. */
function connect(
  api: StudioApi,
  senderUrl: string | null = RENDERER_URL,
  logged: unknown[] = [],
): { client: StudioApi; ipc: InProcessIpc } {
  const ipc = new InProcessIpc();
  const dispose = registerIpcHandlers(ipc, api, {
    rendererUrl: RENDERER_URL,
    logError: (_line, error) => logged.push(error),
  });
  disposers.push(dispose);
  const bridge = createStudioBridge((channel, ...args) => ipc.invoke(channel, senderUrl, ...args));
  return { client: createStudioClient(bridge), ipc };
}

/** Returns a studio whose every operation throws `error`. */
function failingStudio(error: unknown): StudioApi {
  const fail = async (): Promise<never> => {
    throw error;
  };
  return { getStudioInfo: fail, listDatasets: fail };
}

describe('studio IPC round trip', () => {
  it('returns studio info', async () => {
    const { client } = connect(createStudioService({ version: VERSION }));
    const info = await client.getStudioInfo();
    expect(info.version).toBe(VERSION);
    expect(info.platform).toBe(process.platform);
    expect(info.backend).toBeNull();
  });

  it('reports the engine backend once known', async () => {
    const studio = createStudioService({
      version: VERSION,
      platform: 'linux',
      backend: () => 'wasm',
    });
    const { client } = connect(studio);
    expect(await client.getStudioInfo()).toEqual({
      version: VERSION,
      backend: 'wasm',
      platform: 'linux',
    });
  });

  it('lists the engine datasets', async () => {
    const { client } = connect(createStudioService({ version: VERSION }));
    const datasets = await client.listDatasets();
    expect(datasets).toEqual(listDatasets());
    expect(datasets.length).toBeGreaterThan(0);
    expect(new Set(datasets.map((d) => d.id)).size).toBe(datasets.length);
    for (const dataset of datasets) {
      expect(dataset.id).toMatch(/\S/);
      expect(dataset.title).toMatch(/\S/);
    }
  });
});

describe('handler registration', () => {
  it('registers every channel', () => {
    const { ipc } = connect(createStudioService({ version: VERSION }));
    expect([...ipc.handlers.keys()].sort()).toEqual(Object.values(IPC_CHANNELS).sort());
  });

  it('uses distinct channel names', () => {
    const channels = Object.values(IPC_CHANNELS);
    expect(new Set(channels).size).toBe(channels.length);
  });

  it('removes every handler on dispose', () => {
    const ipc = new InProcessIpc();
    const dispose = registerIpcHandlers(ipc, createStudioService({ version: VERSION }), {
      rendererUrl: RENDERER_URL,
    });
    dispose();
    expect(ipc.handlers.size).toBe(0);
  });
});

describe('errors across IPC', () => {
  const cases = [
    {
      name: 'UserError',
      thrown: new UserError('Row 3 of x.csv is invalid.'),
      type: UserError,
      kind: 'user',
    },
    {
      name: 'BugError',
      thrown: new BugError('Shape [2, 3] is not [3, 2].'),
      type: BugError,
      kind: 'bug',
    },
    {
      name: 'CancelledError',
      thrown: new CancelledError(),
      type: CancelledError,
      kind: 'cancelled',
    },
    {
      name: 'TypeError as bug',
      thrown: new TypeError('x is undefined'),
      type: BugError,
      kind: 'bug',
    },
    { name: 'string as bug', thrown: 'plain string', type: BugError, kind: 'bug' },
  ] as const;

  for (const { name, thrown, type, kind } of cases) {
    it(`rebuilds ${name}`, async () => {
      const { client } = connect(failingStudio(thrown));
      const error = await client.listDatasets().then(
        () => null,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(type);
      expect((error as BugError).kind).toBe(kind);
      expect((error as Error).message).toBe(thrown instanceof Error ? thrown.message : thrown);
    });
  }

  it('logs bug errors with their stack', async () => {
    const logged: unknown[] = [];
    const thrown = new TypeError('x is undefined');
    const { client } = connect(failingStudio(thrown), RENDERER_URL, logged);
    await expect(client.getStudioInfo()).rejects.toThrow('x is undefined');
    expect(logged).toEqual([thrown]);
  });

  it('does not log user errors', async () => {
    const logged: unknown[] = [];
    const { client } = connect(failingStudio(new UserError('bad row')), RENDERER_URL, logged);
    await expect(client.getStudioInfo()).rejects.toThrow('bad row');
    expect(logged).toEqual([]);
  });
});

describe('sender check', () => {
  const untrusted = [
    'https://attacker.example/index.html',
    'file:///tmp/other.html',
    'about:blank',
    '',
    null,
  ];

  for (const senderUrl of untrusted) {
    it(`rejects sender ${JSON.stringify(senderUrl)}`, async () => {
      let calls = 0;
      const studio: StudioApi = {
        getStudioInfo: async () => {
          calls += 1;
          return { version: VERSION, backend: null, platform: 'linux' };
        },
        listDatasets: async () => [],
      };
      const { client } = connect(studio, senderUrl);
      const error = await client.getStudioInfo().then(
        () => null,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(BugError);
      expect((error as Error).message).toMatch(
        /IPC request rejected: sender .* is not the Attune window/,
      );
      expect(calls).toBe(0);
    });
  }

  it('accepts the renderer page with a hash', async () => {
    const { client } = connect(
      createStudioService({ version: VERSION }),
      `${RENDERER_URL}#/datasets`,
    );
    expect((await client.getStudioInfo()).version).toBe(VERSION);
  });
});

describe('isTrustedRendererUrl', () => {
  const dev = 'http://localhost:5173/';
  const table: [url: string, renderer: string, trusted: boolean][] = [
    [RENDERER_URL, RENDERER_URL, true],
    [`${RENDERER_URL}?tab=1#top`, RENDERER_URL, true],
    ['file:///opt/attune/out/renderer/other.html', RENDERER_URL, false],
    ['file:///etc/passwd', RENDERER_URL, false],
    ['http://localhost:5173/src/main.tsx', dev, true],
    ['http://localhost:5174/', dev, false],
    ['http://127.0.0.1:5173/', dev, false],
    ['https://localhost:5173/', dev, false],
    ['http://localhost:5173/', RENDERER_URL, false],
    ['not a url', dev, false],
    [dev, 'not a url', false],
  ];

  for (const [url, renderer, trusted] of table) {
    it(`${trusted ? 'trusts' : 'rejects'} ${url} for ${renderer}`, () => {
      expect(isTrustedRendererUrl(url, renderer)).toBe(trusted);
    });
  }
});
