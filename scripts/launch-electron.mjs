#!/usr/bin/env node
/**
 * Starts the Attune Studio desktop window (`npm start`).
 *
 * npm installs the electron package without running its download script, so the Electron
 * executable may be missing. This script then runs node_modules/electron/install.js once, with a
 * timeout. When the executable is still missing, it explains why and points to the headless CLI.
 * Otherwise it builds the app with electron-vite and starts Electron on the project folder.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const TIMEOUT_ENV = 'ATTUNE_ELECTRON_DOWNLOAD_TIMEOUT';
// An Electron release zip is roughly 100 MB (an estimate), so a slow link needs minutes.
const DEFAULT_TIMEOUT_SECONDS = 300;

/**
 * Returns the path of the Electron executable that `electronDir/path.txt` names under
 * `electronDir/dist`, or null when either file is missing.
 * @param {string} electronDir
 * @returns {string | null}
 */
export function findElectronBinary(electronDir) {
  const pathFile = join(electronDir, 'path.txt');
  if (!existsSync(pathFile)) return null;
  const binary = join(electronDir, 'dist', readFileSync(pathFile, 'utf8').trim());
  return existsSync(binary) ? binary : null;
}

/**
 * Reads the download timeout in seconds from `ATTUNE_ELECTRON_DOWNLOAD_TIMEOUT`.
 * @param {NodeJS.ProcessEnv} env
 * @returns {number}
 */
export function downloadTimeoutSeconds(env) {
  const text = env[TIMEOUT_ENV];
  if (text === undefined || text === '') return DEFAULT_TIMEOUT_SECONDS;
  const seconds = Number(text);
  if (!Number.isFinite(seconds) || seconds <= 0) {
    throw new LaunchError(
      `${TIMEOUT_ENV}=${JSON.stringify(text)} is invalid: expected seconds > 0.`,
    );
  }
  return seconds;
}

/** An expected failure: main() prints its message without a stack trace. */
class LaunchError extends Error {}

/**
 * @typedef {{ code: number | null, signal: NodeJS.Signals | null, timedOut: boolean,
 *   stderr: string }} RunResult
 */

/**
 * Runs a command to completion. With `captureStderr`, stderr is collected instead of shown.
 * @param {string} command
 * @param {string[]} args
 * @param {{ cwd: string, timeoutMs?: number, captureStderr?: boolean }} options
 * @returns {Promise<RunResult>}
 */
function run(command, args, options) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: childEnv(),
      stdio: ['ignore', 'inherit', options.captureStderr ? 'pipe' : 'inherit'],
    });
    let stderr = '';
    let timedOut = false;
    child.stderr?.on('data', (chunk) => {
      stderr += chunk;
    });
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill('SIGTERM');
          }, options.timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new LaunchError(`Could not run ${command}: ${error.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, timedOut, stderr });
    });
  });
}

// ELECTRON_RUN_AS_NODE makes the Electron executable behave as plain Node and open no window.
function childEnv() {
  const env = { ...process.env };
  delete env.ELECTRON_RUN_AS_NODE;
  return env;
}

/**
 * Runs electron's own install script once. Returns null on success, else why it failed.
 * @param {string} electronDir
 * @param {number} timeoutSeconds
 * @returns {Promise<string | null>}
 */
async function downloadElectron(electronDir, timeoutSeconds) {
  console.log(
    `The Electron executable is not installed. Downloading it once with ` +
      `node_modules/electron/install.js (timeout ${timeoutSeconds} s)...`,
  );
  const result = await run(process.execPath, [join(electronDir, 'install.js')], {
    cwd: electronDir,
    timeoutMs: timeoutSeconds * 1000,
    captureStderr: true,
  });
  if (result.timedOut) return `the download did not finish within ${timeoutSeconds} s`;
  if (result.code !== 0) {
    const firstLine = result.stderr.trim().split('\n')[0];
    return firstLine || `install.js exited with ${result.signal ?? `code ${result.code}`}`;
  }
  return null;
}

/** @param {string} reason */
function printMissingBinary(reason) {
  console.error(
    [
      '',
      'Attune Studio cannot open its desktop window: the Electron executable is not installed.',
      `Downloading it failed: ${reason}.`,
      '',
      'The headless CLI runs the same engine without a window:',
      '  npm run attune -- --help',
      '',
      'To get the desktop window, run `node node_modules/electron/install.js` where github.com',
      'is reachable (or set ELECTRON_MIRROR to a mirror of the Electron releases), then npm start.',
    ].join('\n'),
  );
}

/** @returns {string} */
function resolveElectronDir() {
  try {
    const require = createRequire(join(PROJECT_ROOT, 'package.json'));
    return dirname(require.resolve('electron/package.json'));
  } catch {
    throw new LaunchError('The electron package is not installed. Run `npm ci`, then npm start.');
  }
}

/** @param {import('node:child_process').ChildProcess} child */
function forwardSignals(child) {
  for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
    process.on(signal, () => child.kill(signal));
  }
}

async function main() {
  const electronDir = resolveElectronDir();
  let binary = findElectronBinary(electronDir);
  if (!binary) {
    const failure = await downloadElectron(electronDir, downloadTimeoutSeconds(process.env));
    binary = findElectronBinary(electronDir);
    if (!binary) {
      printMissingBinary(failure ?? 'install.js finished, but dist/ contains no executable');
      return 1;
    }
  }

  const electronVite = join(
    PROJECT_ROOT,
    'node_modules',
    'electron-vite',
    'bin',
    'electron-vite.js',
  );
  const build = await run(process.execPath, [electronVite, 'build'], { cwd: PROJECT_ROOT });
  if (build.code !== 0) {
    throw new LaunchError(
      'electron-vite build failed. Fix the errors above, then run npm start again.',
    );
  }

  // NOTE: this start step has not yet run against a real Electron executable.
  const child = spawn(binary, ['.', ...process.argv.slice(2)], {
    cwd: PROJECT_ROOT,
    env: childEnv(),
    stdio: 'inherit',
  });
  forwardSignals(child);
  return new Promise((resolvePromise) => {
    child.on('error', (error) => {
      console.error(`Could not start ${binary}: ${error.message}`);
      resolvePromise(1);
    });
    child.on('close', (code, signal) => {
      if (signal) console.error(`Electron exited on signal ${signal}.`);
      resolvePromise(code ?? 1);
    });
  });
}

const invokedDirectly = process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      console.error(error instanceof LaunchError ? error.message : error);
      process.exitCode = 1;
    },
  );
}
