import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { downloadTimeoutSeconds, findElectronBinary } from '../../scripts/launch-electron.mjs';

const SCRIPT = 'scripts/launch-electron.mjs';
const ELECTRON_DIR = dirname(createRequire(import.meta.url).resolve('electron/package.json'));
const HAS_BINARY = findElectronBinary(ELECTRON_DIR) !== null;

const scratch: string[] = [];
function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'attune-launch-'));
  scratch.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

describe('findElectronBinary', () => {
  it('returns null without path.txt', () => {
    const dir = scratchDir();
    mkdirSync(join(dir, 'dist'));
    writeFileSync(join(dir, 'dist', 'electron'), '');
    expect(findElectronBinary(dir)).toBeNull();
  });

  it('returns null when dist lacks the file', () => {
    const dir = scratchDir();
    writeFileSync(join(dir, 'path.txt'), 'electron');
    expect(findElectronBinary(dir)).toBeNull();
  });

  it('returns the named executable', () => {
    const dir = scratchDir();
    mkdirSync(join(dir, 'dist'));
    writeFileSync(join(dir, 'dist', 'electron'), '');
    writeFileSync(join(dir, 'path.txt'), 'electron\n');
    expect(findElectronBinary(dir)).toBe(join(dir, 'dist', 'electron'));
  });
});

describe('downloadTimeoutSeconds', () => {
  it('defaults to 300 s', () => {
    expect(downloadTimeoutSeconds({})).toBe(300);
    expect(downloadTimeoutSeconds({ ATTUNE_ELECTRON_DOWNLOAD_TIMEOUT: '' })).toBe(300);
  });

  it('reads fractional seconds', () => {
    expect(downloadTimeoutSeconds({ ATTUNE_ELECTRON_DOWNLOAD_TIMEOUT: '2.5' })).toBe(2.5);
  });

  for (const text of ['0', '-1', 'abc', 'Infinity']) {
    it(`rejects ${text}`, () => {
      expect(() => downloadTimeoutSeconds({ ATTUNE_ELECTRON_DOWNLOAD_TIMEOUT: text })).toThrow(
        `ATTUNE_ELECTRON_DOWNLOAD_TIMEOUT="${text}" is invalid: expected seconds > 0.`,
      );
    });
  }
});

interface LaunchResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `npm start`'s script with the Electron download pointed at `mirror`. */
function launch(mirror: string, extraEnv: Record<string, string> = {}): Promise<LaunchResult> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // npm passes .npmrc settings such as electron_mirror as npm_config_* variables, and those take
  // precedence over ELECTRON_MIRROR in @electron/get.
  for (const name of Object.keys(env)) {
    if (/^npm_(package_)?config_electron/i.test(name)) delete env[name];
  }
  Object.assign(env, {
    ELECTRON_MIRROR: mirror,
    electron_config_cache: scratchDir(),
    ...extraEnv,
  });
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCRIPT], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Starts an HTTP server on 127.0.0.1 that records request paths and replies 404 or never. */
async function startMirror(
  respond: 'not-found' | 'hang',
): Promise<{ url: string; paths: string[]; server: Server }> {
  const paths: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((request, response) => {
    paths.push(request.url ?? '');
    if (respond === 'not-found') response.writeHead(404).end('not found');
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('close', () => {
    for (const socket of sockets) socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/`, paths, server };
}

function expectFallbackMessage(result: LaunchResult): void {
  expect(result.code).toBe(1);
  expect(result.stderr).toContain('cannot open its desktop window');
  expect(result.stderr).toContain('npm run attune -- --help');
  expect(result.stderr).not.toMatch(/^\s+at /m);
}

describe.skipIf(HAS_BINARY)('launch without the Electron executable', () => {
  let mirror: Awaited<ReturnType<typeof startMirror>> | undefined;
  afterEach(async () => {
    const server = mirror?.server;
    mirror = undefined;
    if (server) await new Promise((resolve) => server.close(resolve));
  });

  it('explains a failed download', async () => {
    mirror = await startMirror('not-found');
    const result = await launch(mirror.url);
    expectFallbackMessage(result);
    expect(result.stdout).toContain('Downloading it once with node_modules/electron/install.js');
    expect(result.stderr).toMatch(/Downloading it failed: .*404/);
    expect(mirror.paths).toHaveLength(1);
    expect(mirror.paths[0]).toMatch(/electron-v[\d.]+-\w+-\w+\.zip$/);
  });

  it('stops a download that hangs', async () => {
    mirror = await startMirror('hang');
    const started = Date.now();
    const result = await launch(mirror.url, { ATTUNE_ELECTRON_DOWNLOAD_TIMEOUT: '1' });
    expectFallbackMessage(result);
    expect(result.stderr).toContain(
      'Downloading it failed: the download did not finish within 1 s.',
    );
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('rejects an invalid timeout', async () => {
    mirror = await startMirror('not-found');
    const result = await launch(mirror.url, { ATTUNE_ELECTRON_DOWNLOAD_TIMEOUT: 'soon' });
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(
      'ATTUNE_ELECTRON_DOWNLOAD_TIMEOUT="soon" is invalid: expected seconds > 0.',
    );
    expect(mirror.paths).toEqual([]);
  });
});
