/**
 * tokenizer.json content for the two GGUF vocabulary kinds Attune runs, built so that
 * @huggingface/tokenizers 0.2.0 encodes text to the same ids as llama.cpp (the version bundled
 * with node-llama-cpp 3.21.1).
 *
 * - `gpt2`: byte-level BPE. The merges carry over unchanged, and `tokenizer.ggml.pre` selects
 *   llama.cpp's split regexes for that name (llama-vocab.cpp), written as Split pre-tokenizers.
 * - `llama`: SentencePiece. llama.cpp merges, among adjacent symbols whose concatenation is a
 *   token, the pair whose token has the highest score (leftmost first on ties), then spells
 *   leftover characters as `<0xNN>` byte tokens. As a BPE model this is one merge per way of
 *   splitting a token into two tokens, ranked by the token's score, with byte_fallback. Like
 *   llama.cpp, the text is not split into words, spaces become "▁", and each text segment
 *   between added tokens gets a "▁" prefix.
 */

import { UserError } from '../../../shared/errors';
import { addedTokenJson } from '../tokenizer';

/** `tokenizer.ggml.token_type` values. */
export const TokenType = {
  normal: 1,
  unknown: 2,
  control: 3,
  userDefined: 4,
  unused: 5,
  byte: 6,
} as const;

/** Pre-tokenizer names (`tokenizer.ggml.pre`) of gpt2 vocabularies that Attune reproduces. */
export const GPT2_PRE_TOKENIZERS = ['default', 'gpt-2', 'qwen2'] as const;
export type Gpt2PreTokenizer = (typeof GPT2_PRE_TOKENIZERS)[number];

/** Space marker of SentencePiece vocabularies (U+2581). */
export const SPACE_MARKER = '\u2581';

/**
 * Score of `llama` tokens that no merge makes: byte tokens, added tokens and single characters.
 * It is below the score of every merged token, so llama.cpp merges into such a token only last.
 */
export const UNMERGED_SCORE = -1e9;

/** Returns the SentencePiece byte token for `byte`, such as `<0x0A>`. */
export function byteTokenName(byte: number): string {
  return `<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`;
}

/** A vocabulary as GGUF stores it, already validated. Arrays are indexed by token id. */
export type GgufVocabulary =
  | {
      model: 'gpt2';
      pre: Gpt2PreTokenizer;
      tokens: string[];
      tokenTypes: number[];
      merges: [string, string][];
    }
  | {
      model: 'llama';
      tokens: string[];
      tokenTypes: number[];
      scores: number[];
      unknownId: number | undefined;
      addSpacePrefix: boolean;
    };

/**
 * Key of the tokenizer.json field that keeps what tokenizer.json cannot express: token types and,
 * for `llama`, the scores. Hugging Face tokenizers ignore unknown top-level fields.
 */
export const GGUF_VOCABULARY_FIELD = 'gguf_vocabulary';

export interface StoredGgufVocabulary {
  model: 'gpt2' | 'llama';
  pre?: Gpt2PreTokenizer;
  token_type: number[];
  scores?: number[];
  add_space_prefix?: boolean;
}

// The split regexes of llama.cpp's llm_tokenizer_bpe, per pre-tokenizer name. They must match it
// character for character, because a tokenizer built from them must split text as llama.cpp does.
const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const QWEN2_PATTERN =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|" +
  ' ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';
/** Qwen2's tokenizer.json form of QWEN2_PATTERN, with a case-insensitive group. */
const QWEN2_HF_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|" +
  ' ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';

const SPLIT_PATTERNS: Record<Gpt2PreTokenizer, string[]> = {
  default: ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2_PATTERN, '\\p{N}+', '[0-9][0-9][0-9]'],
  'gpt-2': [GPT2_PATTERN],
  qwen2: [QWEN2_PATTERN],
};

/** Types that become tokenizer.json added tokens, which encoding never splits. */
const ADDED_TYPES: ReadonlySet<number> = new Set([
  TokenType.unknown,
  TokenType.control,
  TokenType.userDefined,
]);

