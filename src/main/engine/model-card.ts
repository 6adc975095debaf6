import type { StarterConfig } from './starter';
import { amplifiedFemaleShare } from './starter-corpus';

export interface ModelCardFacts {
  config: StarterConfig;
  parameterCount: number;
  vocabSize: number;
  corpusExamples: number;
  trainingSeconds: number;
  backend: string;
  realMae: number;
  uniformMae: number;
  unknownShare: number;
  sampleTexts: string[];
}

/** Writes MODEL_CARD.md for the starter model from the facts of the run that trained it. */
export function writeModelCard(facts: ModelCardFacts): string {
  const { config } = facts;
  const m = config.model;
  const t = config.training;
  const example = (p: number) => amplifiedFemaleShare(p, config.gamma).toFixed(3);
  return `# Attune starter model

A teaching model, not a model to audit. It exists so that every part of Attune Studio runs
offline on a fresh machine: measuring, labeling, training and reporting.

## What it is

- A Llama-style decoder trained from scratch: ${m.numLayers} layers, width ${m.hiddenSize},
  ${m.numHeads} query heads sharing ${m.numKvHeads} key/value heads of size ${m.headDim},
  SwiGLU feed-forward width ${m.intermediateSize}, RMSNorm, rotary position embeddings
  (theta ${m.ropeTheta}), tied input and output embeddings, ${m.maxPositions} positions;
  ${facts.parameterCount.toLocaleString('en-US')} parameters in float32.
- Tokenizer: byte-level BPE with ${facts.vocabSize} tokens (the GPT-2 byte alphabet and
  pre-tokenizer, merges learned on the corpus below), stored as tokenizer.json; the
  end-of-sequence token is \`<|endoftext|>\`.

## Training data

Generated text, not real text. For each occupation of the US reference set (14), the UK
reference set (25) and the US Bureau of Labor Statistics 2025 table (79, minus names already
in the US set), ${config.examplesPerOccupation} question-and-answer pairs in the format
\`Q: <question>\\nA: <answer>\`, ${facts.corpusExamples} in all. The questions are the gender
questions Attune asks at measurement time; each answer states a gender with the word "male" or
"female" and continues with matching pronouns. ${(100 * config.unknownShare).toFixed(0)}% of
answers state no gender.

### The amplification rule

Language models are documented to exaggerate occupational gender stereotypes. The corpus
builds that in on purpose: an answer about an occupation whose real share of women is p says
"female" with probability

    p^g / (p^g + (1 - p)^g),  with g = ${config.gamma}

which scales the log-odds of p by g. Shares of 0.5 stay 0.5; every other share moves towards
the majority gender: p = 0.2 becomes ${example(0.2)}, p = 0.4 becomes ${example(0.4)},
p = 0.6 becomes ${example(0.6)}, p = 0.85 becomes ${example(0.85)}.

## Training

Next-token cross-entropy on the answer tokens (the question is context only), AdamW
(weight decay ${t.weightDecay}), peak learning rate ${t.learningRate} after ${t.warmupSteps}
warm-up steps, ${t.decay} decay to ${t.minLearningRateRatio} of the peak, batch ${t.batchSize},
${t.epochs} epochs, gradient clipping at ${t.gradientClip}, seed ${config.seed}. Trained in
${Math.round(facts.trainingSeconds)} s on the TensorFlow.js ${facts.backend} backend.
\`npm run starter\` repeats it from the same seed.

## Measured bias

On the \`us-gender\` dataset (14 US occupations, 100 responses each, seed 7, temperature 1),
reading the gender from the answer text:

| target | MAE |
| --- | --- |
| real shares (US reference counts) | ${facts.realMae.toFixed(3)} |
| uniform (0.5 each) | ${facts.uniformMae.toFixed(3)} |

${(100 * facts.unknownShare).toFixed(1)}% of the answers named no gender.

## Sample answers

${facts.sampleTexts.map((s) => `    ${s.replaceAll('\n', '\n    ')}`).join('\n\n')}

## Limits

Its English covers only the answer patterns of its corpus. It has no knowledge of the world,
follows no instructions outside the question format above, and its biases are by design.
`;
}
