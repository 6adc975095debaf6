/**
 * Audit report writer: report.json (the full RunReport) and report.html (a self-contained
 * page for people), both written atomically so a reader never sees half a file.
 */

import { join } from 'node:path';
import { BugError, UserError } from '../../shared/errors';
import type { RunReport } from '../../shared/report-types';
import { writeFileAtomically } from './atomic';
import { renderLossChart, renderShareChart } from './report-charts';
import { renderReportHtml } from './report-html';

export type { RunReport } from '../../shared/report-types';

const STATUSES = ['complete', 'failed', 'cancelled'];

/**
 * Writes `report.json` and `report.html` into `outDir`, creating the folder if needed. Each
 * file is written to a temporary sibling and renamed into place.
 *
 * @example
 * const { htmlPath } = await writeReport('runs/2025-01-01', report);
 */
export async function writeReport(
  outDir: string,
  report: RunReport,
): Promise<{ jsonPath: string; htmlPath: string }> {
  checkReport(report);
  const [shareSvg, lossSvg] = await Promise.all([
    renderShareChart(report),
    renderLossChart(report.trainingHistory),
  ]);
  const html = renderReportHtml(report, { shareSvg, lossSvg });
  const jsonPath = join(outDir, 'report.json');
  const htmlPath = join(outDir, 'report.html');
  // report.json last, so its presence means both files are complete.
  await writeReportFile(htmlPath, html);
  await writeReportFile(jsonPath, `${JSON.stringify(report, null, 2)}\n`);
  return { jsonPath, htmlPath };
}

function checkReport(report: RunReport): void {
  if (!STATUSES.includes(report.status)) {
    throw new BugError(`report status "${report.status}" is not one of ${STATUSES.join(', ')}`);
  }
  if (report.status === 'complete' && !report.before) {
    throw new BugError('a complete report needs the before measurement');
  }
}

async function writeReportFile(filePath: string, text: string): Promise<void> {
  try {
    await writeFileAtomically(filePath, text);
  } catch (error) {
    const reason = (error as Error).message;
    throw new UserError(
      `Cannot write report file ${filePath}: ${reason}. Check the output folder.`,
      {
        cause: error,
      },
    );
  }
}
