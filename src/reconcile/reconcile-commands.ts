// `reconcile [--json]`: runs the Moodle check now (the running service does it on
// RECONCILE_SCHEDULE) and prints what it changed and what it found, for school IT or a cron job.
import { parseArgs } from 'node:util';
import type { Services } from '../services';
import type { ReconcileSummary } from './reconciliation';

export const RECONCILE_USAGE = `  reconcile [--report-only] [--json]
                                  check every link and parent against Moodle now: end links to deleted
                                  pupils (and to pupils suspended past PUPIL_LEFT_GRACE_DAYS), give
                                  every active link its role again, report drift; --report-only
                                  changes nothing and lists what a check would do`;

export interface ReconcileCommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

const STATE_WORDS: Record<ReconcileSummary['state'], string> = {
  running: 'running',
  succeeded: 'everything matches',
  attention: 'something to look at',
  failed: 'stopped',
};

/** The summary in lines of plain text. */
export function formatReconcileSummary(summary: ReconcileSummary): string[] {
  const c = summary.counts;
  const ended = (kind: string) => summary.findings.filter((f) => f.action === 'ended' && f.kind === kind).length;
  const lines = [
    `Moodle check ${summary.runId}: ${summary.state} (${STATE_WORDS[summary.state]})`,
    `  Links checked: ${c.linksChecked}; provisioned parents checked: ${c.parentsChecked}; Moodle calls: ${c.moodleCalls}`,
    `  Links ended: ${c.linksEnded} (pupil deleted: ${ended('pupil_deleted')}; pupil left: ${ended('pupil_left')}); parents who lost access: ${c.parentsRevoked}`,
    `  Parent roles confirmed in Moodle (given again where missing): ${c.rolesReasserted}${c.reassertFailed > 0 ? ` (${c.reassertFailed} could not be)` : ''}`,
    `  Reported: pupils suspended ${c.pupilsSuspended}; parents missing ${c.parentsMissing}, suspended ${c.parentsSuspended}, not signing in through this service ${c.parentsNotAuthDb}; ` +
      `auth table problems ${c.authTableProblems}; changed meanwhile ${c.changedMeanwhile}`,
  ];
  for (const f of summary.findings) {
    const where = [f.requestId !== null ? `Request ${f.requestId}` : null, f.childId !== null ? `child ${f.childId}` : null].filter(Boolean).join(', ');
    lines.push(`  ${where ? `${where}: ` : ''}${f.message}`);
  }
  return lines;
}

/** Exit 0 when the check ran (whatever it found), 1 when it stopped or could not start, 2 for wrong usage. */
export async function runReconcileCommand(services: Services, args: string[], io: ReconcileCommandIo, triggeredBy: string): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, 'report-only': { type: 'boolean' } } });
  const summary = await services.reconcile.run('cli', triggeredBy, { reportOnly: values['report-only'] ?? false });
  if (values.json) {
    io.out(JSON.stringify(summary, null, 2));
  } else {
    for (const line of formatReconcileSummary(summary)) io.out(line);
    if (summary.error) io.err(summary.error + (summary.help ? `\n${summary.help}` : ''));
  }
  return summary.state === 'failed' ? 1 : 0;
}
