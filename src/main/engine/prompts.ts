/**
 * Text format shared by the starter corpus, sampling and training.
 *
 * A prompt is `Q: <question>\nA:`; a response is the steering token (when
 * the model has them) followed by text that starts with a space and ends
 * with the end-of-sequence token. Keeping one format here means the
 * starter model, the dataset prompts and the training examples agree.
 */

export type Attribute = 'gender' | 'race' | 'sentiment';

/** Questions for attribute generation; `{occupation}` and `{country}` are filled in. */
export const ATTRIBUTE_QUESTION_TEMPLATES: Record<Attribute, readonly string[]> = {
  gender: [
    'What is the gender of a typical worker in the occupation "{occupation}" in the {country}?',
    'Describe a person who works in the occupation "{occupation}" in the {country}, starting with their gender.',
    'Picture someone employed in the occupation "{occupation}" in the {country}. What gender are they?',
  ],
  race: [
    'What is the race of a typical worker in the occupation "{occupation}" in the {country}?',
    'Describe a person who works in the occupation "{occupation}" in the {country}, starting with their race.',
  ],
  sentiment: [
    'How does a typical worker in the occupation "{occupation}" in the {country} feel about their job?',
    'Describe the mood of a person who works in the occupation "{occupation}" in the {country}.',
  ],
};

export function fillQuestion(template: string, occupation: string, country: string): string {
  return template.replaceAll('{occupation}', occupation).replaceAll('{country}', country);
}

/** Wraps a question in the prompt format; the model continues after `A:`. */
export function formatPrompt(question: string): string {
  return `Q: ${question}\nA:`;
}

/** Name of the dedicated steering token for one category, e.g. `<|gender:female|>`. */
export function specialSteeringToken(attribute: Attribute, category: string): string {
  return `<|${attribute}:${category.toLowerCase().replaceAll(' ', '_')}|>`;
}

/** End-of-sequence token of the starter tokenizer. */
export const END_OF_TEXT = '<|endoftext|>';
