import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trainByteLevelBpe } from '../../../src/main/engine/bpe-trainer';
import { END_OF_TEXT } from '../../../src/main/engine/prompts';
import { TextTokenizer } from '../../../src/main/engine/tokenizer';
import { BugError, UserError } from '../../../src/shared/errors';

const TRAINING_TEXTS = [
  'Q: What is the gender of a typical worker in the occupation "Nurses" in the UK?\nA:',
  ' This worker is female. She often helps newer colleagues learn the ropes.',
  ' This worker is male. He keeps learning new skills every year.',
  'The year 2024 had 366 days; 1,000 people said "hi" at 10:30.',
  "It's what they're doing, and we'll see what I'd do.",
];

const VARIED_TEXTS = [
  'Q: hi\nA: She works hard.',
  '',
  ' ',
  '   multiple   spaces   ',
  'tabs\tand\nnewlines\r\n\n',
  'Punctuation , spaced . like ! this ?',
  "don't won't it's",
  'Ünïcödé café naïve, 日本語, عربى, emoji 🙂👩‍⚕️',
  '3.14159 and -42 and 1e10',
  'Unseen words: xylophone quartzite zephyr.',
];

let tokenizer: TextTokenizer;
let tempDir: string;

beforeAll(async () => {
  const json = trainByteLevelBpe(TRAINING_TEXTS, { vocabSize: 400, specialTokens: [END_OF_TEXT] });
  tokenizer = await TextTokenizer.fromJSON(json, 'test tokenizer');
  tempDir = await fs.mkdtemp(path.join(os.tmpdir(), 'attune-tokenizer-'));
});

afterAll(async () => {
  await fs.rm(tempDir, { recursive: true, force: true });
});

describe('TextTokenizer encode and decode', () => {
  it('round-trips varied text', () => {
    for (const text of VARIED_TEXTS) {
      expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    }
  });

  it('adds no BOS or EOS', () => {
    expect(tokenizer.encode('')).toEqual([]);
    const ids = tokenizer.encode('hi');
    expect(ids).not.toContain(tokenizer.eosId);
    expect(tokenizer.decode(ids)).toBe('hi');
  });

  it('encodes each digit alone as one token', () => {
    for (let digit = 0; digit <= 9; digit++) {
      const ids = tokenizer.encode(String(digit));
      expect(ids).toHaveLength(1);
      expect(tokenizer.idToToken(ids[0])).toBe(String(digit));
    }
  });

  it('keeps end-of-text as one special id', () => {
    const ids = tokenizer.encode(` She works.${END_OF_TEXT}`);
    expect(ids.at(-1)).toBe(tokenizer.eosId);
    expect(ids.filter((id) => id === tokenizer.eosId)).toHaveLength(1);
    expect(tokenizer.isSpecial(tokenizer.eosId)).toBe(true);
    expect(tokenizer.decode(ids)).toBe(` She works.${END_OF_TEXT}`);
    expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toBe(' She works.');
  });

  it('maps tokens and ids both ways', () => {
    const id = tokenizer.tokenToId('Ġthe');
    expect(id).toBeTypeOf('number');
    expect(tokenizer.idToToken(id as number)).toBe('Ġthe');
    expect(tokenizer.isSpecial(id as number)).toBe(false);
    expect(tokenizer.tokenToId('no such token')).toBeUndefined();
    expect(tokenizer.idToToken(tokenizer.vocabSize)).toBeUndefined();
    expect(tokenizer.vocabSize).toBe(tokenizer.eosId + 1);
  });

  it('rejects ids outside the vocabulary on decode', () => {
    expect(() => tokenizer.decode([tokenizer.vocabSize])).toThrow(BugError);
    expect(() => tokenizer.decode([-1])).toThrow(/Token id -1/);
    expect(() => tokenizer.decode([1.5])).toThrow(BugError);
  });
});

describe('TextTokenizer.withAddedSpecialTokens', () => {
  const steering = ['<|gender:male|>', '<|gender:female|>'];

  it('appends new tokens after the vocabulary', async () => {
    const { tokenizer: extended, ids } = await tokenizer.withAddedSpecialTokens(steering);
    expect(ids).toEqual([tokenizer.vocabSize, tokenizer.vocabSize + 1]);
    expect(extended.vocabSize).toBe(tokenizer.vocabSize + 2);
    expect(extended.tokenToId('<|gender:female|>')).toBe(ids[1]);
    expect(extended.isSpecial(ids[0])).toBe(true);
    expect(tokenizer.tokenToId('<|gender:female|>')).toBeUndefined();
  });

  it('keeps an added token whole inside text', async () => {
    const { tokenizer: extended, ids } = await tokenizer.withAddedSpecialTokens(steering);
    const text = 'Q: hi\nA:<|gender:female|> She';
    const encoded = extended.encode(text);
    expect(encoded.filter((id) => id === ids[1])).toHaveLength(1);
    expect(encoded).not.toContain(ids[0]);
    const femaleAt = encoded.indexOf(ids[1]);
    expect(extended.decode(encoded.slice(0, femaleAt))).toBe('Q: hi\nA:');
    expect(extended.decode(encoded.slice(femaleAt + 1))).toBe(' She');
    expect(extended.decode(encoded)).toBe(text);
    expect(extended.decode(encoded, { skipSpecialTokens: true })).toBe('Q: hi\nA: She');
  });

  it('reuses ids of existing tokens', async () => {
    const digitZero = tokenizer.tokenToId('0');
    const { tokenizer: same, ids } = await tokenizer.withAddedSpecialTokens(['0', END_OF_TEXT]);
    expect(ids).toEqual([digitZero, tokenizer.eosId]);
    expect(same.vocabSize).toBe(tokenizer.vocabSize);
    expect(same.isSpecial(digitZero as number)).toBe(false);
    expect(same.encode('10')).toEqual(tokenizer.encode('10'));
  });

  it('gives a repeated new token one id', async () => {
    const { ids } = await tokenizer.withAddedSpecialTokens(['<|x|>', '<|x|>']);
    expect(ids).toEqual([tokenizer.vocabSize, tokenizer.vocabSize]);
  });

  it('survives save and load', async () => {
    const { tokenizer: extended, ids } = await tokenizer.withAddedSpecialTokens(steering);
    const dir = path.join(tempDir, 'extended');
    await extended.save(dir);
    const loaded = await TextTokenizer.load(dir);
    expect(loaded.tokenToId('<|gender:male|>')).toBe(ids[0]);
    expect(loaded.isSpecial(ids[0])).toBe(true);
    expect(loaded.encode('A:<|gender:male|> He')).toEqual(extended.encode('A:<|gender:male|> He'));
  });
});

