/**
 * `npm run bench`: matmul rate, sampling and training throughput, and training MFU, all from one
 * process on one backend. Prints a table and writes the figures as JSON (default
 * .tmp/bench/latest.json). docs/BENCHMARKS.md explains each figure.
 */
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Command } from 'commander';
import type { BackendInfo } from '../src/main/engine/backend';
import { writeFileAtomically } from '../src/main/engine/atomic';
import { loadDataset } from '../src/main/engine/datasets';
import { countParameters } from '../src/main/engine/model';
import { UserError } from '../src/shared/errors';
import { runCli } from '../src/main/cli/run-cli';
import { buildBenchExamples, type BenchModel, loadBenchModel } from './fixture';
import { countedParameters, modelFlopUtilization, stepFlopsPerToken } from './flops';
import { type MatmulResult, measureMatmul } from './matmul';
import { formatTable } from './table';
import { datasetPrompts, measureSampling, type SamplingResult } from './sampling';
import { measureTraining, type TrainingResult } from './training';

const MATMUL = { warmup: 5, repetitions: 25 };
const SAMPLING = { temperature: 1, topP: 1, maxNewTokens: 48, seed: 0 };
const LATENCY_PROMPTS = 4;
const TRAIN_BATCH = 32;

const program = new Command()
  .name('bench')
  .description('Measure matmul GFLOP/s, sampling and training tokens/s, and training MFU.')
  .option('--model <dir>', 'model folder to benchmark', 'resources/starter-model')
  .option('--dataset <id>', 'gender dataset whose prompts and occupations are used', 'us-gender')
  .option('--warmup-steps <n>', 'untimed training steps per stage', '2')
  .option('--steps <n>', 'timed training steps per stage', '6')
  .option('--out <file>', 'JSON file to write', '.tmp/bench/latest.json');

runCli(async (signal, backend) => {
  program.parse();
  const options = program.opts();
  const warmup = positiveInteger(options.warmupSteps, '--warmup-steps');
  const timed = positiveInteger(options.steps, '--steps');
  const log = (line: string) => process.stderr.write(`${line}\n`);

  log('matmul ...');
  const matmul = [
    measureMatmul({ m: 512, k: 512, n: 512 }, MATMUL.warmup, MATMUL.repetitions),
    measureMatmul({ m: 2048, k: 128, n: 1024 }, MATMUL.warmup, MATMUL.repetitions),
  ];
  const dataset = loadDataset(options.dataset);
  const bench = await loadBenchModel(path.resolve(options.model), dataset);
  try {
    log('sampling ...');
    const sampling = await benchSampling(bench, dataset, signal);
    log('training ...');
    const examples = buildBenchExamples(bench, dataset, TRAIN_BATCH * (warmup + timed), 0);
    const steps = { warmup, timed, batchSize: TRAIN_BATCH };
    const sft = await measureTraining('sft', bench, examples, steps, signal);
    const align = await measureTraining('align', bench, examples, steps, signal);
    const report = buildReport(await describeRun(backend, bench), matmul, sampling, sft, align);
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
  const batch1 = await measureSampling(bench, latencyPrompts, { ...SAMPLING, batchSize: 1 }, signal);
  return { batch100, batch1 };
}

async function describeRun(backend: BackendInfo, bench: BenchModel) {
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
  sft: TrainingResult,
  align: TrainingResult,
) {
  const config = run.model.config;
  const peak = matmul[0].flopsPerSecond;
  const mfu = (result: TrainingResult, passes: { forwardBackward: number; forwardOnly: number }) => {
    const flops = stepFlopsPerToken(config, passes, result.meanSequenceLength);
    return {
      flopsPerToken: flops,
      weights: modelFlopUtilization(flops.weights, result.tokensPerSecond, peak),
      withAttention: modelFlopUtilization(flops.withAttention, result.tokensPerSecond, peak),
    };
  };
  return {
    ...run,
    matmul,
    sampling,
    training: { sft, align },
    mfu: {
      denominator: `matmul ${matmul[0].m}x${matmul[0].k} @ ${matmul[0].k}x${matmul[0].n}`,
      matmulFlopsPerSecond: peak,
      sft: mfu(sft, { forwardBackward: 1, forwardOnly: 0 }),
      alignPolicyOnly: mfu(align, { forwardBackward: 1, forwardOnly: 0 }),
      alignWithExtraForwards: mfu(align, { forwardBackward: 1, forwardOnly: 3 }),
    },
  };
}

type Report = ReturnType<typeof buildReport>;

function printReport(report: Report): void {
  const { machine, backend, model } = report;
  const wasm = backend.wasm ? ` (SIMD ${backend.wasm.simd ? 'on' : 'off'}, ${backend.wasm.threads} thread)` : '';
  console.log(`date: ${report.date}`);
  console.log(`machine: ${machine.cpus} CPUs ${machine.arch} ${machine.cpuModel}, ${machine.platform}, Node ${machine.node}`);
  console.log(`backend: ${backend.name}${wasm}`);
  if (model.source.kind === 'folder') {
    console.log(`model: ${model.source.dir} (weights sha256 ${model.source.weightsSha256.slice(0, 12)})`);
  } else {
    console.log(`model: UNTRAINED starter config from initParams with the starter tokenizer, because ${model.source.reason}`);
  }
  const counted = model.countedParameters;
  console.log(
    `parameters: ${model.totalParameters} total; N = ${counted.total} counted ` +
      `(layer projections ${counted.blockMatmul} + head ${counted.head}); vocab ${model.config.vocabSize}\n`,
  );
  console.log(formatTable(reportRows(report)));
}

function reportRows(report: Report): string[][] {
  const rows = [['workload', 'shape', 'median', 'throughput', 'MFU 6N', 'MFU +attn']];
  for (const m of report.matmul) {
    rows.push([
      'tf.matMul',
      `${m.m}x${m.k} @ ${m.k}x${m.n}`,
      `${m.medianMs.toFixed(2)} ms`,
      `${(m.flopsPerSecond / 1e9).toFixed(1)} GFLOP/s`,
      '',
      '',
    ]);
  }
  for (const s of [report.sampling.batch100, report.sampling.batch1]) {
    rows.push([
      `generate batch ${s.batchSize}`,
      `${s.prompts} prompts, ${s.maxNewTokens} new`,
      `${s.msPerBatch.toFixed(0)} ms/batch`,
      `${s.tokensPerSecond.toFixed(0)} tok/s (${s.generatedTokens} tok)`,
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
    `${t.medianStepMs.toFixed(0)} ms/step`,
    `${t.tokensPerSecond.toFixed(0)} tok/s`,
    percent(u.weights),
    percent(u.withAttention),
  ];
  rows.push(trainRow('train sft', sft, mfu.sft));
  rows.push(trainRow('train align, policy only', align, mfu.alignPolicyOnly));
  rows.push(trainRow('train align, +3 forwards', align, mfu.alignWithExtraForwards));
  return rows;
}
