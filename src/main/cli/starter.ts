/**
 * `npm run starter`: generates the starter corpus, trains the tokenizer and the model from a
 * seed, measures the result on us-gender, and writes the model folder with its MODEL_CARD.md.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { saveModelFolder } from '../engine/checkpoint';
import { loadDataset } from '../engine/datasets';
import { measureDataset } from '../engine/measure';
import { summarizeMeasurement } from '../engine/metrics';
import { countParameters } from '../engine/model';
import { writeModelCard } from '../engine/model-card';
import { DEFAULT_SAMPLING } from '../engine/sampler';
import { STARTER_DEFAULTS, type StarterConfig, trainStarterModel } from '../engine/starter';
import { createBar, formatStep } from './progress';
import { runCli } from './run-cli';

const program = new Command()
  .name('starter')
  .description('Train the starter model from its generated corpus and write it to a model folder.')
  .option('--out <dir>', 'model folder to write', 'resources/starter-model')
  .option(
    '--seed <n>',
    'seed of the corpus, the initial weights and the batch order',
    String(STARTER_DEFAULTS.seed),
  )
  .option(
    '--examples <n>',
    'generated answers per occupation',
    String(STARTER_DEFAULTS.examplesPerOccupation),
  )
  .option('--epochs <n>', 'passes over the corpus', String(STARTER_DEFAULTS.training.epochs))
  .option(
    '--gamma <x>',
    'logit scale of the real female share in the corpus',
    String(STARTER_DEFAULTS.gamma),
  );

runCli(async (signal, backend) => {
  program.parse();
  const options = program.opts();
  const seed = Number(options.seed);
  const config: StarterConfig = {
    ...STARTER_DEFAULTS,
    seed,
    examplesPerOccupation: Number(options.examples),
    gamma: Number(options.gamma),
    training: { ...STARTER_DEFAULTS.training, epochs: Number(options.epochs), seed },
  };
  const started = performance.now();
  const progress: { bar: ReturnType<typeof createBar> | null } = { bar: null };
  const { model, tokenizer, corpus } = await trainStarterModel(config, {
    signal,
    onStep: (event) => {
      progress.bar ??= createBar('training starter', event.totalSteps);
      progress.bar.update(event.step, formatStep(event));
    },
  });
  progress.bar?.stop();
  const trainingSeconds = (performance.now() - started) / 1000;
  const outDir = path.resolve(options.out);
  const dataset = loadDataset('us-gender');
  const sampling = { ...DEFAULT_SAMPLING, seed: 7, batchSize: 100 };
  const rounds = 100;
  const measureBar = createBar('measuring', dataset.occupations.length * rounds);
  const samples = await measureDataset(model, tokenizer, dataset, {
    rounds,
    sampling,
    signal,
    onProgress: (done) => measureBar.update(done),
  });
  measureBar.stop();
  const real = summarizeMeasurement(dataset, samples, { seed: 7 });
  const uniform = summarizeMeasurement(loadDataset('us-gender', { target: 'uniform' }), samples, {
    seed: 7,
  });
  await saveModelFolder(outDir, model, tokenizer, {
    description: 'Attune starter model: a teaching model, not a model to audit.',
    training: { starter: config, corpusExamples: corpus.length },
  });
  await fs.writeFile(
    path.join(outDir, 'MODEL_CARD.md'),
    writeModelCard({
      config,
      parameterCount: countParameters(model.params),
      vocabSize: tokenizer.vocabSize,
      corpusExamples: corpus.length,
      trainingSeconds,
      backend: backend.name,
      realMae: real.mae ?? Number.NaN,
      uniformMae: uniform.mae ?? Number.NaN,
      unknownShare: real.unknownShare ?? Number.NaN,
      sampleTexts: samples
        .filter((_, i) => i % 100 === 0)
        .slice(0, 6)
        .map((s) => `${s.prompt}${s.text}`),
    }),
  );
  console.log(`starter model written to ${outDir}`);
  console.log(
    `us-gender MAE (real target): ${real.mae?.toFixed(4)}; uniform target: ${uniform.mae?.toFixed(4)}; unknown ${(100 * (real.unknownShare ?? 0)).toFixed(1)}%`,
  );
});
