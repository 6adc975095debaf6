/**
 * `npm run bench`: matmul rate, sampling and training throughput, and training MFU, all from one
 * process on one backend. Prints a table and writes the figures as JSON (default
 * .tmp/bench/latest.json). docs/BENCHMARKS.md explains each figure.
 */
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Command } from 'commander';
import { runCli } from '../src/main/cli/run-cli';
import { writeFileAtomically } from '../src/main/engine/atomic';
import type { BackendInfo } from '../src/main/engine/backend';
import { loadDataset } from '../src/main/engine/datasets';
import { countParameters } from '../src/main/engine/model';
import { UserError } from '../src/shared/errors';
import { type BenchModel, buildBenchExamples, loadBenchModel } from './fixture';
import {
  countedParameters,
  modelFlopUtilization,
  pairedUtilization,
  stepFlopsPerToken,
} from './flops';
import { compareWithLlamaCpp, type LlamaComparison } from './llama-compare';
import { type MatmulResult, measureMatmul, pooledFlopsPerSecond } from './matmul';
import { datasetPrompts, measureSampling, type SamplingResult } from './sampling';
import { formatTable } from './table';
import { measureTraining, type TrainingResult } from './training';

const MATMUL = { warmup: 5, repetitions: 25 };
/** Shape of the MFU denominator, also measured after every training step. */
const PEAK_SHAPE = { m: 512, k: 512, n: 512 };
const INTERLEAVED = { warmup: 1, repetitions: 4 };
const SAMPLING = { temperature: 1, topP: 1, maxNewTokens: 48, seed: 0 };
const LATENCY_PROMPTS = 4;
/** Prompts decoded one at a time by both engines for the llama.cpp comparison. */
const LLAMA_PROMPTS = 8;
const TRAIN_BATCH = 32;

const program = new Command()
  .name('bench')
  .description('Measure matmul GFLOP/s, sampling and training tokens/s, and training MFU.')
  .option('--model <dir>', 'model folder to benchmark', 'resources/starter-model')
  .option('--dataset <id>', 'gender dataset whose prompts and occupations are used', 'us-gender')
  .option('--warmup-steps <n>', 'untimed training steps per stage', '2')
  .option('--steps <n>', 'timed training steps per stage', '8')
  .option('--out <file>', 'JSON file to write', '.tmp/bench/latest.json');

runCli(async (signal, backend) => {
  program.parse();
  const options = program.opts();
  const warmup = positiveInteger(options.warmupSteps, '--warmup-steps');
  const timed = positiveInteger(options.steps, '--steps');
  const log = (line: string) => process.stderr.write(`${line}\n`);

  log('matmul ...');
  const loadAtStart = os.loadavg()[0];
  const matmul = [
    measureMatmul(PEAK_SHAPE, MATMUL.warmup, MATMUL.repetitions),
    measureMatmul({ m: 2048, k: 128, n: 1024 }, MATMUL.warmup, MATMUL.repetitions),
  ];
  const dataset = loadDataset(options.dataset);
  if (dataset.attribute !== 'gender') {
    throw new UserError(
      `--dataset ${dataset.id} is a ${dataset.attribute} dataset; the benchmark builds its training examples from the gender starter corpus, so pick a gender dataset such as us-gender.`,
    );
  }
  const bench = await loadBenchModel(path.resolve(options.model), dataset);
  try {
    log('sampling ...');
    const sampling = await benchSampling(bench, dataset, signal);
    log('studio and llama.cpp on the same GGUF ...');
    const llamaCpp = await compareWithLlamaCpp(
      bench,
      datasetPrompts(bench, dataset, LLAMA_PROMPTS),
      signal,
    );
    log('training ...');
    const examples = buildBenchExamples(bench, dataset, TRAIN_BATCH * (warmup + timed), 0);
    const steps = { warmup, timed, batchSize: TRAIN_BATCH };
    const sft = await interleaved((betweenSteps) =>
      measureTraining('sft', bench, examples, steps, { signal, betweenSteps }),
    );
    const align = await interleaved((betweenSteps) =>
      measureTraining('align', bench, examples, steps, { signal, betweenSteps }),
    );
    const run = await describeRun(backend, bench, [loadAtStart, os.loadavg()[0]]);
    const report = { ...buildReport(run, matmul, sampling, sft, align), llamaCpp };
    printReport(report);
    const out = path.resolve(options.out);
    await writeFileAtomically(out, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`\nresults written to ${out}`);
  } finally {
    bench.model.dispose();
  }
});

function positiveInteger(text: string, flag: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    throw new UserError(`${flag} must be a whole number >= 1, got "${text}".`);
  }
  return value;
}

