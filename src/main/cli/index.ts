/**
 * `npm run attune -- <command>`: the engine from a terminal.
 *
 *   run       measure, train (SFT, then KL + KTO), measure again, write the report
 *   measure   measure a model and write the report, without training
 *   datasets  list the datasets
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { UserError } from '../../shared/errors';
import { listDatasets } from '../engine/datasets';
import { type ExportTarget, exportModel } from '../engine/export';
import { GGUF_EXPORT_TYPES, type GgufExportType } from '../engine/gguf/gguf-model';
import { STAGE_TWO_MODES } from '../engine/losses';
import { PROMPT_FORMATS, STEERING_DRAWS } from '../engine/measure';
import {
  MAX_ROUNDS,
  RUN_DEFAULTS,
  type RunEvent,
  type RunOptions,
  runPipeline,
} from '../engine/pipeline';
import { createBar, formatStep } from './progress';
import { runCli } from './run-cli';

/** The committed starter model, found from this file so that any working folder works. */
const DEFAULT_MODEL = fileURLToPath(new URL('../../../resources/starter-model', import.meta.url));

/**
 * Resolves a path the user typed against the folder they ran the command in: `npm run` starts
 * scripts in the package root and keeps the caller's folder in INIT_CWD.
 */
function userPath(value: unknown): string {
  return path.resolve(process.env.INIT_CWD ?? process.cwd(), String(value));
}

