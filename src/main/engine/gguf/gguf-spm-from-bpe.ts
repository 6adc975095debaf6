/**
 * The `llama` (SentencePiece) GGUF form of a Hugging Face tokenizer.json that describes a
 * SentencePiece model as BPE: byte_fallback, `<0xNN>` byte tokens, spaces replaced by "▁", and
 * merges but no scores. Llama 2, Mistral and TinyLlama ship this form.
 *
 * Both tokenizers start from the code points of each text segment and spell leftover symbols
 * that are not tokens as byte tokens. @huggingface/tokenizers 0.2.0 then repeatedly merges the
 * adjacent pair with the lowest merge rank. llama.cpp (bundled with node-llama-cpp 3.21.1)
 * merges the adjacent pair whose concatenation is a token with the highest score. Both take the
 * leftmost pair on ties. They give the same ids under two conditions. (1) Every pair that
 * llama.cpp can merge is a merge of the tokenizer. (2) The merges that make one token are
 * adjacent in rank order, so that the token of the k-th group can score -k. The export rejects
 * tokenizers that break (1). Where (2) fails (Llama 2 lists the merges of its runs of "▁" by left part), each token
 * scores by its first merge, and the export rejects the tokenizer if a probe text of those
 * merges encodes differently.
 * NOTE: when two different splits of one token can merge at once, Hugging Face takes the one of
 * lower rank and llama.cpp the leftmost, and no score can express that. Text in which the two
 * orders lead to different tokens tokenizes differently.
 */

import { UserError } from '../../../shared/errors';
import {
  type AddedTokenJson,
  checkAddedTokens,
  type Reject,
  readSpaceHandling,
} from './gguf-spm-pipeline';
import { byteTokenName, SPACE_MARKER, TokenType, UNMERGED_SCORE } from './gguf-vocab';

/** Scores, token types and space prefix of the `llama` GGUF form, indexed by token id. */
export interface SentencePieceForm {
  scores: number[];
  tokenTypes: number[];
  addSpacePrefix: boolean;
}

const MODEL_OPTION_FIX =
  'Only BPE models without that option have a GGUF form that llama.cpp tokenizes the same way.';
const CONVERT_FIX =
  "Convert the tokenizer again from the model's SentencePiece tokenizer.model with transformers.";

/**
 * Returns true when tokenizer.json `json` is a BPE model with byte fallback, the form that
 * sentencePieceFromBpe accepts or rejects with a reason.
 */
export function isByteFallbackBpe(json: Record<string, unknown>): boolean {
  const model = json.model as { type?: unknown; byte_fallback?: unknown };
  return model.type === 'BPE' && model.byte_fallback === true;
}

/**
 * Derives the `llama` GGUF form of byte-fallback BPE tokenizer.json `json`, whose tokens in id
 * order are `tokens`. `baseTypes` are the types already chosen per id (control for special added
 * tokens and requested control ids, user-defined for other added tokens, else normal). Byte
 * tokens become type 6, and the unknown token type 2 when it is an added token. `encode` is
 * the tokenizer's own encoding, used to probe merges that are interleaved.
 * Throws a UserError naming `source` and the tokenizer.json field when llama.cpp would tokenize
 * some text differently.
 */
