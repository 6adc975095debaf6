/**
 * Sampling throughput of the studio and of llama.cpp (node-llama-cpp's prebuilt CPU build) on
 * the same GGUF file: the bench model exported by the studio, read back by both. Both decode
 * greedily for a fixed number of tokens per prompt, past end-of-sequence, one sequence at a time,
 * so both do the same work. llama.cpp runs once on one thread and once on every core.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getLlama, LlamaLogLevel, type Token } from 'node-llama-cpp';
import { loadGgufModel, saveGgufModel } from '../src/main/engine/gguf/gguf-model';
import { generate } from '../src/main/engine/sampler';
import type { BenchModel } from './fixture';

export interface EngineRate {
  engine: string;
  threads: number;
  tokens: number;
  wallSeconds: number;
  tokensPerSecond: number;
}

export interface LlamaComparison {
  ggufType: 'f32';
  ggufBytes: number;
  prompts: number;
  newTokensPerPrompt: number;
  studio: EngineRate;
  llamaCpp: EngineRate[];
  /** llama.cpp tokens/s over the studio's, per llama.cpp thread count. */
  ratios: { threads: number; llamaCppOverStudio: number }[];
}

const NEW_TOKENS = 64;

/** Exports `bench` to GGUF, then times greedy decoding of `prompts` in both engines. */
export async function compareWithLlamaCpp(
  bench: BenchModel,
  prompts: number[][],
  signal?: AbortSignal,
): Promise<LlamaComparison> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'attune-bench-'));
  const file = path.join(dir, 'bench.gguf');
  try {
    await saveGgufModel(
      file,
      bench.model,
      bench.tokenizer,
      { steering: bench.steering },
      {
        type: 'f32',
      },
    );
    const studio = await timeStudio(file, prompts, signal);
    const llamaCpp = [await timeLlamaCpp(file, prompts, 1)];
    const cores = os.cpus().length;
    if (cores > 1) llamaCpp.push(await timeLlamaCpp(file, prompts, cores));
    return {
      ggufType: 'f32',
      ggufBytes: (await fs.stat(file)).size,
      prompts: prompts.length,
      newTokensPerPrompt: NEW_TOKENS,
      studio,
      llamaCpp,
      ratios: llamaCpp.map((r) => ({
        threads: r.threads,
        llamaCppOverStudio: r.tokensPerSecond / studio.tokensPerSecond,
      })),
    };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function timeStudio(
  file: string,
  prompts: number[][],
  signal?: AbortSignal,
): Promise<EngineRate> {
  const loaded = await loadGgufModel(file);
  try {
    const options = { temperature: 0, topP: 1, maxNewTokens: NEW_TOKENS, seed: 0, batchSize: 1 };
    const context = { eosId: -1, padId: 0, signal };
    await generate(loaded.model, prompts.slice(0, 1), { ...options, maxNewTokens: 4 }, context);
    const started = performance.now();
    const results = await generate(loaded.model, prompts, options, context);
    const wallSeconds = (performance.now() - started) / 1000;
    const tokens = results.reduce((sum, r) => sum + r.tokens.length, 0);
    return {
      engine: 'studio',
      threads: 1,
      tokens,
      wallSeconds,
      tokensPerSecond: tokens / wallSeconds,
    };
  } finally {
    loaded.model.dispose();
  }
}

async function timeLlamaCpp(
  file: string,
  prompts: number[][],
  threads: number,
): Promise<EngineRate> {
  const llama = await getLlama({
    gpu: false,
    build: 'never',
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
  });
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  try {
    const decode = async (prompt: number[], count: number) => {
      const context = await model.createContext({
        contextSize: prompt.length + count + 8,
        sequences: 1,
        threads,
      });
      try {
        let n = 0;
        const sequence = context.getSequence();
        for await (const _ of sequence.evaluate(prompt as Token[], {
          temperature: 0,
          yieldEogToken: true,
        })) {
          n += 1;
          if (n >= count) break;
        }
        return n;
      } finally {
        await context.dispose();
      }
    };
    await decode(prompts[0], 4);
    // Context creation is timed too, as the studio's timing includes building its KV cache.
    const started = performance.now();
    let tokens = 0;
    for (const prompt of prompts) tokens += await decode(prompt, NEW_TOKENS);
    const wallSeconds = (performance.now() - started) / 1000;
    return {
      engine: 'llama.cpp',
      threads,
      tokens,
      wallSeconds,
      tokensPerSecond: tokens / wallSeconds,
    };
  } finally {
    await model.dispose();
  }
}
