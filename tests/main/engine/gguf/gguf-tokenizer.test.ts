import { promises as fs } from 'node:fs';
import path from 'node:path';
import { GGUFValueType, gguf, serializeGgufMetadata } from '@huggingface/gguf';
import { getLlama, type Llama, LlamaLogLevel, type LlamaModel } from 'node-llama-cpp';
import seedrandom from 'seedrandom';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gpt2ByteSymbols, trainByteLevelBpe } from '../../../../src/main/engine/bpe-trainer';
import {
  type GgufTypedValue,
  tokenizerFromGguf,
  tokenizerToGguf,
} from '../../../../src/main/engine/gguf/gguf-tokenizer';
import { END_OF_TEXT, specialSteeringToken } from '../../../../src/main/engine/prompts';
import { starterOccupations } from '../../../../src/main/engine/starter';
import { generateStarterCorpus } from '../../../../src/main/engine/starter-corpus';
import { TextTokenizer } from '../../../../src/main/engine/tokenizer';
import { UserError } from '../../../../src/shared/errors';
import { makeTempDir } from '../../../helpers/tiny-model';

const STARTER = path.resolve('resources/starter-model');
const FEMALE = specialSteeringToken('gender', 'female');
const MALE = specialSteeringToken('gender', 'male');
const NON_BINARY = specialSteeringToken('gender', 'non_binary');
const USER_DEFINED = '<|sep|>';
const { ARRAY, BOOL, FLOAT32, INT32, STRING, UINT32 } = GGUFValueType;

/** Texts both tokenizers must encode to the same ids. */
const PARITY_TEXTS = [
  'Q: What is the gender of a typical worker in the occupation "Nurses" in the UK?\nA:',
  ' She is a nurse.',
  'Hello world',
  '  two leading spaces',
  'trailing space ',
  'multiple   inner    spaces',
  '\ttab\tseparated\t',
  'line one\nline two\n\nline four',
  '\n\n\n',
  'Windows\r\nline ending',
  "don't, won't; I'm sure you'll see. It's HE'S and THEY'RE",
  'Punctuation!? (yes) [no] {maybe} <tag> "quoted" ... --',
  '1234567890',
  'Version 3.14.159 costs $1,234.56 or 99%',
  'café naïve résumé Zürich São Paulo',
  'Ελληνικά и русский текст',
  '日本語のテキスト、中文文本。',
  'emoji 🙂 family 👩‍👩‍👧 flag 🇬🇧 heart ❤️',
  `${FEMALE} She works as a nurse.`,
  `A: ${MALE} He is a firefighter.${END_OF_TEXT}`,
  `${END_OF_TEXT}${END_OF_TEXT}`,
  `x${FEMALE}y${MALE}z`,
  '<|gender:female',
  `left${USER_DEFINED}right`,
  `a ${USER_DEFINED} b`,
  'Start<s>and</s> <unk> end',
  'Mixed CASE and camelCaseWords and snake_case_words',
  'email@example.com and https://example.org/path?q=1&r=2',
  'math: 2+2=4, x^2 <= y ~ z | w',
  '',
  ' ',
  '   ',
  'a',
  'UPPERCASE SENTENCE WITH NUMBERS 42 AND 7',
  'The surgeon, the nurse and the pilot met at 9:30 a.m. on 2024-05-01.',
  'non\u00a0breaking\u2003em space',
  'zero\u200bwidth space',
  'quotes ‘single’ “double” — dash – en',
  '    indented code();\n        more();',
  ' This worker is female. She often helps newer colleagues. '.repeat(5),
];

/**
 * Merges the starter tokenizer lacks. The default, gpt-2 and qwen2 regexes put the parts of these
 * merges in one word or in two for PRE_TOKENIZER_TEXTS, so those texts tell the three apart.
 */
const EXTRA_MERGES: [string, string][] = [
  ['?', 'Ċ'],
  ['Ġ', '4'],
  ['1', '2'],
  ['3', '4'],
  ["'", 'S'],
  ['(', 'y'],
];
const PRE_TOKENIZER_TEXTS = [
  'Why?\nBecause.',
  'I have 4 cats and 12 dogs, 1234 in all',
  "HE'S here",
  '(yes)',
];

/** Appends EXTRA_MERGES and the tokens they make to gpt2 `entries`. */
function withExtraMerges(entries: Record<string, GgufTypedValue>): Record<string, GgufTypedValue> {
  const list = (key: string) => entries[key].value as unknown[];
  return {
    ...entries,
    'tokenizer.ggml.tokens': {
      ...entries['tokenizer.ggml.tokens'],
      value: [...list('tokenizer.ggml.tokens'), ...EXTRA_MERGES.map(([a, b]) => a + b)],
    },
    'tokenizer.ggml.token_type': {
      ...entries['tokenizer.ggml.token_type'],
      value: [...list('tokenizer.ggml.token_type'), ...EXTRA_MERGES.map(() => 1)],
    },
    'tokenizer.ggml.merges': {
      ...entries['tokenizer.ggml.merges'],
      value: [...list('tokenizer.ggml.merges'), ...EXTRA_MERGES.map(([a, b]) => `${a} ${b}`)],
    },
  };
}

/** Minimal llama hyperparameters that llama.cpp needs to load a vocabulary-only file. */
const VOCAB_ONLY_MODEL: Record<string, GgufTypedValue> = {
  'general.architecture': { value: 'llama', type: STRING },
  'llama.context_length': { value: 256, type: UINT32 },
  'llama.embedding_length': { value: 64, type: UINT32 },
  'llama.block_count': { value: 1, type: UINT32 },
  'llama.feed_forward_length': { value: 128, type: UINT32 },
  'llama.attention.head_count': { value: 4, type: UINT32 },
  'llama.attention.layer_norm_rms_epsilon': { value: 1e-5, type: FLOAT32 },
};

