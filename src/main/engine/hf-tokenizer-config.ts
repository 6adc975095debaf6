/**
 * Special-token roles and chat template of a Hugging Face model folder: tokenizer_config.json,
 * chat_template.jinja and generation_config.json in, the same files out.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '../../shared/errors';
import { firstId, type TokenRoleIds } from './hf-config';
import { TextTokenizer, type TokenizerOptions } from './tokenizer';

export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';
export const GENERATION_CONFIG_FILE = 'generation_config.json';

/** Tokenizer classes of transformers whose `add_bos_token` defaults to true. */
const BOS_BY_DEFAULT_CLASSES = new Set(['LlamaTokenizer', 'LlamaTokenizerFast']);

interface TokenizerConfig {
  options: TokenizerOptions;
  tokenizerClass?: string;
}

/**
 * Loads the folder's tokenizer.json with the roles its config files state. The EOS token comes
 * from tokenizer_config.json, else from the `eos_token_id` of generation_config.json, else from
 * `configEosId` (config.json). When `add_bos_token` is absent, BOS is added if tokenizer.json's
 * post-processor prepends it (Llama 3) or the tokenizer class defaults to it (Llama 2).
 */
export async function loadFolderTokenizer(
  dir: string,
  configEosId?: number,
): Promise<TextTokenizer> {
  const configFile = path.join(dir, TOKENIZER_CONFIG_FILE);
  const stated = await readTokenizerConfig(dir);
  const tokenizer = await loadWithRoles(dir, stated.options, configFile);
  const resolved: TokenizerOptions = { ...stated.options };
  if (resolved.eosToken === undefined) {
    resolved.eosToken = await fallbackEosToken(dir, tokenizer, configEosId);
  }
  if (resolved.addBosToken === undefined && resolved.bosToken !== undefined) {
    resolved.addBosToken = addsBosByDefault(tokenizer, resolved.bosToken, stated.tokenizerClass);
  }
  const unchanged =
    (resolved.eosToken ?? tokenizer.eosToken) === tokenizer.eosToken &&
    Boolean(resolved.addBosToken) === Boolean(stated.options.addBosToken);
  if (unchanged) return tokenizer;
  return TextTokenizer.fromJSON(tokenizer.toJSON(), tokenizer.source, resolved);
}

/** Returns whether transformers adds `bosToken` when tokenizer_config.json omits add_bos_token. */
function addsBosByDefault(
  tokenizer: TextTokenizer,
  bosToken: string,
  tokenizerClass: string | undefined,
): boolean {
  const postProcessor = (tokenizer.toJSON() as Record<string, unknown>).post_processor;
  if (prependsToken(postProcessor, bosToken)) return true;
  return BOS_BY_DEFAULT_CLASSES.has(tokenizerClass ?? '');
}

async function loadWithRoles(
  dir: string,
  options: TokenizerOptions,
  configFile: string,
): Promise<TextTokenizer> {
  try {
    return await TextTokenizer.load(dir, options);
  } catch (error) {
    const named = [options.eosToken, options.bosToken].filter((t) => t !== undefined);
    const fromConfig = named.some((t) => (error as Error).message.includes(JSON.stringify(t)));
    if (error instanceof UserError && fromConfig) {
      throw new UserError(`${error.message} The token is set in ${configFile}.`, { cause: error });
    }
    throw error;
  }
}

/** Reads tokenizer_config.json (absent: no stated roles) and chat_template.jinja. */
export async function readTokenizerConfig(dir: string): Promise<TokenizerConfig> {
  const file = path.join(dir, TOKENIZER_CONFIG_FILE);
  const json = await readOptionalJson(file);
  const options: TokenizerOptions = {};
  let tokenizerClass: string | undefined;
  if (json) {
    const eos = tokenText(json.eos_token, 'eos_token', file);
    const bos = tokenText(json.bos_token, 'bos_token', file);
    if (eos !== undefined) options.eosToken = eos;
    if (bos !== undefined) options.bosToken = bos;
    const addBos = json.add_bos_token ?? undefined;
    if (addBos !== undefined && typeof addBos !== 'boolean') {
      throw new UserError(
        `${file}: add_bos_token must be true or false, got ${JSON.stringify(addBos)}.`,
      );
    }
    if (addBos !== undefined) options.addBosToken = addBos;
    const template = chatTemplate(json.chat_template, file);
    if (template !== undefined) options.chatTemplate = template;
    if (typeof json.tokenizer_class === 'string') tokenizerClass = json.tokenizer_class;
  }
  // transformers 4.47 and later read chat_template.jinja in preference to the inline field.
  const sidecar = await readOptionalText(path.join(dir, CHAT_TEMPLATE_FILE));
  if (sidecar !== null) options.chatTemplate = sidecar;
  return { options, tokenizerClass };
}

/** Reads a token given as a string or an AddedToken object `{ content }`. Null means none. */
function tokenText(value: unknown, key: string, file: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  const content = (value as { content?: unknown }).content;
  if (typeof value === 'object' && typeof content === 'string') return content;
  throw new UserError(
    `${file}: ${key} must be a string or an object with a string "content", got ${JSON.stringify(value)}.`,
  );
}

