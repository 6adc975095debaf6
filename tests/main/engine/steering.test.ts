import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { LlamaModel, ModelConfig } from '../../../src/main/engine/model';
import { attachSteeringTokens } from '../../../src/main/engine/steering';
import type { TextTokenizer } from '../../../src/main/engine/tokenizer';
import { UserError } from '../../../src/shared/errors';
import { useEngineBackend } from '../../helpers/backend';
import { tinyModel, tinyTokenizer } from '../../helpers/tiny-model';

const RACE = [
  'white',
  'black or african american',
  'american indian or alaska native',
  'asian',
  'native hawaiian or other pacific islander',
];

let tokenizer: TextTokenizer;

beforeAll(async () => {
  await useEngineBackend();
  tokenizer = await tinyTokenizer();
});

/** Copies a parameter out of the backend as rows of a [rows, cols] matrix. */
function matrix(model: LlamaModel, name: string): number[][] {
  return model.params[name].arraySync() as number[][];
}

function columnMean(rows: number[][]): number[] {
  return rows[0].map((_, j) => rows.reduce((sum, row) => sum + row[j], 0) / rows.length);
}

function maxAbsDiff(a: number[], b: number[]): number {
  return a.reduce((max, x, i) => Math.max(max, Math.abs(x - b[i])), 0);
}