export function sentencePieceFromBpe(
  json: Record<string, unknown>,
  tokens: readonly string[],
  baseTypes: readonly number[],
  source: string,
  encode: (text: string) => number[],
): SentencePieceForm {
  const reject: Reject = (problem, fix) => {
    throw new UserError(`Cannot export tokenizer ${source} to GGUF: ${problem}. ${fix}`);
  };
  const model = json.model as Record<string, unknown>;
  const ids = new Map(tokens.map((token, id) => [token, id]));
  const added = (json.added_tokens ?? []) as AddedTokenJson[];

  checkModelOptions(model, reject);
  checkByteTokens(ids, reject);
  const addSpacePrefix = readSpaceHandling(json, reject);
  checkAddedTokens(added, addSpacePrefix, reject);
  const merges = rankedMerges(model.merges, ids, reject);
  checkFormableTokens(tokens, new Set(added.map((token) => token.id)), merges, reject);

  const { scores, apart, interleaved } = scoresFromMerges(merges, tokens, ids);
  const prefix = addSpacePrefix ? SPACE_MARKER : '';
  checkInterleavedMerges({ apart, interleaved }, tokens, scores, prefix, encode, reject);

  const unknownId = typeof model.unk_token === 'string' ? ids.get(model.unk_token) : undefined;
  return {
    scores,
    tokenTypes: sentencePieceTokenTypes(baseTypes, tokens, added, unknownId),
    addSpacePrefix,
  };
}

function checkModelOptions(model: Record<string, unknown>, reject: Reject): void {
  if (model.ignore_merges === true) {
    reject(
      'model.ignore_merges is true, so a text segment that is a token skips the merges, ' +
        'which llama.cpp never does',
      MODEL_OPTION_FIX,
    );
  }
  for (const field of [
    'continuing_subword_prefix',
    'continuing_subword_suffix',
    'end_of_word_suffix',
  ]) {
    const value = model[field];
    if (value !== undefined && value !== null && value !== '') {
      reject(
        `model.${field} is ${JSON.stringify(value)}, which llama.cpp's SentencePiece ` +
          'tokenizer has no equivalent for',
        MODEL_OPTION_FIX,
      );
    }
  }
}

/** Requires the 256 `<0xNN>` tokens, because llama.cpp aborts on a character it cannot spell. */
function checkByteTokens(ids: ReadonlyMap<string, number>, reject: Reject): void {
  for (let byte = 0; byte < 256; byte++) {
    const token = byteTokenName(byte);
    if (!ids.has(token)) {
      reject(
        `model.vocab lacks the byte token ${token}, which llama.cpp needs to spell characters ` +
          'that are not tokens',
        CONVERT_FIX,
      );
    }
  }
}

interface RankedMerge {
  left: string;
  right: string;
  rank: number;
}

interface MergeTable {
  /** Merges in rank order. */
  ordered: RankedMerge[];
  /** Rank by left part, then right part. */
  byPair: Map<string, Map<string, number>>;
}

/**
 * Parses model.merges ("left right" strings or [left, right] pairs). Like
 * @huggingface/tokenizers, a repeated pair takes the rank of its last entry. Both parts and
 * their concatenation must be tokens.
 */
function rankedMerges(
  merges: unknown,
  ids: ReadonlyMap<string, number>,
  reject: Reject,
): MergeTable {
  if (!Array.isArray(merges)) reject('model.merges is missing or not a list', CONVERT_FIX);
  const byPair = new Map<string, Map<string, number>>();
  merges.forEach((merge, rank) => {
    const parts: unknown[] = Array.isArray(merge) ? merge : String(merge).split(' ');
    const [left, right] = parts;
    const valid =
      parts.length === 2 &&
      typeof left === 'string' &&
      typeof right === 'string' &&
      ids.has(left) &&
      ids.has(right) &&
      ids.has(left + right);
    if (!valid) {
      reject(
        `model.merges[${rank}] (${JSON.stringify(merge)}) is not two tokens that merge ` +
          'into a token',
        CONVERT_FIX,
      );
    }
    const rights = byPair.get(left) ?? new Map<string, number>();
    byPair.set(left, rights);
    rights.set(right, rank);
  });
  const ordered: RankedMerge[] = [];
  for (const [left, rights] of byPair) {
    for (const [right, rank] of rights) ordered.push({ left, right, rank });
  }
  ordered.sort((a, b) => a.rank - b.rank);
  return { ordered, byPair };
}

