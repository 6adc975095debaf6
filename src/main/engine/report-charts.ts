/**
 * Report charts as inline SVG, rendered headless with Vega-Lite and Vega (no browser, no
 * canvas). The views get a loader that rejects every request, so a chart can never reach the
 * network or the file system; all data is inline.
 */

import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { MeasurementSummary, RunReport, TrainingHistoryRow } from '../../shared/report-types';

const SERIES = ['target', 'before', 'after'] as const;
const SERIES_COLORS = ['#222222', '#d62728', '#1f77b4'];
const SERIES_SHAPES = ['diamond', 'circle', 'square'];

interface ShareRow {
  occupation: string;
  category: string;
  series: (typeof SERIES)[number];
  share: number;
  low: number;
  high: number;
}

/**
 * Renders the per-occupation dot plot of target, before and after shares, with 95% Wilson
 * intervals. With two categories it shows the second one (e.g. "female"), because the first
 * is its complement. With more, it draws one panel per category. Returns null when no
 * occupation has a measured distribution.
 */
export async function renderShareChart(report: RunReport): Promise<string | null> {
  const rows = shareRows(report);
  if (!rows.some((row) => row.series !== 'target')) return null;
  const categories = report.dataset.categories;
  const shown = categories.length === 2 ? [categories[1]] : categories;
  const occupations = (report.before ?? report.after)?.occupations.map((o) => o.occupation) ?? [];
  const series = SERIES.filter((name) => rows.some((row) => row.series === name));
  const panel =
    shown.length === 1
      ? sharePanel(occupations, series, `share "${shown[0]}"`, 320)
      : sharePanel(occupations, series, 'share', 140);
  const spec: TopLevelSpec =
    shown.length === 1
      ? { data: { values: rows.filter((row) => row.category === shown[0]) }, ...panel }
      : {
          data: { values: rows },
          facet: { field: 'category', type: 'nominal', sort: shown, title: null },
          columns: 3,
          spec: panel,
        };
  return renderSvg(spec);
}

function sharePanel(
  occupations: string[],
  series: (typeof SERIES)[number][],
  xTitle: string,
  width: number,
) {
  const domain = [...series];
  const colors = series.map((name) => SERIES_COLORS[SERIES.indexOf(name)]);
  const shapes = series.map((name) => SERIES_SHAPES[SERIES.indexOf(name)]);
  return {
    width,
    // The step is the height of one series within an occupation's band.
    height: { step: 7 },
    encoding: {
      y: {
        field: 'occupation',
        type: 'nominal' as const,
        sort: occupations,
        scale: { type: 'band' as const },
        title: null,
        // Without a canvas, Vega estimates label widths generously, so no label needs truncating.
        axis: { labelLimit: 1000 },
      },
      yOffset: { field: 'series', sort: domain },
      color: {
        field: 'series',
        type: 'nominal' as const,
        scale: { domain, range: colors },
        title: null,
      },
    },
    layer: [
      {
        mark: { type: 'rule' as const },
        encoding: {
          x: {
            field: 'low',
            type: 'quantitative' as const,
            scale: { domain: [0, 1] },
            title: xTitle,
          },
          x2: { field: 'high' },
        },
      },
      {
        mark: { type: 'point' as const, filled: true, size: 50 },
        encoding: {
          x: { field: 'share', type: 'quantitative' as const },
          shape: {
            field: 'series',
            type: 'nominal' as const,
            scale: { domain, range: shapes },
          },
        },
      },
    ],
  };
}

function shareRows(report: RunReport): ShareRow[] {
  const rows: ShareRow[] = [];
  const reference = report.before ?? report.after;
  if (!reference) return rows;
  const categories = report.dataset.categories;
  for (const occupation of reference.occupations) {
    occupation.target.forEach((share, c) => {
      rows.push({
        occupation: occupation.occupation,
        category: categories[c],
        series: 'target',
        share,
        low: share,
        high: share,
      });
    });
  }
  addMeasuredRows(rows, 'before', report.before, categories);
  addMeasuredRows(rows, 'after', report.after, categories);
  return rows;
}

function addMeasuredRows(
  rows: ShareRow[],
  series: 'before' | 'after',
  summary: MeasurementSummary | undefined,
  categories: string[],
): void {
  for (const occupation of summary?.occupations ?? []) {
    if (!occupation.measured || !occupation.shareIntervals) continue;
    const intervals = occupation.shareIntervals;
    occupation.measured.forEach((share, c) => {
      const { low, high } = intervals[c];
      rows.push({
        occupation: occupation.occupation,
        category: categories[c],
        series,
        share,
        low,
        high,
      });
    });
  }
}

/** Loss fields of a training-history row with their legend labels. */
const LOSS_METRICS = [
  ['loss', 'Loss'],
  ['klLoss', 'KL loss'],
  ['ktoLoss', 'KTO loss'],
] as const;

/** Renders loss curves by step (total, KL and KTO terms where logged); null without data. */
export async function renderLossChart(
  history: readonly TrainingHistoryRow[],
): Promise<string | null> {
  const values = history.flatMap((row) =>
    LOSS_METRICS.filter(([metric]) => Number.isFinite(row[metric])).map(([metric, label]) => ({
      step: row.step,
      stage: String(row.stage),
      metric: label,
      value: row[metric],
    })),
  );
  if (values.length === 0) return null;
  return renderSvg({
    data: { values },
    width: 560,
    height: 220,
    mark: { type: 'line', point: values.length <= 60 },
    encoding: {
      x: {
        field: 'step',
        type: 'quantitative',
        title: 'Step',
        axis: { format: 'd', tickMinStep: 1 },
      },
      y: { field: 'value', type: 'quantitative', title: 'Loss' },
      color: {
        field: 'metric',
        type: 'nominal',
        sort: LOSS_METRICS.map(([, label]) => label),
        title: null,
      },
      strokeDash: { field: 'stage', type: 'nominal', title: 'Stage' },
    },
  });
}

async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const loader = vega.loader();
  loader.load = async (uri: string) => {
    throw new Error(`Report charts use inline data only, so loading ${uri} was rejected.`);
  };
  const runtime = vega.parse(compile({ ...spec, background: 'white' }).spec);
  const view = new vega.View(runtime, { renderer: 'none', loader });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
