/**
 * Steering tokens, one per category: reuse the digit tokens "0".."K-1" (as the public reference
 * implementation does) or add one special token per category, growing the embedding and output
 * matrices. New rows start at the mean of the existing rows.
 */
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../shared/errors';
import type { SteeringInfo } from './checkpoint';
import { LlamaModel, type Params } from './model';
import { type Attribute, specialSteeringToken } from './prompts';
import type { TextTokenizer } from './tokenizer';

export type SteeringMode = SteeringInfo['mode'];

export interface SteeredModel {
  model: LlamaModel;
  tokenizer: TextTokenizer;
  steering: SteeringInfo;
}

/**
 * Returns the model and tokenizer with steering tokens for `categories`. With 'special', the
 * old model's parameters move into the returned model (grown where needed), so the caller must
 * stop using `model`.
 */
export async function attachSteeringTokens(
  model: LlamaModel,
  tokenizer: TextTokenizer,
  attribute: Attribute,
  categories: string[],
  mode: SteeringMode,
): Promise<SteeredModel> {
  if (mode === 'digits') {
    if (categories.length > 10) {
      throw new UserError(
        `Digit steering tokens cover at most 10 categories; this attribute has ${categories.length}. Use special steering tokens.`,
      );
    }
    const { tokens, tokenIds } = digitSteeringTokens(tokenizer, categories);
    return { model, tokenizer, steering: { attribute, mode, categories, tokens, tokenIds } };
  }
  if (mode !== 'special') {
    throw new UserError(`Unknown steering mode "${mode}"; use "special" or "digits".`);
  }
  const tokens = categories.map((c) => specialSteeringToken(attribute, c));
  const grown = await tokenizer.withAddedSpecialTokens(tokens);
  const vocabSize = Math.max(grown.tokenizer.vocabSize, model.config.vocabSize);
  const resized = resizeVocabulary(model, vocabSize);
  return {
    model: resized,
    tokenizer: grown.tokenizer,
    steering: { attribute, mode, categories, tokens, tokenIds: grown.ids },
  };
}

/**
 * Returns the digits "0".."K-1" and their ids. Throws a UserError when the tokenizer splits one
 * of them, because a steering token must be a single token.
 */
export function digitSteeringTokens(
  tokenizer: TextTokenizer,
  categories: readonly string[],
): { tokens: string[]; tokenIds: number[] } {
  const tokens = categories.map((_, i) => String(i));
  const tokenIds = tokens.map((digit) => {
    const ids = tokenizer.encode(digit);
    if (ids.length !== 1) {
      throw new UserError(
        `The tokenizer splits the digit "${digit}" into ${ids.length} tokens; use special steering tokens.`,
      );
    }
    return ids[0];
  });
  return { tokens, tokenIds };
}

/**
 * Grows the embedding [V, D] and an untied head [D, V] to `vocabSize` entries whose new rows
 * (head columns) are the mean of the existing ones. Returns `model` itself when no growth is
 * needed; otherwise the returned model owns the parameters and `model` must not be used.
 */
export function resizeVocabulary(model: LlamaModel, vocabSize: number): LlamaModel {
  const old = model.config.vocabSize;
  if (vocabSize === old) return model;
  if (vocabSize < old)
    throw new UserError(`Cannot shrink the vocabulary from ${old} to ${vocabSize}.`);
  const extra = vocabSize - old;
  const params: Params = { ...model.params };
  const grow = (name: string, axis: 0 | 1) => {
    const current = model.params[name];
    const value = tf.tidy(() => {
      const mean = tf.mean(current, axis, true); // [1, D] or [D, 1]
      const copies = axis === 0 ? tf.tile(mean, [extra, 1]) : tf.tile(mean, [1, extra]);
      return tf.concat([current, copies], axis);
    });
    params[name] = tf.variable(value, true);
    value.dispose();
    current.dispose();
  };
  grow('model.embed_tokens.weight', 0);
  if (!model.config.tieWordEmbeddings) grow('lm_head.weight', 1);
  return new LlamaModel({ ...model.config, vocabSize }, params);
}
