/**
 * Text tokenizer: a Hugging Face tokenizer.json run by @huggingface/tokenizers.
 *
 * The wrapper overrides library defaults that would corrupt training data. Encode never adds
 * BOS/EOS. Decode never rewrites spaces around punctuation, because the library's
 * `clean_up_tokenization_spaces` defaults to true and turns "a ." into "a.". Decoding an empty id
 * list returns "" instead of throwing.
 */

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { BugError, UserError } from '../../shared/errors';
import { writeFileAtomically } from './atomic';
import { gpt2ByteSymbols } from './bpe-trainer';
import { END_OF_TEXT } from './prompts';

export const TOKENIZER_FILE = 'tokenizer.json';

/** Subset of an added_tokens entry of tokenizer.json that this wrapper reads and writes. */
export interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
  [field: string]: unknown;
}

interface TokenizerJson {
  model: Record<string, unknown>;
  added_tokens: AddedTokenJson[];
  [field: string]: unknown;
}

/**
 * Roles of special tokens, as tokenizer_config.json or GGUF metadata state them. Models trained
 * here use `<|endoftext|>` as end of sequence and no BOS; imported models bring their own.
 */
export interface TokenizerOptions {
  /** End-of-sequence token text; defaults to `<|endoftext|>`. */
  eosToken?: string;
  /** Beginning-of-sequence token text, when the model has one. */
  bosToken?: string;
  /** Whether a prompt starts with the BOS token (Llama SentencePiece models do). */
  addBosToken?: boolean;
  /** Jinja chat template, when the model ships one. */
  chatTemplate?: string;
}

export class TextTokenizer {
  /** One more than the largest id, added tokens included. */
  readonly vocabSize: number;
  private readonly specialIds: ReadonlySet<number>;

  private constructor(
    private readonly json: TokenizerJson,
    private readonly inner: Tokenizer,
    /** File path or description used in error messages. */
    readonly source: string,
    readonly options: Readonly<TokenizerOptions>,
  ) {
    let maxId = -1;
    for (const id of inner.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.specialIds = new Set(json.added_tokens.filter((t) => t.special).map((t) => t.id));
  }

  /**
   * Builds a tokenizer from parsed tokenizer.json content.
   * Throws a UserError naming `source` when the content is not a usable tokenizer.
   *
   * @example
   * const tokenizer = await TextTokenizer.fromJSON(trainByteLevelBpe(texts, options), 'starter');
   */
  static async fromJSON(
    json: unknown,
    source: string,
    options: TokenizerOptions = {},
  ): Promise<TextTokenizer> {
    const normalized = normalizeTokenizerJson(json, source);
    let inner: Tokenizer;
    try {
      inner = new Tokenizer(normalized, { clean_up_tokenization_spaces: false });
    } catch (error) {
      throw new UserError(`Invalid tokenizer ${source}: ${errorMessage(error)}.`, { cause: error });
    }
    let tokenizer: TextTokenizer;
    try {
      checkByteAlphabet(normalized, inner, source);
      tokenizer = new TextTokenizer(normalized, inner, source, { ...options });
    } catch (error) {
      if (error instanceof UserError) throw error;
      throw new UserError(`Invalid tokenizer ${source}: ${errorMessage(error)}.`, { cause: error });
    }
    tokenizer.checkRoles();
    tokenizer.checkContiguousIds();
    return tokenizer;
  }

  /** Loads `dir/tokenizer.json`. A missing or corrupt file gives a UserError naming its path. */
  static async load(dir: string, options: TokenizerOptions = {}): Promise<TextTokenizer> {
    const file = path.join(dir, TOKENIZER_FILE);
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (error) {
      const reason = isNotFound(error) ? 'file not found' : errorMessage(error);
      throw new UserError(
        `Cannot read tokenizer ${file}: ${reason}. Point to a folder that contains ${TOKENIZER_FILE}.`,
        { cause: error },
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new UserError(
        `Invalid tokenizer ${file}: not valid JSON (${errorMessage(error)}). ` +
          'Replace the file with a Hugging Face tokenizer.json.',
        { cause: error },
      );
    }
    return TextTokenizer.fromJSON(json, file, options);
  }

  /** Encodes `text` without adding BOS/EOS. Added tokens written in the text become their ids. */
  encode(text: string): number[] {
    return this.inner.encode(text, { add_special_tokens: false }).ids;
  }

  /** Decodes `ids` to text. `skipSpecialTokens` drops special added tokens such as `<|endoftext|>`. */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean } = {}): string {
    for (const id of ids) {
      if (
        !Number.isInteger(id) ||
        id < 0 ||
        id >= this.vocabSize ||
        this.idToToken(id) === undefined
      ) {
        throw new BugError(
          `Token id ${id} is not in the tokenizer ${this.source} (vocabulary size ${this.vocabSize}).`,
        );
      }
    }
    if (ids.length === 0) return '';
    return this.inner.decode([...ids], {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: false,
    });
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token) ?? undefined;
  }

  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id) ?? undefined;
  }

  /** End-of-sequence text: `options.eosToken`, else `<|endoftext|>`. */
  get eosToken(): string {
    return this.options.eosToken ?? END_OF_TEXT;
  }

  /** Id of the end-of-sequence token. Throws a UserError when the tokenizer lacks that token. */
  get eosId(): number {
    const id = this.tokenToId(this.eosToken);
    if (id === undefined) {
      throw new UserError(
        `Tokenizer ${this.source} has no ${this.eosToken} token. ` +
          `Add it to added_tokens as a special token.`,
      );
    }
    return id;
  }

  /** Id of the BOS token, or undefined when the model has none. */
  get bosId(): number | undefined {
    return this.options.bosToken === undefined ? undefined : this.tokenToId(this.options.bosToken);
  }

  /** Ids a prompt starts with: [BOS] when `addBosToken` is set, else none. */
  get promptPrefix(): number[] {
    const bos = this.bosId;
    return this.options.addBosToken && bos !== undefined ? [bos] : [];
  }

  /**
   * Rejects a vocabulary whose ids have gaps: a model samples every id below its vocabulary
   * size, and a sampled id without a token could not be decoded.
   */
  private checkContiguousIds(): void {
    for (let id = 0; id < this.vocabSize; id++) {
      if (this.inner.id_to_token(id) == null) {
        throw new UserError(
          `Invalid tokenizer ${this.source}: no token has id ${id}, though ids go up to ${this.vocabSize - 1}. ` +
            'Every id from 0 to the largest must have a token.',
        );
      }
    }
  }

  /** Rejects a BOS or EOS token text that is not in the vocabulary. */
  private checkRoles(): void {
    for (const [role, token] of [
      ['eos', this.options.eosToken],
      ['bos', this.options.bosToken],
    ] as const) {
      if (token !== undefined && this.tokenToId(token) === undefined) {
        throw new UserError(
          `Tokenizer ${this.source}: the ${role} token ${JSON.stringify(token)} is not in its vocabulary.`,
        );
      }
    }
  }

  /** Returns true when `id` is an added token marked `special: true`. */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /**
   * Returns a tokenizer with `tokens` added as special tokens, and the id of each token.
   * New tokens take ids from `vocabSize` upwards, in order. A token already in the vocabulary
   * (such as the digit "0") keeps its id and its current role. Encoding never splits an added
   * token, and `decode(ids, { skipSpecialTokens: true })` removes it. This tokenizer is unchanged.
   */
  async withAddedSpecialTokens(
    tokens: string[],
  ): Promise<{ tokenizer: TextTokenizer; ids: number[] }> {
    const added = [...this.json.added_tokens];
    const newIds = new Map<string, number>();
    const ids = tokens.map((token) => {
      if (token.length === 0) throw new UserError('Cannot add an empty string as a special token.');
      const existing = this.tokenToId(token) ?? newIds.get(token);
      if (existing !== undefined) return existing;
      const id = this.vocabSize + newIds.size;
      newIds.set(token, id);
      added.push(addedTokenJson(id, token));
      return id;
    });
    if (newIds.size === 0) return { tokenizer: this, ids };
    const tokenizer = await TextTokenizer.fromJSON(
      { ...this.json, added_tokens: added },
      this.source,
      this.options,
    );
    return { tokenizer, ids };
  }

  /** tokenizer.json content. It shares the vocabulary and merges with this tokenizer: do not mutate it. */
  toJSON(): object {
    return { ...this.json, added_tokens: this.json.added_tokens.map((token) => ({ ...token })) };
  }

  /** Writes `dir/tokenizer.json` atomically (temporary file, then rename), creating `dir`. */
  async save(dir: string): Promise<void> {
    const file = path.join(dir, TOKENIZER_FILE);
    try {
      await writeFileAtomically(file, JSON.stringify(this.toJSON()));
    } catch (error) {
      throw new UserError(`Cannot write tokenizer ${file}: ${errorMessage(error)}.`, {
        cause: error,
      });
    }
  }
}

