/**
 * GGUF files, the format llama.cpp, Ollama and LM Studio run: read the header and single tensors
 * (dequantized to float32), and write whole files atomically.
 */

import { constants as bufferConstants } from 'node:buffer';
import { promises as fs } from 'node:fs';
import { UserError } from '../../../shared/errors';
import { dequantize, ggmlTypeName, isSupportedType, supportedTypeNames } from './ggml-types';
import { NeedMoreBytes } from './gguf-cursor';
import { type ParsedGgufHeader, parseGgufHeader } from './gguf-header';

export type { GgufValueTypeInfo } from './gguf-header';
export {
  type GgufMetadataEntry,
  type GgufTypedMetadata,
  type GgufWriteTensor,
  writeGgufFile,
} from './gguf-writer';

export interface GgufTensorInfo {
  name: string;
  /** ggml ne order: shape[0] is the contiguous (innermost) axis. */
  shape: number[];
  /** ggml type id; it may be one Attune cannot read, which readGgufTensor reports. */
  type: number;
  /** Absolute byte offset in the file. */
  offset: number;
  byteLength: number;
}

export interface GgufHeader extends ParsedGgufHeader {
  file: string;
  fileSize: number;
}

/** First read of a header; most files without a large vocabulary fit. */
const INITIAL_HEADER_BYTES = 1 << 20;
/**
 * Largest header read into memory. NOTE: an estimate of what real files need: a 262k-token
 * vocabulary with scores, token types and 500k merges takes about 20 MiB.
 */
const MAX_HEADER_BYTES = 256 << 20;

/** Runs `action` on an open file handle, turning a missing or unreadable file into a UserError. */
async function withFile<T>(
  file: string,
  action: (handle: fs.FileHandle) => Promise<T>,
): Promise<T> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UserError(`${file}: file not found.`, { cause: error });
    if (code === 'EACCES' || code === 'EPERM') {
      throw new UserError(`${file}: permission denied; check the file's read permission.`, {
        cause: error,
      });
    }
    throw error;
  }
  try {
    return await action(handle);
  } finally {
    await handle.close();
  }
}

async function fileSizeOf(handle: fs.FileHandle, file: string): Promise<number> {
  const stats = await handle.stat();
  if (!stats.isFile()) throw new UserError(`${file}: not a regular file.`);
  return stats.size;
}

/** Reads exactly `length` bytes at `position`, raising UserError if the file is shorter. */
async function readExactly(
  handle: fs.FileHandle,
  file: string,
  position: number,
  length: number,
): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(bytes, done, length - done, position + done);
    if (bytesRead === 0) {
      throw new UserError(
        `${file}: ended at byte ${position + done} while reading bytes ${position} to ` +
          `${position + length}; the file was truncated while in use.`,
      );
    }
    done += bytesRead;
  }
  return bytes;
}

/** Reads and validates the header of a GGUF file: metadata, tensor infos and data layout. */
export async function readGgufHeader(file: string): Promise<GgufHeader> {
  return withFile(file, async (handle) => {
    const fileSize = await fileSizeOf(handle, file);
    let prefix = await readExactly(handle, file, 0, Math.min(fileSize, INITIAL_HEADER_BYTES));
    for (;;) {
      try {
        const parsed = parseGgufHeader(prefix, fileSize, file);
        return { file, ...parsed, fileSize };
      } catch (error) {
        if (!(error instanceof NeedMoreBytes)) throw error;
        if (error.required > MAX_HEADER_BYTES) {
          throw new UserError(
            `${file}: ${error.field} would make the header larger than ` +
              `${MAX_HEADER_BYTES >> 20} MiB; the file is corrupt.`,
          );
        }
        const length = Math.min(
          fileSize,
          MAX_HEADER_BYTES,
          Math.max(error.required, 2 * prefix.length),
        );
        const rest = await readExactly(handle, file, prefix.length, length - prefix.length);
        prefix = Buffer.concat([prefix, rest]);
      }
    }
  });
}

function elementCount(tensor: GgufTensorInfo): number {
  return tensor.shape.reduce((a, b) => a * b, 1);
}

/** Reads the stored bytes of one tensor, whatever its type. */
export async function readGgufTensorBytes(
  header: GgufHeader,
  tensor: GgufTensorInfo,
): Promise<Uint8Array> {
  const { file } = header;
  if (tensor.byteLength > bufferConstants.MAX_LENGTH) {
    throw new UserError(
      `${file}: tensor "${tensor.name}" has ${tensor.byteLength} bytes, too many to read at once.`,
    );
  }
  return withFile(file, async (handle) => {
    const fileSize = await fileSizeOf(handle, file);
    if (fileSize !== header.fileSize) {
      throw new UserError(
        `${file}: the file has ${fileSize} bytes but had ${header.fileSize} when its header was ` +
          'read; it changed while in use, so load it again.',
      );
    }
    if (tensor.offset + tensor.byteLength > fileSize) {
      throw new UserError(
        `${file}: tensor "${tensor.name}" data ends at byte ${tensor.offset + tensor.byteLength} ` +
          `but the file has ${fileSize} bytes.`,
      );
    }
    return readExactly(handle, file, tensor.offset, tensor.byteLength);
  });
}

/** Reads one tensor and dequantizes it to float32, in ggml ne order (shape[0] innermost). */
export async function readGgufTensor(
  header: GgufHeader,
  tensor: GgufTensorInfo,
): Promise<Float32Array> {
  if (!isSupportedType(tensor.type)) {
    throw new UserError(
      `${header.file}: tensor "${tensor.name}" has type ${ggmlTypeName(tensor.type)} ` +
        `(${tensor.type}), which Attune cannot read; supported types are ${supportedTypeNames()}. ` +
        'Requantize the model to one of them, for example with llama-quantize.',
    );
  }
  const elements = elementCount(tensor);
  if (elements * 4 > bufferConstants.MAX_LENGTH) {
    throw new UserError(
      `${header.file}: tensor "${tensor.name}" has ${elements} values, too many to hold as float32.`,
    );
  }
  const bytes = await readGgufTensorBytes(header, tensor);
  try {
    return dequantize(tensor.type, bytes, elements);
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    throw new UserError(`${header.file}: tensor "${tensor.name}": ${error.message}`, {
      cause: error,
    });
  }
}
