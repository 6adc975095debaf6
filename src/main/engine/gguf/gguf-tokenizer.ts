/**
 * Tokenizers stored in GGUF metadata (`tokenizer.ggml.*`): import as a TextTokenizer that encodes
 * like llama.cpp, and export a TextTokenizer as metadata that llama.cpp runs.
 */

import { GGUFValueType } from '@huggingface/gguf';
import { UserError } from '../../../shared/errors';
import { TextTokenizer } from '../tokenizer';
import {
  isByteFallbackBpe,
  type SentencePieceForm,
  sentencePieceFromBpe,
} from './gguf-spm-from-bpe';
import {
  byteTokenName,
  type GgufVocabulary,
  GPT2_PRE_TOKENIZERS,
  type Gpt2PreTokenizer,
  readStoredVocabulary,
  recognizeGpt2PreTokenizer,
  type StoredGgufVocabulary,
  TokenType,
  tokenizerJsonFromVocabulary,
  UNMERGED_SCORE,
} from './gguf-vocab';

/** One GGUF metadata entry, in the form of @huggingface/gguf's GGUFTypedMetadata values. */
export interface GgufTypedValue {
  value: unknown;
  type: GGUFValueType;
  subType?: GGUFValueType;
}

const KEY = {
  model: 'tokenizer.ggml.model',
  pre: 'tokenizer.ggml.pre',
  tokens: 'tokenizer.ggml.tokens',
  tokenType: 'tokenizer.ggml.token_type',
  scores: 'tokenizer.ggml.scores',
  merges: 'tokenizer.ggml.merges',
  bosId: 'tokenizer.ggml.bos_token_id',
  eosId: 'tokenizer.ggml.eos_token_id',
  unknownId: 'tokenizer.ggml.unknown_token_id',
  addBos: 'tokenizer.ggml.add_bos_token',
  addSpacePrefix: 'tokenizer.ggml.add_space_prefix',
  chatTemplate: 'tokenizer.chat_template',
} as const;

/**
 * Builds the tokenizer that `metadata` describes, encoding text to the same ids as llama.cpp.
 * `metadata` contains plain values as @huggingface/gguf's gguf() returns them (arrays as JS arrays).
 * Throws a UserError naming `source` and the field when the metadata is missing, mistyped or
 * inconsistent, or describes a vocabulary kind other than `gpt2` and `llama`.
 *
 * @example
 * const { metadata } = await gguf(file, { allowLocalFile: true });
 * const tokenizer = await tokenizerFromGguf(metadata, file);
 */
export async function tokenizerFromGguf(
  metadata: Record<string, unknown>,
  source: string,
): Promise<TextTokenizer> {
  const reader = new MetadataReader(metadata, source);
  const vocabulary = readVocabulary(reader);
  const { tokens } = vocabulary;
  const isLlama = vocabulary.model === 'llama';
  // llama.cpp's defaults when the ids are absent: 1 and 2 for SentencePiece, none for gpt2.
  const bosId = reader.tokenId(KEY.bosId, tokens.length) ?? (isLlama ? 1 : undefined);
  const eosId = reader.tokenId(KEY.eosId, tokens.length) ?? (isLlama ? 2 : undefined);
  const addBosToken = reader.optionalBoolean(KEY.addBos) ?? isLlama;
  if (addBosToken && bosId === undefined) {
    reader.fail(KEY.bosId, `is missing, but ${KEY.addBos} is true`);
  }
  // The studio writes a model without BOS with the EOS id in the BOS field, because llama.cpp
  // needs one. Read back, that model again has no BOS, so templates never get EOS as bos_token.
  const noBos = bosId === undefined || (!addBosToken && bosId === eosId);
  return TextTokenizer.fromJSON(tokenizerJsonFromVocabulary(vocabulary), source, {
    eosToken: eosId === undefined ? undefined : tokens[eosId],
    bosToken: noBos ? undefined : tokens[bosId],
    addBosToken,
    chatTemplate: reader.optionalString(KEY.chatTemplate),
  });
}

