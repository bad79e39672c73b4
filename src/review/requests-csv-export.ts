// The requests as a CSV file for a spreadsheet: one line per child (the same columns the import
// reads, and more), streamed in small database reads so 100,000 requests never become one string.
// A cell that a spreadsheet would run as a formula is neutralised: a parent could type one.
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { stringify } from 'csv-stringify';
import type { Database } from '../db/database';
import { STATUS_LABELS, type ChildLinkState, type RequestSource, type RequestType } from '../requests/request-states';
import type { ListRow, RequestFilter, RequestSearchRepository } from './request-search.repository';

/** Requests read from the database at a time. */
const EXPORT_BATCH = 500;

// Spreadsheets treat a cell starting with these as a formula (or, tab and CR, strip them and
// then do); a leading apostrophe makes the cell plain text.
const FORMULA_START = /^[=+\-@\t\r]/;

export function neutraliseCell(value: string): string {
  return FORMULA_START.test(value) ? `'${value}` : value;
}

const REQUEST_TYPE_LABELS: Record<RequestType, string> = {
  new_account: 'No parent account yet',
  cannot_log_in: 'Cannot log in',
  child_not_linked: 'A child is not linked',
};

const SOURCE_LABELS: Record<RequestSource, string> = {
  form: 'Request form',
  api: 'School website',
  import: 'Import',
  cli: 'Command line',
  wordpress_plugin: 'WordPress plugin',
};

const LINK_LABELS: Record<ChildLinkState, string> = {
  unmatched: 'Not matched yet',
  matched: 'Matched, waiting for Moodle',
  linked: 'Linked in Moodle',
  not_found: 'Not found in Moodle',
  revoked: 'Access removed',
};

// "2026-11-22 14:05" in the school's time: sorts as text and every spreadsheet reads it as a date.
const dateTime = new Intl.DateTimeFormat('sv-SE', {
  timeZone: 'Europe/London',
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
});
const when = (ms: number | null) => (ms === null ? '' : dateTime.format(new Date(ms)));

export const EXPORT_COLUMNS = [
  'Request',
  'Status',
  'Created',
  'Parent title',
  'Parent first name',
  'Parent last name',
  'Email',
  'Child first name',
  'Child last name',
  'Tutor group',
  'Pupil identifier',
  'Child link',
  'Moodle pupil id',
  'Request type',
  'Source',
  'Decided',
  'Decided by',
  'Reason',
] as const;

/** One line per child (a request always has one; if not, one line with the child cells empty). */
export function exportLines(row: ListRow): string[][] {
  const request = [String(row.id), STATUS_LABELS[row.status] ?? row.status, when(row.createdAt), row.parentTitle, row.parentFirstName, row.parentLastName, row.email];
  const decision = [REQUEST_TYPE_LABELS[row.requestType] ?? row.requestType, SOURCE_LABELS[row.source] ?? row.source, when(row.decidedAt), row.decidedBy ?? '', row.decisionReason ?? ''];
  const children = row.children.length > 0 ? row.children : [null];
  return children.map((c) =>
    [
      ...request,
      ...(c
        ? [c.firstName, c.lastName, c.tutorGroup, c.pupilIdentifier ?? '', LINK_LABELS[c.linkState] ?? c.linkState, c.moodleUserId === null ? '' : String(c.moodleUserId)]
        : ['', '', '', '', '', '']),
      ...decision,
    ].map(neutraliseCell),
  );
}

/** Writes to a stream and, when its buffer is full, waits until it has room (or has closed). */
function writeOrWait(stream: Writable, chunk: unknown): Promise<void> | undefined {
  if (stream.destroyed || stream.write(chunk)) return undefined;
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/**
 * Streams the CSV of every request matching the filter into `out` (an HTTP response whose
 * headers are set). Resolves with the number of requests written; stops early if `out` closes
 * (the browser gave up), which the pipeline passes on by destroying the CSV stream too.
 */
export async function streamRequestsCsv(out: Writable, db: Database, repository: RequestSearchRepository, filter: RequestFilter): Promise<number> {
  // The byte order mark makes Excel read the file as UTF-8 (names with accents stay right).
  const csv = stringify({ bom: true, record_delimiter: 'windows' });
  // Settled at once, so a browser that leaves mid-export is not an unhandled rejection meanwhile.
  const piped = pipeline(csv, out).then(
    () => null,
    (error: unknown) => error,
  );
  let written = 0;
  let after: { createdAt: number; id: number } | null = null;
  await writeOrWait(csv, [...EXPORT_COLUMNS]);
  while (!csv.destroyed) {
    const rows = await repository.exportBatch(db, filter, after, EXPORT_BATCH);
    for (const row of rows) {
      for (const line of exportLines(row)) await writeOrWait(csv, line);
    }
    written += rows.length;
    const last = rows[rows.length - 1];
    if (!last || rows.length < EXPORT_BATCH) break;
    after = { createdAt: last.createdAt, id: last.id };
  }
  csv.end();
  const error = await piped;
  if (error && (error as { code?: string }).code !== 'ERR_STREAM_PREMATURE_CLOSE') throw error;
  return written;
}