/**
 * Requires a merge for every split of a token into two symbols that llama.cpp can merge, because
 * llama.cpp merges any adjacent pair whose concatenation is a token. A symbol is taken to be a
 * token or a single code point, a superset of what llama.cpp can form. Added tokens are matched
 * in the raw text first, so llama.cpp can form one by merging only if it contains "▁".
 */
function checkFormableTokens(
  tokens: readonly string[],
  addedIds: ReadonlySet<number>,
  merges: MergeTable,
  reject: Reject,
): void {
  const known = new Set(tokens);
  const isSymbol = (text: string) => known.has(text) || Array.from(text).length === 1;
  tokens.forEach((token, id) => {
    if (addedIds.has(id) && !token.includes(SPACE_MARKER)) return;
    let split = 0;
    for (const char of token) {
      split += char.length;
      if (split === token.length) break;
      const left = token.slice(0, split);
      const right = token.slice(split);
      if (!isSymbol(left) || !isSymbol(right)) continue;
      if (merges.byPair.get(left)?.get(right) === undefined) {
        reject(
          `llama.cpp can merge ${JSON.stringify(left)} and ${JSON.stringify(right)} into the ` +
            `token ${JSON.stringify(token)} (id ${id}), but model.merges has no such merge`,
          CONVERT_FIX,
        );
      }
    }
  });
}

/**
 * Scores each token made by a merge -k, where k counts the tokens whose first merge comes
 * earlier in rank order, and every other token UNMERGED_SCORE. Also returns the tokens whose
 * merges are not adjacent in rank order (`apart`), and the interleaved merges: theirs and the
 * merges between them, whose order one score per token may not keep.
 */
function scoresFromMerges(
  merges: MergeTable,
  tokens: readonly string[],
  ids: ReadonlyMap<string, number>,
): { scores: number[]; apart: Set<string>; interleaved: RankedMerge[] } {
  const scores = tokens.map(() => UNMERGED_SCORE);
  const madeIds = merges.ordered.map(({ left, right }) => ids.get(left + right) as number);
  const firstIndex = new Map<number, number>();
  const spans: [number, number][] = [];
  const apart = new Set<string>();
  madeIds.forEach((id, index) => {
    const first = firstIndex.get(id);
    if (first === undefined) {
      scores[id] = -firstIndex.size;
      firstIndex.set(id, index);
    } else if (id !== madeIds[index - 1]) {
      spans.push([first, index]);
      apart.add(tokens[id]);
    }
  });
  return { scores, apart, interleaved: mergesInSpans(spans, merges.ordered) };
}

/** Returns the merges at the indices of `ordered` that `spans` cover, each once. */
function mergesInSpans(spans: [number, number][], ordered: RankedMerge[]): RankedMerge[] {
  spans.sort((a, b) => a[0] - b[0]);
  const found: RankedMerge[] = [];
  let covered = -1;
  for (const [start, end] of spans) {
    for (let index = Math.max(start, covered + 1); index <= end; index++) {
      found.push(ordered[index]);
    }
    covered = Math.max(covered, end);
  }
  return found;
}

/** Bound on the interleaved merges; their tokens give at most 200 * 201 pair probes. */
const MAX_INTERLEAVED_MERGES = 200;

/**
 * Checks that llama.cpp, given `scores`, encodes the probe texts of the interleaved merges as
 * `encode` does. The probes are each token they make, each concatenation of two such tokens, and
 * each text where two of the merges overlap (left + shared part + right), because those are
 * the texts on which their order decides the result.
 * NOTE: passing probes do not prove that every text encodes the same. Llama 2's runs of "▁"
 * pass because both tokenizers grow a run from its left end.
 */
