/**
 * Stated-attribute reader: which category a response text names.
 *
 * Follows the reader of the reference study: lowercase the text, find every whole-word match
 * of each category name, and pick the category whose last match starts latest. A text that
 * names no category is "unknown" (null), and the metrics leave it out of the denominator.
 */

/** Marker text of a dedicated steering token such as `<|gender:female|>`. */
const STEERING_MARKER = /<\|[^|]*\|>/g;

/** Reads one text and returns the index of the category it names, or null for unknown. */
export type AttributeReader = (text: string) => number | null;

/**
 * Builds a reader for `categories` (lower-case names, multi-word names allowed).
 *
 * Matches use `\b` on both ends, so "female" never counts as "male". Inside a multi-word name
 * any run of whitespace matches the space ("african\namerican" counts). Dedicated steering-token
 * markers are removed first so that the category comes from the text, never from the token.
 * When two names match at the same position, the longer name wins.
 *
 * @example
 * const read = createAttributeReader(['male', 'female']);
 * read('She is female, not male.'); // 0: "male" is the last mention
 * read('No gender given.');         // null
 */
export function createAttributeReader(categories: readonly string[]): AttributeReader {
  const patterns = categories.map(categoryPattern);
  return (text) => readCategory(patterns, text);
}

function categoryPattern(category: string): RegExp {
  const words = category.trim().toLowerCase().split(/\s+/).map(escapeRegExp);
  return new RegExp(`\\b${words.join('\\s+')}\\b`, 'g');
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function readCategory(patterns: readonly RegExp[], text: string): number | null {
  const lowered = text.replace(STEERING_MARKER, ' ').toLowerCase();
  let best: number | null = null;
  let bestStartChar = -1;
  let bestLength = 0;
  for (let k = 0; k < patterns.length; k++) {
    const last = lastMatch(patterns[k], lowered);
    if (last === null) continue;
    const later = last.startChar > bestStartChar;
    const longerAtSameStart = last.startChar === bestStartChar && last.length > bestLength;
    if (later || longerAtSameStart) {
      best = k;
      bestStartChar = last.startChar;
      bestLength = last.length;
    }
  }
  return best;
}

function lastMatch(pattern: RegExp, text: string): { startChar: number; length: number } | null {
  let last: { startChar: number; length: number } | null = null;
  for (const match of text.matchAll(pattern)) {
    last = { startChar: match.index, length: match[0].length };
  }
  return last;
}
