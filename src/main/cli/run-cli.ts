import { AttuneError } from '../../shared/errors';
import { type BackendInfo, describeBackend, selectBackend } from '../engine/backend';

/** Exit codes: 0 success, 1 user error, 2 internal bug, 130 cancelled by Ctrl-C. */
export const EXIT = { ok: 0, user: 1, bug: 2, cancelled: 130 } as const;

/**
 * Runs a CLI body with an AbortSignal tied to Ctrl-C. The first Ctrl-C requests the work to stop
 * cleanly (training saves its checkpoint); a second one exits at once. Errors print as one
 * message line, never as a stack trace, except internal bugs.
 */
export function runCli(
  body: (signal: AbortSignal, backend: BackendInfo) => Promise<unknown>,
): void {
  const controller = new AbortController();
  let interrupts = 0;
  process.on('SIGINT', () => {
    interrupts += 1;
    if (interrupts > 1) process.exit(EXIT.cancelled);
    process.stderr.write(
      '\nStopping after the current step; press Ctrl-C again to quit at once.\n',
    );
    controller.abort();
  });
  const fail = (error: unknown) => {
    process.exitCode = exitCodeFor(error);
    // With --json, a program reading stdout gets the failure as the last event too.
    if (process.argv.includes('--json')) {
      const kind = error instanceof AttuneError ? error.kind : 'bug';
      const message = error instanceof Error ? error.message : String(error);
      process.stdout.write(`${JSON.stringify({ type: 'error', kind, message })}\n`);
    }
    process.stderr.write(`\n${formatError(error)}\n`);
    process.exit(process.exitCode);
  };
  const start = async () => {
    const backend = await selectBackend();
    process.stderr.write(`${describeBackend(backend)}\n`);
    // The wasm backend installs handlers that rethrow uncaught errors and print its whole
    // minified source; route every failure through one handler instead.
    process.removeAllListeners('uncaughtException');
    process.removeAllListeners('unhandledRejection');
    process.on('uncaughtException', fail);
    process.on('unhandledRejection', fail);
    return body(controller.signal, backend);
  };
  start().then((code) => process.exit(typeof code === 'number' ? code : EXIT.ok), fail);
}

export function exitCodeFor(error: unknown): number {
  if (error instanceof AttuneError) {
    if (error.kind === 'cancelled') return EXIT.cancelled;
    if (error.kind === 'user') return EXIT.user;
  }
  return EXIT.bug;
}

export function formatError(error: unknown): string {
  if (error instanceof AttuneError && error.kind === 'user') return `error: ${error.message}`;
  if (error instanceof AttuneError && error.kind === 'cancelled')
    return `cancelled: ${error.message}`;
  const stack = error instanceof Error ? (error.stack ?? error.message) : String(error);
  return `internal error (please report it): ${stack}`;
}
