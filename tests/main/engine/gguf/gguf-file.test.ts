import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gguf, GGUFValueType as V } from '@huggingface/gguf';
import seedrandom from 'seedrandom';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dequantize, GgmlType, quantize } from '../../../../src/main/engine/gguf/ggml-types';
import {
  type GgufTypedMetadata,
  type GgufWriteTensor,
  readGgufHeader,
  readGgufTensor,
  readGgufTensorBytes,
  writeGgufFile,
} from '../../../../src/main/engine/gguf/gguf-file';
import { BugError, UserError } from '../../../../src/shared/errors';
import {
  ggmlInspect,
  ggmlUnavailableReason,
  ggmlWrite,
} from '../../../fixtures/gguf/ggml-reference';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'attune-gguf-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function values(seed: string, n: number): Float32Array {
  const rng = seedrandom(seed);
  return Float32Array.from({ length: n }, () => (rng() - 0.5) * 0.2);
}

const METADATA: GgufTypedMetadata = {
  'general.architecture': { value: 'llama', type: V.STRING },
  'general.name': { value: 'Attune test ✓ модель', type: V.STRING },
  'test.u8': { value: 255, type: V.UINT8 },
  'test.i8': { value: -128, type: V.INT8 },
  'test.u16': { value: 65535, type: V.UINT16 },
  'test.i16': { value: -32768, type: V.INT16 },
  'test.u32': { value: 4294967295, type: V.UINT32 },
  'test.i32': { value: -2147483648, type: V.INT32 },
  'test.f32': { value: 0.1, type: V.FLOAT32 },
  'test.f64': { value: 0.1, type: V.FLOAT64 },
  'test.bool': { value: true, type: V.BOOL },
  'test.u64_safe': { value: 2 ** 53 - 1, type: V.UINT64 },
  'test.u64_big': { value: 2n ** 64n - 1n, type: V.UINT64 },
  'test.i64': { value: -5n, type: V.INT64 },
  'tokenizer.ggml.tokens': {
    value: ['<s>', '</s>', 'héllo', ''],
    type: V.ARRAY,
    subType: V.STRING,
  },
  'tokenizer.ggml.scores': { value: [0, -1.5, 0.1], type: V.ARRAY, subType: V.FLOAT32 },
  'tokenizer.ggml.token_type': { value: [1, 3, -1], type: V.ARRAY, subType: V.INT32 },
  'test.empty': { value: [], type: V.ARRAY, subType: V.UINT8 },
};

/** Plain values the reader returns for METADATA: float32 rounding, exact int64s as numbers. */
const EXPECTED_METADATA: Record<string, unknown> = {
  ...Object.fromEntries(Object.entries(METADATA).map(([key, entry]) => [key, entry.value])),
  'test.f32': Math.fround(0.1),
  'test.i64': -5,
  'tokenizer.ggml.scores': [0, -1.5, Math.fround(0.1)],
};

function tensors(): GgufWriteTensor[] {
  const make = (name: string, shape: number[], type: GgufWriteTensor['type']) => ({
    name,
    shape,
    type,
    values: values(
      name,
      shape.reduce((a, b) => a * b, 1),
    ),
  });
  return [
    make('token_embd.weight', [256, 3], GgmlType.Q4_K),
    make('blk.0.attn_q.weight', [256, 2], GgmlType.Q6_K),
    make('blk.0.attn_k.weight', [64, 2], GgmlType.Q8_0),
    make('blk.0.attn_v.weight', [32, 3], GgmlType.Q4_0),
    make('blk.0.ffn_up.weight', [5, 3], GgmlType.F16),
    make('blk.0.ffn_down.weight', [7], GgmlType.BF16),
    make('output_norm.weight', [3, 1, 2, 2], GgmlType.F32),
  ];
}

async function writeSample(name: string, metadata = METADATA): Promise<string> {
  const file = path.join(dir, name);
  await writeGgufFile(file, metadata, tensors());
  return file;
}

const bitsOf = (array: Float32Array) =>
  Array.from(new Uint32Array(array.buffer, array.byteOffset, array.length));