/** Reads a template string, or the one named "default" in a list of `{ name, template }`. */
function chatTemplate(value: unknown, file: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  const valid =
    Array.isArray(value) &&
    value.every((t) => typeof t?.name === 'string' && typeof t?.template === 'string');
  if (!valid) {
    throw new UserError(
      `${file}: chat_template must be a string or a list of { "name", "template" } objects.`,
    );
  }
  // NOTE: a list without a "default" entry leaves the model without a chat template.
  return (value as { name: string; template: string }[]).find((t) => t.name === 'default')
    ?.template;
}

async function fallbackEosToken(
  dir: string,
  tokenizer: TextTokenizer,
  configEosId: number | undefined,
): Promise<string | undefined> {
  const generationFile = path.join(dir, GENERATION_CONFIG_FILE);
  const generation = await readOptionalJson(generationFile);
  const generationId = firstId(generation?.eos_token_id);
  const [id, file] =
    generationId !== undefined
      ? [generationId, generationFile]
      : [configEosId, path.join(dir, 'config.json')];
  if (id === undefined) return undefined;
  const token = tokenizer.idToToken(id);
  if (token === undefined) {
    throw new UserError(
      `${file}: eos_token_id ${id} is not a token of ${tokenizer.source}. ` +
        `Set eos_token in ${TOKENIZER_CONFIG_FILE} or fix the id.`,
    );
  }
  return token;
}

/** True when a tokenizer.json post-processor puts `token` before the text (TemplateProcessing). */
export function prependsToken(processor: unknown, token: string): boolean {
  if (!isObject(processor)) return false;
  if (processor.type === 'Sequence' && Array.isArray(processor.processors)) {
    return processor.processors.some((p) => prependsToken(p, token));
  }
  if (processor.type !== 'TemplateProcessing' || !Array.isArray(processor.single)) return false;
  const first = processor.single[0] as { SpecialToken?: { id?: unknown } } | undefined;
  return first?.SpecialToken?.id === token;
}

/** Reads a text file, or returns null when it does not exist. */
async function readOptionalText(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new UserError(`${file} cannot be read: ${(error as Error).message}`, { cause: error });
  }
}

async function readOptionalJson(file: string): Promise<Record<string, unknown> | null> {
  const text = await readOptionalText(file);
  if (text === null) return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UserError(`${file} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  if (!isObject(value)) throw new UserError(`${file} must contain a JSON object.`);
  return value;
}

/**
 * Builds tokenizer_config.json for PreTrainedTokenizerFast: the roles, the chat template, and
 * every added token under `added_tokens_decoder`, special ones also under
 * `additional_special_tokens`.
 */
export function tokenizerConfigFor(
  tokenizer: TextTokenizer,
  maxPositions: number,
): Record<string, unknown> {
  const { bosToken, addBosToken, chatTemplate: template } = tokenizer.options;
  const decoder: Record<string, unknown> = {};
  const extraSpecial: string[] = [];
  for (const token of addedTokens(tokenizer)) {
    decoder[String(token.id)] = {
      content: token.content,
      lstrip: token.lstrip ?? false,
      normalized: token.normalized ?? false,
      rstrip: token.rstrip ?? false,
      single_word: token.single_word ?? false,
      special: token.special ?? false,
    };
    const role = token.content === tokenizer.eosToken || token.content === bosToken;
    if (token.special && !role) extraSpecial.push(token.content);
  }
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: bosToken ?? null,
    eos_token: tokenizer.eosToken,
    add_bos_token: Boolean(addBosToken && bosToken !== undefined),
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: maxPositions,
    added_tokens_decoder: decoder,
    additional_special_tokens: extraSpecial,
    ...(template === undefined ? {} : { chat_template: template }),
  };
}

export function generationConfigFor(roles: TokenRoleIds): Record<string, unknown> {
  return { bos_token_id: roles.bosId ?? null, eos_token_id: roles.eosId };
}

/**
 * Returns tokenizer.json content for export. PreTrainedTokenizerFast adds BOS only through the
 * post-processor, so when the tokenizer adds BOS and its post-processor does not, a
 * TemplateProcessing step that prepends BOS is appended.
 */
export function tokenizerJsonFor(tokenizer: TextTokenizer): Record<string, unknown> {
  const json = tokenizer.toJSON() as Record<string, unknown>;
  const { bosToken, addBosToken } = tokenizer.options;
  const bosId = tokenizer.bosId;
  if (!addBosToken || bosToken === undefined || bosId === undefined) return json;
  if (prependsToken(json.post_processor, bosToken)) return json;
  const bos = (typeId: number) => ({ SpecialToken: { id: bosToken, type_id: typeId } });
  const text = (id: string, typeId: number) => ({ Sequence: { id, type_id: typeId } });
  const template = {
    type: 'TemplateProcessing',
    single: [bos(0), text('A', 0)],
    pair: [bos(0), text('A', 0), bos(1), text('B', 1)],
    special_tokens: { [bosToken]: { id: bosToken, ids: [bosId], tokens: [bosToken] } },
  };
  const existing = json.post_processor;
  const postProcessor = isObject(existing)
    ? { type: 'Sequence', processors: [existing, template] }
    : template;
  return { ...json, post_processor: postProcessor };
}

interface AddedTokenFields {
  id: number;
  content: string;
  lstrip?: boolean;
  normalized?: boolean;
  rstrip?: boolean;
  single_word?: boolean;
  special?: boolean;
}

function addedTokens(tokenizer: TextTokenizer): AddedTokenFields[] {
  const list = (tokenizer.toJSON() as { added_tokens?: unknown }).added_tokens;
  return Array.isArray(list) ? (list as AddedTokenFields[]) : [];
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