interface Interleaved<T> {
  result: T;
  /** PEAK_SHAPE matmul measured after each training step, warm-up steps included. */
  matmul: MatmulResult[];
  /** FLOP/s at the median of all those repetitions: the stage's MFU denominator. */
  matmulFlopsPerSecond: number;
}

/**
 * Runs a training stage with a short matmul measurement after every step, so that the MFU
 * denominator is measured under the same load from other processes as the steps are. The
 * stage excludes the measurements from its step times.
 */
async function interleaved(
  work: (betweenSteps: () => void) => Promise<TrainingResult>,
): Promise<Interleaved<TrainingResult>> {
  const matmul: MatmulResult[] = [];
  const result = await work(() => {
    matmul.push(measureMatmul(PEAK_SHAPE, INTERLEAVED.warmup, INTERLEAVED.repetitions));
  });
  return { result, matmul, matmulFlopsPerSecond: pooledFlopsPerSecond(matmul) };
}

async function benchSampling(
  bench: BenchModel,
  dataset: ReturnType<typeof loadDataset>,
  signal: AbortSignal,
): Promise<{ batch100: SamplingResult; batch1: SamplingResult }> {
  const prompts = datasetPrompts(bench, dataset, 100);
  // Warm-up: short runs of both batch sizes, so the timed runs see warm kernels and JIT.
  await measureSampling(bench, prompts, { ...SAMPLING, maxNewTokens: 4, batchSize: 100 }, signal);
  await measureSampling(bench, prompts.slice(0, 1), { ...SAMPLING, maxNewTokens: 4, batchSize: 1 });
  const batch100 = await measureSampling(bench, prompts, { ...SAMPLING, batchSize: 100 }, signal);
  const latencyPrompts = prompts.slice(0, LATENCY_PROMPTS);
  const batch1 = await measureSampling(
    bench,
    latencyPrompts,
    { ...SAMPLING, batchSize: 1 },
    signal,
  );
  return { batch100, batch1 };
}

async function describeRun(
  backend: BackendInfo,
  bench: BenchModel,
  [atStart, atEnd]: [number, number],
) {
  const cpus = os.cpus();
  const wasm =
    backend.name === 'wasm'
      ? {
          simd: await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'),
          threads: (await import('@tensorflow/tfjs-backend-wasm')).getThreadsCount(),
        }
      : null;
  return {
    date: new Date().toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim().replace(/ --$/, ''),
    machine: {
      cpus: cpus.length,
      cpuModel: cpus[0]?.model ?? 'unknown',
      arch: os.arch(),
      platform: `${os.type()} ${os.release()}`,
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      // One-minute load average at start and end; above the CPU count means contention.
      loadAverage: { atStart, atEnd },
    },
    backend: { name: backend.name, skipped: backend.skipped, wasm },
    model: {
      source: bench.source,
      config: bench.model.config,
      totalParameters: countParameters(bench.model.params),
      countedParameters: countedParameters(bench.model.config),
      steering: bench.steering,
    },
  };
}

type RunInfo = Awaited<ReturnType<typeof describeRun>>;

function buildReport(
  run: RunInfo,
  matmul: MatmulResult[],
  sampling: { batch100: SamplingResult; batch1: SamplingResult },
  sft: Interleaved<TrainingResult>,
  align: Interleaved<TrainingResult>,
) {
  const config = run.model.config;
  const mfu = (
    stage: Interleaved<TrainingResult>,
    passes: { forwardBackward: number; forwardOnly: number },
  ) => {
    const { result, matmul } = stage;
    const flops = stepFlopsPerToken(config, passes, result.meanSequenceLength);
    // Timed step i is followed by the matmul measurement at index warmupSteps + i.
    const paired = result.perStep.map((step, i) => ({
      ...step,
      matmulFlopsPerSecond: matmul[result.warmupSteps + i].flopsPerSecond,
    }));
    return {
      passes,
      flopsPerToken: flops,
      weights: pairedUtilization(flops.weights, paired),
      withAttention: pairedUtilization(flops.withAttention, paired),
      /** Stage tokens/s over the pooled matmul median, for comparison with the paired median. */
      pooled: modelFlopUtilization(
        flops.weights,
        result.tokensPerSecond,
        stage.matmulFlopsPerSecond,
      ),
    };
  };
  return {
    ...run,
    matmul,
    sampling,
    training: { sft: sft.result, align: align.result },
    mfu: {
      method: `per timed step: achieved model FLOP/s over the ${PEAK_SHAPE.m}x${PEAK_SHAPE.k} @ ${PEAK_SHAPE.k}x${PEAK_SHAPE.n} matmul FLOP/s measured right after that step; median over steps`,
      interleavedMatmul: { sft: sft.matmul, align: align.matmul },
      sft: mfu(sft, { forwardBackward: 1, forwardOnly: 0 }),
      alignPolicyOnly: mfu(align, { forwardBackward: 1, forwardOnly: 0 }),
      alignWithExtraForwards: mfu(align, { forwardBackward: 1, forwardOnly: 3 }),
    },
  };
}