/** Builds tokenizer.json content for a validated GGUF vocabulary. */
export function tokenizerJsonFromVocabulary(vocabulary: GgufVocabulary): object {
  const vocab: Record<string, number> = Object.create(null);
  vocabulary.tokens.forEach((token, id) => {
    vocab[token] = id;
  });
  const common = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens(vocabulary.tokens, vocabulary.tokenTypes),
    post_processor: null,
  };
  if (vocabulary.model === 'gpt2') {
    return {
      ...common,
      normalizer: null,
      pre_tokenizer: gpt2PreTokenizer(vocabulary.pre),
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
      model: bpeModel(vocab, vocabulary.merges, null, false),
      [GGUF_VOCABULARY_FIELD]: {
        model: 'gpt2',
        pre: vocabulary.pre,
        token_type: vocabulary.tokenTypes,
      } satisfies StoredGgufVocabulary,
    };
  }
  const { tokens, tokenTypes, scores, unknownId, addSpacePrefix } = vocabulary;
  const replaceSpaces = { type: 'Replace', pattern: { String: ' ' }, content: SPACE_MARKER };
  const decoders: object[] = [
    { type: 'Replace', pattern: { String: SPACE_MARKER }, content: ' ' },
    { type: 'ByteFallback' },
    { type: 'Fuse' },
  ];
  // llama.cpp's detokenizer drops the leading space of the first token when it adds a prefix.
  if (addSpacePrefix) decoders.push({ type: 'Strip', content: ' ', start: 1, stop: 0 });
  return {
    ...common,
    normalizer: addSpacePrefix
      ? {
          type: 'Sequence',
          normalizers: [{ type: 'Prepend', prepend: SPACE_MARKER }, replaceSpaces],
        }
      : replaceSpaces,
    pre_tokenizer: null,
    decoder: { type: 'Sequence', decoders },
    model: bpeModel(
      vocab,
      sentencePieceMerges(tokens, tokenTypes, scores),
      unknownId === undefined ? null : tokens[unknownId],
      true,
    ),
    [GGUF_VOCABULARY_FIELD]: {
      model: 'llama',
      token_type: tokenTypes,
      scores,
      add_space_prefix: addSpacePrefix,
    } satisfies StoredGgufVocabulary,
  };
}

function bpeModel(
  vocab: Record<string, number>,
  merges: [string, string][],
  unknownToken: string | null,
  byteFallback: boolean,
): object {
  return {
    type: 'BPE',
    dropout: null,
    unk_token: unknownToken,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: byteFallback,
    byte_fallback: byteFallback,
    ignore_merges: false,
    vocab,
    merges,
  };
}

/**
 * Added tokens for the control, unknown and user-defined tokens, which llama.cpp matches in the
 * raw text before tokenizing the rest. Control and unknown tokens are special.
 */
function addedTokens(tokens: string[], tokenTypes: number[]): object[] {
  const added: object[] = [];
  tokens.forEach((content, id) => {
    const type = tokenTypes[id];
    if (!ADDED_TYPES.has(type)) return;
    added.push(addedTokenJson(id, content, type !== TokenType.userDefined));
  });
  return added;
}

function gpt2PreTokenizer(pre: Gpt2PreTokenizer): object {
  return {
    type: 'Sequence',
    pretokenizers: [
      ...SPLIT_PATTERNS[pre].map((pattern) => ({
        type: 'Split',
        pattern: { Regex: pattern },
        behavior: 'Isolated',
        invert: false,
      })),
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    ],
  };
}

/**
 * Merges that reproduce llama.cpp's SentencePiece tokenizer: for every token that is not an
 * added token, each split into two tokens, ranked by the token's score (highest first), then by
 * token id and split position.
 * NOTE: llama.cpp breaks a tie between equal scores by position (leftmost first), and a merge
 * rank cannot express that, so a vocabulary with equal scores on pieces that overlap in a text
 * can tokenize differently. Pieces that contain a character which is not itself a token are
 * also unreachable here, while llama.cpp can still form them.
 */
