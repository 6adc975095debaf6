import { getLlama, type Llama, LlamaLogLevel } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ChatMessage, renderChatTemplate } from '../../../src/main/engine/chat-template';
import { formatPrompt } from '../../../src/main/engine/prompts';
import { UserError } from '../../../src/shared/errors';

/** ChatML, the turn format of Qwen2 models. */
const CHATML = `{%- for message in messages %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\\n' }}
{%- endif %}`;

/** Llama 2 chat format: the system prompt joins the first user turn, and roles must alternate. */
const LLAMA2 = `{%- if messages[0].role == 'system' %}
  {%- set system = '<<SYS>>\\n' + messages[0].content + '\\n<</SYS>>\\n\\n' %}
  {%- set turns = messages[1:] %}
{%- else %}
  {%- set system = '' %}
  {%- set turns = messages %}
{%- endif %}
{%- for message in turns %}
  {%- if (message.role == 'user') != (loop.index0 % 2 == 0) %}
    {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}
  {%- endif %}
  {%- if message.role == 'user' %}
    {{- bos_token + '[INST] ' + (system if loop.first else '') + message.content | trim + ' [/INST]' }}
  {%- else %}
    {{- ' ' + message.content | trim + ' ' + eos_token }}
  {%- endif %}
{%- endfor %}`;

/** Llama 3 style headers, with a namespace counter and loop.last. */
const LLAMA3 = `{%- set ns = namespace(turns=0) %}
{{- bos_token }}
{%- for message in messages %}
  {%- set ns.turns = ns.turns + 1 %}
  {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim + '<|eot_id|>' }}
  {%- if loop.last and not add_generation_prompt %}{{- '\\n' }}{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}
{{- '' if ns.turns > 0 else '(no turns)' }}`;

/** The studio's own prompt format, Q: ... A:, as a chat template. */
const STUDIO_QA = `{%- for message in messages %}
  {%- if message.role == 'user' %}{{- 'Q: ' + message.content + '\\nA:' }}
  {%- elif message.role == 'assistant' %}{{- ' ' + message.content + eos_token + '\\n' }}
  {%- endif %}
{%- endfor %}`;

const SYSTEM: ChatMessage = { role: 'system', content: 'You describe workers.' };
const QUESTION: ChatMessage = { role: 'user', content: 'Describe a nurse in the UK. ' };
const ANSWER: ChatMessage = { role: 'assistant', content: ' She works nights. ' };
const FOLLOW_UP: ChatMessage = { role: 'user', content: 'And a pilot?' };

const CONVERSATIONS: ChatMessage[][] = [
  [QUESTION],
  [SYSTEM, QUESTION],
  [SYSTEM, QUESTION, ANSWER, FOLLOW_UP],
  [QUESTION, ANSWER],
];

const TOKENS = { bosToken: '<s>', eosToken: '</s>' };

let llama: Llama;

beforeAll(async () => {
  llama = await getLlama({
    gpu: false,
    build: 'never',
    usePrebuiltBinaries: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
  });
});

afterAll(async () => {
  await llama?.dispose();
});

/**
 * Renders with llama.cpp's own Jinja engine, which node-llama-cpp 3.21.1 exposes only as the
 * internal binding AddonJinjaRenderer.
 */
function renderWithLlamaCpp(template: string, context: Record<string, unknown>): string {
  // biome-ignore lint/suspicious/noExplicitAny: internal node-llama-cpp binding, not in its types.
  const Renderer = (llama as any)._bindings.AddonJinjaRenderer;
  return new Renderer(template).render(context);
}