/** Returns an added_tokens entry that the tokenizer never splits or normalizes. */
export function addedTokenJson(id: number, content: string, special = true): AddedTokenJson {
  return {
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special,
  };
}

/**
 * Checks the fields the library needs and fills in missing pipeline keys with null, because the
 * library rejects a file that omits any of them.
 */
function normalizeTokenizerJson(json: unknown, source: string): TokenizerJson {
  if (!isObject(json)) {
    throw new UserError(
      `Invalid tokenizer ${source}: expected a JSON object, got ${describe(json)}.`,
    );
  }
  if (!isObject(json.model)) {
    throw new UserError(
      `Invalid tokenizer ${source}: the "model" field is missing or not an object.`,
    );
  }
  const addedTokens = json.added_tokens ?? [];
  if (!Array.isArray(addedTokens)) {
    throw new UserError(`Invalid tokenizer ${source}: "added_tokens" must be a list.`);
  }
  addedTokens.forEach((token, index) => {
    if (!isObject(token) || !Number.isInteger(token.id) || typeof token.content !== 'string') {
      throw new UserError(
        `Invalid tokenizer ${source}: added_tokens[${index}] needs an integer "id" and a string "content".`,
      );
    }
  });
  return {
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: null,
    ...json,
    model: json.model,
    added_tokens: addedTokens as AddedTokenJson[],
  };
}

/**
 * Rejects a byte-level BPE vocabulary that lacks some of the 256 byte symbols. The library would
 * silently drop the characters that need them, because it has no unknown token to fall back on.
 */
function checkByteAlphabet(json: TokenizerJson, inner: Tokenizer, source: string): void {
  if (json.model.type !== 'BPE' || !usesByteLevel(json.pre_tokenizer)) return;
  const missing = gpt2ByteSymbols().filter((symbol) => inner.token_to_id(symbol) === undefined);
  if (missing.length > 0) {
    throw new UserError(
      `Invalid tokenizer ${source}: the byte-level BPE vocabulary lacks ${missing.length} of the ` +
        `256 byte symbols (first: ${JSON.stringify(missing[0])}), so some text cannot be encoded.`,
    );
  }
}

function usesByteLevel(preTokenizer: unknown): boolean {
  if (!isObject(preTokenizer)) return false;
  if (preTokenizer.type === 'ByteLevel') return true;
  const steps = preTokenizer.pretokenizers;
  return preTokenizer.type === 'Sequence' && Array.isArray(steps) && steps.some(usesByteLevel);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  return Array.isArray(value) ? 'a list' : typeof value;
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
