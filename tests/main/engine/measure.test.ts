import { describe, expect, it } from 'vitest';
import { loadDataset, promptsFor, questionFor } from '../../../src/main/engine/datasets';
import {
  buildPrompt,
  resolvePromptFormat,
  stratifiedUniforms,
} from '../../../src/main/engine/measure';
import { TextTokenizer } from '../../../src/main/engine/tokenizer';
import { UserError } from '../../../src/shared/errors';
import { tinyTokenizer } from '../../helpers/tiny-model';

function layout(occupations: number, rounds: number) {
  const occupation: number[] = [];
  const round: number[] = [];
  for (let o = 0; o < occupations; o++) {
    for (let r = 0; r < rounds; r++) {
      occupation.push(o);
      round.push(r);
    }
  }
  return { occupation, round };
}

describe('stratifiedUniforms', () => {
  it('puts one draw in each stratum of every occupation', () => {
    const rounds = 100;
    const { occupation, round } = layout(3, rounds);
    const u = stratifiedUniforms(occupation, round, rounds, 7);
    for (let o = 0; o < 3; o++) {
      const strata = u
        .slice(o * rounds, (o + 1) * rounds)
        .map((x) => Math.floor(x * rounds))
        .sort((a, b) => a - b);
      expect(strata, `occupation ${o}`).toEqual(Array.from({ length: rounds }, (_, i) => i));
    }
    for (const x of u) expect(x >= 0 && x < 1, `value ${x}`).toBe(true);
  });

  it('gives category counts within one of N times the probability', () => {
    const rounds = 100;
    const { occupation, round } = layout(5, rounds);
    for (const p of [0.5, 0.137, 0.9]) {
      const u = stratifiedUniforms(occupation, round, rounds, 3);
      for (let o = 0; o < 5; o++) {
        const hits = u.slice(o * rounds, (o + 1) * rounds).filter((x) => x < p).length;
        expect(Math.abs(hits - rounds * p), `p ${p} occupation ${o}`).toBeLessThanOrEqual(1);
      }
    }
  });

  it('is uniform on [0, 1) across seeds for a fixed round', () => {
    const { occupation, round } = layout(1, 10);
    const firsts = Array.from(
      { length: 4000 },
      (_, seed) => stratifiedUniforms(occupation, round, 10, seed)[0],
    );
    // Ten equal bins of 400 expected each; a chi-square of 9 degrees of freedom above 33 has
    // probability below 1e-4.
    const bins = new Array(10).fill(0);
    for (const x of firsts) bins[Math.floor(x * 10)] += 1;
    const chi = bins.reduce((sum, n) => sum + (n - 400) ** 2 / 400, 0);
    expect(chi, `bins ${bins}`).toBeLessThan(33);
  });

  it('repeats for a seed and changes with it', () => {
    const { occupation, round } = layout(2, 20);
    expect(stratifiedUniforms(occupation, round, 20, 1)).toEqual(
      stratifiedUniforms(occupation, round, 20, 1),
    );
    expect(stratifiedUniforms(occupation, round, 20, 1)).not.toEqual(
      stratifiedUniforms(occupation, round, 20, 2),
    );
  });
});

describe('prompt formats', () => {
  const TEMPLATE =
    '{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}' +
    '{% if add_generation_prompt %}[assistant]{% endif %}';

  async function chatTokenizer(addBosToken: boolean) {
    const base = await tinyTokenizer();
    return TextTokenizer.fromJSON(base.toJSON(), 'chat tokenizer', {
      chatTemplate: TEMPLATE,
      bosToken: '<|endoftext|>',
      addBosToken,
    });
  }

  it('resolves auto by the presence of a template', async () => {
    const plain = await tinyTokenizer();
    expect(resolvePromptFormat('auto', plain)).toBe('qa');
    expect(resolvePromptFormat('auto', await chatTokenizer(false))).toBe('chat');
    expect(() => resolvePromptFormat('chat', plain)).toThrow(UserError);
    expect(() => resolvePromptFormat('chat', plain)).toThrow(/has none. Use --prompt-format qa/);
  });

  it('renders one user turn with the chat template', async () => {
    const dataset = loadDataset('us-gender');
    const tokenizer = await chatTokenizer(false);
    const { prompt, ids } = buildPrompt(dataset, 2, 1, tokenizer, 'chat');
    expect(prompt).toBe(`<|endoftext|>[user] ${questionFor(dataset, 2, 1)}\n[assistant]`);
    expect(ids).toEqual(tokenizer.encode(prompt));
    const qa = buildPrompt(dataset, 2, 1, tokenizer, 'qa');
    expect(qa.prompt).toBe(promptsFor(dataset, 2, 1));
  });

  it('rejects a template that renders nothing', async () => {
    const base = await tinyTokenizer();
    const empty = await TextTokenizer.fromJSON(base.toJSON(), 'empty template', {
      chatTemplate: '',
    });
    expect(() => buildPrompt(loadDataset('us-gender'), 0, 0, empty, 'chat')).toThrow(
      /empty template rendered an empty prompt\. Fix the template, or pass --prompt-format qa/,
    );
  });

  it('adds BOS once when the template already writes it', async () => {
    const dataset = loadDataset('us-gender');
    const tokenizer = await chatTokenizer(true);
    const bos = tokenizer.bosId;
    const { ids } = buildPrompt(dataset, 0, 0, tokenizer, 'chat');
    expect(ids[0]).toBe(bos);
    expect(ids[1]).not.toBe(bos);
    const qa = buildPrompt(dataset, 0, 0, tokenizer, 'qa');
    expect(qa.ids[0], 'qa prompts get the BOS prefix').toBe(bos);
  });
});