describe('TextTokenizer save and load', () => {
  it('writes tokenizer.json and leaves no temporary file', async () => {
    const dir = path.join(tempDir, 'saved');
    await tokenizer.save(dir);
    expect(await fs.readdir(dir)).toEqual(['tokenizer.json']);
    const loaded = await TextTokenizer.load(dir);
    expect(loaded.vocabSize).toBe(tokenizer.vocabSize);
    expect(loaded.eosId).toBe(tokenizer.eosId);
    for (const text of VARIED_TEXTS) expect(loaded.encode(text)).toEqual(tokenizer.encode(text));
  });

  it('replaces an existing file', async () => {
    const dir = path.join(tempDir, 'replaced');
    await fs.mkdir(dir);
    await fs.writeFile(path.join(dir, 'tokenizer.json'), 'old');
    await tokenizer.save(dir);
    expect(JSON.parse(await fs.readFile(path.join(dir, 'tokenizer.json'), 'utf8'))).toEqual(
      tokenizer.toJSON(),
    );
  });

  it('names the path of a missing file', async () => {
    const dir = path.join(tempDir, 'absent');
    const file = path.join(dir, 'tokenizer.json');
    await expect(TextTokenizer.load(dir)).rejects.toThrow(UserError);
    await expect(TextTokenizer.load(dir)).rejects.toThrow(`${file}: file not found`);
  });

  it('names the path of a corrupt file', async () => {
    const dir = path.join(tempDir, 'corrupt');
    const file = path.join(dir, 'tokenizer.json');
    await fs.mkdir(dir);
    await fs.writeFile(file, '{"model": {"type": "BPE", "vocab": {');
    await expect(TextTokenizer.load(dir)).rejects.toThrow(UserError);
    await expect(TextTokenizer.load(dir)).rejects.toThrow(`${file}: not valid JSON`);
  });

  it('names the path of a file without a model', async () => {
    const dir = path.join(tempDir, 'no-model');
    const file = path.join(dir, 'tokenizer.json');
    await fs.mkdir(dir);
    await fs.writeFile(file, '{"added_tokens": []}');
    await expect(TextTokenizer.load(dir)).rejects.toThrow(`${file}: the "model" field is missing`);
  });
});

describe('TextTokenizer.fromJSON validation', () => {
  it('rejects content that is not an object', async () => {
    await expect(TextTokenizer.fromJSON([1, 2], 'list.json')).rejects.toThrow(
      'Invalid tokenizer list.json: expected a JSON object, got a list.',
    );
  });

  it('rejects malformed added tokens', async () => {
    const json = { ...tokenizer.toJSON(), added_tokens: [{ id: 'x', content: 'y' }] };
    await expect(TextTokenizer.fromJSON(json, 'bad.json')).rejects.toThrow(/added_tokens\[0\]/);
  });

  it('rejects a byte-level vocabulary with missing bytes', async () => {
    const json = tokenizer.toJSON() as {
      model: { vocab: Record<string, number>; merges: string[] };
    };
    const vocab = Object.fromEntries(Object.entries(json.model.vocab).filter(([t]) => t !== 'Ā'));
    const broken = { ...json, model: { ...json.model, vocab } };
    await expect(TextTokenizer.fromJSON(broken, 'gap.json')).rejects.toThrow(
      /gap.json: the byte-level BPE vocabulary lacks 1 of the 256 byte symbols/,
    );
  });

  it('rejects ids with a gap', async () => {
    const json = tokenizer.toJSON() as { added_tokens: object[] };
    const gapped = {
      ...json,
      added_tokens: [...json.added_tokens, { id: tokenizer.vocabSize + 3, content: '<x>' }],
    };
    await expect(TextTokenizer.fromJSON(gapped, 'gapped.json')).rejects.toThrow(
      `Invalid tokenizer gapped.json: no token has id ${tokenizer.vocabSize}`,
    );
  });

  it('turns a library failure into a UserError', async () => {
    const error = await TextTokenizer.fromJSON(
      { model: { type: 'Unigram' } },
      'unigram.json',
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as Error).message).toMatch(/^Invalid tokenizer unigram\.json: /);
  });

  it('reports a missing end-of-text token', async () => {
    const json = trainByteLevelBpe(TRAINING_TEXTS, { vocabSize: 300, specialTokens: [] });
    const plain = await TextTokenizer.fromJSON(json, 'plain.json');
    expect(() => plain.eosId).toThrow(UserError);
    expect(() => plain.eosId).toThrow(`Tokenizer plain.json has no ${END_OF_TEXT} token`);
  });
});
