import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../../shared/errors';

const FILESYSTEM_REASONS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'a parent of it is a file',
  EISDIR: 'it is a folder',
  ENOSPC: 'the disk is full',
  EROFS: 'the file system is read-only',
  EDQUOT: 'the disk quota is exceeded',
};

/**
 * Turns a file system error the user can fix (permissions, full disk, a file where a folder
 * should be) into a UserError naming `target`. Other errors are returned unchanged.
 */
export function writeError(error: unknown, target: string): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const reason = code ? FILESYSTEM_REASONS[code] : undefined;
  if (!reason) return error;
  return new UserError(
    `Cannot write ${target}: ${reason} (${code}). Choose another location or free the space.`,
    { cause: error },
  );
}

/** Writes `contents` to `file` through a temporary sibling and a rename, so readers never see half a file. */
export async function writeFileAtomically(file: string, contents: string | Buffer): Promise<void> {
  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(temp, contents);
    await fs.rename(temp, file);
  } catch (error) {
    await fs.rm(temp, { force: true }).catch(() => undefined);
    throw writeError(error, file);
  }
}

/**
 * Writes a whole folder: the files go into a temporary sibling folder, which then replaces
 * `dir`. A process killed midway leaves either the old folder or the new one in place, plus at
 * most a stale `*.tmp-*` or `*.old-*` sibling; `dir` itself is never half written.
 */
export async function writeFolderAtomically(
  dir: string,
  files: Map<string, string | Buffer>,
): Promise<void> {
  const parent = path.dirname(path.resolve(dir));
  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const temp = `${dir}.tmp-${suffix}`;
  const old = `${dir}.old-${suffix}`;
  try {
    await fs.mkdir(parent, { recursive: true });
    await fs.mkdir(temp);
  } catch (error) {
    throw writeError(error, dir);
  }
  try {
    for (const [name, contents] of files) await fs.writeFile(path.join(temp, name), contents);
    const exists = await fs.stat(dir).then(
      () => true,
      () => false,
    );
    if (exists) await fs.rename(dir, old);
    await fs.rename(temp, dir);
    if (exists) await fs.rm(old, { recursive: true, force: true });
  } catch (error) {
    await fs.rm(temp, { recursive: true, force: true }).catch(() => undefined);
    throw writeError(error, dir);
  }
}
