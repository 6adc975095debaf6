/**
 * Chat templates: the Jinja templates that models ship (tokenizer_config.json `chat_template`,
 * GGUF `tokenizer.chat_template`), rendered with @huggingface/jinja. The template gets the
 * variables transformers' apply_chat_template passes: `messages`, `add_generation_prompt`,
 * `bos_token` and `eos_token`, plus the `raise_exception` function.
 */

import { Template } from '@huggingface/jinja';
import { UserError } from '../../shared/errors';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatTemplateOptions {
  /** Whether to end with the header that starts an assistant turn. */
  addGenerationPrompt: boolean;
  /** BOS token text; templates see an undefined `bos_token` when it is absent. */
  bosToken?: string;
  /** EOS token text; templates see an undefined `eos_token` when it is absent. */
  eosToken?: string;
}

const ROLES: ReadonlySet<string> = new Set(['system', 'user', 'assistant']);

/** Last parsed template: sampling renders one template for thousands of prompts. */
let cached: { source: string; template: Template } | undefined;

/**
 * Renders `messages` with the Jinja chat `template`.
 * Throws a UserError when the template has a syntax error, when rendering fails (including a
 * template's own `raise_exception`, such as roles that do not alternate), or when a message has
 * an unknown role or non-string content.
 *
 * @example
 * renderChatTemplate(tokenizer.options.chatTemplate, [{ role: 'user', content: 'Hi' }], {
 *   addGenerationPrompt: true,
 *   bosToken: tokenizer.options.bosToken,
 * });
 */
export function renderChatTemplate(
  template: string,
  messages: ChatMessage[],
  options: ChatTemplateOptions,
): string {
  const context: Record<string, unknown> = {
    messages: messages.map(checkedMessage),
    add_generation_prompt: options.addGenerationPrompt,
  };
  if (options.bosToken !== undefined) context.bos_token = options.bosToken;
  if (options.eosToken !== undefined) context.eos_token = options.eosToken;
  const parsed = parseTemplate(template);
  try {
    return parsed.render(context);
  } catch (error) {
    const roles = messages.map((message) => message.role).join(', ');
    throw new UserError(
      `Chat template failed to render ${messages.length} messages (roles: ${roles || 'none'}): ` +
        `${errorMessage(error)}. Check the template, or the order of the roles it accepts.`,
      { cause: error },
    );
  }
}

function parseTemplate(source: string): Template {
  if (cached?.source === source) return cached.template;
  let template: Template;
  try {
    template = new Template(source);
  } catch (error) {
    throw new UserError(
      `Invalid chat template: ${errorMessage(error)}. Fix the template's Jinja syntax.`,
      { cause: error },
    );
  }
  cached = { source, template };
  return template;
}

/** Returns a plain copy of message `index`, so the template cannot see or change other fields. */
function checkedMessage(message: ChatMessage, index: number): ChatMessage {
  if (!ROLES.has(message?.role)) {
    throw new UserError(
      `Chat message ${index} has role ${JSON.stringify(message?.role)}; ` +
        'expected "system", "user" or "assistant".',
    );
  }
  if (typeof message.content !== 'string') {
    throw new UserError(`Chat message ${index} (${message.role}) has no string content.`);
  }
  return { role: message.role, content: message.content };
}

/** Message of `error` without a final period, for quoting inside a sentence. */
function errorMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.trim().replace(/\.$/, '');
}