function sentencePieceMerges(
  tokens: string[],
  tokenTypes: number[],
  scores: number[],
): [string, string][] {
  const known = new Set(tokens);
  const candidates: { left: string; right: string; id: number; split: number }[] = [];
  tokens.forEach((token, id) => {
    if (ADDED_TYPES.has(tokenTypes[id])) return;
    let split = 0;
    for (const char of token) {
      split += char.length;
      if (split === token.length) break;
      const left = token.slice(0, split);
      const right = token.slice(split);
      if (known.has(left) && known.has(right)) candidates.push({ left, right, id, split });
    }
  });
  candidates.sort((a, b) => scores[b.id] - scores[a.id] || a.id - b.id || a.split - b.split);
  return candidates.map(({ left, right }) => [left, right]);
}

/**
 * Returns the gpt2 pre-tokenizer name that tokenizer.json `json` is equivalent to, or undefined.
 * Recognizes the GPT-2 ByteLevel pre-tokenizer with its built-in regex, the Split forms written
 * by tokenizerJsonFromVocabulary, and Qwen2's tokenizer.json form.
 * NOTE: Qwen2's tokenizer.json also applies NFC normalization, which llama.cpp does not, so text
 * that is not in NFC can tokenize differently after export.
 */
export function recognizeGpt2PreTokenizer(
  json: Record<string, unknown>,
): Gpt2PreTokenizer | undefined {
  const normalizer = json.normalizer as { type?: unknown } | null | undefined;
  const pre = json.pre_tokenizer as Record<string, unknown> | null | undefined;
  if (!pre) return undefined;
  if (pre.type === 'ByteLevel') {
    const plain = normalizer == null && pre.add_prefix_space === false && pre.use_regex !== false;
    return plain ? 'gpt-2' : undefined;
  }
  const steps =
    pre.type === 'Sequence' && Array.isArray(pre.pretokenizers) ? pre.pretokenizers : [];
  const last = steps.at(-1) as Record<string, unknown> | undefined;
  if (last?.type !== 'ByteLevel' || last.add_prefix_space !== false || last.use_regex !== false) {
    return undefined;
  }
  const patterns = steps.slice(0, -1).map(isolatedSplitPattern);
  if (patterns.some((pattern) => pattern === undefined)) return undefined;
  const key = patterns.join('\n');
  if (key === QWEN2_HF_PATTERN || key === QWEN2_PATTERN) {
    return normalizer == null || normalizer.type === 'NFC' ? 'qwen2' : undefined;
  }
  if (normalizer != null) return undefined;
  return GPT2_PRE_TOKENIZERS.find((name) => SPLIT_PATTERNS[name].join('\n') === key);
}

function isolatedSplitPattern(step: unknown): string | undefined {
  const split = step as { type?: unknown; behavior?: unknown; invert?: unknown; pattern?: unknown };
  const pattern = (split.pattern as { Regex?: unknown } | undefined)?.Regex;
  const isolated = split.type === 'Split' && split.behavior === 'Isolated' && split.invert !== true;
  return isolated && typeof pattern === 'string' ? pattern : undefined;
}

/** Reads the GGUF_VOCABULARY_FIELD of tokenizer.json content, or undefined when absent. */
export function readStoredVocabulary(
  json: Record<string, unknown>,
  source: string,
): StoredGgufVocabulary | undefined {
  const stored = json[GGUF_VOCABULARY_FIELD] as Partial<StoredGgufVocabulary> | undefined;
  if (stored === undefined) return undefined;
  const numbers = (value: unknown) =>
    Array.isArray(value) && value.every((item) => typeof item === 'number');
  const valid =
    typeof stored === 'object' &&
    stored !== null &&
    (stored.model === 'gpt2'
      ? GPT2_PRE_TOKENIZERS.includes(stored.pre as Gpt2PreTokenizer)
      : stored.model === 'llama' &&
        numbers(stored.scores) &&
        typeof stored.add_space_prefix === 'boolean') &&
    numbers(stored.token_type);
  if (!valid) {
    throw new UserError(
      `Invalid tokenizer ${source}: the "${GGUF_VOCABULARY_FIELD}" field is malformed. ` +
        'Remove the field, or import the tokenizer from its GGUF file again.',
    );
  }
  return stored as StoredGgufVocabulary;
}
