// The dashboard's request list (status tabs with counts, search, sort, pages), its bulk actions
// and its CSV export. Thin: reads the query, asks the search repository or the bulk actions,
// renders. Every page here sits behind requireStaff.
import express, { type Request, type Response, type Router } from 'express';
import { NotFoundError, type FieldProblem } from '../errors';
import type { Actor } from '../requests/request-lifecycle';
import { REQUEST_STATUSES, STATUS_LABELS } from '../requests/request-states';
import type { Services } from '../services';
import { streamRequestsCsv } from './requests-csv-export';
import {
  LIST_SORTS,
  MAX_SEARCH_LENGTH,
  RequestSearchRepository,
  type ListCursor,
  type ListSort,
  type StatusFilter,
} from './request-search.repository';
import { BULK_ACTIONS, RequestsBulkActions, type BulkAction, type BulkItem } from './bulk-actions.service';
import type { StaffIdentity } from '../staff-auth/staff-accounts.service';
import { requirePermission } from '../staff-auth/staff-permissions';

export const PAGE_SIZE = 50;
/** More than a page's worth is never selected from the list. */
const MAX_SELECTED = 100;
const MAX_REASON_LENGTH = 2000;

/** The tabs, the one staff use most first. */
export const TAB_ORDER: readonly StatusFilter[] = ['pending', 'unverified', 'approved', 'provisioned', 'denied', 'duplicate', 'bogus', 'revoked', 'all'];
const TAB_LABELS: Record<StatusFilter, string> = {
  pending: 'Waiting for review',
  unverified: 'Email not confirmed',
  approved: 'Approved',
  provisioned: 'Account ready',
  denied: 'Not approved',
  duplicate: 'Duplicate',
  bogus: 'Not genuine',
  revoked: 'Access removed',
  all: 'All',
};
const SORT_LABELS: Record<ListSort, string> = {
  newest: 'Newest first',
  oldest: 'Oldest first',
  name: 'Parent last name',
  status: 'Status',
};
const BULK_TITLES: Record<BulkAction, string> = {
  approve: 'Approve the selected requests',
  deny: 'Deny the selected requests',
  bogus: 'Mark the selected requests as not genuine',
};

/** Deny and "not genuine" are confirmed on a page listing the requests first; approve is not. */
const CONFIRMED_ACTIONS: readonly BulkAction[] = ['deny', 'bogus'];
const CONFIRM_TITLES: Record<BulkAction, (n: number) => string> = {
  approve: (n) => `Approve ${n === 1 ? 'this request' : `these ${n} requests`}?`,
  deny: (n) => `Deny ${n === 1 ? 'this request' : `these ${n} requests`}?`,
  bogus: (n) => `Mark ${n === 1 ? 'this request' : `these ${n} requests`} as not genuine?`,
};
/** What the list's selection buttons ask for: "keep" is Enter's (hidden) default button. */
const SELECTIONS = ['all', 'none', 'keep', 'cancel'] as const;
type Selection = (typeof SELECTIONS)[number];
const NOTHING_CHANGED = 'Nothing was changed. To act on the ticked requests, use one of the buttons under “With the selected requests”.';
const CANCELLED = 'Cancelled: nothing was changed. The requests you ticked are still ticked.';

export interface ListParams {
  status: StatusFilter;
  q: string;
  sort: ListSort;
  cursor: ListCursor | null;
  /** Only requests that match the school records (records=match). */
  records: boolean;
}

const dateTime = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'Europe/London' });

function text(value: unknown): string {
  if (Array.isArray(value)) return text(value[0]);
  return typeof value === 'string' ? value : '';
}

function encodeCursor(values: Array<string | number>): string {
  return Buffer.from(JSON.stringify(values), 'utf8').toString('base64url');
}