function integer(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`;
      throw new InvalidArgumentError(`${name} must be an integer ${range}, got "${value}".`);
    }
    return n;
  };
}

function decimal(name: string, min: number, max = Number.POSITIVE_INFINITY) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(
        `${name} must be a number in [${min}, ${max}], got "${value}".`,
      );
    }
    return n;
  };
}

function addRunOptions(command: Command, training: boolean): Command {
  const d = RUN_DEFAULTS;
  command
    .option(
      '--model <path>',
      'model folder (config.json, model.safetensors or shards, tokenizer.json) or a .gguf file',
      DEFAULT_MODEL,
    )
    .option('--dataset <id>', 'dataset id; `attune datasets` lists them', 'us-gender')
    .option(
      '--target <target>',
      'target distribution: real, uniform, or a CSV file of shares or counts',
    )
    .option(
      '--rounds <n>',
      'responses sampled per occupation',
      integer('--rounds', 1, MAX_ROUNDS),
      d.rounds,
    )
    .option(
      '--seed <n>',
      training
        ? 'seed of sampling, example order and training; sampling after training uses seed + 1'
        : 'seed of sampling',
      integer('--seed', 0),
      d.seed,
    )
    .option(
      '--out <dir>',
      training
        ? 'run folder for the report, checkpoints and model (default runs/<dataset>-<time>)'
        : 'folder for the report (default runs/<dataset>-<time>)',
    )
    .option(
      '--temperature <t>',
      'sampling temperature of the text, 0 for greedy',
      decimal('--temperature', 0),
      d.sampling.temperature,
    )
    .option(
      '--top-p <p>',
      'nucleus sampling mass, in (0, 1]',
      decimal('--top-p', 0, 1),
      d.sampling.topP,
    )
    .option(
      '--max-new-tokens <n>',
      'tokens generated per response',
      integer('--max-new-tokens', 1),
      d.sampling.maxNewTokens,
    )
    .option(
      '--sample-batch <n>',
      'sequences decoded together',
      integer('--sample-batch', 1),
      d.sampling.batchSize,
    )
    .addOption(
      new Option(
        '--steering-draws <how>',
        'how each round draws the steering token from the softmax: stratified per occupation, or independent as in the reference study',
      )
        .choices([...STEERING_DRAWS])
        .default(d.steeringDraws),
    )
    .addOption(
      new Option(
        '--prompt-format <format>',
        "how questions become prompts: qa ('Q: ...\\nA:'), chat (the model's chat template), or auto (chat when the model has a template)",
      )
        .choices([...PROMPT_FORMATS])
        .default(d.promptFormat),
    )
    .option('--json', 'print one JSON event per line instead of progress bars');
  if (!training) return command;
  return command
    .addOption(
      new Option(
        '--steering <mode>',
        'steering tokens: special tokens per category, or the digits 0..K-1',
      )
        .choices(['special', 'digits'])
        .default(d.steeringMode),
    )
    .addOption(
      new Option('--mode <mode>', 'stage-2 objective or one of its ablations')
        .choices([...STAGE_TWO_MODES])
        .default(d.loss.mode),
    )
    .option(
      '--sft-epochs <n>',
      'stage-1 passes over the desirable examples',
      integer('--sft-epochs', 1),
      d.sft.epochs,
    )
    .option(
      '--align-epochs <n>',
      'stage-2 passes over all examples',
      integer('--align-epochs', 1),
      d.align.epochs,
    )
    .option(
      '--sft-lr <x>',
      'stage-1 peak learning rate',
      decimal('--sft-lr', 1e-8, 1),
      d.sft.learningRate,
    )
    .option(
      '--align-lr <x>',
      'stage-2 peak learning rate',
      decimal('--align-lr', 1e-8, 1),
      d.align.learningRate,
    )
    .option(
      '--train-batch <n>',
      'examples per training step (stage 2 needs >= 2)',
      integer('--train-batch', 2),
      d.align.batchSize,
    )
    .option(
      '--kl-weight <x>',
      'weight of the KL term beside the KTO term',
      decimal('--kl-weight', 0),
      d.loss.klWeight,
    )
    .option('--beta <x>', 'KTO beta', decimal('--beta', 1e-6), d.loss.beta)
    .option(
      '--checkpoint-every <n>',
      'training steps between checkpoints (0: end of stage only)',
      integer('--checkpoint-every', 0),
      d.align.checkpointEvery,
    )
    .option('--resume', 'continue the run in --out from its newest checkpoint')
    .option('--export-gguf <file>', 'also write the trained model to this .gguf file for llama.cpp')
    .addOption(
      new Option(
        '--export-type <type>',
        'weight type of --export-gguf matrices (default: f16)',
      ).choices([...GGUF_EXPORT_TYPES]),
    );
}

type CliOptions = Record<string, string | number | boolean | undefined>;

/** `real` and `uniform` pass through; anything else is a CSV path the user typed. */
function targetOption(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  const text = String(value);
  return text === 'real' || text === 'uniform' ? text : userPath(text);
}

function toRunOptions(o: CliOptions, measureOnly: boolean): RunOptions {
  const d = RUN_DEFAULTS;
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  const num = (key: string, fallback: number) => (o[key] === undefined ? fallback : Number(o[key]));
  const batchSize = num('trainBatch', d.align.batchSize);
  const checkpointEvery = num('checkpointEvery', d.align.checkpointEvery);
  return {
    modelDir: userPath(o.model),
    datasetId: String(o.dataset),
    target: targetOption(o.target),
    rounds: Number(o.rounds),
    seed: Number(o.seed),
    outDir: userPath(o.out ? o.out : path.join('runs', `${o.dataset}-${stamp}`)),
    steeringMode: (o.steering as RunOptions['steeringMode']) ?? d.steeringMode,
    sampling: {
      temperature: Number(o.temperature),
      topP: Number(o.topP),
      maxNewTokens: Number(o.maxNewTokens),
      batchSize: Number(o.sampleBatch),
    },
    steeringDraws: (o.steeringDraws as RunOptions['steeringDraws']) ?? d.steeringDraws,
    promptFormat: (o.promptFormat as RunOptions['promptFormat']) ?? d.promptFormat,
    sft: {
      ...d.sft,
      epochs: num('sftEpochs', d.sft.epochs),
      learningRate: num('sftLr', d.sft.learningRate),
      batchSize,
      checkpointEvery,
    },
    align: {
      ...d.align,
      epochs: num('alignEpochs', d.align.epochs),
      learningRate: num('alignLr', d.align.learningRate),
      batchSize,
      checkpointEvery,
    },
    loss: {
      ...d.loss,
      mode: (o.mode as RunOptions['loss']['mode']) ?? d.loss.mode,
      klWeight: num('klWeight', d.loss.klWeight),
      beta: num('beta', d.loss.beta),
    },
    resume: Boolean(o.resume),
    exportGguf: exportOption(o),
    measureOnly,
    commandLine: process.argv.slice(2),
  };
}

function exportOption(o: CliOptions): RunOptions['exportGguf'] {
  if (o.exportType !== undefined && o.exportGguf === undefined) {
    throw new UserError('--export-type needs --export-gguf <file.gguf>, the file to write.');
  }
  return o.exportGguf
    ? {
        file: userPath(o.exportGguf),
        type: (o.exportType as GgufExportType | undefined) ?? 'f16',
      }
    : undefined;
}

/** Progress bars per phase, built from the same events the desktop app receives. */
function createProgressPrinter(
  json: boolean,
  mode: string,
): {
  print: (event: RunEvent) => void;
  close: () => void;
} {
  if (json)
    return {
      print: (event) => process.stdout.write(`${JSON.stringify(event)}\n`),
      close: () => {},
    };
  let bar: ReturnType<typeof createBar> | null = null;
  let barKey = '';
  const ensureBar = (key: string, label: string, total: number) => {
    if (barKey === key && bar) return bar;
    bar?.stop();
    barKey = key;
    bar = createBar(label, total);
    return bar;
  };
  const print = (event: RunEvent) => {
    if (event.type === 'phase') {
      bar?.stop();
      bar = null;
      barKey = '';
      process.stdout.write(`${event.message}\n`);
    } else if (event.type === 'model') {
      bar?.stop();
      bar = null;
      barKey = '';
      const mib = (event.weightBytes / 2 ** 20).toFixed(1);
      process.stdout.write(
        `loaded ${event.architecture} model: ${event.parameters.toLocaleString('en-US')} parameters, ${mib} MiB of float32 weights in memory\n`,
      );
    } else if (event.type === 'load/progress') {
      // One bar for the bytes read; the per-tensor conversion events interleave with them.
      if (event.stage === 'read')
        ensureBar('load', 'reading weights', event.total).update(event.done);
    } else if (event.type === 'sample/progress') {
      ensureBar(`sample-${event.phase}`, `sampling ${event.phase}`, event.total).update(event.done);
    } else {
      const label = event.stage === 'sft' ? 'stage 1 (SFT)' : `stage 2 (${mode})`;
      ensureBar(`train-${event.stage}`, label, event.totalSteps).update(
        event.step,
        formatStep(event),
      );
    }
  };
  return { print, close: () => bar?.stop() };
}

function describe(
  summary:
    | { mae: number | null; unknownShare: number | null; agreement: number | null }
    | undefined,
): string {
  if (!summary) return 'not measured';
  const pct = (x: number | null) => (x === null ? 'n/a' : `${(100 * x).toFixed(1)}%`);
  return `MAE ${summary.mae?.toFixed(4) ?? 'n/a'}, unknown ${pct(summary.unknownShare)}, steering/text agreement ${pct(summary.agreement)}`;
}

async function execute(options: RunOptions, json: boolean, signal: AbortSignal): Promise<number> {
  const printer = createProgressPrinter(json, options.loss.mode);
  const result = await runPipeline(options, { onEvent: printer.print, signal })
    .catch((error: unknown) => {
      // A failed or cancelled run still wrote a report marked as such, so print its path.
      const file = path.join(options.outDir, 'report.html');
      if (existsSync(file)) process.stderr.write(`\nreport (incomplete): ${file}\n`);
      throw error;
    })
    .finally(printer.close);
  const { report } = result;
  if (json) {
    const summary = {
      type: 'result',
      status: report.status,
      before: report.before?.mae ?? null,
      after: report.after?.mae ?? null,
      warnings: report.warnings ?? [],
      report: result.jsonPath,
      html: result.htmlPath,
      model: result.modelDir,
    };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return 0;
  }
  const label = options.measureOnly ? 'measured' : 'before';
  process.stdout.write(`\n${label}: ${describe(report.before)}\n`);
  if (!options.measureOnly) process.stdout.write(`after:  ${describe(report.after)}\n`);
  for (const warning of report.warnings ?? []) process.stdout.write(`warning: ${warning}\n`);
  process.stdout.write(`report: ${result.htmlPath}\n        ${result.jsonPath}\n`);
  if (result.modelDir) process.stdout.write(`model:  ${result.modelDir}\n`);
  return 0;
}

async function runExport(o: CliOptions): Promise<number> {
  if (Boolean(o.gguf) === Boolean(o.hf)) {
    throw new UserError('Pass exactly one of --gguf <file> or --hf <dir>.');
  }
  const target: ExportTarget = o.gguf
    ? { kind: 'gguf', file: userPath(o.gguf), type: o.type as GgufExportType }
    : { kind: 'hf', dir: userPath(o.hf) };
  let bar: ReturnType<typeof createBar> | null = null;
  await exportModel(userPath(o.model), target, {
    onProgress: (p) => {
      if (p.stage !== 'read') return;
      bar ??= createBar('reading weights', p.total);
      bar.update(p.done);
    },
  }).finally(() => bar?.stop());
  process.stdout.write(`wrote ${target.kind === 'gguf' ? target.file : target.dir}\n`);
  return 0;
}

runCli(async (signal) => {
  const program = new Command()
    .name('attune')
    .description(
      'Attune Studio from a terminal: measure and fix distributional bias in language models.',
    )
    .showHelpAfterError('(run with --help for the options)');
  let exitCode = 0;
  addRunOptions(
    program
      .command('run')
      .description(
        'measure the model, train it (SFT, then KL + KTO), measure again and write the report',
      ),
    true,
  ).action(async (o: CliOptions) => {
    exitCode = await execute(toRunOptions(o, false), Boolean(o.json), signal);
  });
  addRunOptions(
    program
      .command('measure')
      .description('measure the model and write the report, without training'),
    false,
  ).action(async (o: CliOptions) => {
    exitCode = await execute(toRunOptions(o, true), Boolean(o.json), signal);
  });
  program
    .command('export')
    .description(
      'write a model to a GGUF file (llama.cpp, Ollama, LM Studio) or a Hugging Face folder',
    )
    .option('--model <path>', 'model folder or .gguf file to export', DEFAULT_MODEL)
    .option('--gguf <file>', 'write a .gguf file')
    .addOption(
      new Option('--type <type>', 'weight type of the GGUF matrices')
        .choices([...GGUF_EXPORT_TYPES])
        .default('f16'),
    )
    .option(
      '--hf <dir>',
      'write a Hugging Face folder (config.json, model.safetensors, tokenizer files)',
    )
    .action(async (o: CliOptions) => {
      exitCode = await runExport(o);
    });
  program
    .command('datasets')
    .description('list the datasets')
    .action(() => {
      for (const { id, title } of listDatasets())
        process.stdout.write(`${id.padEnd(14)} ${title}\n`);
    });
  program.exitOverride();
  try {
    await program.parseAsync(process.argv);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (
      code === 'commander.helpDisplayed' ||
      code === 'commander.version' ||
      code === 'commander.help'
    )
      return 0;
    if (code?.startsWith('commander.')) return 1;
    throw error;
  }
  return exitCode;
});
