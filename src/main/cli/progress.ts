import cliProgress from 'cli-progress';

/** Starts a terminal progress bar with a label and free-form metrics after the counts. */
export function createBar(label: string, total: number) {
  const bar = new cliProgress.SingleBar(
    {
      format: `${label.padEnd(18)} {bar} {value}/{total} | {eta_formatted} left | {metrics}`,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 20,
      noTTYOutput: true,
      notTTYSchedule: 10000,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { metrics: '' });
  return {
    update(value: number, metrics = '') {
      bar.update(value, { metrics });
    },
    stop() {
      bar.stop();
    },
  };
}

export function formatStep(event: {
  loss: number;
  klLoss: number | null;
  ktoLoss: number | null;
  z0: number | null;
  learningRate: number;
  tokensPerSec: number;
}): string {
  const parts = [`loss ${event.loss.toFixed(4)}`];
  if (event.klLoss !== null) parts.push(`kl ${event.klLoss.toFixed(4)}`);
  if (event.ktoLoss !== null) parts.push(`kto ${event.ktoLoss.toFixed(4)}`);
  if (event.z0 !== null) parts.push(`z0 ${event.z0.toFixed(3)}`);
  parts.push(
    `lr ${event.learningRate.toExponential(2)}`,
    `${Math.round(event.tokensPerSec)} tok/s`,
  );
  return parts.join(' | ');
}
