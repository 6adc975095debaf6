import { describe, expect, it } from 'vitest';
import {
  assertModelFits,
  estimateLoadBytes,
  READ_CHUNK_BYTES,
  WASM_HEAP_MAX_BYTES,
} from '../../../src/main/engine/model-memory';
import { UserError } from '../../../src/shared/errors';

const GIB = 2 ** 30;
const BUFFERS = 6 * READ_CHUNK_BYTES;

function thrown(run: () => void): Error {
  try {
    run();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected an error');
}

describe('estimateLoadBytes', () => {
  it('counts weights, largest tensor and buffers', () => {
    expect(estimateLoadBytes(1000, 100), 'explicit largest tensor').toBe(4000 + 400 + BUFFERS);
    expect(estimateLoadBytes(3000), 'default largest tensor is a third').toBe(
      12000 + 4000 + BUFFERS,
    );
    expect(estimateLoadBytes(0), 'no parameters').toBe(BUFFERS);
  });
});

describe('assertModelFits', () => {
  it('accepts a model that fits', () => {
    expect(() =>
      assertModelFits(1_000_000, 'small.safetensors', { availableBytes: 64 * GIB }),
    ).not.toThrow();
    expect(
      () => assertModelFits(10, 'tiny.safetensors'),
      'free memory of this machine',
    ).not.toThrow();
  });

  it('rejects a model larger than available memory', () => {
    const count = 494_032_768;
    const needed = estimateLoadBytes(count);
    const error = thrown(() =>
      assertModelFits(count, '/models/qwen/model.safetensors', {
        availableBytes: GIB,
        backend: 'cpu',
      }),
    );
    expect(error, 'error class').toBeInstanceOf(UserError);
    expect(error.message, 'file').toMatch(/^\/models\/qwen\/model\.safetensors: not enough memory/);
    expect(error.message, 'parameter count').toContain('494,032,768 parameters');
    expect(error.message, 'bytes needed').toContain(`(${needed} bytes`);
    expect(error.message, 'bytes available').toContain(`(${GIB} bytes) is the memory limit`);
    expect(error.message, 'what to do').toContain('Choose a model with fewer parameters');
  });

  it('names the wasm heap limit', () => {
    const count = 1_543_714_304;
    const error = thrown(() =>
      assertModelFits(count, 'big.safetensors', { availableBytes: 1024 * GIB, backend: 'wasm' }),
    );
    expect(error, 'error class').toBeInstanceOf(UserError);
    expect(error.message, 'parameter count').toContain('1,543,714,304 parameters');
    expect(error.message, 'bytes needed').toContain(`(${4 * count} bytes) of WebAssembly memory`);
    expect(error.message, 'limit').toContain('addresses at most 4 GiB');
    expect(error.message, 'fix').toContain('Install @tensorflow/tfjs-node');
  });

  it('reports the tighter of the two limits', () => {
    // 2 GiB of weights fits the wasm heap but not 1 GiB of memory.
    const count = GIB / 2;
    const error = thrown(() =>
      assertModelFits(count, 'm.safetensors', { availableBytes: GIB, backend: 'wasm' }),
    );
    expect(error.message, 'memory is the limit').toContain('not enough memory');
    // Just over the wasm heap, with exactly the memory of the estimate.
    const over = Math.floor(WASM_HEAP_MAX_BYTES / 4) + 1;
    const wasm = thrown(() =>
      assertModelFits(over, 'm.safetensors', {
        availableBytes: estimateLoadBytes(over),
        backend: 'wasm',
      }),
    );
    expect(wasm.message, 'wasm is the limit').toContain('WebAssembly memory');
  });

  it('accepts a model on the native backend beyond 4 GiB', () => {
    expect(() =>
      assertModelFits(2_000_000_000, 'm.safetensors', {
        availableBytes: 64 * GIB,
        backend: 'tensorflow',
      }),
    ).not.toThrow();
  });
});
