import type { BenchModel } from '../../bench/fixture';
import type { DatasetDefinition } from '../../src/main/engine/datasets';
import { attachSteeringTokens } from '../../src/main/engine/steering';
import { tinyModel, tinyTokenizer } from '../helpers/tiny-model';

/** Builds a tiny untrained model with special steering tokens for `dataset`; the caller owns it. */
export async function tinyBench(dataset: DatasetDefinition): Promise<BenchModel> {
  const tokenizer = await tinyTokenizer();
  const model = tinyModel(tokenizer.vocabSize, 1, { maxPositions: 256 });
  const steered = await attachSteeringTokens(
    model,
    tokenizer,
    dataset.attribute,
    dataset.categories,
    'special',
  );
  return { ...steered, source: { kind: 'initParams', reason: 'test model' } };
}
