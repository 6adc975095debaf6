import { describe, expect, it } from 'vitest';
import {
  decodeSafetensors,
  encodeSafetensors,
  halfToFloat,
  type NamedTensor,
} from '../../../src/main/engine/safetensors';
import { UserError } from '../../../src/shared/errors';

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
});
