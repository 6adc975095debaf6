/**
 * Measurement: sample N responses per occupation and read the attribute from the text.
 */
import type { DatasetDefinition } from './datasets';
import { promptsFor } from './datasets';
import type { MeasuredSample } from './metrics';
import type { LlamaModel } from './model';
import { generate, type SamplingOptions } from './sampler';
import type { TextTokenizer } from './tokenizer';

/** A measured sample with the token ids it came from, for building training examples. */
export interface SampledResponse extends MeasuredSample {
  promptIds: number[];
  /** Text token ids after the steering token (if any), end-of-sequence excluded. */
  textIds: number[];
  /** False when generation stopped at max new tokens before end-of-sequence. */
  finished: boolean;
  /** Softmax over the K steering logits at the first response position; null without steering. */
  steeringProbs?: number[] | null;
}

export interface MeasureOptions {
  rounds: number;
  sampling: SamplingOptions;
  /** Steering token ids in category order; when set, the first response token is sampled among them. */
  steeringIds?: number[];
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

/** Samples `rounds` responses per occupation of `dataset`, in occupation-major order. */
export async function measureDataset(
  model: LlamaModel,
  tokenizer: TextTokenizer,
  dataset: DatasetDefinition,
  options: MeasureOptions,
): Promise<SampledResponse[]> {
  const requests: { occupationIndex: number; round: number; prompt: string; ids: number[] }[] = [];
  dataset.occupations.forEach((_, occupationIndex) => {
    for (let round = 0; round < options.rounds; round++) {
      const prompt = promptsFor(dataset, occupationIndex, round);
      requests.push({ occupationIndex, round, prompt, ids: tokenizer.encode(prompt) });
    }
  });
  const results = await generate(
    model,
    requests.map((r) => r.ids),
    options.sampling,
    {
      steeringIds: options.steeringIds,
      eosId: tokenizer.eosId,
      padId: tokenizer.eosId,
      signal: options.signal,
      onProgress: options.onProgress,
    },
  );
  return results.map((result, i) => {
    const request = requests[i];
    const textIds = options.steeringIds ? result.tokens.slice(1) : result.tokens;
    const text = tokenizer.decode(textIds, { skipSpecialTokens: true });
    return {
      occupationIndex: request.occupationIndex,
      round: request.round,
      prompt: request.prompt,
      promptIds: request.ids,
      text,
      textIds,
      finished: result.finished,
      steeringCategory: result.steeringCategory,
      steeringProbs: result.steeringProbs,
      textCategory: dataset.readAttribute(text),
    };
  });
}