function readVocabulary(reader: MetadataReader): GgufVocabulary {
  const model = reader.string(KEY.model);
  if (model !== 'gpt2' && model !== 'llama') {
    reader.fail(
      KEY.model,
      `is ${JSON.stringify(model)}, a vocabulary kind Attune does not support`,
      'Use a model whose tokenizer is gpt2 (byte-level BPE) or llama (SentencePiece).',
    );
  }

  const tokens = readTokens(reader);
  // NOTE: llama.cpp also treats some normal-typed tokens as control by their text, such as
  // <|im_end|> and <|eot_id|> when no EOT id is set. Here only the stored types count.
  const tokenTypes = readTokenTypes(reader, tokens.length);

  if (model === 'gpt2') {
    const pre = reader.optionalString(KEY.pre) ?? 'default';
    if (!GPT2_PRE_TOKENIZERS.includes(pre as Gpt2PreTokenizer)) {
      reader.fail(
        KEY.pre,
        `is ${JSON.stringify(pre)}, a pre-tokenizer Attune does not support`,
        `Use a model whose pre-tokenizer is one of: ${GPT2_PRE_TOKENIZERS.join(', ')}.`,
      );
    }
    const merges = readMerges(reader, new Set(tokens));
    return { model, pre: pre as Gpt2PreTokenizer, tokens, tokenTypes, merges };
  }

  const scores = reader.numberArray(KEY.scores);
  if (scores.length !== tokens.length) reader.failLength(KEY.scores, scores.length, tokens.length);
  checkByteTokens(reader, tokens);
  const unknownId = reader.tokenId(KEY.unknownId, tokens.length) ?? 0;
  const addSpacePrefix = reader.optionalBoolean(KEY.addSpacePrefix) ?? true;
  return { model, tokens, tokenTypes, scores, unknownId, addSpacePrefix };
}

/** Reads the token list; llama.cpp renames empty tokens and rejects repeated ones. */
function readTokens(reader: MetadataReader): string[] {
  const tokens = reader.stringArray(KEY.tokens);
  if (tokens.length === 0) reader.fail(KEY.tokens, 'is empty');
  const seen = new Map<string, number>();
  return tokens.map((raw, id) => {
    const token = raw === '' ? `[EMPTY_${id}]` : raw;
    const first = seen.get(token);
    if (first !== undefined) {
      reader.fail(KEY.tokens, `lists ${JSON.stringify(token)} twice (ids ${first} and ${id})`);
    }
    seen.set(token, id);
    return token;
  });
}

function readTokenTypes(reader: MetadataReader, count: number): number[] {
  const types = reader.numberArray(KEY.tokenType);
  if (types.length !== count) reader.failLength(KEY.tokenType, types.length, count);
  types.forEach((type, id) => {
    if (!Number.isInteger(type) || type < TokenType.normal || type > TokenType.byte) {
      reader.fail(KEY.tokenType, `has ${type} at id ${id}; expected an integer from 1 to 6`);
    }
  });
  return types;
}

/** Reads merges "left right"; both parts and their concatenation must be tokens. */
function readMerges(reader: MetadataReader, tokens: ReadonlySet<string>): [string, string][] {
  return reader.stringArray(KEY.merges).map((merge, index) => {
    // llama.cpp splits at the first space after the first character.
    const space = merge.indexOf(' ', 1);
    const left = merge.slice(0, Math.max(space, 0));
    const right = merge.slice(space + 1);
    if (space < 0 || !tokens.has(left) || !tokens.has(right) || !tokens.has(left + right)) {
      reader.fail(
        KEY.merges,
        `has ${JSON.stringify(merge)} at index ${index}, which is not two tokens that merge into a token`,
      );
    }
    return [left, right];
  });
}