type Report = ReturnType<typeof buildReport> & { llamaCpp: LlamaComparison };

function printReport(report: Report): void {
  const { machine, backend, model } = report;
  const wasm = backend.wasm
    ? ` (SIMD ${backend.wasm.simd ? 'on' : 'off'}, threads ${backend.wasm.threads})`
    : '';
  console.log(`date: ${report.date}`);
  console.log(
    `machine: ${machine.cpus} CPUs ${machine.arch} ${machine.cpuModel}, ${machine.platform}, Node ${machine.node}`,
  );
  console.log(`backend: ${backend.name}${wasm}`);
  if (model.source.kind === 'folder') {
    console.log(
      `model: ${model.source.dir} (weights sha256 ${model.source.weightsSha256.slice(0, 12)})`,
    );
  } else {
    console.log(
      `model: UNTRAINED starter config from initParams with the starter tokenizer, because ${model.source.reason}`,
    );
  }
  const counted = model.countedParameters;
  console.log(
    `parameters: ${model.totalParameters} total; N = ${counted.total} counted ` +
      `(layer projections ${counted.blockMatmul} + head ${counted.head}); vocab ${model.config.vocabSize}\n`,
  );
  console.log(formatTable(reportRows(report)));
  const gflops = (x: number) => (x / 1e9).toFixed(1);
  const spread = (stage: 'sft' | 'align') => {
    const rates = report.mfu.interleavedMatmul[stage].map((m) => m.flopsPerSecond);
    return `${stage} ${gflops(Math.min(...rates))}-${gflops(Math.max(...rates))}`;
  };
  console.log(
    '\nMFU: median over timed steps of each step against the 512^3 matmul measured right ' +
      `after it; those matmul rates ranged ${spread('sft')}, ${spread('align')} GFLOP/s`,
  );
  const load = machine.loadAverage;
  console.log(
    `load average (1 min): ${load.atStart.toFixed(2)} at start, ${load.atEnd.toFixed(2)} at end`,
  );
}

function reportRows(report: Report): string[][] {
  const rows = [['workload', 'shape', 'time', 'throughput', 'MFU 6N', 'MFU +attn']];
  for (const m of report.matmul) {
    rows.push([
      'tf.matMul',
      `${m.m}x${m.k} @ ${m.k}x${m.n}`,
      `${m.medianMs.toFixed(2)} ms median`,
      `${(m.flopsPerSecond / 1e9).toFixed(1)} GFLOP/s`,
      '',
      '',
    ]);
  }
  for (const s of [report.sampling.batch100, report.sampling.batch1]) {
    rows.push([
      `generate batch ${s.batchSize}`,
      `${s.prompts} prompts, ${s.maxNewTokens} new`,
      `${s.msPerBatch.toFixed(0)} ms/batch, ${s.msPerDecodeStep.toFixed(1)} ms/step`,
      `${s.tokensPerSecond.toFixed(0)} tok/s (${s.generatedTokens} tok)`,
      '',
      '',
    ]);
  }
  const compare = report.llamaCpp;
  for (const r of [compare.studio, ...compare.llamaCpp]) {
    const ratio = compare.ratios.find((x) => x.threads === r.threads && r.engine !== 'studio');
    rows.push([
      `${r.engine} GGUF greedy`,
      `${compare.prompts} prompts, ${compare.newTokensPerPrompt} new, batch 1, ${r.threads} thread${r.threads > 1 ? 's' : ''}`,
      `${((1000 * r.wallSeconds) / r.tokens).toFixed(2)} ms/token`,
      `${r.tokensPerSecond.toFixed(0)} tok/s${ratio ? ` (${ratio.llamaCppOverStudio.toFixed(2)}x studio)` : ''}`,
      '',
      '',
    ]);
  }
  const { sft, align } = report.training;
  const { mfu } = report;
  const percent = (x: number) => `${(100 * x).toFixed(1)} %`;
  const trainRow = (label: string, t: TrainingResult, u: typeof mfu.sft) => [
    label,
    `batch ${t.batchSize}, ${t.timedSteps} steps, T~${t.meanSequenceLength.toFixed(0)}`,
    `${t.medianStepMs.toFixed(0)} ms/step median`,
    `${t.tokensPerSecond.toFixed(0)} tok/s`,
    percent(u.weights.median),
    percent(u.withAttention.median),
  ];
  rows.push(trainRow('train sft', sft, mfu.sft));
  rows.push(trainRow('train align, policy only', align, mfu.alignPolicyOnly));
  rows.push(trainRow('train align, +3 forwards', align, mfu.alignWithExtraForwards));
  return rows;
}
