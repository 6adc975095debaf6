import { beforeAll, describe, expect, it } from 'vitest';
import type { SteeringInfo } from '../../../src/main/engine/checkpoint';
import { type DatasetDefinition, loadDataset, promptsFor } from '../../../src/main/engine/datasets';
import { buildTrainingExamples } from '../../../src/main/engine/examples';
import type { SampledResponse } from '../../../src/main/engine/measure';
import type { TextTokenizer } from '../../../src/main/engine/tokenizer';
import { tinyTokenizer } from '../../helpers/tiny-model';

let tokenizer: TextTokenizer;

beforeAll(async () => {
  tokenizer = await tinyTokenizer();
});

function steeringFor(dataset: DatasetDefinition): SteeringInfo {
  const tokens = dataset.categories.map(
    (c) => `<|${dataset.attribute}:${c.replaceAll(' ', '_')}|>`,
  );
  return {
    attribute: dataset.attribute,
    mode: 'special',
    categories: dataset.categories,
    tokens,
    tokenIds: tokens.map((_, k) => tokenizer.vocabSize + k),
  };
}

/** A sampled response as measureDataset returns it, with the category read from the text. */
function sample(
  dataset: DatasetDefinition,
  occupationIndex: number,
  round: number,
  text: string,
  finished = true,
): SampledResponse {
  const prompt = promptsFor(dataset, occupationIndex, round);
  return {
    occupationIndex,
    round,
    prompt,
    promptIds: tokenizer.encode(prompt),
    text,
    textIds: tokenizer.encode(text),
    finished,
    steeringCategory: null,
    textCategory: dataset.readAttribute(text),
  };
}

describe('buildTrainingExamples', () => {
  it('pairs own and other category token', () => {
    const dataset = loadDataset('us-gender');
    const steering = steeringFor(dataset);
    const samples = [
      sample(dataset, 0, 0, ' This worker is female. She works hard.'),
      sample(dataset, 3, 1, ' This worker is male. He works hard.'),
    ];
    const built = buildTrainingExamples(samples, dataset, steering, tokenizer.eosId, 1);
    expect(built.examples.length, 'two examples per sample').toBe(4);
    expect(built.desirableCount, 'desirable count').toBe(2);
    expect(built.undesirableCount, 'undesirable count').toBe(2);
    samples.forEach((s, i) => {
      const [good, bad] = built.examples.slice(2 * i, 2 * i + 2);
      const own = s.textCategory as number;
      const label = `sample ${i} (${dataset.categories[own]})`;
      expect(good.desirable, `${label} first example desirable`).toBe(true);
      expect(good.responseIds, `${label} desirable response`).toEqual([
        steering.tokenIds[own],
        ...s.textIds,
        tokenizer.eosId,
      ]);
      expect(bad.desirable, `${label} second example undesirable`).toBe(false);
      expect(bad.responseIds, `${label} undesirable response`).toEqual([
        steering.tokenIds[1 - own],
        ...s.textIds,
        tokenizer.eosId,
      ]);
      for (const example of [good, bad]) {
        expect(example.promptIds, `${label} prompt ids`).toEqual(s.promptIds);
        expect(example.occupationIndex, `${label} occupation`).toBe(s.occupationIndex);
        expect(example.target, `${label} target`).toEqual(
          dataset.occupations[s.occupationIndex].target,
        );
      }
    });
  });

  it('skips and counts unknown and unfinished samples', () => {
    const dataset = loadDataset('us-gender');
    const samples = [
      sample(dataset, 0, 0, ' It is hard to say. Anyone can do it.'),
      sample(dataset, 1, 0, ' This worker is female. She keeps', false),
      sample(dataset, 2, 0, ' This worker is male.'),
      sample(dataset, 2, 1, ' There is no way to tell.'),
      sample(dataset, 2, 2, ' The person is male and', false),
    ];
    const built = buildTrainingExamples(samples, dataset, steeringFor(dataset), tokenizer.eosId, 1);
    expect(built.skippedUnknown, 'unknown samples').toBe(2);
    expect(built.skippedUnfinished, 'unfinished samples').toBe(2);
    expect(built.desirableCount, 'desirable count').toBe(1);
    expect(built.examples.length, 'examples from the one usable sample').toBe(2);
    expect(
      built.examples.every((e) => e.occupationIndex === 2),
      'only occupation 2 is used',
    ).toBe(true);
  });

  it('undesirable never uses own category (K=5)', () => {
    const dataset = loadDataset('us-race');
    const k = dataset.categories.length;
    const steering = steeringFor(dataset);
    const samples: SampledResponse[] = [];
    for (let i = 0; i < 500; i++) {
      const category = dataset.categories[i % k];
      samples.push(sample(dataset, i % 14, i, ` This worker is ${category}.`));
    }
    const built = buildTrainingExamples(samples, dataset, steering, tokenizer.eosId, 7);
    expect(built.undesirableCount, 'undesirable count').toBe(500);
    const usedOthers = Array.from({ length: k }, () => new Set<number>());
    built.examples.forEach((example, e) => {
      const own = samples[Math.floor(e / 2)].textCategory as number;
      const category = steering.tokenIds.indexOf(example.responseIds[0]);
      if (example.desirable) {
        expect(category, `example ${e} desirable behind its own token`).toBe(own);
      } else {
        expect(category, `example ${e} undesirable behind its own token`).not.toBe(own);
        expect(
          category,
          `example ${e} undesirable token is a steering token`,
        ).toBeGreaterThanOrEqual(0);
        usedOthers[own].add(category);
      }
    });
    usedOthers.forEach((others, own) => {
      expect(others.size, `category ${own}: every other category is used`).toBe(k - 1);
    });
  });

  it('repeats with the same seed', () => {
    const dataset = loadDataset('us-race');
    const samples = dataset.categories.map((c, i) =>
      sample(dataset, i, 0, ` This worker is ${c}.`),
    );
    const steering = steeringFor(dataset);
    const first = buildTrainingExamples(samples, dataset, steering, tokenizer.eosId, 3);
    const again = buildTrainingExamples(samples, dataset, steering, tokenizer.eosId, 3);
    expect(again.examples, 'same seed').toEqual(first.examples);
  });
});
