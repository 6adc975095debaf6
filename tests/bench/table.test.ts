import { describe, expect, it } from 'vitest';
import { formatTable } from '../../bench/table';

describe('formatTable', () => {
  it('pads columns to the widest cell', () => {
    const text = formatTable([
      ['name', 'rate'],
      ['matmul 512', '37 GFLOP/s'],
      ['sft', ''],
    ]);
    expect(text.split('\n')).toEqual([
      'name        rate',
      '----------  ----------',
      'matmul 512  37 GFLOP/s',
      'sft',
    ]);
  });
});
