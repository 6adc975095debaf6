/**
 * GPT-2-style byte-level BPE trainer that outputs a Hugging Face tokenizer.json object.
 *
 * Hand-written because no JavaScript package trains BPE: @huggingface/tokenizers 0.2.0 only
 * encodes, and the `tokenizers` 0.23.2 Node binding exposes `train(files)` with no way to set the
 * vocabulary size or special tokens.
 *
 * The output follows GPT-2's conventions: the GPT-2 split regex, the GPT-2 byte-to-unicode
 * alphabet as ids 0..255 in code point order, and merges applied by rank. llama.cpp loading the
 * vocabulary and merges as a `gpt2` tokenizer with the GPT-2 pre-tokenizer should therefore
 * produce the same ids.
 * NOTE: that equivalence is checked here against Hugging Face tokenizers 0.23.2 (Rust) and a
 * rank-order reference encoder, not against llama.cpp itself.
 */

import { UserError } from '../../shared/errors';

/** GPT-2 pre-tokenizer regex, identical to the ByteLevel pre-tokenizer of Hugging Face tokenizers. */
export const GPT2_SPLIT_PATTERN =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Pair keys pack two ids into one number, so ids must stay below this bound. */
const MAX_VOCAB_SIZE = 2 ** 21;

export interface BpeTrainingOptions {
  /** Total vocabulary size including special tokens, at least 256 + specialTokens.length. */
  vocabSize: number;
  /** Tokens placed after the BPE vocabulary as special added tokens, in this order. */
  specialTokens: string[];
  /** Minimum count of a pair to be merged (default 2). A small corpus can stop below vocabSize. */
  minFrequency?: number;
}

/**
 * Maps each byte 0..255 to its GPT-2 symbol: printable Latin-1 bytes stand for themselves, the
 * other 68 bytes take the code points from U+0100 upwards in byte order (space becomes `Ġ`).
 */