describe('attachSteeringTokens', () => {
  for (const tied of [false, true]) {
    it(`special mode grows the vocabulary (${tied ? 'tied' : 'untied'} head)`, async () => {
      const overrides: Partial<ModelConfig> = { tieWordEmbeddings: tied };
      const model = tinyModel(tokenizer.vocabSize, 8, overrides);
      const oldVocab = model.config.vocabSize;
      const oldEmbed = matrix(model, 'model.embed_tokens.weight'); // [V, D]
      const oldHead = tied ? null : matrix(model, 'lm_head.weight'); // [D, V]
      const oldNorm = Array.from(model.params['model.norm.weight'].dataSync());

      const steered = await attachSteeringTokens(model, tokenizer, 'race', RACE, 'special');
      const k = RACE.length;
      const { steering } = steered;
      expect(steering.mode, 'mode').toBe('special');
      expect(steering.tokens[1], 'token name of a category with spaces').toBe(
        '<|race:black_or_african_american|>',
      );
      expect(steering.tokenIds, 'new ids follow the old vocabulary').toEqual(
        Array.from({ length: k }, (_, i) => oldVocab + i),
      );
      expect(steered.tokenizer.vocabSize, 'tokenizer vocabulary').toBe(oldVocab + k);
      expect(steered.model.config.vocabSize, 'model vocabulary').toBe(oldVocab + k);
      expect(tokenizer.vocabSize, 'input tokenizer unchanged').toBe(oldVocab);

      const embed = matrix(steered.model, 'model.embed_tokens.weight');
      expect(embed.length, 'embedding rows').toBe(oldVocab + k);
      const embedMean = columnMean(oldEmbed);
      for (let i = 0; i < k; i++) {
        expect(
          maxAbsDiff(embed[oldVocab + i], embedMean),
          `embedding row ${oldVocab + i} is the mean`,
        ).toBeLessThan(1e-7);
      }
      const oldRowsDiff = Math.max(...oldEmbed.map((row, r) => maxAbsDiff(row, embed[r])));
      expect(oldRowsDiff, 'old embedding rows unchanged').toBe(0);

      if (oldHead) {
        const head = matrix(steered.model, 'lm_head.weight');
        expect(head[0].length, 'head columns').toBe(oldVocab + k);
        for (let d = 0; d < head.length; d++) {
          const mean = oldHead[d].reduce((a, b) => a + b, 0) / oldVocab;
          for (let i = 0; i < k; i++) {
            expect(
              Math.abs(head[d][oldVocab + i] - mean),
              `head [${d}, ${oldVocab + i}] is the mean`,
            ).toBeLessThan(1e-7);
          }
          expect(
            maxAbsDiff(head[d].slice(0, oldVocab), oldHead[d]),
            `head row ${d} old columns unchanged`,
          ).toBe(0);
        }
      } else {
        expect(steered.model.params['lm_head.weight'], 'tied model has no head').toBeUndefined();
      }
      const norm = Array.from(steered.model.params['model.norm.weight'].dataSync());
      expect(norm, 'other parameters unchanged').toEqual(oldNorm);

      // The grown model runs and scores the new tokens like an average token.
      const logits = tf.tidy(() =>
        steered.model
          .forward(tf.tensor2d([[5, 9, 11]], [1, 3], 'int32'), { lastOnly: true })
          .dataSync(),
      );
      expect(logits.length, 'logits cover the new vocabulary').toBe(oldVocab + k);
      expect(logits[oldVocab], 'new tokens share one logit').toBeCloseTo(
        logits[oldVocab + k - 1],
        6,
      );
      steered.model.dispose();
    });
  }

  it('keeps new tokens whole in text', async () => {
    const model = tinyModel(tokenizer.vocabSize, 8);
    const steered = await attachSteeringTokens(
      model,
      tokenizer,
      'gender',
      ['male', 'female'],
      'special',
    );
    const [maleId, femaleId] = steered.steering.tokenIds;
    const cases: [string, number[]][] = [
      ['Q: hi\nA:<|gender:female|> She works.', [femaleId]],
      ['<|gender:male|><|gender:female|>', [maleId, femaleId]],
      ['x<|gender:male|>y <|gender:male|>', [maleId, maleId]],
    ];
    for (const [text, expected] of cases) {
      const ids = steered.tokenizer.encode(text);
      const steeringInText = ids.filter((id) => id === maleId || id === femaleId);
      expect(steeringInText, `steering ids in ${JSON.stringify(text)}`).toEqual(expected);
      expect(steered.tokenizer.decode(ids), `round trip of ${JSON.stringify(text)}`).toBe(text);
    }
    const plain = 'This worker is female. He is male.';
    expect(steered.tokenizer.encode(plain), 'plain text encodes as before').toEqual(
      tokenizer.encode(plain),
    );
    expect(
      steered.tokenizer.decode([femaleId, ...tokenizer.encode(' She')], {
        skipSpecialTokens: true,
      }),
      'decode skips them',
    ).toBe(' She');
    steered.model.dispose();
  });

  it('digits mode reuses the digit tokens', async () => {
    const model = tinyModel(tokenizer.vocabSize, 8);
    const embedBefore = model.params['model.embed_tokens.weight'];
    const steered = await attachSteeringTokens(
      model,
      tokenizer,
      'sentiment',
      ['positive', 'negative', 'neutral'],
      'digits',
    );
    expect(steered.steering.tokens, 'digit tokens').toEqual(['0', '1', '2']);
    expect(steered.steering.tokenIds, 'digit ids').toEqual(
      ['0', '1', '2'].map((d) => tokenizer.tokenToId(d)),
    );
    expect(steered.model, 'same model').toBe(model);
    expect(steered.tokenizer, 'same tokenizer').toBe(tokenizer);
    expect(steered.model.config.vocabSize, 'vocabulary unchanged').toBe(tokenizer.vocabSize);
    expect(steered.model.params['model.embed_tokens.weight'], 'embedding not replaced').toBe(
      embedBefore,
    );
    expect(embedBefore.isDisposed, 'embedding still alive').toBe(false);
    model.dispose();
  });

  it('rejects digits mode beyond 10 categories', async () => {
    const model = tinyModel(tokenizer.vocabSize, 8);
    const categories = Array.from({ length: 11 }, (_, i) => `c${i}`);
    const attach = attachSteeringTokens(model, tokenizer, 'race', categories, 'digits');
    await expect(attach, 'error class').rejects.toThrow(UserError);
    await expect(attach, 'message').rejects.toThrow(/at most 10 categories; this attribute has 11/);
    model.dispose();
  });
});