let dir: string;
let starter: TextTokenizer;
let steeredStarter: TextTokenizer;
let spmEntries: Record<string, GgufTypedValue>;
let hfSpmJson: HfTokenizerJson;
let hfSpm: TextTokenizer;

beforeAll(async () => {
  dir = await makeTempDir('attune-gguf-tokenizer-');
  starter = await TextTokenizer.load(STARTER);
  steeredStarter = (await starter.withAddedSpecialTokens([FEMALE, MALE])).tokenizer;
  spmEntries = sentencePieceEntries();
  hfSpmJson = withLlamaSpaceRuns(huggingFaceSentencePiece(spmEntries));
  hfSpm = await TextTokenizer.fromJSON(hfSpmJson, 'hf-spm', HF_SPM_ROLES);
});

afterAll(async () => {
  await (await llama)?.dispose();
  await fs.rm(dir, { recursive: true, force: true });
});

/** Writes a GGUF file with no tensors, only the vocabulary-only model and `entries`. */
async function writeGguf(name: string, entries: Record<string, GgufTypedValue>): Promise<string> {
  const file = path.join(dir, name);
  const all = { ...VOCAB_ONLY_MODEL, ...entries };
  const header = {
    version: { value: 3, type: UINT32 },
    tensor_count: { value: 0n, type: GGUFValueType.UINT64 },
    kv_count: { value: BigInt(Object.keys(all).length), type: GGUFValueType.UINT64 },
  };
  // biome-ignore lint/suspicious/noExplicitAny: the entries are valid GGUFTypedMetadata values.
  await fs.writeFile(file, serializeGgufMetadata({ ...header, ...all } as any));
  return file;
}

async function readMetadata(file: string): Promise<Record<string, unknown>> {
  const { metadata } = await gguf(file, { allowLocalFile: true });
  return metadata as Record<string, unknown>;
}

let llama: Promise<Llama> | undefined;

/**
 * llama.cpp through node-llama-cpp's prebuilt CPU binary, never built or downloaded. Before each
 * load, node-llama-cpp estimates memory by loading the file with its tensors, which fails for a
 * vocabulary-only file. The log drops those failures, because the real load succeeds.
 */
function llamaCpp(): Promise<Llama> {
  llama ??= getLlama({
    gpu: false,
    build: 'never',
    usePrebuiltBinaries: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
    logger: (level, message) => {
      if (!/missing tensor|failed to load model/.test(message))
        console.error(`[${level}] ${message}`);
    },
  });
  return llama;
}

async function withLlamaCpp<T>(file: string, use: (model: LlamaModel) => T): Promise<T> {
  const model = await (await llamaCpp()).loadModel({ modelPath: file, vocabOnly: true });
  try {
    return use(model);
  } finally {
    await model.dispose();
  }
}

/** llama.cpp's ids for `text`, with special tokens written in the text parsed. */
function llamaCppIds(model: LlamaModel, text: string): number[] {
  return model.tokenize(text, true).map(Number);
}

function llamaCppText(model: LlamaModel, ids: number[]): string {
  // biome-ignore lint/suspicious/noExplicitAny: node-llama-cpp brands token ids as Token.
  return model.detokenize(ids as any, true);
}

/**
 * Returns whether llama.cpp's detokenizer rewrites `text`: for gpt2 vocabularies with the
 * `default` and `gpt-2` pre-tokenizers it removes the space before ? ! . , and before 's 'm 're 've,
 * and the spaces around a lone apostrophe.
 */