export function gpt2ByteSymbols(): string[] {
  const symbols: string[] = new Array(256);
  let next = 256;
  for (let byte = 0; byte < 256; byte++) {
    const printable =
      (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || byte >= 0xae;
    symbols[byte] = String.fromCodePoint(printable ? byte : next++);
  }
  return symbols;
}

/**
 * Trains a byte-level BPE tokenizer and returns the complete tokenizer.json object.
 *
 * Ids 0..255 are the byte symbols, then one id per merge (a merge whose result string already
 * exists reuses that id, as Hugging Face's trainer does), then the special tokens. Ties between
 * equally frequent pairs go to the pair with the smaller left id, then the smaller right id, so
 * the same texts always give the same tokenizer.
 *
 * @example
 * const json = trainByteLevelBpe(['the cat sat on the mat'], { vocabSize: 300, specialTokens: ['<|endoftext|>'] });
 */
export function trainByteLevelBpe(texts: Iterable<string>, options: BpeTrainingOptions): object {
  validateOptions(options);
  const byteSymbols = gpt2ByteSymbols();
  const vocab = [...byteSymbols].sort();
  const words = countWords(texts, options.specialTokens, byteSymbols);
  const merges = learnMerges(words, vocab, {
    targetSize: options.vocabSize - options.specialTokens.length,
    minFrequency: options.minFrequency ?? 2,
  });
  return buildTokenizerJson(vocab, merges, options.specialTokens);
}

function validateOptions(options: BpeTrainingOptions): void {
  const { vocabSize, specialTokens, minFrequency } = options;
  const minSize = 256 + specialTokens.length;
  if (!Number.isInteger(vocabSize) || vocabSize < minSize || vocabSize > MAX_VOCAB_SIZE) {
    throw new UserError(
      `Invalid BPE vocabSize ${vocabSize}: expected an integer from ${minSize} ` +
        `(256 byte symbols plus ${specialTokens.length} special tokens) to ${MAX_VOCAB_SIZE}.`,
    );
  }
  if (minFrequency !== undefined && !(Number.isInteger(minFrequency) && minFrequency >= 1)) {
    throw new UserError(`Invalid BPE minFrequency ${minFrequency}: expected an integer >= 1.`);
  }
  const seen = new Set<string>();
  for (const token of specialTokens) {
    if (token.length === 0) throw new UserError('Invalid special token: the empty string.');
    if (seen.has(token))
      throw new UserError(`Special token ${JSON.stringify(token)} is listed twice.`);
    seen.add(token);
  }
}

/** A unique pre-token as symbol ids, with how often it occurs in the corpus. */
interface Word {
  symbols: number[];
  count: number;
}

/**
 * Counts pre-tokens over all texts. Special tokens are cut out first so that no merge learns
 * their pieces, because encoding matches them before pre-tokenization too.
 */
function countWords(
  texts: Iterable<string>,
  specialTokens: string[],
  byteSymbols: string[],
): Word[] {
  const encoder = new TextEncoder();
  const counts = new Map<string, number>();
  for (const text of texts) {
    for (const piece of splitOnSpecialTokens(text, specialTokens)) {
      for (const match of piece.matchAll(GPT2_SPLIT_PATTERN)) {
        counts.set(match[0], (counts.get(match[0]) ?? 0) + 1);
      }
    }
  }
  const symbolIds = new Map([...byteSymbols].sort().map((symbol, id) => [symbol, id]));
  const words: Word[] = [];
  for (const [preToken, count] of counts) {
    const bytes = encoder.encode(preToken);
    const symbols = Array.from(bytes, (byte) => symbolIds.get(byteSymbols[byte]) as number);
    words.push({ symbols, count });
  }
  return words;
}

function splitOnSpecialTokens(text: string, specialTokens: string[]): string[] {
  let pieces = [text];
  for (const token of specialTokens) pieces = pieces.flatMap((piece) => piece.split(token));
  return pieces;
}

const pairKey = (left: number, right: number): number => left * MAX_VOCAB_SIZE + right;

interface PairCandidate {
  count: number;
  left: number;
  right: number;
}

/** Pair statistics over the unique words, updated incrementally after each merge. */
interface PairStats {
  counts: Map<number, number>;
  /** Indices of words that contain the pair. Entries go stale after merges and are skipped. */
  wordsWithPair: Map<number, Set<number>>;
}

/**
 * Merges the most frequent adjacent pair until `vocab` reaches `targetSize` or no pair occurs
 * `minFrequency` times. Appends new tokens to `vocab` and returns the merges as "left right".
 */
function learnMerges(
  words: Word[],
  vocab: string[],
  limits: { targetSize: number; minFrequency: number },
): string[] {
  const tokenIds = new Map(vocab.map((token, id) => [token, id]));
  const stats = countPairs(words);
  const heap = new MaxHeap(comparePairCandidates);
  for (const [key, count] of stats.counts) heap.push(candidateFromKey(key, count));
  const merges: string[] = [];
  while (vocab.length < limits.targetSize) {
    const best = heap.pop();
    if (best === undefined || best.count < limits.minFrequency) break;
    const key = pairKey(best.left, best.right);
    const current = stats.counts.get(key) ?? 0;
    if (current !== best.count) {
      // Counts of queued pairs only drop, so a stale entry goes back with its current count.
      if (current > 0) heap.push({ ...best, count: current });
      continue;
    }
    const merged = vocab[best.left] + vocab[best.right];
    let mergedId = tokenIds.get(merged);
    if (mergedId === undefined) {
      mergedId = vocab.length;
      vocab.push(merged);
      tokenIds.set(merged, mergedId);
    }
    merges.push(`${vocab[best.left]} ${vocab[best.right]}`);
    const grown = applyMerge(words, stats, best, mergedId);
    for (const grownKey of grown) {
      heap.push(candidateFromKey(grownKey, stats.counts.get(grownKey) ?? 0));
    }
  }
  return merges;
}

function countPairs(words: Word[]): PairStats {
  const stats: PairStats = { counts: new Map(), wordsWithPair: new Map() };
  for (const [index, word] of words.entries()) addWordPairs(stats, word, index, 1);
  return stats;
}

/** Adds (`sign` 1) or removes (`sign` -1) the pairs of one word and returns the keys touched. */
function addWordPairs(stats: PairStats, word: Word, index: number, sign: 1 | -1): number[] {
  const keys: number[] = [];
  for (let i = 0; i + 1 < word.symbols.length; i++) {
    const key = pairKey(word.symbols[i], word.symbols[i + 1]);
    stats.counts.set(key, (stats.counts.get(key) ?? 0) + sign * word.count);
    if (sign === 1) {
      const indices = stats.wordsWithPair.get(key);
      if (indices === undefined) stats.wordsWithPair.set(key, new Set([index]));
      else indices.add(index);
    }
    keys.push(key);
  }
  return keys;
}

/**
 * Replaces each occurrence of the pair (left to right, not overlapping) by `mergedId` in every
 * word that contains it. Returns the keys of pairs that include `mergedId`: these are the only
 * pairs whose counts can grow, so only they need fresh heap entries.
 */
function applyMerge(
  words: Word[],
  stats: PairStats,
  pair: PairCandidate,
  mergedId: number,
): Set<number> {
  const key = pairKey(pair.left, pair.right);
  const grown = new Set<number>();
  for (const index of stats.wordsWithPair.get(key) ?? []) {
    const word = words[index];
    const symbols = mergeSymbols(word.symbols, pair.left, pair.right, mergedId);
    if (symbols === null) continue;
    addWordPairs(stats, word, index, -1);
    word.symbols = symbols;
    for (const newKey of addWordPairs(stats, word, index, 1)) {
      if (
        Math.floor(newKey / MAX_VOCAB_SIZE) === mergedId ||
        newKey % MAX_VOCAB_SIZE === mergedId
      ) {
        grown.add(newKey);
      }
    }
  }
  stats.counts.delete(key);
  stats.wordsWithPair.delete(key);
  return grown;
}

/** Returns the merged symbol list, or null when the pair does not occur. */
function mergeSymbols(
  symbols: number[],
  left: number,
  right: number,
  mergedId: number,
): number[] | null {
  let merged: number[] | null = null;
  for (let i = 0; i < symbols.length; i++) {
    if (symbols[i] === left && symbols[i + 1] === right) {
      merged ??= symbols.slice(0, i);
      merged.push(mergedId);
      i++;
    } else if (merged !== null) {
      merged.push(symbols[i]);
    }
  }
  return merged;
}

function candidateFromKey(key: number, count: number): PairCandidate {
  return { count, left: Math.floor(key / MAX_VOCAB_SIZE), right: key % MAX_VOCAB_SIZE };
}

/** Positive when `a` should be merged before `b`: higher count, then smaller ids. */
function comparePairCandidates(a: PairCandidate, b: PairCandidate): number {
  if (a.count !== b.count) return a.count - b.count;
  if (a.left !== b.left) return b.left - a.left;
  return b.right - a.right;
}

/** Binary max-heap; hand-written because no dependency of this project provides one. */
class MaxHeap<T> {
  private readonly items: T[] = [];
  constructor(private readonly compare: (a: T, b: T) => number) {}

  push(item: T): void {
    const items = this.items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.compare(items[i], items[parent]) <= 0) break;
      [items[i], items[parent]] = [items[parent], items[i]];
      i = parent;
    }
  }

  pop(): T | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length === 0 || last === undefined) return top;
    items[0] = last;
    let i = 0;
    for (;;) {
      const leftChild = 2 * i + 1;
      let largest = i;
      if (leftChild < items.length && this.compare(items[leftChild], items[largest]) > 0) {
        largest = leftChild;
      }
      if (leftChild + 1 < items.length && this.compare(items[leftChild + 1], items[largest]) > 0) {
        largest = leftChild + 1;
      }
      if (largest === i) return top;
      [items[i], items[largest]] = [items[largest], items[i]];
      i = largest;
    }
  }
}

/** Field values follow what Hugging Face tokenizers writes for GPT-2's tokenizer.json. */
function buildTokenizerJson(vocab: string[], merges: string[], specialTokens: string[]): object {
  const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specialTokens.map((content, index) => ({
      id: vocab.length + index,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', ...byteLevel },
    post_processor: { type: 'ByteLevel', ...byteLevel, trim_offsets: false },
    decoder: { type: 'ByteLevel', ...byteLevel },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab: Object.fromEntries(vocab.map((token, id) => [token, id])),
      merges,
    },
  };
}
