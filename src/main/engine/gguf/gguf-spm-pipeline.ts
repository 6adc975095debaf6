/**
 * Checks of the tokenizer.json steps around a SentencePiece-style BPE model, for export to the
 * `llama` GGUF form: the normalizer and pre-tokenizer, which must only turn spaces into "▁" and
 * optionally prepend one, and the options of the added tokens.
 */

import { SPACE_MARKER } from './gguf-vocab';

/** Subset of a tokenizer.json added_tokens entry that the export reads. */
export interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
  normalized?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
}

/** Throws the export's UserError for `problem`, ending with `fix`. */
export type Reject = (problem: string, fix: string) => never;

export const SAME_FORM_FIX =
  'Only tokenizers that replace spaces with "▁" and at most prepend one "▁", as Llama 2\'s ' +
  'tokenizer.json does, have a GGUF form that llama.cpp tokenizes the same way.';

/**
 * Returns whether the normalizer or pre-tokenizer prepends "▁" to each text segment, the
 * equivalent of llama.cpp's add_space_prefix. Every step must either replace " " with "▁" or
 * prepend "▁", and at least one must replace.
 */
export function readSpaceHandling(json: Record<string, unknown>, reject: Reject): boolean {
  let prefixes = 0;
  let replaces = 0;
  for (const { path, step } of pipelineSteps(json.normalizer, 'normalizer', 'normalizers')) {
    if (step.type === 'Prepend' && step.prepend === SPACE_MARKER) prefixes++;
    else if (replacesSpaces(step)) replaces++;
    else rejectStep(path, step, 'normalizer', reject);
  }
  for (const { path, step } of pipelineSteps(
    json.pre_tokenizer,
    'pre_tokenizer',
    'pretokenizers',
  )) {
    if (replacesSpaces(step)) replaces++;
    else if (step.type === 'Metaspace') {
      checkMetaspace(path, step, reject);
      replaces++;
    } else rejectStep(path, step, 'pre-tokenizer', reject);
  }
  if (replaces === 0) {
    reject('neither its normalizer nor its pre_tokenizer replaces spaces with "▁"', SAME_FORM_FIX);
  }
  if (prefixes > 1) reject(`its normalizer prepends "▁" ${prefixes} times`, SAME_FORM_FIX);
  return prefixes === 1;
}

/** Returns the steps of a normalizer or pre-tokenizer, with Sequence steps flattened. */
function pipelineSteps(
  value: unknown,
  path: string,
  listKey: string,
): { path: string; step: Record<string, unknown> }[] {
  if (value === null || value === undefined) return [];
  const step = value as Record<string, unknown>;
  const list = step[listKey];
  if (step.type !== 'Sequence' || !Array.isArray(list)) return [{ path, step }];
  return list.flatMap((item, index) =>
    pipelineSteps(item, `${path}.${listKey}[${index}]`, listKey),
  );
}

function replacesSpaces(step: Record<string, unknown>): boolean {
  const pattern = step.pattern as { String?: unknown } | undefined;
  return step.type === 'Replace' && pattern?.String === ' ' && step.content === SPACE_MARKER;
}

function rejectStep(
  path: string,
  step: Record<string, unknown>,
  kind: string,
  reject: Reject,
): never {
  // Show the settings of the steps that are accepted with other settings.
  const settings = ['Prepend', 'Replace'].includes(String(step.type))
    ? ` ${JSON.stringify(step).slice(0, 100)}`
    : '';
  reject(
    `${path} is a ${String(step.type)} ${kind}${settings}, which llama.cpp's SentencePiece ` +
      'tokenizer does not apply',
    SAME_FORM_FIX,
  );
}

/**
 * Accepts a Metaspace pre-tokenizer only with prepend_scheme "never". With "always" or "first",
 * @huggingface/tokenizers skips the "▁" prefix for text that starts with a space, and with
 * "first" also for text after an added token, while llama.cpp's add_space_prefix adds it to
 * every text segment.
 */
function checkMetaspace(path: string, step: Record<string, unknown>, reject: Reject): void {
  const replacement = step.replacement ?? SPACE_MARKER;
  const spelled = step.str_rep || replacement;
  if (replacement !== SPACE_MARKER || spelled !== SPACE_MARKER) {
    reject(`${path}.replacement is ${JSON.stringify(replacement)} instead of "▁"`, SAME_FORM_FIX);
  }
  if (step.split === true) {
    reject(
      `${path}.split is true, so Hugging Face tokenizes each word apart, which llama.cpp does not`,
      SAME_FORM_FIX,
    );
  }
  const scheme = step.prepend_scheme ?? 'always';
  if (scheme !== 'never') {
    const where = scheme === 'first' ? 'only at the start of the input and ' : '';
    reject(
      `${path}.prepend_scheme is ${JSON.stringify(scheme)}, which prepends "▁" ${where}only ` +
        "to text that does not start with a space, but llama.cpp's add_space_prefix prepends " +
        'it to every text segment',
      'Use a tokenizer.json whose normalizer prepends "▁" (Prepend), as Llama 2\'s does.',
    );
  }
}

/**
 * Rejects added-token options that llama.cpp cannot store: lstrip and rstrip, and `normalized`
 * when the normalizer prepends "▁". Such a token is matched after the prefix, so the text after
 * it gets none, while llama.cpp matches it in the raw text.
 */
export function checkAddedTokens(added: AddedTokenJson[], prepends: boolean, reject: Reject): void {
  added.forEach((token, index) => {
    const name = `added_tokens[${index}] (${JSON.stringify(token.content)})`;
    for (const field of ['lstrip', 'rstrip'] as const) {
      if (token[field] === true) {
        reject(
          `${name} has ${field}: true, which llama.cpp cannot store in GGUF`,
          'Only added tokens that keep the spaces around them can be exported.',
        );
      }
    }
    // @huggingface/tokenizers defaults `normalized` to true for added tokens that are not special.
    if (prepends && (token.normalized ?? !token.special)) {
      reject(
        `${name} has normalized: true, so it is matched after "▁" is prepended, ` +
          'while llama.cpp matches it in the raw text',
        'Set "normalized": false on the added token if that is how the model was trained.',
      );
    }
  });
}
