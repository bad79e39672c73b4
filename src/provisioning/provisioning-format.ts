// Plain words for the provisioning, "who can log in" and diagnostics pages: cycle steps, states,
// outcomes and counts as a school office reads them, times, durations, the schedule and paging.
import { OUTCOME_ORDER, type CycleCounts, type CycleState, type CycleStep, type CycleTrigger, type RequestOutcomeReport } from './cycle-repository';
import { MOODLE_NOT_CONFIGURED_MESSAGE } from './provisioning-cycle';

const dateTime = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'medium', timeZone: 'Europe/London' });

export function formatTime(ms: number | null | undefined): string {
  return ms === null || ms === undefined ? '' : dateTime.format(new Date(ms));
}

/** "45 seconds", "3 min 5 s", "2 h 10 min". */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return seconds === 1 ? '1 second' : `${seconds} seconds`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export const STEP_LABELS: Record<CycleStep, string> = {
  starting: 'Starting',
  checking: 'Checking Moodle and finding the work to do',
  syncing: "Asking Moodle to create new parents' accounts (user sync)",
  looking_up: "Looking up the parents' accounts in Moodle",
  assigning: 'Linking parents to their children in Moodle',
  unassigning: 'Removing access that staff revoked',
  password_email: "Asking Moodle to send new parents' password emails",
  recording: 'Recording the results',
  done: 'Finished',
};

export const STATE_LABELS: Record<CycleState, string> = {
  running: 'Running',
  succeeded: 'Finished, no problems',
  problems: 'Finished with problems',
  failed: 'Failed',
  interrupted: 'Stopped before it finished',
};

export const TRIGGER_LABELS: Record<CycleTrigger, string> = {
  schedule: 'Schedule',
  manual: '“Run now” button',
  cli: 'Command line',
};

export const OUTCOME_LABELS: Record<RequestOutcomeReport['outcome'], string> = {
  failed: 'Failed, tried again later',
  linked_some: 'Some children linked',
  refused: 'Not recorded: changed meanwhile',
  waiting: 'Waiting for Moodle',
  unchanged: 'Nothing done',
  provisioned: 'Account ready',
};

export const isProblemOutcome = (outcome: RequestOutcomeReport['outcome']) => OUTCOME_ORDER[outcome] <= 2;

export const CHILD_OUTCOME_LABELS: Record<RequestOutcomeReport['children'][number]['outcome'], string> = {
  linked: 'Linked',
  failed: 'Not linked',
  waiting: 'Waiting',
};

export const COUNT_LABELS: ReadonlyArray<[keyof CycleCounts, string]> = [
  ['requests', 'Requests worked on'],
  ['provisioned', 'Accounts ready'],
  ['childrenLinked', 'Children linked'],
  ['childrenFailed', 'Children not linked'],
  ['waiting', 'Waiting for Moodle'],
  ['waitedTooLong', 'Waiting too long'],
  ['refused', 'Changed meanwhile, not recorded'],
  ['unassigned', 'Links removed'],
  ['unassignFailed', 'Links not removed'],
  ['moodleCalls', 'Calls to Moodle'],
];

/** One line for the history table: only the counts that are not zero. */
export function countsInBrief(counts: CycleCounts | null): string {
  if (counts === null) return '';
  const parts: string[] = [];
  const add = (n: number, one: string, many: string) => {
    if (n > 0) parts.push(`${n} ${n === 1 ? one : many}`);
  };
  add(counts.provisioned, 'account ready', 'accounts ready');
  add(counts.childrenLinked, 'child linked', 'children linked');
  add(counts.waiting, 'waiting', 'waiting');
  add(counts.childrenFailed, 'child not linked', 'children not linked');
  add(counts.refused, 'changed meanwhile', 'changed meanwhile');
  add(counts.unassigned, 'link removed', 'links removed');
  add(counts.unassignFailed, 'link not removed', 'links not removed');
  return parts.length === 0 ? (counts.requests === 0 ? 'Nothing to do' : `${counts.requests} worked on`) : parts.join(' · ');
}

/** The stored error is the message, then its help on the next line. */
export function splitError(error: string | null): { message: string; help: string | null } | null {
  if (error === null || error.trim() === '') return null;
  const [message, ...rest] = error.split('\n');
  const help = rest.join('\n').trim();
  return { message: (message ?? '').trim(), help: help === '' ? null : help };
}

/**
 * What the report says when a cycle worked on no request. A cycle that stopped at its Moodle check
 * never looked for approved requests, so it must not say there were none.
 */
export function noRequestsWorkedOn(state: CycleState, error: string | null): string {
  if (splitError(error)?.message === MOODLE_NOT_CONFIGURED_MESSAGE) {
    return 'Moodle is not configured, so this cycle worked on no request. Approved requests wait until MOODLE_URL and MOODLE_TOKEN are set; the first cycle after that works on them.';
  }
  if ((state === 'failed' || state === 'interrupted') && error !== null) return 'This cycle stopped before it worked on any request; the reason is above.';
  return 'This cycle had no approved requests to work on.';
}

/** The cron expressions schools actually use, in words; anything else is shown as it is. */
export function describeSchedule(schedule: string | undefined): string {
  if (schedule === undefined) return 'Off: cycles run only from this page or the command line.';
  const fields = schedule.trim().split(/\s+/);
  const [minute, hour, day, month, weekday] = fields;
  const every = fields.length === 5 && day === '*' && month === '*' && weekday === '*';
  let words: string | undefined;
  if (every && hour === '*' && minute === '*') words = 'every minute';
  else if (every && hour === '*' && /^\*\/\d+$/.test(minute ?? '')) words = `every ${Number(minute?.slice(2))} minutes`;
  else if (every && hour === '*' && /^\d+$/.test(minute ?? '')) words = `every hour at ${Number(minute)} minutes past`;
  else if (every && /^\d+$/.test(hour ?? '') && /^\d+$/.test(minute ?? '')) words = `every day at ${String(hour).padStart(2, '0')}:${String(minute).padStart(2, '0')}`;
  return words === undefined ? `On the schedule ${schedule}` : `${words[0]?.toUpperCase()}${words.slice(1)} (${schedule})`;
}

/** ?page=N, from 1; anything else is page 1. */
export function pageNumber(value: unknown): number {
  const n = typeof value === 'string' && /^\d{1,6}$/.test(value) ? Number(value) : 1;
  return Math.max(1, n);
}

export interface Pagination {
  page: number;
  pages: number;
  total: number;
  pageSize: number;
  offset: number;
}

export function paginate(total: number, page: number, pageSize: number): Pagination {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  const current = Math.min(page, pages);
  return { page: current, pages, total, pageSize, offset: (current - 1) * pageSize };
}
