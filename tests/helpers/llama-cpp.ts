import { getLlama, type Llama, LlamaLogLevel, type LlamaModel } from 'node-llama-cpp';

let shared: Promise<Llama> | null = null;

/**
 * Context settings that keep llama.cpp's attention in float32: its default F16 KV cache alone
 * moves next-token log-probabilities of the test models by about 0.02.
 */
const EXACT_CONTEXT = {
  experimentalKvCacheKeyType: 'F32',
  experimentalKvCacheValueType: 'F32',
  flashAttention: false,
} as const;

/** llama.cpp through node-llama-cpp's prebuilt CPU binary; never builds or downloads. */
export function llamaCpp(): Promise<Llama> {
  shared ??= getLlama({
    gpu: false,
    build: 'never',
    usePrebuiltBinaries: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
  });
  return shared;
}

export async function loadLlamaCppModel(modelPath: string): Promise<LlamaModel> {
  const llama = await llamaCpp();
  return llama.loadModel({ modelPath, gpuLayers: 0 });
}

/**
 * Greedy continuation of `prompt` by llama.cpp, `count` tokens long. End-of-sequence tokens are
 * yielded and decoding goes on past them, as the studio's reference decode does.
 */
export async function llamaCppGreedy(
  model: LlamaModel,
  prompt: number[],
  count: number,
): Promise<number[]> {
  const context = await model.createContext({
    contextSize: Math.max(64, prompt.length + count + 8),
    sequences: 1,
    threads: 1,
    ...EXACT_CONTEXT,
  });
  try {
    const sequence = context.getSequence();
    const out: number[] = [];
    // biome-ignore lint/suspicious/noExplicitAny: node-llama-cpp brands token ids as Token.
    for await (const token of sequence.evaluate(prompt as any, {
      temperature: 0,
      yieldEogToken: true,
    })) {
      out.push(Number(token));
      if (out.length >= count) break;
    }
    return out;
  } finally {
    await context.dispose();
  }
}

/**
 * llama.cpp's next-token log-probabilities (temperature 1, no truncation) after each position
 * from `from` to the end of `ids`, teacher-forced: row r follows ids[0 .. from + r].
 */
export async function llamaCppLogProbs(
  model: LlamaModel,
  ids: number[],
  from: number,
): Promise<Map<number, number>[]> {
  const context = await model.createContext({
    contextSize: Math.max(64, ids.length + 8),
    sequences: 1,
    threads: 1,
    ...EXACT_CONTEXT,
  });
  try {
    const sequence = context.getSequence();
    const options = { temperature: 1, topK: 0, topP: 1, minP: 0 };
    const input = ids.map((id, i) =>
      i >= from ? [id, { generateNext: { probabilities: true, options } }] : id,
    );
    // biome-ignore lint/suspicious/noExplicitAny: node-llama-cpp brands token ids as Token.
    const outputs = await sequence.controlledEvaluate(input as any);
    const rows: Map<number, number>[] = [];
    for (let i = from; i < ids.length; i++) {
      const probabilities = outputs[i]?.next.probabilities;
      if (!probabilities) throw new Error(`llama.cpp returned no probabilities at position ${i}.`);
      rows.push(new Map([...probabilities].map(([token, p]) => [Number(token), Math.log(p)])));
    }
    return rows;
  } finally {
    await context.dispose();
  }
}