function decodeCursor(value: string): unknown {
  if (value === '' || value.length > 1000) return undefined;
  try {
    return JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** Reads status, q, sort and after/before from a query string or a form; anything odd gives the default. */
export function readListParams(source: Record<string, unknown>, defaultStatus: StatusFilter): ListParams {
  const statusText = text(source.status);
  const status: StatusFilter = statusText === 'all' || (REQUEST_STATUSES as readonly string[]).includes(statusText) ? (statusText as StatusFilter) : defaultStatus;
  const q = text(source.q).trim().slice(0, MAX_SEARCH_LENGTH);
  const sortText = text(source.sort);
  const sort: ListSort = (LIST_SORTS as readonly string[]).includes(sortText) ? (sortText as ListSort) : 'newest';
  let cursor: ListCursor | null = null;
  for (const direction of ['after', 'before'] as const) {
    const values = decodeCursor(text(source[direction]));
    // A link made for another sort, or tampered with, just shows the first page.
    if (values !== undefined && RequestSearchRepository.validCursorValues(sort, status, values)) cursor = { direction, values };
  }
  return { status, q, sort, cursor, records: text(source.records) === 'match' };
}

/** The list's address for these parameters (the first page unless a cursor is given). */
export function listHref(params: Pick<ListParams, 'status' | 'q' | 'sort'> & { records?: boolean }, cursor: ListCursor | null = null, path = '/admin/requests'): string {
  const query = new URLSearchParams({ status: params.status });
  if (params.q) query.set('q', params.q);
  if (params.records) query.set('records', 'match');
  if (params.sort !== 'newest') query.set('sort', params.sort);
  if (cursor) query.set(cursor.direction, encodeCursor(cursor.values));
  return `${path}?${query.toString()}`;
}

function staffActor(res: Response): Actor {
  return { type: 'staff', id: (res.locals.staff as StaffIdentity).username };
}

export function requestsListRoutes(services: Services): Router {
  const router = express.Router();
  const search = new RequestSearchRepository();
  const bulk = new RequestsBulkActions({ lifecycle: services.lifecycle, moodle: services.moodle, logger: services.logger, schoolRecords: services.guardianRecords });
  const schoolRecords = services.guardianRecords;
  const recordsInUse = services.config.guardianRecords.match !== 'off';

  async function renderList(
    res: Response,
    params: ListParams,
    options: { selected?: ReadonlySet<number>; selectAllOnPage?: boolean; problems?: FieldProblem[]; reason?: string; notice?: string; status?: number } = {},
  ) {
    const records = params.records && recordsInUse;
    const filter = { status: params.status, search: params.q, ...(records ? { matchesSchoolRecordsSince: schoolRecords.freshSince() } : {}) };
    const searched = params.q.trim() !== '';
    const [{ counts, page }, recordsTotal] = await Promise.all([
      searched && !records
        ? // The counts and the page from one pass over the matches (no counts beyond the count limit: see searchPage).
          search.searchPage(services.db, filter, params.sort, PAGE_SIZE, params.cursor)
        : Promise.all([
            // Without a search the counts are every request's: kept for a few seconds (see status-counts.ts).
            searched ? search.countByStatus(services.db, params.q) : services.statusCounts.get(),
            search.page(services.db, filter, params.sort, PAGE_SIZE, params.cursor),
          ]).then(([counts, page]) => ({ counts, page })),
      records ? search.count(services.db, filter) : Promise.resolve(undefined),
    ]);
    const matching = recordsInUse ? await schoolRecords.fullyMatching(page.rows.map((r) => r.id)) : new Set<number>();
    // Null counts: the search matches more requests than are counted, so only "All" says how many.
    const total = counts ? Object.values(counts).reduce((sum, n) => sum + n, 0) : null;
    const countLimit = search.countLimit.toLocaleString('en-GB');
    const tooManyToCount = `more than ${countLimit}`;
    /** A tab's count: a number, "more than 1,000" (All, a search too broad to count), or null (its other tabs). */
    const countOf = (status: StatusFilter) => (status === 'all' ? (total ?? tooManyToCount) : (counts?.[status] ?? null));
    const tabs = TAB_ORDER.map((status) => ({
      status,
      label: TAB_LABELS[status],
      count: countOf(status),
      href: listHref({ ...params, status }),
      current: status === params.status,
    }));
    res.status(options.status ?? 200).render('review/list', {
      title: params.status === 'all' ? 'Requests' : `Requests: ${TAB_LABELS[params.status].toLowerCase()}`,
      params,
      tabs,
      tabLabel: TAB_LABELS[params.status],
      // The caption's count: the tab's, or the records filter's.
      shownTotal: recordsTotal ?? countOf(params.status),
      // The count limit ("1,000") when the search matches more requests than that.
      tooBroadToCount: counts === null ? countLimit : null,
      recordsInUse,
      matching,
      // One click approves every request on the page when each matches the school records.
      approveAllMatching: records && page.rows.length > 0 && page.rows.every((r) => r.status === 'pending' && matching.has(r.id)),
      rows: page.rows,
      sorts: LIST_SORTS.map((value) => ({ value, label: SORT_LABELS[value] })),
      sortLabel: SORT_LABELS[params.sort],
      statusLabels: STATUS_LABELS,
      nextHref: page.next ? listHref(params, page.next) : null,
      previousHref: page.previous ? listHref(params, page.previous) : null,
      firstHref: params.cursor ? listHref(params) : null,
      clearSearchHref: listHref({ ...params, q: '', records: false }),
      exportHref: listHref({ ...params, sort: 'newest', records: false }, null, '/admin/requests.csv'),
      cursorField: params.cursor ? { name: params.cursor.direction, value: encodeCursor(params.cursor.values) } : null,
      selected: options.selectAllOnPage ? new Set(page.rows.map((row) => row.id)) : (options.selected ?? new Set<number>()),
      problems: options.problems ?? [],
      reason: options.reason ?? '',
      notice: options.notice ?? null,
      formatDate: (ms: number) => dateTime.format(new Date(ms)),
      moodleConfigured: services.moodle !== undefined,
    });
  }

  router.get('/requests', async (req, res) => {
    await renderList(res, readListParams(req.query as Record<string, unknown>, 'pending'));
  });

  router.post('/requests/bulk', requirePermission('decide'), async (req: Request, res: Response) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const params = readListParams(body, 'pending');
    const ids = [...new Set(([] as unknown[]).concat(body.request ?? []).map((v) => Number(v)))].filter((n) => Number.isSafeInteger(n) && n > 0);
    const reason = text(body.reason).trim();

    // Buttons that only change what is ticked, never a request: "select all", "clear", "cancel" on
    // the confirmation page, and the form's first (hidden) button, which Enter on a checkbox presses.
    const selection = text(body.select);
    if (selection !== '') {
      const choice = (SELECTIONS as readonly string[]).includes(selection) ? (selection as Selection) : 'keep';
      return renderList(res, params, {
        selected: choice === 'none' ? new Set() : new Set(ids),
        selectAllOnPage: choice === 'all',
        reason: text(body.reason),
        notice: choice === 'keep' ? NOTHING_CHANGED : choice === 'cancel' ? CANCELLED : undefined,
      });
    }

    // The action only ever comes from the button pressed: Enter never sends one (see above).
    const actionText = text(body.action);
    const problems: FieldProblem[] = [];
    if (!(BULK_ACTIONS as readonly string[]).includes(actionText)) problems.push({ field: 'bulk-actions', message: 'Choose what to do with the selected requests.' });
    if (ids.length === 0) problems.push({ field: 'requests-table', message: 'Select at least one request: tick the box at the start of its row.' });
    if (ids.length > MAX_SELECTED) problems.push({ field: 'requests-table', message: `Select at most ${MAX_SELECTED} requests at a time.` });
    if (actionText === 'deny' && reason === '') problems.push({ field: 'reason', message: 'Give a reason for denying: every selected parent is told it.' });
    if (reason.length > MAX_REASON_LENGTH) problems.push({ field: 'reason', message: `The reason must be ${MAX_REASON_LENGTH} characters or fewer.` });
    if (problems.length > 0) {
      return renderList(res, params, { selected: new Set(ids), problems, reason: text(body.reason), status: 400 });
    }
    const action = actionText as BulkAction;
    // The version each row had when the list was shown: a request changed since is left alone.
    const items: BulkItem[] = ids.map((id) => ({ id, expectedVersion: Number(text(body[`version-${id}`])) }));

    // Denying mails every parent and "not genuine" closes requests for good: both are shown
    // (which requests, what reason) and done only once confirmed on that page.
    if (CONFIRMED_ACTIONS.includes(action) && text(body.confirm) !== 'yes') {
      const listed = await Promise.all(
        items.map(async (item) => {
          try {
            const { request, children } = await services.lifecycle.get(item.id);
            return { ...item, found: true as const, request, children, changed: request.version !== item.expectedVersion };
          } catch (error) {
            if (error instanceof NotFoundError) return { ...item, found: false as const };
            throw error;
          }
        }),
      );
      return res.render('review/list-bulk-confirm', {
        title: CONFIRM_TITLES[action](items.length),
        action,
        items: listed,
        reason,
        params,
        cursorField: params.cursor ? { name: params.cursor.direction, value: encodeCursor(params.cursor.values) } : null,
        statusLabels: STATUS_LABELS,
      });
    }

    const results = await bulk.run(action, items, { reason }, staffActor(res));
    req.log.info({ action, requests: ids.length, done: results.filter((r) => r.outcome === 'done').length }, 'staff bulk action');
    const count = (outcome: string) => results.filter((r) => r.outcome === outcome).length;
    res.render('review/list-bulk-result', {
      title: BULK_TITLES[action],
      action,
      results,
      done: count('done'),
      needsMatching: count('needs_matching'),
      notChanged: count('not_changed'),
      statusLabels: STATUS_LABELS,
      backHref: listHref(params, params.cursor),
    });
  });

  router.get('/requests.csv', requirePermission('export'), async (req, res) => {
    const params = readListParams(req.query as Record<string, unknown>, 'all');
    const day = new Date().toISOString().slice(0, 10);
    res.setHeader('Content-Type', 'text/csv; charset=utf-8');
    res.setHeader('Content-Disposition', `attachment; filename="requests-${params.status}-${day}.csv"`);
    const written = await streamRequestsCsv(res, services.db, search, { status: params.status, search: params.q });
    req.log.info({ status: params.status, searched: params.q !== '', requests: written }, 'requests exported');
  });

  return router;
}
