// The requests as a CSV file for a spreadsheet: one line per child (the same columns the import
// reads, and more), streamed in small database reads so 100,000 requests never become one string.
// A cell that a spreadsheet would run as a formula is neutralised: a parent could type one.
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
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
  const children = row.children.length > 0 ? row.children : [null];
  return children.map((c) =>
    [
      String(row.id),
      STATUS_LABELS[row.status] ?? row.status,
      when(row.createdAt),
      row.parentTitle,
      row.parentFirstName,
      row.parentLastName,
      row.email,
      c ? c.firstName : '',
      c ? c.lastName : '',
      c ? c.tutorGroup : '',
      c?.pupilIdentifier ?? '',
      c ? (LINK_LABELS[c.linkState] ?? c.linkState) : '',
      c?.moodleUserId == null ? '' : String(c.moodleUserId),
      REQUEST_TYPE_LABELS[row.requestType] ?? row.requestType,
      SOURCE_LABELS[row.source] ?? row.source,
      when(row.decidedAt),
      row.decidedBy ?? '',
      row.decisionReason ?? '',
    ].map(neutraliseCell),
  );
}

/** Writes to a stream and, when its buffer is full, waits until it has room (or has closed). */
function writeOrWait(stream: Writable, chunk: string): Promise<void> | undefined {
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

const NEEDS_QUOTES = /[",\r\n]/;

/**
 * One CSV line as RFC 4180 writes it, with the Windows line end every spreadsheet reads: a cell
 * holding a comma, quote or line break is quoted, its quotes doubled. csv-stringify writes the
 * same text but allocates about 10 KiB per request on the way (V8's sampling heap profiler), which
 * is what made the export's memory grow with its size.
 */
export function csvLine(cells: readonly string[]): string {
  let line = '';
  for (let i = 0; i < cells.length; i++) {
    const cell = cells[i] as string;
    if (i > 0) line += ',';
    line += NEEDS_QUOTES.test(cell) ? `"${cell.replace(/"/g, '""')}"` : cell;
  }
  return `${line}\r\n`;
}

/**
 * Streams the CSV of every request matching the filter into `out` (an HTTP response whose
 * headers are set). Resolves with the number of requests written; stops early if `out` closes
 * (the browser gave up).
 *
 * Each database read becomes one string written at once: the batch's rows are garbage as soon as
 * it is written, instead of living on through a thousand small writes, so the memory the export
 * needs stays the same at 1,000 requests and at 100,000.
 */
export async function streamRequestsCsv(out: Writable, db: Database, repository: RequestSearchRepository, filter: RequestFilter): Promise<number> {
  let written = 0;
  let after: { createdAt: number; id: number } | null = null;
  // The byte order mark makes Excel read the file as UTF-8 (names with accents stay right).
  await writeOrWait(out, `\ufeff${csvLine(EXPORT_COLUMNS)}`);
  while (!out.destroyed) {
    const rows = await repository.exportBatch(db, filter, after, EXPORT_BATCH);
    let text = '';
    for (const row of rows) for (const line of exportLines(row)) text += csvLine(line);
    if (text) await writeOrWait(out, text);
    written += rows.length;
    const last = rows[rows.length - 1];
    if (!last || rows.length < EXPORT_BATCH) break;
    after = { createdAt: last.createdAt, id: last.id };
  }
  // Once the last byte is handed on, or the browser has gone (nothing is left to tell it then).
  // (No callback to end(): express-session's wrapper of an HTTP response's end takes none.)
  if (!out.destroyed) out.end();
  await finished(out).catch(() => undefined);
  return written;
}