describe('renderChatTemplate', () => {
  it('renders ChatML with a generation prompt', () => {
    const text = renderChatTemplate(CHATML, [SYSTEM, QUESTION], { addGenerationPrompt: true });
    expect(text).toBe(
      '<|im_start|>system\nYou describe workers.<|im_end|>\n' +
        '<|im_start|>user\nDescribe a nurse in the UK. <|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
  });

  it('omits the generation prompt on request', () => {
    const text = renderChatTemplate(CHATML, [QUESTION], { addGenerationPrompt: false });
    expect(text).toBe('<|im_start|>user\nDescribe a nurse in the UK. <|im_end|>\n');
  });

  it('folds the system prompt into the first turn', () => {
    const text = renderChatTemplate(LLAMA2, [SYSTEM, QUESTION, ANSWER, FOLLOW_UP], {
      addGenerationPrompt: true,
      ...TOKENS,
    });
    expect(text).toBe(
      '<s>[INST] <<SYS>>\nYou describe workers.\n<</SYS>>\n\nDescribe a nurse in the UK. [/INST]' +
        ' She works nights. </s><s>[INST] And a pilot? [/INST]',
    );
  });

  it('reproduces the studio prompt format', () => {
    const question = 'What is the gender of a typical worker in the occupation "Nurses" in the UK?';
    const prompt = renderChatTemplate(STUDIO_QA, [{ role: 'user', content: question }], {
      addGenerationPrompt: true,
    });
    expect(prompt).toBe(formatPrompt(question));
  });

  it('leaves an absent BOS token empty', () => {
    const text = renderChatTemplate(LLAMA3, [QUESTION], { addGenerationPrompt: true });
    expect(text.startsWith('<|start_header_id|>user')).toBe(true);
    const withBos = renderChatTemplate(LLAMA3, [QUESTION], {
      addGenerationPrompt: true,
      ...TOKENS,
    });
    expect(withBos).toBe(`<s>${text}`);
  });

  it('renders like llama.cpp', () => {
    for (const [name, template] of Object.entries({ CHATML, LLAMA2, LLAMA3, STUDIO_QA })) {
      for (const messages of CONVERSATIONS) {
        for (const addGenerationPrompt of [true, false]) {
          const context = {
            messages,
            add_generation_prompt: addGenerationPrompt,
            bos_token: TOKENS.bosToken,
            eos_token: TOKENS.eosToken,
          };
          const label = `${name} ${messages.map((m) => m.role).join(',')} ${addGenerationPrompt}`;
          const ours = renderChatTemplate(template, messages, { addGenerationPrompt, ...TOKENS });
          expect(ours, label).toBe(renderWithLlamaCpp(template, context));
        }
      }
    }
  });

  it('reports the template raise_exception', () => {
    const render = () =>
      renderChatTemplate(LLAMA2, [QUESTION, FOLLOW_UP], { addGenerationPrompt: true, ...TOKENS });
    expect(render).toThrow(UserError);
    expect(render).toThrow(/Conversation roles must alternate/);
    expect(render).toThrow(/2 messages \(roles: user, user\)/);
  });

  it('rejects a syntax error', () => {
    const render = () => renderChatTemplate('{% if %}', [QUESTION], { addGenerationPrompt: true });
    expect(render).toThrow(UserError);
    expect(render).toThrow(/^Invalid chat template: /);
  });

  it('rejects an unknown role', () => {
    const messages = [QUESTION, { role: 'tool', content: '{}' } as unknown as ChatMessage];
    const render = () => renderChatTemplate(CHATML, messages, { addGenerationPrompt: false });
    expect(render).toThrow(UserError);
    expect(render).toThrow(
      'Chat message 1 has role "tool"; expected "system", "user" or "assistant".',
    );
  });

  it('rejects non-string content', () => {
    const messages = [{ role: 'user', content: 7 } as unknown as ChatMessage];
    const render = () => renderChatTemplate(CHATML, messages, { addGenerationPrompt: false });
    expect(render).toThrow('Chat message 0 (user) has no string content.');
  });

  it('passes only role and content', () => {
    const message = { ...QUESTION, secret: 'hidden' } as ChatMessage;
    const template = '{{ messages[0].secret is defined }}';
    expect(renderChatTemplate(template, [message], { addGenerationPrompt: false })).toBe('false');
  });
});