describe('GGUF write and read', () => {
  it('round-trips metadata and tensors', async () => {
    const file = await writeSample('round-trip.gguf');
    const header = await readGgufHeader(file);
    expect(header.version).toBe(3);
    expect(header.alignment).toBe(32);
    expect(header.metadata).toEqual(EXPECTED_METADATA);
    expect(header.metadataTypes['tokenizer.ggml.tokens']).toEqual({
      type: V.ARRAY,
      subType: V.STRING,
    });
    expect(header.metadataTypes['test.u64_big']).toEqual({ type: V.UINT64 });
    expect(header.fileSize).toBe((await fs.stat(file)).size);

    const written = tensors();
    expect(header.tensors.map((t) => t.name)).toEqual(written.map((t) => t.name));
    for (const [i, tensor] of header.tensors.entries()) {
      const source = written[i];
      expect(tensor.shape, `${tensor.name} shape`).toEqual(source.shape);
      expect(tensor.type, `${tensor.name} type`).toBe(source.type);
      expect(tensor.offset % 32, `${tensor.name} offset aligned`).toBe(0);
      expect(tensor.offset, `${tensor.name} after the header`).toBeGreaterThanOrEqual(
        header.dataOffset,
      );
      const expected = dequantize(
        source.type,
        quantize(source.type, source.values),
        source.values.length,
      );
      expect(bitsOf(await readGgufTensor(header, tensor)), `${tensor.name} values`).toEqual(
        bitsOf(expected),
      );
    }
  });

  it('aligns to general.alignment', async () => {
    const file = await writeSample('aligned-64.gguf', {
      ...METADATA,
      'general.alignment': { value: 64, type: V.UINT32 },
    });
    const header = await readGgufHeader(file);
    expect(header.alignment).toBe(64);
    expect(header.dataOffset % 64).toBe(0);
    for (const tensor of header.tensors) expect(tensor.offset % 64, tensor.name).toBe(0);
  });

  it('ignores the header fields of typedMetadata', async () => {
    const file = await writeSample('header-fields.gguf', {
      version: { value: 2, type: V.UINT32 },
      tensor_count: { value: 99n, type: V.UINT64 },
      kv_count: { value: 99n, type: V.UINT64 },
      'general.architecture': { value: 'llama', type: V.STRING },
    });
    const header = await readGgufHeader(file);
    expect(header.version).toBe(3);
    expect(Object.keys(header.metadata)).toEqual(['general.architecture']);
    expect(header.tensors).toHaveLength(tensors().length);
  });

  it('reads a header larger than the first read', async () => {
    const tokens = Array.from({ length: 120_000 }, (_, i) => `token_${i}`);
    const file = path.join(dir, 'large-header.gguf');
    await writeGgufFile(
      file,
      { 'tokenizer.ggml.tokens': { value: tokens, type: V.ARRAY, subType: V.STRING } },
      tensors(),
    );
    const header = await readGgufHeader(file);
    expect(header.dataOffset).toBeGreaterThan(1 << 21);
    expect(header.metadata['tokenizer.ggml.tokens']).toEqual(tokens);
    const last = header.tensors[header.tensors.length - 1];
    expect(Array.from(await readGgufTensor(header, last))).toEqual(Array.from(tensors()[6].values));
  });

  it('reads the raw bytes of a tensor', async () => {
    const file = await writeSample('raw-bytes.gguf');
    const header = await readGgufHeader(file);
    const source = tensors()[1];
    expect(Array.from(await readGgufTensorBytes(header, header.tensors[1]))).toEqual(
      Array.from(quantize(source.type, source.values)),
    );
  });
});

