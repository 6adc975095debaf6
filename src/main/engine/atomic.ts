import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Writes `contents` to `file` through a temporary sibling and a rename, so readers never see half a file. */
export async function writeFileAtomically(file: string, contents: string | Buffer): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await fs.writeFile(temp, contents);
    await fs.rename(temp, file);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
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
  await fs.mkdir(parent, { recursive: true });
  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const temp = `${dir}.tmp-${suffix}`;
  const old = `${dir}.old-${suffix}`;
  await fs.mkdir(temp);
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
    await fs.rm(temp, { recursive: true, force: true });
    throw error;
  }
}
