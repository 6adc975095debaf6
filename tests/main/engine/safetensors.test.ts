import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  decodeFloat32Into,
  decodeSafetensors,
  encodeSafetensors,
  halfToFloat,
  type NamedTensor,
  readSafetensorsHeader,
} from '../../../src/main/engine/safetensors';
import { UserError } from '../../../src/shared/errors';
import { makeTempDir } from '../../helpers/tiny-model';

/** Builds a safetensors file by hand: one tensor of raw 16-bit words. */
function sixteenBitFile(dtype: 'F16' | 'BF16', words: number[]): Buffer {
  const header = JSON.stringify({
    values: { dtype, shape: [words.length], data_offsets: [0, words.length * 2] },
  });
  const headerBytes = Buffer.from(header, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + words.length * 2);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  words.forEach((word, i) => {
    out.writeUInt16LE(word, 8 + headerBytes.length + i * 2);
  });
  return out;
}

/** Builds a file from a header object and `dataBytes` zero bytes of tensor data. */
function rawFile(header: Record<string, unknown>, dataBytes: number): Buffer {
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + dataBytes);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  return out;
}

function decodeValues(buffer: Buffer): number[] {
  const tensor = decodeSafetensors(buffer, 'test.safetensors').tensors.get('values');
  return Array.from(tensor?.data ?? []);
}

function sample(): Map<string, NamedTensor> {
  return new Map([
    ['a.weight', { shape: [2, 3], data: Float32Array.from([1, -2.5, 3e-8, 4e7, -0, 0.1]) }],
    ['b.bias', { shape: [3], data: Float32Array.from([7, 8, 9]) }],
    ['empty', { shape: [0, 4], data: new Float32Array(0) }],
  ]);
}