describe('GGUF writer', () => {
  it('leaves no temporary file', async () => {
    const sub = path.join(dir, 'atomic', 'nested');
    await writeGgufFile(path.join(sub, 'model.gguf'), METADATA, tensors());
    expect(await fs.readdir(sub)).toEqual(['model.gguf']);
  });

  it('keeps the old file when encoding fails', async () => {
    const sub = path.join(dir, 'failing');
    const file = path.join(sub, 'model.gguf');
    await writeGgufFile(file, METADATA, tensors());
    const before = await fs.readFile(file);
    const bad = tensors();
    bad[2].values[5] = Number.NaN;
    const failure = writeGgufFile(file, METADATA, bad);
    await expect(failure).rejects.toThrow(UserError);
    await expect(failure).rejects.toThrow(`${file}: tensor "blk.0.attn_k.weight": Value 5 is NaN`);
    expect((await fs.readFile(file)).equals(before), 'old file unchanged').toBe(true);
    expect(await fs.readdir(sub)).toEqual(['model.gguf']);
  });

  const badInputs: [string, GgufTypedMetadata, (t: GgufWriteTensor[]) => void, RegExp][] = [
    [
      'value of the wrong type',
      { x: { value: 'a', type: V.UINT32 } },
      () => {},
      /metadata "x" has type UINT32 but value a/,
    ],
    ['integer out of range', { x: { value: 300, type: V.UINT8 } }, () => {}, /expected 0 to 255/],
    [
      'array without subType',
      { x: { value: [1], type: V.ARRAY } },
      () => {},
      /without a scalar subType/,
    ],
    [
      'array of arrays',
      { x: { value: [[1]], type: V.ARRAY, subType: V.ARRAY } },
      () => {},
      /arrays of arrays/,
    ],
    [
      'bad array element',
      { x: { value: [1, 'b'], type: V.ARRAY, subType: V.INT32 } },
      () => {},
      /element 1/,
    ],
    [
      'alignment not a power of two',
      { 'general.alignment': { value: 48, type: V.UINT32 } },
      () => {},
      /power of two/,
    ],
    [
      'long tensor name',
      {},
      (t) => {
        t[0].name = 'n'.repeat(64);
      },
      /64-byte name/,
    ],
    [
      'shape and values disagree',
      {},
      (t) => {
        t[6].shape = [3, 5];
      },
      /has shape \[3,5\] \(15 values\) but 12 values/,
    ],
    [
      'partial block row',
      {},
      (t) => {
        t[0].shape = [128, 6];
      },
      /multiple of 256, not 128/,
    ],
    [
      'five dimensions',
      {},
      (t) => {
        t[6].shape = [3, 1, 2, 2, 1];
      },
      /1 to 4 dimensions/,
    ],
    [
      'duplicate tensor name',
      {},
      (t) => {
        t[1].name = t[0].name;
      },
      /listed twice/,
    ],
  ];
  for (const [name, metadata, mutate, message] of badInputs) {
    it(`rejects ${name}`, async () => {
      const list = tensors();
      mutate(list);
      const file = path.join(dir, 'invalid', `${name}.gguf`);
      const failure = writeGgufFile(file, metadata, list);
      await expect(failure).rejects.toThrow(BugError);
      await expect(failure).rejects.toThrow(message);
      await expect(fs.readdir(path.dirname(file)).catch(() => [])).resolves.toEqual([]);
    });
  }
});

// Hand-built GGUF pieces for files the writer would never produce.
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: number | bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};
const str = (s: string | Buffer) => {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  return Buffer.concat([u64(bytes.length), bytes]);
};
const kv = (key: string | Buffer, type: number, value: Buffer) =>
  Buffer.concat([str(key), u32(type), value]);
const kvString = (key: string, value: string) => kv(key, V.STRING, str(value));
const info = (name: string, dims: (number | bigint)[], type: number, offset: number | bigint) =>
  Buffer.concat([str(name), u32(dims.length), ...dims.map(u64), u32(type), u64(offset)]);

interface RawParts {
  magic?: Buffer;
  version?: number;
  tensorCount?: number | bigint;
  kvCount?: number | bigint;
  kvs: Buffer[];
  infos: Buffer[];
  data: Buffer;
}