function llamaCppCleansSpaces(text: string): boolean {
  return / [?!.,']/.test(text);
}

/**
 * Returns pieces and scores from a BPE trained on the starter corpus, with "▁" for spaces and
 * score -rank, so that earlier merges score higher.
 */
function corpusPieces(): [string, number][] {
  const corpus = generateStarterCorpus(starterOccupations().slice(0, 40), {
    seed: 3,
    examplesPerOccupation: 6,
    gamma: 2,
    unknownShare: 0.05,
  });
  const bpe = trainByteLevelBpe(
    corpus.map((e) => e.prompt + e.response),
    { vocabSize: 700, specialTokens: [] },
  ) as { model: { vocab: Record<string, number> } };
  const byteOf = new Map(gpt2ByteSymbols().map((symbol, byte) => [symbol, byte]));
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const pieces: [string, number][] = [];
  for (const [token, rank] of Object.entries(bpe.model.vocab).sort((a, b) => a[1] - b[1])) {
    const bytes = Uint8Array.from(Array.from(token, (symbol) => byteOf.get(symbol) ?? 0));
    let text: string;
    try {
      text = decoder.decode(bytes);
    } catch {
      continue;
    }
    // SentencePiece leaves control characters such as "\n" to the byte tokens.
    if (Array.from(text).some((char) => char.charCodeAt(0) < 0x20)) continue;
    pieces.push([text.replaceAll(' ', '▁'), -rank]);
  }
  return pieces;
}

/**
 * Returns about 60 pieces that join a piece and the next word, with random scores, so that the
 * merge order depends on scores and not on how the pieces were built.
 */
function crossWordPieces(pieces: [string, number][]): [string, number][] {
  const random = seedrandom('attune-spm-vocab');
  const known = new Set(pieces.map(([piece]) => piece));
  const words = pieces.filter(([piece]) => piece.startsWith('▁') && piece.length > 2);
  const joined: [string, number][] = [];
  for (let i = 0; i < 60; i++) {
    const [left] = pieces[Math.floor(random() * pieces.length)];
    const [right] = words[Math.floor(random() * words.length)];
    const piece = left + right;
    if (known.has(piece) || left.endsWith('▁')) continue;
    known.add(piece);
    joined.push([piece, -Math.floor(random() * 700) - 0.5]);
  }
  return joined;
}

/**
 * Builds the GGUF entries of a SentencePiece-style `llama` vocabulary: <unk>, <s>, </s>, the 256
 * byte tokens, the corpus and cross-word pieces, an accent piece, then two control tokens, a
 * user-defined token and an unused token.
 */
function sentencePieceEntries(): Record<string, GgufTypedValue> {
  const pieces = corpusPieces();
  pieces.push(...crossWordPieces(pieces), ['é', -5.25], ['▁caf', -600.5], ['▁café', -2.75]);

  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  const scores = [0, 0, 0];
  for (let byte = 0; byte < 256; byte++) {
    tokens.push(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
    scores.push(0);
  }
  for (const [piece, score] of pieces) {
    tokens.push(piece);
    types.push(1);
    scores.push(score);
  }
  tokens.push(FEMALE, MALE, USER_DEFINED, '<unused0>');
  types.push(3, 3, 4, 5);
  scores.push(0, 0, 0, 0);

  return {
    'tokenizer.ggml.model': { value: 'llama', type: STRING },
    'tokenizer.ggml.tokens': { value: tokens, type: ARRAY, subType: STRING },
    'tokenizer.ggml.scores': { value: scores, type: ARRAY, subType: FLOAT32 },
    'tokenizer.ggml.token_type': { value: types, type: ARRAY, subType: INT32 },
    'tokenizer.ggml.bos_token_id': { value: 1, type: UINT32 },
    'tokenizer.ggml.eos_token_id': { value: 2, type: UINT32 },
    'tokenizer.ggml.unknown_token_id': { value: 0, type: UINT32 },
    'tokenizer.chat_template': { value: '{{ bos_token }}{{ messages[0].content }}', type: STRING },
  };
}

interface HfTokenizerJson {
  normalizer: object | null;
  pre_tokenizer: object | null;
  decoder: object | null;
  added_tokens: Record<string, unknown>[];
  model: { vocab: Record<string, number>; merges: string[]; [field: string]: unknown };
  [field: string]: unknown;
}

const HF_SPM_ROLES = { bosToken: '<s>', eosToken: '</s>', addBosToken: true };
const SPACE_TO_MARKER = { type: 'Replace', pattern: { String: ' ' }, content: '▁' };
const MARKER_TO_SPACE = { type: 'Replace', pattern: { String: '▁' }, content: ' ' };

/**
 * Returns the tokenizer.json that Hugging Face's Llama converter writes for the `llama`
 * vocabulary `entries`. The merges list every split of a token into two tokens, grouped by the
 * token's score (highest first, ties by id) and ordered by the ids of the parts within a group.
 * Control and unknown tokens become special added tokens, user-defined ones plain added tokens.
 */
function huggingFaceSentencePiece(entries: Record<string, GgufTypedValue>): HfTokenizerJson {
  const tokens = entries['tokenizer.ggml.tokens'].value as string[];
  const scores = entries['tokenizer.ggml.scores'].value as number[];
  const types = entries['tokenizer.ggml.token_type'].value as number[];
  const vocab: Record<string, number> = Object.fromEntries(tokens.map((token, id) => [token, id]));
  const merges: string[] = [];
  const byScore = tokens.map((_, id) => id).sort((a, b) => scores[b] - scores[a] || a - b);
  for (const id of byScore) {
    const chars = Array.from(tokens[id]);
    const splits: [string, string][] = [];
    for (let i = 1; i < chars.length; i++) {
      const split: [string, string] = [chars.slice(0, i).join(''), chars.slice(i).join('')];
      if (split[0] in vocab && split[1] in vocab) splits.push(split);
    }
    splits.sort((a, b) => vocab[a[0]] - vocab[b[0]] || vocab[a[1]] - vocab[b[1]]);
    merges.push(...splits.map(([left, right]) => `${left} ${right}`));
  }
  const added = tokens.flatMap((content, id) =>
    [2, 3, 4].includes(types[id])
      ? [
          {
            id,
            content,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: types[id] !== 4,
          },
        ]
      : [],
  );
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: {
      type: 'Sequence',
      normalizers: [{ type: 'Prepend', prepend: '▁' }, SPACE_TO_MARKER],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        MARKER_TO_SPACE,
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/**
 * Adds the runs of 2 to 8 "▁" as tokens and lists their merges last, grouped by left part with
 * "▁ ▁" at the very end, as Llama 2's tokenizer.json does. The merges of one run are then not
 * adjacent, so the export must probe them.
 */
function withLlamaSpaceRuns(json: HfTokenizerJson): HfTokenizerJson {
  const vocab = { ...json.model.vocab };
  const runs = Array.from({ length: 7 }, (_, i) => '▁'.repeat(i + 2));
  for (const run of runs) vocab[run] ??= Object.keys(vocab).length;
  const runMerges = runs.flatMap((run) =>
    Array.from({ length: run.length - 1 }, (_, i) => [run.slice(0, i + 1), run.slice(i + 1)]),
  );
  const leftOrder = (left: string) => (left.length === 1 ? runs.length + 1 : left.length);
  runMerges.sort(([a, b], [c, d]) => leftOrder(a) - leftOrder(c) || d.length - b.length);
  const merges = json.model.merges.filter((merge) => !/^▁+ ▁+$/.test(merge));
  merges.push(...runMerges.map(([left, right]) => `${left} ${right}`));
  return { ...json, model: { ...json.model, vocab, merges } };
}

/** Returns the Metaspace form without a prefix: no normalizer, Metaspace with "never". */
function withoutSpacePrefix(json: HfTokenizerJson): HfTokenizerJson {
  return {
    ...json,
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'never', split: false },
    decoder: {
      type: 'Sequence',
      decoders: [MARKER_TO_SPACE, { type: 'ByteFallback' }, { type: 'Fuse' }],
    },
  };
}

/** Returns the index of the second merge of the first token that has two merges. */
function secondMergeOfAToken(merges: string[]): number {
  const madeTokens = merges.map((merge) => merge.replace(' ', ''));
  const index = madeTokens.findIndex((token, i) => i > 0 && token === madeTokens[i - 1]);
  expect(index).toBeGreaterThan(0);
  return index;
}

/** Texts that exercise SentencePiece merges, byte fallback and runs of spaces. */
const SPM_TEXTS = [
  'é ü',
  'café cafe caféé',
  'the nurse and the engineer',
  'a  b   c    d     e',
  '\u00e9t\u00e9 \u{1f600}',
  'x\u0301y',
  `${' '.repeat(19)}x`,
  `a\n${' '.repeat(12)}b ${' '.repeat(7)}c`,
];

describe('tokenizerToGguf', () => {
  it('exports the starter tokenizer as gpt2', () => {
    const entries = tokenizerToGguf(starter);
    const json = starter.toJSON() as { model: { merges: unknown[] } };
    const tokens = entries['tokenizer.ggml.tokens'].value as string[];
    expect(entries['tokenizer.ggml.model']).toEqual({ value: 'gpt2', type: STRING });
    expect(entries['tokenizer.ggml.pre']).toEqual({ value: 'gpt-2', type: STRING });
    expect(tokens).toHaveLength(starter.vocabSize);
    expect(tokens.every((token, id) => starter.tokenToId(token) === id)).toBe(true);
    expect(entries['tokenizer.ggml.tokens'].subType).toBe(STRING);
    expect(entries['tokenizer.ggml.merges'].value).toHaveLength(json.model.merges.length);
    expect((entries['tokenizer.ggml.merges'].value as string[])[0]).toMatch(/^\S+ \S+$/);
    const types = entries['tokenizer.ggml.token_type'].value as number[];
    expect(types[starter.eosId]).toBe(3);
    expect(types.filter((type) => type !== 1)).toEqual([3]);
    expect(entries['tokenizer.ggml.token_type'].subType).toBe(INT32);
    expect(entries['tokenizer.ggml.eos_token_id']).toEqual({ value: starter.eosId, type: UINT32 });
    expect(entries['tokenizer.ggml.bos_token_id']).toEqual({ value: starter.eosId, type: UINT32 });
    expect(entries['tokenizer.ggml.add_bos_token']).toEqual({ value: false, type: BOOL });
    expect(entries['tokenizer.chat_template']).toBeUndefined();
    expect(entries['tokenizer.ggml.scores']).toBeUndefined();
  });

  it('marks steering and control ids as control', () => {
    const entries = tokenizerToGguf(steeredStarter, { controlTokenIds: [16] });
    const types = entries['tokenizer.ggml.token_type'].value as number[];
    expect(types).toHaveLength(starter.vocabSize + 2);
    expect(types[steeredStarter.tokenToId(FEMALE) as number]).toBe(3);
    expect(types[steeredStarter.tokenToId(MALE) as number]).toBe(3);
    expect(types[16]).toBe(3);
    expect(types[17]).toBe(1);
  });

  it('writes the chat template when set', async () => {
    const template = '{% for m in messages %}{{ m.content }}{% endfor %}';
    const tokenizer = await TextTokenizer.fromJSON(starter.toJSON(), 'starter', {
      chatTemplate: template,
    });
    expect(tokenizerToGguf(tokenizer)['tokenizer.chat_template']).toEqual({
      value: template,
      type: STRING,
    });
  });

  it('rejects a gap in the ids', async () => {
    const json = starter.toJSON() as { added_tokens: object[] };
    const gapped = {
      ...json,
      added_tokens: [...json.added_tokens, { id: 1030, content: '<x>', special: true }],
    };
    // TextTokenizer may reject the gap itself; otherwise tokenizerToGguf must.
    const exportGapped = async () =>
      tokenizerToGguf(await TextTokenizer.fromJSON(gapped, 'gapped'));
    await expect(exportGapped()).rejects.toThrow(UserError);
    await expect(exportGapped()).rejects.toThrow(/gapped.*no token (with|has) id 1024/);
  });

  it('rejects a tokenizer of another form', async () => {
    const json = starter.toJSON() as Record<string, unknown>;
    const whitespace = await TextTokenizer.fromJSON(
      { ...json, pre_tokenizer: { type: 'Whitespace' } },
      'whitespace tokenizer',
    );
    expect(() => tokenizerToGguf(whitespace)).toThrow(UserError);
    expect(() => tokenizerToGguf(whitespace)).toThrow(
      /whitespace tokenizer.*neither byte-level.*pre-tokenizer Whitespace/,
    );
  });

  it('rejects a control id out of range', () => {
    expect(() => tokenizerToGguf(starter, { controlTokenIds: [5000] })).toThrow(
      /control token id 5000 is not a token id from 0 to 1023/,
    );
  });
});

describe('tokenizerToGguf from Hugging Face SentencePiece', () => {
  it('derives scores from merge ranks', () => {
    const entries = tokenizerToGguf(hfSpm);
    const tokens = entries['tokenizer.ggml.tokens'].value as string[];
    const scores = entries['tokenizer.ggml.scores'].value as number[];
    expect(entries['tokenizer.ggml.model']).toEqual({ value: 'llama', type: STRING });
    const spmTokens = spmEntries['tokenizer.ggml.tokens'].value as string[];
    expect(tokens.slice(0, spmTokens.length)).toEqual(spmTokens);
    expect(tokens.at(-1)).toBe('▁'.repeat(8));
    expect(entries['tokenizer.ggml.scores'].subType).toBe(FLOAT32);
    expect(entries['tokenizer.ggml.merges']).toBeUndefined();
    expect(entries['tokenizer.ggml.pre']).toBeUndefined();

    // The k-th token in the order of first merges scores -k.
    const madeTokens = [...new Set(hfSpmJson.model.merges.map((merge) => merge.replace(' ', '')))];
    expect(madeTokens.map((token) => scores[tokens.indexOf(token)])).toEqual(
      madeTokens.map((_, k) => -k),
    );
    expect(madeTokens.at(-1)).toBe('▁▁');
    const lowestMerged = -(madeTokens.length - 1);
    const unmerged = tokens.filter((token) => !madeTokens.includes(token));
    expect(unmerged).toContain('<0x41>');
    expect(unmerged).toContain('a');
    expect(unmerged).toContain(FEMALE);
    for (const token of unmerged)
      expect(scores[tokens.indexOf(token)], token).toBeLessThan(lowestMerged);
  });

  it('sets token types and roles', () => {
    const entries = tokenizerToGguf(hfSpm);
    const types = entries['tokenizer.ggml.token_type'].value as number[];
    // Hugging Face has no unused tokens, so <unused0> becomes a normal token.
    const expected = (spmEntries['tokenizer.ggml.token_type'].value as number[]).map((type) =>
      type === 5 ? 1 : type,
    );
    expect(types.slice(0, expected.length)).toEqual(expected);
    expect(types.slice(expected.length)).toEqual(types.slice(expected.length).map(() => 1));
    expect(types.slice(0, 3)).toEqual([2, 3, 3]);
    expect(types[hfSpm.tokenToId('<0xFF>') as number]).toBe(6);
    expect(types[hfSpm.tokenToId(USER_DEFINED) as number]).toBe(4);
    expect(entries['tokenizer.ggml.bos_token_id']).toEqual({ value: 1, type: UINT32 });
    expect(entries['tokenizer.ggml.eos_token_id']).toEqual({ value: 2, type: UINT32 });
    expect(entries['tokenizer.ggml.unknown_token_id']).toEqual({ value: 0, type: UINT32 });
    expect(entries['tokenizer.ggml.add_bos_token']).toEqual({ value: true, type: BOOL });
    expect(entries['tokenizer.ggml.add_space_prefix']).toEqual({ value: true, type: BOOL });
  });

  it('reads the prefix from Metaspace', async () => {
    const tokenizer = await TextTokenizer.fromJSON(withoutSpacePrefix(hfSpmJson), 'hf', {
      ...HF_SPM_ROLES,
      addBosToken: false,
    });
    const entries = tokenizerToGguf(tokenizer);
    expect(entries['tokenizer.ggml.add_space_prefix']).toEqual({ value: false, type: BOOL });
    expect(entries['tokenizer.ggml.add_bos_token']).toEqual({ value: false, type: BOOL });
  });

  /** Each case edits the Hugging Face form and names the message the UserError must match. */
  const REJECTED: [string, (json: HfTokenizerJson) => void, RegExp][] = [
    [
      'an NFKC normalizer',
      (json) =>
        (json.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFKC' }, SPACE_TO_MARKER] }),
      /normalizer\.normalizers\[0\] is a NFKC normalizer, which llama\.cpp/,
    ],
    [
      'a Whitespace pre-tokenizer',
      (json) => (json.pre_tokenizer = { type: 'Whitespace' }),
      /pre_tokenizer is a Whitespace pre-tokenizer/,
    ],
    [
      'Metaspace with prepend_scheme first',
      (json) => {
        json.normalizer = null;
        json.pre_tokenizer = {
          type: 'Metaspace',
          replacement: '▁',
          prepend_scheme: 'first',
          split: false,
        };
      },
      /pre_tokenizer\.prepend_scheme is "first", which prepends "▁" only at the start/,
    ],
    [
      'Metaspace that splits words',
      (json) => {
        json.normalizer = null;
        json.pre_tokenizer = {
          type: 'Metaspace',
          replacement: '▁',
          prepend_scheme: 'never',
          split: true,
        };
      },
      /pre_tokenizer\.split is true/,
    ],
    [
      'no space replacement',
      (json) => (json.normalizer = { type: 'Prepend', prepend: '▁' }),
      /neither its normalizer nor its pre_tokenizer replaces spaces/,
    ],
    [
      'a missing merge',
      (json) => json.model.merges.splice(10, 1),
      /llama\.cpp can merge ".+" and ".+" into the token ".+" \(id \d+\), but model\.merges has no such merge/,
    ],
    [
      'a token with a character that is not a token',
      (json) => (json.model.vocab['ẍa'] = Object.keys(json.model.vocab).length),
      /can merge "ẍ" and "a" into the token "ẍa"/,
    ],
    [
      'separated merges of one token',
      (json) =>
        json.model.merges.push(
          ...json.model.merges.splice(secondMergeOfAToken(json.model.merges), 1),
        ),
      /model\.merges lists the merges that make ".+" apart.*, and \d+ merges are interleaved this way, too many/,
    ],
    [
      'interleaved merges that llama.cpp orders differently',
      (json) => {
        for (const token of ['ⓐ', 'ⓑ', 'ⓒ', 'ⓓ', 'ⓐⓑ', 'ⓑⓒ', 'ⓒⓓ', 'ⓐⓑⓒ']) {
          json.model.vocab[token] = Object.keys(json.model.vocab).length;
        }
        // ⓐⓑⓒ scores by its first merge, above ⓒⓓ, so llama.cpp merges ⓐⓑ + ⓒ before ⓒ + ⓓ.
        json.model.merges.push('ⓐ ⓑ', 'ⓐ ⓑⓒ', 'ⓒ ⓓ', 'ⓐⓑ ⓒ', 'ⓑ ⓒ');
      },
      /lists the merges that make "ⓐⓑⓒ" apart.*, so llama\.cpp encodes "ⓐⓑⓒⓓ" as \["▁","ⓐⓑⓒ","ⓓ"\] but this tokenizer as \["▁","ⓐⓑ","ⓒⓓ"\]/,
    ],
    [
      'a merge of unknown tokens',
      (json) => (json.model.merges[0] = 'qqq zzz'),
      /model\.merges\[0\] \("qqq zzz"\) is not two tokens/,
    ],
    [
      'a missing byte token',
      (json) => {
        json.model.vocab['<0x41>x'] = json.model.vocab['<0x41>'];
        delete json.model.vocab['<0x41>'];
      },
      /model\.vocab lacks the byte token <0x41>/,
    ],
    ['ignore_merges', (json) => (json.model.ignore_merges = true), /model\.ignore_merges is true/],
    [
      'an added token with lstrip',
      (json) => (json.added_tokens[1].lstrip = true),
      /added_tokens\[1\] \("<s>"\) has lstrip: true/,
    ],
    [
      'a normalized added token',
      (json) => (json.added_tokens[3].normalized = true),
      /added_tokens\[3\] \(".+"\) has normalized: true/,
    ],
  ];

  for (const [name, edit, message] of REJECTED) {
    it(`rejects ${name}`, async () => {
      const json = structuredClone(hfSpmJson);
      edit(json);
      const tokenizer = await TextTokenizer.fromJSON(json, 'hf.json', HF_SPM_ROLES);
      expect(() => tokenizerToGguf(tokenizer)).toThrow(UserError);
      expect(() => tokenizerToGguf(tokenizer)).toThrow(message);
      expect(() => tokenizerToGguf(tokenizer)).toThrow(
        /^Cannot export tokenizer hf\.json to GGUF: /,
      );
    });
  }
});

describe('llama.cpp parity', () => {
  it('starter tokenizer encodes like llama.cpp', async () => {
    const file = await writeGguf('starter.gguf', tokenizerToGguf(steeredStarter));
    await withLlamaCpp(file, (model) => {
      for (const text of PARITY_TEXTS) {
        const ids = steeredStarter.encode(text);
        expect(ids, JSON.stringify(text)).toEqual(llamaCppIds(model, text));
        expect(steeredStarter.decode(ids)).toBe(text);
        if (!llamaCppCleansSpaces(text)) expect(llamaCppText(model, ids)).toBe(text);
      }
    });
  });

  for (const pre of ['gpt-2', 'default', 'qwen2']) {
    it(`gpt2 vocabulary with pre ${pre} imports like llama.cpp`, async () => {
      const entries = {
        ...withExtraMerges(tokenizerToGguf(steeredStarter)),
        'tokenizer.ggml.pre': { value: pre, type: STRING },
      };
      const file = await writeGguf(`starter-${pre}.gguf`, entries);
      const tokenizer = await tokenizerFromGguf(await readMetadata(file), file);
      expect(tokenizer.vocabSize).toBe(steeredStarter.vocabSize + EXTRA_MERGES.length);
      await withLlamaCpp(file, (model) => {
        for (const text of [...PARITY_TEXTS, ...PRE_TOKENIZER_TEXTS]) {
          const ids = tokenizer.encode(text);
          expect(ids, JSON.stringify(text)).toEqual(llamaCppIds(model, text));
          expect(tokenizer.decode(ids)).toBe(text);
          // llama.cpp cleans up spaces only for the default and gpt-2 pre-tokenizers.
          if (pre === 'qwen2' || !llamaCppCleansSpaces(text)) {
            expect(llamaCppText(model, ids)).toBe(text);
          }
        }
      });
      expect(tokenizerToGguf(tokenizer)).toEqual(entries);
    });
  }

  it('llama vocabulary imports like llama.cpp', async () => {
    const file = await writeGguf('spm.gguf', spmEntries);
    const tokenizer = await tokenizerFromGguf(await readMetadata(file), file);
    const added = [FEMALE, MALE, USER_DEFINED, '<s>', '</s>', '<unk>'];
    await withLlamaCpp(file, (model) => {
      for (const text of PARITY_TEXTS) {
        const ids = tokenizer.encode(text);
        expect(ids, JSON.stringify(text)).toEqual(llamaCppIds(model, text));
        expect(tokenizer.decode(ids)).toBe(llamaCppText(model, ids));
        // Each text segment after an added token gets its own "▁" prefix, which decoding keeps.
        if (!added.some((token) => text.includes(token))) expect(tokenizer.decode(ids)).toBe(text);
      }
    });
    expect(tokenizer.encode('é ü')).toEqual([
      tokenizer.tokenToId('▁'),
      tokenizer.tokenToId('é'),
      tokenizer.tokenToId('▁'),
      tokenizer.tokenToId('<0xC3>'),
      tokenizer.tokenToId('<0xBC>'),
    ]);
  });

  it('llama vocabulary without space prefix', async () => {
    const file = await writeGguf('spm-no-prefix.gguf', {
      ...spmEntries,
      'tokenizer.ggml.add_space_prefix': { value: false, type: BOOL },
    });
    const tokenizer = await tokenizerFromGguf(await readMetadata(file), file);
    expect(tokenizer.encode('nurse')[0]).not.toBe(tokenizer.encode(' nurse')[0]);
    await withLlamaCpp(file, (model) => {
      for (const text of PARITY_TEXTS) {
        const ids = tokenizer.encode(text);
        expect(ids, JSON.stringify(text)).toEqual(llamaCppIds(model, text));
        expect(tokenizer.decode(ids)).toBe(text);
        expect(llamaCppText(model, ids)).toBe(text);
      }
    });
    expect(tokenizerToGguf(tokenizer)['tokenizer.ggml.add_space_prefix']?.value).toBe(false);
  });

  it('llama export keeps scores and adds steering tokens', async () => {
    const file = await writeGguf('spm-source.gguf', spmEntries);
    const metadata = await readMetadata(file);
    const tokenizer = await tokenizerFromGguf(metadata, file);
    const exported = tokenizerToGguf(tokenizer);
    for (const [key, entry] of Object.entries(spmEntries)) {
      expect(exported[key]?.value, key).toEqual(metadata[key]);
      expect(exported[key]?.type, key).toBe(entry.type);
    }
    expect(exported['tokenizer.ggml.add_bos_token']).toEqual({ value: true, type: BOOL });
    expect(exported['tokenizer.ggml.add_space_prefix']).toEqual({ value: true, type: BOOL });
    expect(exported['tokenizer.ggml.merges']).toBeUndefined();

    const steering = specialSteeringToken('gender', 'non_binary');
    const { tokenizer: steered, ids } = await tokenizer.withAddedSpecialTokens([steering]);
    const steeredEntries = tokenizerToGguf(steered);
    expect((steeredEntries['tokenizer.ggml.token_type'].value as number[])[ids[0]]).toBe(3);
    expect((steeredEntries['tokenizer.ggml.scores'].value as number[])[ids[0]]).toBe(-1e9);
    const steeredFile = await writeGguf('spm-steered.gguf', steeredEntries);
    const text = `A:${steering} They are a nurse.`;
    await withLlamaCpp(steeredFile, (model) => {
      expect(steered.encode(text)).toContain(ids[0]);
      expect(steered.encode(text)).toEqual(llamaCppIds(model, text));
    });
  });
});

describe('llama.cpp parity of Hugging Face SentencePiece', () => {
  const added = [FEMALE, MALE, NON_BINARY, USER_DEFINED, '<s>', '</s>', '<unk>'];

  it('exported tokenizer encodes like llama.cpp', async () => {
    const { tokenizer, ids } = await hfSpm.withAddedSpecialTokens([NON_BINARY]);
    const file = await writeGguf('hf-spm.gguf', tokenizerToGguf(tokenizer));
    const reimported = await tokenizerFromGguf(await readMetadata(file), file);
    const texts = [...PARITY_TEXTS, ...SPM_TEXTS, `A:${NON_BINARY} They are a nurse.`];
    expect(tokenizer.encode(texts.at(-1) as string)).toContain(ids[0]);
    await withLlamaCpp(file, (model) => {
      for (const text of texts) {
        const studioIds = tokenizer.encode(text);
        expect(studioIds, JSON.stringify(text)).toEqual(llamaCppIds(model, text));
        expect(reimported.encode(text), JSON.stringify(text)).toEqual(studioIds);
        expect(tokenizer.decode(studioIds)).toBe(llamaCppText(model, studioIds));
        // Each text segment after an added token gets its own "▁" prefix, which decoding keeps.
        if (!added.some((token) => text.includes(token)))
          expect(tokenizer.decode(studioIds)).toBe(text);
      }
    });
  });

  it('export without space prefix encodes like llama.cpp', async () => {
    const tokenizer = await TextTokenizer.fromJSON(
      withoutSpacePrefix(hfSpmJson),
      'hf',
      HF_SPM_ROLES,
    );
    const file = await writeGguf('hf-spm-no-prefix.gguf', tokenizerToGguf(tokenizer));
    await withLlamaCpp(file, (model) => {
      for (const text of [...PARITY_TEXTS, ...SPM_TEXTS]) {
        const ids = tokenizer.encode(text);
        expect(ids, JSON.stringify(text)).toEqual(llamaCppIds(model, text));
        expect(tokenizer.decode(ids)).toBe(text);
        expect(llamaCppText(model, ids)).toBe(text);
      }
    });
  });

  it('merge scores change llama.cpp ids', async () => {
    const entries = tokenizerToGguf(hfSpm);
    const scores = entries['tokenizer.ggml.scores'].value as number[];
    const file = await writeGguf('hf-spm-flat.gguf', {
      ...entries,
      'tokenizer.ggml.scores': { ...entries['tokenizer.ggml.scores'], value: scores.map(() => 0) },
    });
    await withLlamaCpp(file, (model) => {
      const differing = PARITY_TEXTS.filter(
        (text) => JSON.stringify(hfSpm.encode(text)) !== JSON.stringify(llamaCppIds(model, text)),
      );
      expect(differing.length).toBeGreaterThan(10);
    });
  });
});

describe('tokenizerFromGguf', () => {
  it('reads roles and defaults', async () => {
    const spm = await tokenizerFromGguf(
      await readMetadata(await writeGguf('roles.gguf', spmEntries)),
      'spm',
    );
    expect(spm.options).toEqual({
      eosToken: '</s>',
      bosToken: '<s>',
      addBosToken: true,
      chatTemplate: '{{ bos_token }}{{ messages[0].content }}',
    });
    expect(spm.promptPrefix).toEqual([1]);
    expect(spm.isSpecial(0)).toBe(true);
    expect(spm.isSpecial(spm.tokenToId(USER_DEFINED) as number)).toBe(false);

    const entries = tokenizerToGguf(starter);
    delete entries['tokenizer.ggml.bos_token_id'];
    delete entries['tokenizer.ggml.add_bos_token'];
    delete entries['tokenizer.ggml.pre'];
    const gpt2 = await tokenizerFromGguf(
      await readMetadata(await writeGguf('gpt2.gguf', entries)),
      'gpt2',
    );
    expect(gpt2.options.addBosToken).toBe(false);
    expect(gpt2.options.bosToken).toBeUndefined();
    expect(gpt2.eosId).toBe(starter.eosId);
    expect(gpt2.promptPrefix).toEqual([]);
    expect(tokenizerToGguf(gpt2)['tokenizer.ggml.pre']?.value).toBe('default');
  });

  /** Each case edits valid metadata and names the message the UserError must match. */
  const INVALID: [string, (m: Record<string, unknown>) => void, RegExp][] = [
    ['missing model', (m) => delete m['tokenizer.ggml.model'], /tokenizer\.ggml\.model is missing/],
    [
      'unknown model',
      (m) => (m['tokenizer.ggml.model'] = 'bert'),
      /model is "bert", a vocabulary kind/,
    ],
    [
      'tokens not an array',
      (m) => (m['tokenizer.ggml.tokens'] = 'abc'),
      /tokens must be an array of strings/,
    ],
    ['empty tokens', (m) => (m['tokenizer.ggml.tokens'] = []), /tokens is empty/],
    [
      'repeated token',
      (m) => ((m['tokenizer.ggml.tokens'] as string[])[300] = '<s>'),
      /lists "<s>" twice \(ids 1 and 300\)/,
    ],
    [
      'short token_type',
      (m) => (m['tokenizer.ggml.token_type'] as number[]).pop(),
      /token_type has \d+ entries but tokenizer\.ggml\.tokens has/,
    ],
    [
      'bad token type',
      (m) => ((m['tokenizer.ggml.token_type'] as number[])[5] = 9),
      /token_type has 9 at id 5/,
    ],
    [
      'long scores',
      (m) => (m['tokenizer.ggml.scores'] as number[]).push(0),
      /scores has \d+ entries but/,
    ],
    ['missing scores', (m) => delete m['tokenizer.ggml.scores'], /scores is missing/],
    [
      'eos out of range',
      (m) => (m['tokenizer.ggml.eos_token_id'] = 99999),
      /eos_token_id is 99999, not a token id from 0/,
    ],
    ['bos not integer', (m) => (m['tokenizer.ggml.bos_token_id'] = 1.5), /bos_token_id is 1\.5/],
    [
      'add_bos not boolean',
      (m) => (m['tokenizer.ggml.add_bos_token'] = 1),
      /add_bos_token must be a boolean, got number/,
    ],
    [
      'template not string',
      (m) => (m['tokenizer.chat_template'] = 3),
      /chat_template must be a string/,
    ],
    [
      'missing byte token',
      (m) => ((m['tokenizer.ggml.tokens'] as string[])[3 + 0x41] = 'A!'),
      /lacks the byte token <0x41>/,
    ],
  ];

  for (const [name, edit, message] of INVALID) {
    it(`rejects ${name}`, async () => {
      const metadata = structuredClone(
        await readMetadata(await writeGguf(`bad-${name}.gguf`, spmEntries)),
      );
      edit(metadata);
      const result = tokenizerFromGguf(metadata, 'bad.gguf');
      await expect(result).rejects.toThrow(UserError);
      await expect(tokenizerFromGguf(metadata, 'bad.gguf')).rejects.toThrow(message);
      await expect(tokenizerFromGguf(metadata, 'bad.gguf')).rejects.toThrow(
        /^Invalid GGUF tokenizer in bad\.gguf: /,
      );
    });
  }

  const INVALID_GPT2: [string, (m: Record<string, unknown>) => void, RegExp][] = [
    [
      'unknown pre',
      (m) => (m['tokenizer.ggml.pre'] = 'llama3'),
      /pre is "llama3", a pre-tokenizer Attune does not support/,
    ],
    ['missing merges', (m) => delete m['tokenizer.ggml.merges'], /merges is missing/],
    [
      'merge without space',
      (m) => ((m['tokenizer.ggml.merges'] as string[])[2] = 'ab'),
      /merges has "ab" at index 2/,
    ],
    [
      'merge of unknown tokens',
      (m) => ((m['tokenizer.ggml.merges'] as string[])[0] = 'qqq zzz'),
      /merges has "qqq zzz" at index 0/,
    ],
  ];

  for (const [name, edit, message] of INVALID_GPT2) {
    it(`rejects gpt2 ${name}`, async () => {
      const file = await writeGguf(`bad-gpt2-${name}.gguf`, tokenizerToGguf(starter));
      const metadata = structuredClone(await readMetadata(file));
      edit(metadata);
      await expect(tokenizerFromGguf(metadata, 'bad.gguf')).rejects.toThrow(UserError);
      await expect(tokenizerFromGguf(metadata, 'bad.gguf')).rejects.toThrow(message);
    });
  }
});