function checkInterleavedMerges(
  { apart, interleaved }: { apart: ReadonlySet<string>; interleaved: readonly RankedMerge[] },
  tokens: readonly string[],
  scores: readonly number[],
  prefix: string,
  encode: (text: string) => number[],
  reject: Reject,
): void {
  if (interleaved.length === 0) return;
  const madeTokens = [...new Set(interleaved.map(({ left, right }) => left + right))];
  const listedApart = (token: string) =>
    `model.merges lists the merges that make ${JSON.stringify(token)} apart, with ` +
    'merges of other tokens between them, while llama.cpp ranks all merges that make one ' +
    "token by that token's single score";
  if (interleaved.length > MAX_INTERLEAVED_MERGES) {
    const count = interleaved.length;
    reject(
      `${listedApart([...apart][0])}, and ${count} merges are interleaved this way, too many ` +
        'to check that llama.cpp encodes the same',
      CONVERT_FIX,
    );
  }
  const ids = new Map(tokens.map((token, id) => [token, id]));
  const scoreOf = new Map(tokens.map((token, id) => [token, scores[id]]));
  for (const text of probeTexts(interleaved, madeTokens)) {
    const expected = encode(text);
    const actual = encodeLikeLlamaCpp(prefix + text.replaceAll(' ', SPACE_MARKER), scoreOf, ids);
    if (expected.join() !== actual.join()) {
      const spell = (list: number[]) => JSON.stringify(list.map((id) => tokens[id]));
      const named = [...actual, ...expected].map((id) => tokens[id]).find((t) => apart.has(t));
      reject(
        `${listedApart(named ?? [...apart][0])}, so llama.cpp encodes ${JSON.stringify(text)} ` +
          `as ${spell(actual)} but this tokenizer as ${spell(expected)}`,
        CONVERT_FIX,
      );
    }
  }
}

function probeTexts(
  interleaved: readonly RankedMerge[],
  madeTokens: readonly string[],
): Set<string> {
  const texts = new Set<string>(madeTokens);
  for (const first of madeTokens) {
    for (const second of madeTokens) texts.add(first + second);
  }
  for (const a of interleaved) {
    for (const b of interleaved) {
      if (a.right === b.left) texts.add(a.left + a.right + b.right);
    }
  }
  return texts;
}

/**
 * Encodes `text`, with "▁" already in place of spaces, as llama.cpp's SentencePiece tokenizer
 * does: merge the adjacent pair whose concatenation scores highest (leftmost on ties) until no
 * pair is a token, then spell leftover symbols as byte tokens. Written out here because
 * node-llama-cpp can only run a tokenizer from a GGUF file, asynchronously.
 */
function encodeLikeLlamaCpp(
  text: string,
  scoreOf: ReadonlyMap<string, number>,
  ids: ReadonlyMap<string, number>,
): number[] {
  const symbols = Array.from(text);
  for (;;) {
    let best = -1;
    let bestScore = -Infinity;
    for (let index = 0; index + 1 < symbols.length; index++) {
      const score = scoreOf.get(symbols[index] + symbols[index + 1]);
      if (score !== undefined && score > bestScore) {
        best = index;
        bestScore = score;
      }
    }
    if (best < 0) break;
    symbols.splice(best, 2, symbols[best] + symbols[best + 1]);
  }
  const bytes = new TextEncoder();
  return symbols.flatMap((symbol) => {
    const id = ids.get(symbol);
    if (id !== undefined) return [id];
    return Array.from(bytes.encode(symbol), (byte) => ids.get(byteTokenName(byte)) as number);
  });
}

function sentencePieceTokenTypes(
  baseTypes: readonly number[],
  tokens: readonly string[],
  added: AddedTokenJson[],
  unknownId: number | undefined,
): number[] {
  const addedIds = new Set(added.map((token) => token.id));
  const byteTokens = new Set(Array.from({ length: 256 }, (_, byte) => byteTokenName(byte)));
  return baseTypes.map((type, id) => {
    if (id === unknownId && addedIds.has(id)) return TokenType.unknown;
    if (type !== TokenType.normal || addedIds.has(id)) return type;
    return byteTokens.has(tokens[id]) ? TokenType.byte : TokenType.normal;
  });
}
