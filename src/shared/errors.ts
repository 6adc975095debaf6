/**
 * Error taxonomy shared by the engine, the CLI and the Electron shell.
 *
 * - `UserError`: bad input the user can fix (a file, a setting, a value).
 * - `BugError`: a broken invariant inside Attune; report it.
 * - `CancelledError`: the user asked to stop; never shown as a crash.
 */

export type ErrorKind = 'user' | 'bug' | 'cancelled';

export class AttuneError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.name = kind === 'user' ? 'UserError' : kind === 'bug' ? 'BugError' : 'CancelledError';
  }
}

export class UserError extends AttuneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('user', message, options);
  }
}

export class BugError extends AttuneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('bug', message, options);
  }
}

export class CancelledError extends AttuneError {
  constructor(message = 'Cancelled by request.') {
    super('cancelled', message);
  }
}

/** Plain-object form of an error, safe to send over IPC or HTTP. */
export interface SerializedError {
  kind: ErrorKind;
  message: string;
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof AttuneError) return { kind: error.kind, message: error.message };
  const message = error instanceof Error ? error.message : String(error);
  return { kind: 'bug', message };
}

export function deserializeError(data: SerializedError): AttuneError {
  if (data.kind === 'user') return new UserError(data.message);
  if (data.kind === 'cancelled') return new CancelledError(data.message);
  return new BugError(data.message);
}

/** Throws a BugError when `condition` is false; `message` is built only on failure. */
export function invariant(condition: unknown, message: () => string): asserts condition {
  if (!condition) throw new BugError(message());
}
