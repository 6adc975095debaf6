/**
 * Bounds-checked reader for GGUF header fields. Every read names its field, so that a file that
 * ends early or declares an impossible length gets an error saying where.
 */

import { UserError } from '../../../shared/errors';

/** Raised when the header continues past the bytes given; the caller reads more and retries. */
export class NeedMoreBytes extends Error {
  constructor(
    readonly required: number,
    readonly field: string,
  ) {
    super(`${field} needs the first ${required} bytes of the file`);
  }
}

// NOTE: strict decoding rejects a string of raw bytes that is not UTF-8. llama.cpp keeps such token
// strings as bytes, but a JS string cannot, so such a file is reported instead of read lossily.
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Reads little-endian GGUF fields from the first bytes of a file, checking every length. */
export class Cursor {
  position = 0;
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    readonly fileSize: number,
    readonly file: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  error(message: string): UserError {
    return new UserError(`${this.file}: ${message}`);
  }

  get remaining(): number {
    return this.fileSize - this.position;
  }

  /** Advances past `length` bytes and returns where they start. */
  take(length: number, field: string): number {
    const start = this.position;
    if (start + length > this.fileSize) {
      throw this.error(
        `${field} at byte ${start} needs ${length} bytes, but the file ends at byte ` +
          `${this.fileSize}; the file is truncated or corrupt.`,
      );
    }
    if (start + length > this.bytes.length) throw new NeedMoreBytes(start + length, field);
    this.position += length;
    return start;
  }

  /** Returns `length` bytes from `start`, which a call to take() has already checked. */
  bytesAt(start: number, length: number): Uint8Array {
    return this.bytes.subarray(start, start + length);
  }

  u8(field: string): number {
    return this.view.getUint8(this.take(1, field));
  }
  i8(field: string): number {
    return this.view.getInt8(this.take(1, field));
  }
  u16(field: string): number {
    return this.view.getUint16(this.take(2, field), true);
  }
  i16(field: string): number {
    return this.view.getInt16(this.take(2, field), true);
  }
  u32(field: string): number {
    return this.view.getUint32(this.take(4, field), true);
  }
  i32(field: string): number {
    return this.view.getInt32(this.take(4, field), true);
  }
  f32(field: string): number {
    return this.view.getFloat32(this.take(4, field), true);
  }
  f64(field: string): number {
    return this.view.getFloat64(this.take(8, field), true);
  }
  u64(field: string): bigint {
    return this.view.getBigUint64(this.take(8, field), true);
  }
  i64(field: string): bigint {
    return this.view.getBigInt64(this.take(8, field), true);
  }

  /** Checks that `count` items of at least `minBytes` each fit in the rest of the file. */
  checkCount(count: bigint, field: string, items: string, minBytes: number): number {
    const fits = Math.floor(this.remaining / minBytes);
    if (count > BigInt(fits)) {
      throw this.error(
        `${field} is ${count}, but the ${this.remaining} bytes left in the file can hold at most ` +
          `${fits} ${items}; the file is corrupt.`,
      );
    }
    return Number(count);
  }

  string(field: string): string {
    const declared = this.u64(`${field} length`);
    if (declared > BigInt(this.remaining)) {
      throw this.error(
        `${field} has length ${declared}, but only ${this.remaining} bytes are left in the file; ` +
          'the file is corrupt.',
      );
    }
    const length = Number(declared);
    const start = this.take(length, field);
    try {
      return utf8.decode(this.bytesAt(start, length));
    } catch {
      throw this.error(`${field} is not valid UTF-8; the file is corrupt.`);
    }
  }
}