/** Requires the 256 `<0xNN>` tokens, because llama.cpp aborts on a character it cannot spell. */
function checkByteTokens(reader: MetadataReader, tokens: string[]): void {
  const known = new Set(tokens);
  for (let byte = 0; byte < 256; byte++) {
    const token = byteTokenName(byte);
    if (!known.has(token)) {
      reader.fail(KEY.tokens, `lacks the byte token ${token}, so some text cannot be encoded`);
    }
  }
}

/** Typed access to GGUF metadata; every failure is a UserError naming the source and the key. */
class MetadataReader {
  constructor(
    private readonly metadata: Record<string, unknown>,
    private readonly source: string,
  ) {}

  fail(
    key: string,
    problem: string,
    fix = 'Convert the model to GGUF again with a current llama.cpp converter.',
  ): never {
    throw new UserError(`Invalid GGUF tokenizer in ${this.source}: ${key} ${problem}. ${fix}`);
  }

  failLength(key: string, length: number, expected: number): never {
    this.fail(key, `has ${length} entries but ${KEY.tokens} has ${expected}`);
  }

  private required(key: string): unknown {
    const value = this.metadata[key];
    if (value === undefined) this.fail(key, 'is missing');
    return value;
  }

  string(key: string): string {
    const value = this.required(key);
    if (typeof value !== 'string') this.fail(key, `must be a string, got ${describe(value)}`);
    return value;
  }

  optionalString(key: string): string | undefined {
    return this.metadata[key] === undefined ? undefined : this.string(key);
  }

  optionalBoolean(key: string): boolean | undefined {
    const value = this.metadata[key];
    if (value === undefined || typeof value === 'boolean') return value;
    this.fail(key, `must be a boolean, got ${describe(value)}`);
  }

  stringArray(key: string): string[] {
    const value = this.list(key, 'strings');
    const bad = value.findIndex((item) => typeof item !== 'string');
    if (bad >= 0) {
      this.fail(key, `must contain only strings, got ${describe(value[bad])} at ${bad}`);
    }
    return value as string[];
  }

  numberArray(key: string): number[] {
    const value = this.list(key, 'numbers');
    const bad = value.findIndex((item) => typeof item !== 'number' || !Number.isFinite(item));
    if (bad >= 0) {
      this.fail(key, `must contain only finite numbers, got ${String(value[bad])} at ${bad}`);
    }
    return value as number[];
  }

  /** A required array; typed arrays, which GGUF readers may return for numbers, are copied. */
  private list(key: string, items: string): unknown[] {
    const value = this.required(key);
    if (Array.isArray(value)) return value;
    if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
      return Array.from(value as unknown as ArrayLike<unknown>);
    }
    this.fail(key, `must be an array of ${items}, got ${describe(value)}`);
  }

  /** An optional token id, which must be an integer below `count`. */
  tokenId(key: string, count: number): number | undefined {
    const value = this.metadata[key];
    if (value === undefined) return undefined;
    const id = typeof value === 'bigint' ? Number(value) : value;
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= count) {
      this.fail(key, `is ${String(value)}, not a token id from 0 to ${count - 1}`);
    }
    return id;
  }
}

/**
 * Returns GGUF metadata for `tokenizer`, typed as @huggingface/gguf's GGUFTypedMetadata entries.
 *
 * A byte-level BPE tokenizer (GPT-2 ByteLevel, or a gpt2 tokenizer imported from GGUF) becomes
 * the `gpt2` form with its merges. A tokenizer imported from a `llama` GGUF becomes the `llama`
 * form with its scores. A Hugging Face BPE tokenizer with byte_fallback (SentencePiece as
 * Llama 2 ships it) becomes the `llama` form with scores derived from its merge ranks.
 * Added special tokens and `controlTokenIds` get token type 3 (control), other added tokens 4.
 * Throws a UserError when the tokenizer has another form, a gap in its ids, no EOS token, or
 * a SentencePiece-style option that llama.cpp would tokenize differently.
 */