describe('safetensors', () => {
  it('round-trips float32 tensors and metadata', () => {
    const buffer = encodeSafetensors(sample(), { format: 'pt' });
    const headerLength = Number(buffer.readBigUInt64LE(0));
    expect(headerLength % 8, 'header padded to 8 bytes').toBe(0);
    const { tensors, metadata } = decodeSafetensors(buffer, 'x.safetensors');
    expect(metadata, 'metadata').toEqual({ format: 'pt' });
    for (const [name, tensor] of sample()) {
      expect(tensors.get(name)?.shape, `${name} shape`).toEqual(tensor.shape);
      expect(Array.from(tensors.get(name)?.data ?? []), `${name} data`).toEqual(
        Array.from(tensor.data),
      );
    }
  });

  it('decodes F16 known values', () => {
    const cases: [number, number][] = [
      [0x3c00, 1],
      [0xc000, -2],
      [0x3800, 0.5],
      [0x3555, 0.333251953125],
      [0x7bff, 65504],
      [0x0400, 2 ** -14],
      [0x0001, 2 ** -24],
      [0x03ff, 1023 * 2 ** -24],
      [0x7c00, Number.POSITIVE_INFINITY],
      [0xfc00, Number.NEGATIVE_INFINITY],
    ];
    const values = decodeValues(
      sixteenBitFile(
        'F16',
        cases.map(([word]) => word),
      ),
    );
    cases.forEach(([word, expected], i) => {
      expect(values[i], `F16 0x${word.toString(16)}`).toBe(expected);
    });
    expect(Object.is(halfToFloat(0x8000), -0), 'F16 0x8000 is -0').toBe(true);
    expect(halfToFloat(0x7e00), 'F16 0x7e00 is NaN').toBeNaN();
  });

  it('decodes BF16 known values', () => {
    const cases: [number, number][] = [
      [0x3f80, 1],
      [0xc000, -2],
      [0x4049, 3.140625],
      [0x3e80, 0.25],
      [0x7f7f, 3.3895313892515355e38],
      [0x0001, 2 ** -133],
      [0x7f80, Number.POSITIVE_INFINITY],
      [0xff80, Number.NEGATIVE_INFINITY],
    ];
    const values = decodeValues(
      sixteenBitFile(
        'BF16',
        cases.map(([word]) => word),
      ),
    );
    cases.forEach(([word, expected], i) => {
      expect(values[i], `BF16 0x${word.toString(16)}`).toBe(Math.fround(expected));
    });
    expect(decodeValues(sixteenBitFile('BF16', [0x7fc0]))[0], 'BF16 0x7fc0 is NaN').toBeNaN();
  });

  it('rejects file shorter than 8 bytes', () => {
    expect(() => decodeSafetensors(Buffer.from([1, 2, 3]), 'short.safetensors')).toThrow(
      /short\.safetensors: file is too short/,
    );
  });

  it('rejects header length beyond file', () => {
    const buffer = encodeSafetensors(sample());
    buffer.writeBigUInt64LE(BigInt(buffer.length), 0);
    const decode = () => decodeSafetensors(buffer, 'big.safetensors');
    expect(decode, 'error class').toThrow(UserError);
    expect(decode, 'message names the file and the length').toThrow(
      new RegExp(`big\\.safetensors: header length ${buffer.length} exceeds the file size`),
    );
  });

  it('rejects truncated tensor data naming the tensor', () => {
    const buffer = encodeSafetensors(sample());
    const truncated = buffer.subarray(0, buffer.length - 4);
    const decode = () => decodeSafetensors(truncated, 'cut.safetensors');
    expect(decode, 'error class').toThrow(UserError);
    expect(decode, 'message names the file and the tensor').toThrow(
      /cut\.safetensors: tensor b\.bias/,
    );
    expect(decode, 'message says why').toThrow(/truncated/);
  });

  it('rejects non-object header', () => {
    for (const header of ['{"a": ', 'null', '[1, 2]']) {
      const bytes = Buffer.from(header, 'utf8');
      const buffer = Buffer.alloc(8 + bytes.length);
      buffer.writeBigUInt64LE(BigInt(bytes.length), 0);
      bytes.copy(buffer, 8);
      const decode = () => decodeSafetensors(buffer, 'h.safetensors');
      expect(decode, `header ${header}: error class`).toThrow(UserError);
      expect(decode, `header ${header}: message`).toThrow(/h\.safetensors: the safetensors header/);
    }
  });

  it('rejects an unsupported dtype naming it', () => {
    const header = JSON.stringify({ ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } });
    const bytes = Buffer.from(header, 'utf8');
    const buffer = Buffer.alloc(8 + bytes.length + 8);
    buffer.writeBigUInt64LE(BigInt(bytes.length), 0);
    bytes.copy(buffer, 8);
    expect(() => decodeSafetensors(buffer, 'i.safetensors'), 'dtype I64').toThrow(
      /i\.safetensors: tensor ids has dtype I64; supported are F32, F16, BF16/,
    );
  });

  it('rejects gaps, overlaps and trailing bytes', () => {
    const cases: [string, Record<string, unknown>, number, RegExp][] = [
      [
        'gap',
        {
          a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
          b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
        },
        12,
        /g\.safetensors: tensor b starts at data byte 8 and leaves a gap \(expected 4\)/,
      ],
      [
        'overlap',
        {
          a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
          b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
        },
        8,
        /tensor b starts at data byte 4 and overlaps the tensor before it/,
      ],
      [
        'trailing bytes',
        { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } },
        12,
        /the tensors cover 4 of the 12 data bytes; the file has trailing bytes/,
      ],
    ];
    for (const [what, header, dataBytes, pattern] of cases) {
      const decode = () => decodeSafetensors(rawFile(header, dataBytes), 'g.safetensors');
      expect(decode, `${what}: error class`).toThrow(UserError);
      expect(decode, `${what}: message`).toThrow(pattern);
    }
  });

  it('rejects a size that does not match the shape', () => {
    const header = { a: { dtype: 'BF16', shape: [3], data_offsets: [0, 4] } };
    expect(() => decodeSafetensors(rawFile(header, 4), 's.safetensors')).toThrow(
      /s\.safetensors: tensor a data_offsets \[0,4\] do not fit shape \[3\] BF16/,
    );
  });

  it('checks only offsets of unknown dtypes', () => {
    // F4 packs two values per byte, so the header check cannot size it; decoding rejects it.
    const header = { packed: { dtype: 'F4', shape: [8], data_offsets: [0, 4] } };
    expect(() => decodeSafetensors(rawFile(header, 4), 'q.safetensors')).toThrow(
      /q\.safetensors: tensor packed has dtype F4; supported are F32, F16, BF16/,
    );
  });

  it('reads a header from an open file', async () => {
    const dir = await makeTempDir('safetensors');
    try {
      const file = path.join(dir, 'model.safetensors');
      const bytes = encodeSafetensors(sample(), { format: 'pt' });
      await fs.writeFile(file, bytes);
      const handle = await fs.open(file, 'r');
      try {
        const { header, headerBytes } = await readSafetensorsHeader(handle, bytes.length, file);
        expect(header.metadata, 'metadata').toEqual({ format: 'pt' });
        expect([...header.tensors.keys()], 'names').toEqual(['a.weight', 'b.bias', 'empty']);
        expect(header.tensors.get('b.bias'), 'entry').toEqual({
          name: 'b.bias',
          dtype: 'F32',
          shape: [3],
          begin: 24,
          end: 36,
        });
        expect(header.dataStart, 'data start').toBe(headerBytes.length);
        expect(headerBytes.equals(bytes.subarray(0, header.dataStart)), 'raw header').toBe(true);
      } finally {
        await handle.close();
      }
      await fs.writeFile(file, bytes.subarray(0, 5));
      const short = await fs.open(file, 'r');
      await expect(readSafetensorsHeader(short, 5, file), 'short file').rejects.toThrow(
        /file is too short for a safetensors header/,
      );
      await short.close();
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('decodes unaligned bytes', () => {
    const f32 = Buffer.alloc(13);
    f32.writeFloatLE(1.5, 1);
    f32.writeFloatLE(-3.25, 5);
    f32.writeFloatLE(2 ** -20, 9);
    const out = new Float32Array(3);
    decodeFloat32Into(f32.subarray(1), 'F32', out);
    expect(Array.from(out), 'F32 at odd offset').toEqual([1.5, -3.25, 2 ** -20]);
    const f16 = Buffer.from([0, 0x00, 0x3c, 0x00, 0xc0]);
    const half = new Float32Array(2);
    decodeFloat32Into(f16.subarray(1), 'F16', half);
    expect(Array.from(half), 'F16 at odd offset').toEqual([1, -2]);
  });
});