function rawGguf(parts: RawParts): Buffer {
  const head = Buffer.concat([
    parts.magic ?? Buffer.from('GGUF'),
    u32(parts.version ?? 3),
    u64(parts.tensorCount ?? parts.infos.length),
    u64(parts.kvCount ?? parts.kvs.length),
    ...parts.kvs,
    ...parts.infos,
  ]);
  const padding = Buffer.alloc((32 - (head.length % 32)) % 32);
  return Buffer.concat([head, padding, parts.data]);
}

const F32_DATA = Buffer.from(Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]).buffer);
const baseParts = (): RawParts => ({
  kvs: [kvString('general.architecture', 'llama')],
  infos: [info('t', [8], GgmlType.F32, 0)],
  data: F32_DATA,
});
const withParts = (change: Partial<RawParts>) => rawGguf({ ...baseParts(), ...change });

async function writeRaw(name: string, bytes: Buffer): Promise<string> {
  const file = path.join(dir, 'raw', `${name.replaceAll(/[^\w-]+/g, '_')}.gguf`);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, bytes);
  return file;
}

async function readAll(file: string): Promise<void> {
  const header = await readGgufHeader(file);
  for (const tensor of header.tensors) await readGgufTensor(header, tensor);
}

describe('GGUF reader on bad files', () => {
  it('reads the hand-built base file', async () => {
    const file = await writeRaw('base', rawGguf(baseParts()));
    const header = await readGgufHeader(file);
    expect(header.metadata).toEqual({ 'general.architecture': 'llama' });
    expect(Array.from(await readGgufTensor(header, header.tensors[0]))).toEqual([
      0, 1, 2, 3, 4, 5, 6, 7,
    ]);
  });

  it('reads version 2', async () => {
    const file = await writeRaw('version-2', withParts({ version: 2 }));
    expect((await readGgufHeader(file)).version).toBe(2);
  });

  it('keeps a __proto__ key an ordinary property', async () => {
    const file = await writeRaw('proto', withParts({ kvs: [kvString('__proto__', 'x')] }));
    const { metadata } = await readGgufHeader(file);
    expect(Object.getPrototypeOf(metadata)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(metadata, '__proto__')?.value).toBe('x');
  });

  const base = rawGguf(baseParts());
  const cases: [string, Buffer, RegExp][] = [
    [
      'empty file',
      Buffer.alloc(0),
      /header magic at byte 0 needs 4 bytes, but the file ends at byte 0/,
    ],
    [
      'truncated counts',
      base.subarray(0, 20),
      /header kv_count at byte 16 needs 8 bytes.*truncated/,
    ],
    [
      'truncated key',
      base.subarray(0, 40),
      /header tensor_count is 1, but the 16 bytes left in the file can hold at most 0 tensor infos/,
    ],
    [
      'truncated tensor info',
      base.subarray(0, 90),
      /(tensor "t"|tensor 0 name).* needs \d+ bytes, but the file ends at byte 90/,
    ],
    [
      'truncated data',
      base.subarray(0, base.length - 4),
      /tensor "t" data ends at byte \d+ but the file has \d+ bytes/,
    ],
    [
      'wrong magic',
      withParts({ magic: Buffer.from('GGML') }),
      /: not a GGUF file, because it starts with bytes 47474d4c instead of "GGUF"/,
    ],
    [
      'version 1',
      withParts({ version: 1 }),
      /: GGUF version 1 is not supported, only versions 2 and 3/,
    ],
    [
      'version 4',
      withParts({ version: 4 }),
      /: GGUF version 4 is not supported, only versions 2 and 3/,
    ],
    ['big-endian', withParts({ version: 0x03000000 }), /big-endian/],
    [
      'unknown tensor type',
      withParts({ infos: [info('t', [8], 99, 0)] }),
      /tensor "t" has unknown ggml type 99/,
    ],
    [
      'data past the end',
      withParts({ infos: [info('t', [8], 0, 4096)] }),
      /tensor "t" data ends at byte 4\d{3} but the file has \d+ bytes/,
    ],
    [
      'overlapping tensors',
      withParts({ infos: [info('t', [8], 0, 0), info('u', [4], 0, 0)] }),
      /tensor "\w" data \(bytes \d+ to \d+\) overlaps tensor "\w"/,
    ],
    [
      'misaligned offset',
      withParts({ infos: [info('t', [4], 0, 4)], data: Buffer.concat([F32_DATA, F32_DATA]) }),
      /tensor "t" data offset 4 is not a multiple of the alignment 32/,
    ],
    [
      'absurd string length',
      withParts({ kvs: [Buffer.concat([u64(2n ** 40n), Buffer.from('k')])] }),
      /metadata key 0 has length 1099511627776, but only \d+ bytes are left in the file/,
    ],
    [
      'absurd array length',
      withParts({ kvs: [kv('a', V.ARRAY, Buffer.concat([u32(V.UINT32), u64(1e12)]))] }),
      /metadata "a" array length is 1000000000000/,
    ],
    [
      'absurd tensor count',
      withParts({ tensorCount: 2n ** 50n }),
      /header tensor_count is 1125899906842624, but the \d+ bytes left in the file can hold at most \d+ tensor infos/,
    ],
    [
      'absurd kv count',
      withParts({ kvCount: 2n ** 63n }),
      /header kv_count is 9223372036854775808/,
    ],
    [
      'counts that fit only alone',
      withParts({ tensorCount: 4, kvCount: 7 }),
      /header tensor_count 4 and kv_count 7 together need more than the 136 bytes left/,
    ],
    [
      'n_dims 5',
      withParts({ infos: [info('t', [8, 1, 1, 1, 1], 0, 0)] }),
      /tensor "t" has n_dims 5; GGUF tensors have at most 4/,
    ],
    [
      'zero dimension',
      withParts({ infos: [info('t', [8, 0], 0, 0)] }),
      /tensor "t" dimension 1 is 0/,
    ],
    [
      'negative dimension',
      withParts({ infos: [info('t', [2n ** 64n - 8n], 0, 0)] }),
      /tensor "t" dimension 0 is -8, which is negative/,
    ],
    [
      'huge dimensions',
      withParts({ infos: [info('t', [2n ** 40n, 2n ** 40n], 0, 0)] }),
      /tensor "t" has more than 2\^53 elements/,
    ],
    [
      'duplicate key',
      withParts({ kvs: [kvString('a', 'x'), kvString('a', 'y')] }),
      /metadata key "a" appears twice/,
    ],
    [
      'duplicate tensor',
      withParts({
        infos: [info('t', [4], 0, 0), info('t', [4], 0, 32)],
        data: Buffer.concat([F32_DATA, F32_DATA]),
      }),
      /tensor name "t" appears twice/,
    ],
    [
      'alignment 48',
      withParts({ kvs: [kv('general.alignment', V.UINT32, u32(48))] }),
      /"general.alignment" is 48; it must be a power of two/,
    ],
    [
      'alignment as UINT64',
      withParts({ kvs: [kv('general.alignment', V.UINT64, u64(32))] }),
      /"general.alignment" has type UINT64; it must be UINT32/,
    ],
    [
      'invalid UTF-8 key',
      withParts({ kvs: [kv(Buffer.from([0xc3, 0x28]), V.UINT8, Buffer.from([1]))] }),
      /metadata key 0 is not valid UTF-8/,
    ],
    [
      'unknown value type',
      withParts({ kvs: [kv('a', 13, u32(0))] }),
      /metadata "a" has unknown value type 13/,
    ],
    [
      'array of arrays',
      withParts({ kvs: [kv('a', V.ARRAY, Buffer.concat([u32(V.ARRAY), u64(0)]))] }),
      /metadata "a" is an array of arrays/,
    ],
    [
      'bool stored as 2',
      withParts({ kvs: [kv('a', V.BOOL, Buffer.from([2]))] }),
      /metadata "a" is a bool stored as 2/,
    ],
    [
      'partial block row',
      withParts({ infos: [info('t', [100], GgmlType.Q4_K, 0)] }),
      /tensor "t" has type Q4_K, which stores blocks of 256 values, but its first dimension is 100/,
    ],
  ];
  for (const [name, bytes, message] of cases) {
    it(`rejects ${name}`, async () => {
      const file = await writeRaw(name, bytes);
      const failure = readAll(file);
      await expect(failure).rejects.toThrow(UserError);
      await expect(failure).rejects.toThrow(`${file}: `);
      await expect(failure).rejects.toThrow(message);
    });
  }

  it('reports an unsupported type when the tensor is read', async () => {
    const data = Buffer.alloc(176);
    const file = await writeRaw(
      'q5k',
      withParts({ infos: [info('blk.0.ffn_up.weight', [256], 13, 0)], data }),
    );
    const header = await readGgufHeader(file);
    expect(header.tensors[0].byteLength).toBe(176);
    await expect(readGgufTensor(header, header.tensors[0])).rejects.toThrow(
      `${file}: tensor "blk.0.ffn_up.weight" has type Q5_K (13), which Attune cannot read`,
    );
  });

  it('rejects a header too large to read', async () => {
    // A sparse 320 MiB file whose first key claims to be 300 MiB long.
    const file = path.join(dir, 'raw', 'huge-key.gguf');
    await fs.writeFile(
      file,
      Buffer.concat([Buffer.from('GGUF'), u32(3), u64(0), u64(1), u64(300 << 20)]),
    );
    await fs.truncate(file, 320 << 20);
    await expect(readGgufHeader(file)).rejects.toThrow(
      `${file}: metadata key 0 would make the header larger than 256 MiB; the file is corrupt.`,
    );
    await fs.rm(file);
  });

  it('reports a missing file', async () => {
    const file = path.join(dir, 'missing.gguf');
    await expect(readGgufHeader(file)).rejects.toThrow(`${file}: file not found.`);
  });

  it('reports a file that changed after its header was read', async () => {
    const file = await writeRaw('changed', rawGguf(baseParts()));
    const header = await readGgufHeader(file);
    await fs.appendFile(file, Buffer.alloc(32));
    await expect(readGgufTensor(header, header.tensors[0])).rejects.toThrow(/changed while in use/);
  });
});