export function tokenizerToGguf(
  tokenizer: TextTokenizer,
  options: { controlTokenIds?: readonly number[] } = {},
): Record<string, GgufTypedValue> {
  const json = tokenizer.toJSON() as Record<string, unknown>;
  const stored = readStoredVocabulary(json, tokenizer.source);
  const tokens = tokenList(tokenizer);
  const controlIds = new Set(options.controlTokenIds ?? []);
  for (const id of controlIds) {
    if (!Number.isInteger(id) || id < 0 || id >= tokens.length) {
      throw new UserError(
        `Cannot export tokenizer ${tokenizer.source} to GGUF: control token id ${id} is not a ` +
          `token id from 0 to ${tokens.length - 1}.`,
      );
    }
  }
  const tokenTypes = exportedTokenTypes(json, stored, controlIds, tokens.length);
  const metadata = vocabularyEntries(tokenizer, json, stored, tokens, tokenTypes);

  const eosId = tokenizer.eosId;
  metadata[KEY.eosId] = uint32(eosId);
  // Without a BOS id, llama.cpp falls back to id 11 for gpt2; GPT-2 itself uses EOS as BOS.
  metadata[KEY.bosId] = uint32(tokenizer.bosId ?? eosId);
  metadata[KEY.addBos] = {
    value: tokenizer.options.addBosToken ?? false,
    type: GGUFValueType.BOOL,
  };
  const template = tokenizer.options.chatTemplate;
  if (template !== undefined) metadata[KEY.chatTemplate] = string(template);
  return metadata;
}

/** Returns the vocabulary entries in GGUF form: `llama` with scores, or `gpt2` with merges. */
function vocabularyEntries(
  tokenizer: TextTokenizer,
  json: Record<string, unknown>,
  stored: StoredGgufVocabulary | undefined,
  tokens: string[],
  tokenTypes: number[],
): Record<string, GgufTypedValue> {
  if (stored?.model === 'llama') {
    const scores = tokens.map((_, id) => stored.scores?.[id] ?? UNMERGED_SCORE);
    const form = { scores, tokenTypes, addSpacePrefix: stored.add_space_prefix ?? true };
    return llamaEntries(tokenizer, json, tokens, form);
  }
  const sentencePiece =
    stored === undefined &&
    isByteFallbackBpe(json) &&
    recognizeGpt2PreTokenizer(json) === undefined;
  if (sentencePiece) {
    const encode = (text: string) => tokenizer.encode(text);
    const form = sentencePieceFromBpe(json, tokens, tokenTypes, tokenizer.source, encode);
    return llamaEntries(tokenizer, json, tokens, form);
  }
  return gpt2Entries(tokenizer, json, stored, tokens, tokenTypes);
}

function gpt2Entries(
  tokenizer: TextTokenizer,
  json: Record<string, unknown>,
  stored: StoredGgufVocabulary | undefined,
  tokens: string[],
  tokenTypes: number[],
): Record<string, GgufTypedValue> {
  const model = json.model as { type?: unknown; merges?: unknown };
  const pre = model.type === 'BPE' ? (stored?.pre ?? recognizeGpt2PreTokenizer(json)) : undefined;
  if (pre === undefined) {
    const preType = (json.pre_tokenizer as { type?: unknown } | null)?.type ?? 'none';
    throw new UserError(
      `Cannot export tokenizer ${tokenizer.source} to GGUF: it is neither byte-level BPE with a ` +
        'GPT-2 or Qwen2 pre-tokenizer, nor BPE with byte_fallback, nor a tokenizer imported ' +
        `from GGUF (model ${String(model.type)}, pre-tokenizer ${String(preType)}). ` +
        'Only those tokenizers have a GGUF form that llama.cpp tokenizes the same way.',
    );
  }
  return {
    [KEY.model]: string('gpt2'),
    [KEY.pre]: string(pre),
    [KEY.tokens]: stringArray(tokens),
    [KEY.tokenType]: int32Array(tokenTypes),
    [KEY.merges]: stringArray(exportedMerges(tokenizer, model.merges)),
  };
}

