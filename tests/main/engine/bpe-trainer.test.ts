import seedrandom from 'seedrandom';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  GPT2_SPLIT_PATTERN,
  gpt2ByteSymbols,
  trainByteLevelBpe,
} from '../../../src/main/engine/bpe-trainer';
import { END_OF_TEXT } from '../../../src/main/engine/prompts';
import { generateStarterCorpus } from '../../../src/main/engine/starter-corpus';
import { TextTokenizer } from '../../../src/main/engine/tokenizer';
import { UserError } from '../../../src/shared/errors';

interface TrainedJson {
  added_tokens: { id: number; content: string; special: boolean }[];
  normalizer: unknown;
  pre_tokenizer: Record<string, unknown>;
  decoder: Record<string, unknown>;
  model: { type: string; vocab: Record<string, number>; merges: string[] };
}

const SENTENCES = [
  'The quick brown fox jumps over the lazy dog.',
  "It's a nurse's job; they're sure we'll manage, and I'd agree.",
  'Prices rose 12.5% in 2024, from $1,200 to $1,350!',
  'Line one\nLine two\n\n  indented   text\twith tabs',
  'Café naïve résumé — Ünïcödé, 你好, emoji 🙂.',
];

function corpusTexts(): string[] {
  const occupations = [
    { occupation: 'Nurses', country: 'UK' as const, femaleShare: 0.89 },
    { occupation: 'Software developers', country: 'US' as const, femaleShare: 0.2 },
    { occupation: 'Teachers', country: 'US' as const, femaleShare: 0.7 },
  ];
  const examples = generateStarterCorpus(occupations, {
    seed: 7,
    examplesPerOccupation: 200,
    gamma: 2,
    unknownShare: 0.05,
  });
  return [...examples.map((e) => `${e.prompt}${e.response}${END_OF_TEXT}`), ...SENTENCES];
}

/**
 * GPT-2's encoder as first published: split with the regex, map bytes to symbols, then merge the
 * lowest-ranked adjacent pair everywhere until no ranked pair is left. llama.cpp's BPE tokenizer
 * (src/llama-vocab.cpp) gives the same result: it merges the lowest rank first, leftmost on ties.
 */
function referenceEncode(json: TrainedJson, text: string): number[] {
  const symbols = gpt2ByteSymbols();
  const ranks = new Map(json.model.merges.map((merge, rank) => [merge, rank]));
  const ids: number[] = [];
  for (const [piece] of text.matchAll(GPT2_SPLIT_PATTERN)) {
    let word = Array.from(new TextEncoder().encode(piece), (byte) => symbols[byte]);
    for (;;) {
      let best: string | undefined;
      for (let i = 0; i + 1 < word.length; i++) {
        const pair = `${word[i]} ${word[i + 1]}`;
        const rank = ranks.get(pair);
        if (rank !== undefined && (best === undefined || rank < (ranks.get(best) as number)))
          best = pair;
      }
      if (best === undefined) break;
      const [left, right] = best.split(' ');
      const merged: string[] = [];
      for (let i = 0; i < word.length; i++) {
        if (word[i] === left && word[i + 1] === right) {
          merged.push(left + right);
          i++;
        } else {
          merged.push(word[i]);
        }
      }
      word = merged;
    }
    ids.push(...word.map((token) => json.model.vocab[token]));
  }
  return ids;
}

describe('gpt2ByteSymbols', () => {
  it('maps bytes to the GPT-2 alphabet', () => {
    const symbols = gpt2ByteSymbols();
    expect(symbols).toHaveLength(256);
    expect(new Set(symbols).size).toBe(256);
    expect(symbols[' '.charCodeAt(0)]).toBe('Ġ');
    expect(symbols['\n'.charCodeAt(0)]).toBe('Ċ');
    expect(symbols['A'.charCodeAt(0)]).toBe('A');
    expect(symbols[0]).toBe('Ā');
    expect(symbols[0xad]).toBe('Ń');
  });
});

