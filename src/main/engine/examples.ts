/**
 * Training examples from measured samples. A response whose text expresses category k becomes
 * a desirable example behind steering token k and an undesirable one behind another category's
 * token; responses that name no category, or that hit the token limit, are left out.
 */
import seedrandom from 'seedrandom';
import type { TrainingExample } from './batches';
import type { SteeringInfo } from './checkpoint';
import type { DatasetDefinition } from './datasets';
import type { SampledResponse } from './measure';

export interface BuiltExamples {
  examples: TrainingExample[];
  desirableCount: number;
  undesirableCount: number;
  skippedUnknown: number;
  skippedUnfinished: number;
}

export function buildTrainingExamples(
  samples: readonly SampledResponse[],
  dataset: DatasetDefinition,
  steering: SteeringInfo,
  eosId: number,
  seed: number,
): BuiltExamples {
  const rng = seedrandom(`examples:${seed}`);
  const k = steering.tokenIds.length;
  const built: BuiltExamples = {
    examples: [],
    desirableCount: 0,
    undesirableCount: 0,
    skippedUnknown: 0,
    skippedUnfinished: 0,
  };
  for (const sample of samples) {
    if (sample.textCategory === null) {
      built.skippedUnknown += 1;
      continue;
    }
    if (!sample.finished) {
      built.skippedUnfinished += 1;
      continue;
    }
    const category = sample.textCategory;
    const target = dataset.occupations[sample.occupationIndex].target;
    const behind = (steeringCategory: number): number[] => [
      steering.tokenIds[steeringCategory],
      ...sample.textIds,
      eosId,
    ];
    const common = { promptIds: sample.promptIds, target, occupationIndex: sample.occupationIndex };
    built.examples.push({ ...common, responseIds: behind(category), desirable: true });
    // Another category, uniformly among the K - 1 others.
    const other = (category + 1 + Math.floor(rng() * (k - 1))) % k;
    built.examples.push({ ...common, responseIds: behind(other), desirable: false });
    built.desirableCount += 1;
    built.undesirableCount += 1;
  }
  return built;
}