function llamaEntries(
  tokenizer: TextTokenizer,
  json: Record<string, unknown>,
  tokens: string[],
  form: SentencePieceForm,
): Record<string, GgufTypedValue> {
  const metadata: Record<string, GgufTypedValue> = {
    [KEY.model]: string('llama'),
    [KEY.tokens]: stringArray(tokens),
    [KEY.scores]: { value: form.scores, type: GGUFValueType.ARRAY, subType: GGUFValueType.FLOAT32 },
    [KEY.tokenType]: int32Array(form.tokenTypes),
    [KEY.addSpacePrefix]: { value: form.addSpacePrefix, type: GGUFValueType.BOOL },
  };
  const unknownToken = (json.model as { unk_token?: unknown }).unk_token;
  const unknownId =
    typeof unknownToken === 'string' ? tokenizer.tokenToId(unknownToken) : undefined;
  if (unknownId !== undefined) metadata[KEY.unknownId] = uint32(unknownId);
  return metadata;
}

/** Every token in id order; GGUF stores the vocabulary as a list, so ids must have no gaps. */
function tokenList(tokenizer: TextTokenizer): string[] {
  return Array.from({ length: tokenizer.vocabSize }, (_, id) => {
    const token = tokenizer.idToToken(id);
    if (token === undefined) {
      throw new UserError(
        `Cannot export tokenizer ${tokenizer.source} to GGUF: it has no token with id ${id}, ` +
          `but GGUF needs every id from 0 to ${tokenizer.vocabSize - 1}.`,
      );
    }
    return token;
  });
}

/**
 * Token type of every id: control for `controlIds`, else the type stored at import, else control
 * for special added tokens and user-defined for the other added tokens, else normal.
 */
function exportedTokenTypes(
  json: Record<string, unknown>,
  stored: StoredGgufVocabulary | undefined,
  controlIds: ReadonlySet<number>,
  count: number,
): number[] {
  const added = (json.added_tokens ?? []) as { id: number; special?: boolean }[];
  const addedTypes = new Map(
    added.map(({ id, special }) => [id, special ? TokenType.control : TokenType.userDefined]),
  );
  return Array.from({ length: count }, (_, id) => {
    if (controlIds.has(id)) return TokenType.control;
    return stored?.token_type[id] ?? addedTypes.get(id) ?? TokenType.normal;
  });
}

/** Merges as "left right" strings, the form llama.cpp reads. */
function exportedMerges(tokenizer: TextTokenizer, merges: unknown): string[] {
  if (!Array.isArray(merges)) {
    throw new UserError(`Cannot export tokenizer ${tokenizer.source} to GGUF: it has no merges.`);
  }
  return merges.map((merge, index) => {
    const parts: unknown[] = Array.isArray(merge) ? merge : String(merge).split(' ');
    const [left, right] = parts;
    // llama.cpp splits each merge at the first space after the first character.
    const valid =
      parts.length === 2 &&
      typeof left === 'string' &&
      typeof right === 'string' &&
      left.length > 0 &&
      right.length > 0 &&
      left.indexOf(' ', 1) < 0;
    if (!valid) {
      throw new UserError(
        `Cannot export tokenizer ${tokenizer.source} to GGUF: merge ${index} ` +
          `(${JSON.stringify(merge)}) cannot be written as "left right".`,
      );
    }
    return `${left} ${right}`;
  });
}

function string(value: string): GgufTypedValue {
  return { value, type: GGUFValueType.STRING };
}

function uint32(value: number): GgufTypedValue {
  return { value, type: GGUFValueType.UINT32 };
}

function stringArray(value: string[]): GgufTypedValue {
  return { value, type: GGUFValueType.ARRAY, subType: GGUFValueType.STRING };
}

function int32Array(value: number[]): GgufTypedValue {
  return { value, type: GGUFValueType.ARRAY, subType: GGUFValueType.INT32 };
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'string' ? JSON.stringify(value) : typeof value;
}