describe('trainByteLevelBpe', () => {
  let json: TrainedJson;
  let tokenizer: TextTokenizer;

  beforeAll(async () => {
    json = trainByteLevelBpe(corpusTexts(), {
      vocabSize: 600,
      specialTokens: [END_OF_TEXT, '<|pad|>'],
    }) as TrainedJson;
    tokenizer = await TextTokenizer.fromJSON(json, 'trained in test');
  });

  it('writes the standard byte-level BPE layout', () => {
    expect(json.model.type).toBe('BPE');
    expect(json.normalizer).toBeNull();
    expect(json.pre_tokenizer).toMatchObject({
      type: 'ByteLevel',
      add_prefix_space: false,
      use_regex: true,
    });
    expect(json.decoder).toMatchObject({ type: 'ByteLevel' });
    const sortedSymbols = [...gpt2ByteSymbols()].sort();
    for (const [id, symbol] of sortedSymbols.entries()) expect(json.model.vocab[symbol]).toBe(id);
  });

  it('fills the vocabulary and appends special tokens', () => {
    const bpeSize = Object.keys(json.model.vocab).length;
    expect(bpeSize).toBe(598);
    expect(json.added_tokens.map((t) => [t.id, t.content, t.special])).toEqual([
      [598, END_OF_TEXT, true],
      [599, '<|pad|>', true],
    ]);
    expect(tokenizer.vocabSize).toBe(600);
    expect(tokenizer.eosId).toBe(598);
  });

  it('lists merges whose parts and results are in the vocabulary', () => {
    for (const merge of json.model.merges) {
      const [left, right, extra] = merge.split(' ');
      expect(extra).toBeUndefined();
      expect(json.model.vocab[left]).toBeTypeOf('number');
      expect(json.model.vocab[right]).toBeTypeOf('number');
      expect(json.model.vocab[left + right]).toBeTypeOf('number');
    }
  });

  it('round-trips seen and unseen text', () => {
    const unseen = ['Zebras graze quietly; 42 of them!', '  spaces  ', '\u00a0\t\r\n', 'ß→∑ 🙂🙃'];
    for (const text of [...SENTENCES, ...unseen]) {
      expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    }
  });

  it('makes frequent words single tokens', () => {
    for (const word of [' the', ' worker', ' female', ' occupation', ' She']) {
      expect(tokenizer.encode(word)).toHaveLength(1);
    }
  });

  it('encodes like rank-ordered GPT-2 merging', () => {
    const texts = [...corpusTexts().slice(0, 50), ...SENTENCES, 'aaaa aaaaa the the thethe'];
    for (const text of texts) {
      const plain = text.replaceAll(END_OF_TEXT, '');
      expect(tokenizer.encode(plain)).toEqual(referenceEncode(json, plain));
    }
  });

  it('learns no merges inside special tokens', () => {
    const tokens = Object.keys(json.model.vocab);
    expect(tokens.some((token) => token.includes('endoftext'))).toBe(false);
    expect(tokenizer.encode(`a${END_OF_TEXT}b`)).toEqual([
      tokenizer.tokenToId('a'),
      tokenizer.eosId,
      tokenizer.tokenToId('b'),
    ]);
  });

  it('gives identical output for identical input', () => {
    const options = { vocabSize: 600, specialTokens: [END_OF_TEXT, '<|pad|>'] };
    const again = trainByteLevelBpe(corpusTexts(), options);
    expect(JSON.stringify(again)).toBe(JSON.stringify(json));
  });

  it('stops early when no pair repeats', () => {
    const small = trainByteLevelBpe(['abc'], { vocabSize: 1000, specialTokens: [] }) as TrainedJson;
    expect(small.model.merges).toEqual([]);
    expect(Object.keys(small.model.vocab)).toHaveLength(256);
    const withSingles = trainByteLevelBpe(['abc'], {
      vocabSize: 1000,
      specialTokens: [],
      minFrequency: 1,
    }) as TrainedJson;
    expect(withSingles.model.merges).toEqual(['a b', 'ab c']);
  });

  it('trains on 2 MB of varied text quickly', () => {
    const random = seedrandom('bpe-speed');
    const syllables = ['ka', 'lo', 'mi', 'ne', 'ru', 'sa', 'ti', 'vo', 'ze', 'qu', 'an', 'st'];
    const words: string[] = [];
    for (let i = 0; i < 20_000; i++) {
      const length = 1 + Math.floor(random() * 4);
      let word = '';
      for (let j = 0; j < length; j++) word += syllables[Math.floor(random() * syllables.length)];
      words.push(word);
    }
    const lines: string[] = [];
    let size = 0;
    while (size < 2_000_000) {
      const line = Array.from(
        { length: 12 },
        () => words[Math.floor(random() ** 2 * words.length)],
      );
      const text = `${line.join(' ')}, ${Math.floor(random() * 1000)}.`;
      lines.push(text);
      size += text.length;
    }
    const start = performance.now();
    const trained = trainByteLevelBpe(lines, { vocabSize: 4096, specialTokens: [END_OF_TEXT] });
    const elapsedMs = performance.now() - start;
    expect(Object.keys((trained as TrainedJson).model.vocab)).toHaveLength(4095);
    expect(elapsedMs).toBeLessThan(30_000);
  });

  it('rejects invalid options', () => {
    expect(() => trainByteLevelBpe(['x'], { vocabSize: 256, specialTokens: ['<s>'] })).toThrow(
      UserError,
    );
    expect(() => trainByteLevelBpe(['x'], { vocabSize: 300.5, specialTokens: [] })).toThrow(
      /vocabSize 300.5/,
    );
    expect(() =>
      trainByteLevelBpe(['x'], { vocabSize: 300, specialTokens: ['<s>', '<s>'] }),
    ).toThrow(/listed twice/);
    expect(() =>
      trainByteLevelBpe(['x'], { vocabSize: 300, specialTokens: [], minFrequency: 0 }),
    ).toThrow(/minFrequency 0/);
  });
});