describe('GGUF fuzzing', () => {
  it('reads or rejects 300 corrupted variants', { timeout: 20_000 }, async () => {
    const file = await writeSample('fuzz-base.gguf');
    const original = await fs.readFile(file);
    const { dataOffset } = await readGgufHeader(file);
    const rng = seedrandom('gguf fuzz');
    const pick = (n: number) => Math.floor(rng() * n);
    const outcomes = { read: 0, rejected: 0 };
    for (let variant = 0; variant < 300; variant++) {
      let bytes = Buffer.from(original);
      if (variant % 10 === 9) {
        bytes = bytes.subarray(0, pick(bytes.length));
      } else {
        for (let flips = 1 + pick(4); flips > 0; flips--) {
          // Most flips land in the header, where a changed byte alters the structure.
          const at = rng() < 0.8 ? pick(dataOffset) : pick(bytes.length);
          bytes[at] = rng() < 0.5 ? bytes[at] ^ (1 << pick(8)) : pick(256);
        }
      }
      const variantFile = path.join(dir, 'fuzz', `variant-${variant}.gguf`);
      await fs.mkdir(path.dirname(variantFile), { recursive: true });
      await fs.writeFile(variantFile, bytes);
      try {
        await readAll(variantFile);
        outcomes.read++;
      } catch (error) {
        expect(error, `variant ${variant}: ${String(error)}`).toBeInstanceOf(UserError);
        expect((error as Error).message, `variant ${variant}`).toContain(variantFile);
        outcomes.rejected++;
      }
    }
    expect(outcomes.read, 'variants read').toBeGreaterThan(20);
    expect(outcomes.rejected, 'variants rejected').toBeGreaterThan(100);
  });
});

describe('other GGUF readers', () => {
  it('@huggingface/gguf reads the files Attune writes', async () => {
    const file = await writeSample('for-hf.gguf');
    const ours = await readGgufHeader(file);
    const theirs = await gguf(file, { allowLocalFile: true });
    expect(Number(theirs.tensorDataOffset)).toBe(ours.dataOffset);
    for (const [key, value] of Object.entries(ours.metadata)) {
      const normalized =
        typeof value === 'number' &&
        Number.isInteger(value) &&
        ours.metadataTypes[key].type >= V.UINT64
          ? BigInt(value)
          : value;
      expect((theirs.metadata as Record<string, unknown>)[key], key).toEqual(normalized);
    }
    const infos = theirs.tensorInfos.map((t) => ({
      name: t.name,
      shape: t.shape.map(Number),
      type: t.dtype as number,
      offset: Number(t.offset) + ours.dataOffset,
    }));
    expect(infos).toEqual(ours.tensors.map(({ byteLength, ...rest }) => rest));
  });
});

describe.skipIf(ggmlUnavailableReason !== undefined)('agreement with ggml', () => {
  it('ggml reads the files Attune writes', async () => {
    const file = await writeSample('for-ggml.gguf');
    const ours = await readGgufHeader(file);
    const theirs = ggmlInspect(file);
    if (!theirs.ok) throw new Error(`ggml rejected ${file}`);
    expect(theirs.version).toBe(3);
    expect(theirs.alignment).toBe(ours.alignment);
    expect(theirs.dataOffset).toBe(ours.dataOffset);
    const asJson = (value: unknown) => (typeof value === 'bigint' ? value.toString() : value);
    expect(theirs.kv.map((entry) => entry.key)).toEqual(Object.keys(ours.metadata));
    for (const entry of theirs.kv) {
      const expected = ours.metadata[entry.key];
      const types = ours.metadataTypes[entry.key];
      expect(entry.type, `${entry.key} type`).toBe(types.type);
      expect(entry.subType ?? undefined, `${entry.key} subType`).toBe(types.subType);
      const is64 = types.type === V.UINT64 || types.type === V.INT64;
      expect(entry.value, entry.key).toEqual(
        is64 ? String(expected) : Array.isArray(expected) ? expected.map(asJson) : expected,
      );
    }
    expect(theirs.tensors).toEqual(
      ours.tensors.map((t) => ({
        name: t.name,
        type: t.type,
        offset: t.offset - ours.dataOffset,
        size: t.byteLength,
        ne: [...t.shape, 1, 1, 1].slice(0, 4),
      })),
    );
  });

  it('Attune reads the files ggml writes', async () => {
    const file = path.join(dir, 'from-ggml.gguf');
    const source = tensors();
    const written = ggmlWrite(
      file,
      [
        { key: 'general.architecture', type: V.STRING, subType: null, value: 'llama' },
        { key: 'test.u32', type: V.UINT32, subType: null, value: 7 },
        { key: 'test.f32', type: V.FLOAT32, subType: null, value: 0.5 },
        { key: 'test.bool', type: V.BOOL, subType: null, value: false },
        { key: 'test.i64', type: V.INT64, subType: null, value: -3 },
        { key: 'test.tokens', type: V.ARRAY, subType: V.STRING, value: ['a', 'ü', ''] },
        { key: 'test.ids', type: V.ARRAY, subType: V.INT32, value: [-1, 2] },
      ],
      source.map((t) => ({
        name: t.name,
        type: t.type,
        ne: t.shape,
        bytes: quantize(t.type, t.values),
      })),
    );
    expect(written, 'ggml wrote the file').toBe(true);
    const header = await readGgufHeader(file);
    expect(header.metadata).toEqual({
      'general.architecture': 'llama',
      'test.u32': 7,
      'test.f32': 0.5,
      'test.bool': false,
      'test.i64': -3,
      'test.tokens': ['a', 'ü', ''],
      'test.ids': [-1, 2],
    });
    for (const [i, tensor] of header.tensors.entries()) {
      const { type, values: v, name } = source[i];
      expect(tensor.name).toBe(name);
      expect(tensor.shape, `${name} shape`).toEqual(source[i].shape);
      const expected = dequantize(type, quantize(type, v), v.length);
      expect(bitsOf(await readGgufTensor(header, tensor)), `${name} values`).toEqual(
        bitsOf(expected),
      );
    }
  });
});
