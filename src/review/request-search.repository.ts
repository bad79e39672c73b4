// Read-only queries behind the dashboard's request list and its CSV export: status tabs with
// counts, search, sorting and keyset pagination that stay fast at 100,000 requests (the request
// lifecycle and its repository stay the only writers).
//
// Search matches the START of a parent's or child's first or last name, email address or tutor
// group (and a request number), so every term is an index range (see the migrations
// add_request_list_indexes and add_child_search_indexes); a substring search would read every row.
import type { Knex } from 'knex';
import { nullableNumber, nullableString } from '../db/columns';
import { isMysql } from '../db/database';
import { CHILDREN_TABLE, REQUESTS_TABLE, type Queryable } from '../requests/request-repository';
import { GUARDIAN_MATCHES_TABLE } from '../guardian-records/guardian-records.repository';
import { REQUEST_STATUSES, type ChildLinkState, type RequestSource, type RequestStatus, type RequestType } from '../requests/request-states';

export const LIST_SORTS = ['newest', 'oldest', 'name', 'status'] as const;
export type ListSort = (typeof LIST_SORTS)[number];

/** Words of a search beyond this many are ignored (each one is a join). */
export const MAX_SEARCH_WORDS = 5;
export const MAX_SEARCH_LENGTH = 100;

/**
 * A search matching more requests than this is not counted by status: staff are told it matches
 * "more than 1,000" and asked to narrow it, and its page comes from walking the sort's index.
 */
export const SEARCH_COUNT_LIMIT = 1000;

export type StatusFilter = RequestStatus | 'all';

export interface RequestFilter {
  status: StatusFilter;
  /** What staff typed in the search box. */
  search: string;
  /** Only requests that match the school's guardian records fully, on records imported since this time. */
  matchesSchoolRecordsSince?: number;
}

/** Where a page starts: after (or before) the row with these sort values. */
export interface ListCursor {
  direction: 'after' | 'before';
  values: Array<string | number>;
}

export interface ListChild {
  firstName: string;
  lastName: string;
  tutorGroup: string;
  pupilIdentifier: string | null;
  linkState: ChildLinkState;
  moodleUserId: number | null;
}

export interface ListRow {
  id: number;
  version: number;
  status: RequestStatus;
  requestType: RequestType;
  source: RequestSource;
  parentTitle: string;
  parentFirstName: string;
  parentLastName: string;
  email: string;
  createdAt: number;
  decidedAt: number | null;
  decidedBy: string | null;
  decisionReason: string | null;
  children: ListChild[];
}

export interface ListPage {
  rows: ListRow[];
  /** The cursor of the next page, when there is one. */
  next: ListCursor | null;
  previous: ListCursor | null;
}

interface SortKey {
  /** SQL expression over the alias r. */
  sql: (mysql: boolean) => string;
  descending: boolean;
  kind: 'number' | 'text';
  valueOf: (row: Record<string, unknown>) => string | number;
}

const STATUS_RANK_SQL = `CASE r.status ${REQUEST_STATUSES.map((s, i) => `WHEN '${s}' THEN ${i}`).join(' ')} ELSE ${REQUEST_STATUSES.length} END`;

// Names compare without case in both dialects: MySQL's columns already do, SQLite's through NOCASE
// (which its name indexes are declared with, so the order comes straight from the index).
const caseless = (column: string) => (mysql: boolean) => (mysql ? `r.${column}` : `r.${column} COLLATE NOCASE`);
const plain = (column: string) => () => `r.${column}`;

const createdKey = (descending: boolean): SortKey => ({ sql: plain('created_at'), descending, kind: 'number', valueOf: (r) => Number(r.created_at) });
const idKey = (descending: boolean): SortKey => ({ sql: plain('id'), descending, kind: 'number', valueOf: (r) => Number(r.id) });

const SORT_KEYS: Record<ListSort, SortKey[]> = {
  newest: [createdKey(true), idKey(true)],
  oldest: [createdKey(false), idKey(false)],
  name: [
    { sql: caseless('parent_last_name'), descending: false, kind: 'text', valueOf: (r) => String(r.parent_last_name) },
    { sql: caseless('parent_first_name'), descending: false, kind: 'text', valueOf: (r) => String(r.parent_first_name) },
    idKey(false),
  ],
  // Statuses in the order a request moves through them, newest first within each.
  status: [
    { sql: () => STATUS_RANK_SQL, descending: false, kind: 'number', valueOf: (r) => REQUEST_STATUSES.indexOf(r.status as RequestStatus) },
    createdKey(true),
    idKey(true),
  ],
};

/** Within one status tab, sorting by status is sorting by date. */
function effectiveSort(sort: ListSort, status: StatusFilter): ListSort {
  return sort === 'status' && status !== 'all' ? 'newest' : sort;
}

/** `!` escapes LIKE's wildcards: unlike a backslash, it means the same in MySQL and SQLite strings. */
function likePrefix(word: string): string {
  return `${word.replace(/[!%_]/g, (c) => `!${c}`)}%`;
}

export function searchWords(search: string): string[] {
  return search.trim().slice(0, MAX_SEARCH_LENGTH).split(/\s+/).filter((w) => w !== '').slice(0, MAX_SEARCH_WORDS);
}

const LIST_COLUMNS = [
  'r.id',
  'r.version',
  'r.status',
  'r.request_type',
  'r.source',
  'r.parent_title',
  'r.parent_first_name',
  'r.parent_last_name',
  'r.email',
  'r.created_at',
  'r.decided_at',
  'r.decided_by',
  'r.decision_reason',
];

type Row = Record<string, unknown>;

function listRowFrom(r: Row, children: ListChild[]): ListRow {
  return {
    id: Number(r.id),
    version: Number(r.version),
    status: r.status as RequestStatus,
    requestType: r.request_type as RequestType,
    source: r.source as RequestSource,
    parentTitle: String(r.parent_title ?? ''),
    parentFirstName: String(r.parent_first_name),
    parentLastName: String(r.parent_last_name),
    email: String(r.email),
    createdAt: Number(r.created_at),
    decidedAt: nullableNumber(r.decided_at),
    decidedBy: nullableString(r.decided_by),
    decisionReason: nullableString(r.decision_reason),
    children,
  };
}

/**
 * A searched page and what the tabs show: the search's count in every status, or null when it
 * matches more than the repository's count limit (then only that is known).
 */
export interface SearchedPage {
  counts: Record<RequestStatus, number> | null;
  page: ListPage;
}

export class RequestSearchRepository {
  /** Searches matching more requests than this are not counted (tests set a small one). */
  readonly countLimit: number;

  constructor(options: { countLimit?: number } = {}) {
    this.countLimit = options.countLimit ?? SEARCH_COUNT_LIMIT;
  }

  /** How many requests match the search in each status (every status present, zero when none). */
  async countByStatus(q: Queryable, search: string): Promise<Record<RequestStatus, number>> {
    const query = this.base(q, { status: 'all', search }).select('r.status').count({ n: '*' }).groupBy('r.status');
    const rows = (await query) as Array<{ status: string; n: number | string }>;
    const counts = Object.fromEntries(REQUEST_STATUSES.map((s) => [s, 0])) as Record<RequestStatus, number>;
    for (const row of rows) if (row.status in counts) counts[row.status as RequestStatus] = Number(row.n);
    return counts;
  }

  /** How many requests the filter finds (the list's caption when it is narrowed beyond a tab). */
  async count(q: Queryable, filter: RequestFilter): Promise<number> {
    const row = (await this.base(q, filter).count({ n: '*' }).first()) as { n?: number | string } | undefined;
    return Number(row?.n ?? 0);
  }

  /** One page of the list, `limit` rows, starting at the cursor (or the first page). */
  async page(q: Queryable, filter: RequestFilter, sort: ListSort, limit: number, cursor: ListCursor | null): Promise<ListPage> {
    const effective = effectiveSort(sort, filter.status);
    // One row more than asked tells whether there is a further page.
    const found =
      effective === 'status' && searchWords(filter.search).length === 0 && filter.matchesSchoolRecordsSince === undefined
        ? await this.statusByStatus(q, '', limit + 1, cursor)
        : await this.sorted(q, filter, SORT_KEYS[effective], limit + 1, cursor);
    return this.finishPage(q, found, SORT_KEYS[effective], limit, cursor);
  }

  /**
   * A searched page and the search's count in every status, or null counts when it matches more
   * requests than the count limit.
   *
   * A search within the limit is answered by one pass over its matches (`countedSearchPage`). A
   * broader one (a common first name, a tutor group) is not counted by status: counting and
   * sorting every match reads each match's row, 20 ms for 5,000 matches on a slow host. Its page
   * comes instead from walking the sort's index from the cursor and keeping the rows that match
   * (`sorted`, 'walk'), which reads about a page's worth divided by the share of rows that match
   * and stops there, however many match.
   */
  async searchPage(q: Queryable, filter: RequestFilter, sort: ListSort, limit: number, cursor: ListCursor | null): Promise<SearchedPage> {
    const counted = await this.countedSearchPage(q, filter, sort, limit, cursor);
    if (counted) return counted;
    const effective = effectiveSort(sort, filter.status);
    // One row more than asked tells whether there is a further page.
    const found =
      effective === 'status'
        ? await this.statusByStatus(q, filter.search, limit + 1, cursor)
        : await this.sorted(q, filter, SORT_KEYS[effective], limit + 1, cursor, 'walk');
    return { counts: null, page: await this.finishPage(q, found, SORT_KEYS[effective], limit, cursor) };
  }

  /**
   * A searched page and the search's exact count in every status from one pass over its matches,
   * or null when it matches more than the count limit. One statement takes the matches' ids from
   * each word's index ranges, no more than one beyond the limit, and counts them. Within the limit
   * it reads each match's row by id, counts the matches by status and numbers the tab's rows beyond
   * the cursor in sort order, answering one row per status plus the page's rows. Beyond it no row
   * is read and one row answers with the count, so a broad search costs its ids and no more here.
   */
  private async countedSearchPage(q: Queryable, filter: RequestFilter, sort: ListSort, limit: number, cursor: ListCursor | null): Promise<SearchedPage | null> {
    const keys = SORT_KEYS[effectiveSort(sort, filter.status)];
    const backwards = cursor?.direction === 'before';
    const mysql = isMysql(q);
    const inTab: string[] = [];
    const inTabBindings: Knex.RawBinding[] = [];
    if (filter.status !== 'all') {
      inTab.push('r.status = ?');
      inTabBindings.push(filter.status);
    }
    if (cursor) {
      const beyond = this.beyond(mysql, keys, cursor.values, backwards);
      inTab.push(`(${beyond.sql})`);
      inTabBindings.push(...beyond.bindings);
    }
    const onPage = inTab.length === 0 ? '1' : `CASE WHEN ${inTab.join(' AND ')} THEN 1 ELSE 0 END`;
    const order = keys.map((key) => `${key.sql(mysql)} ${key.descending !== backwards ? 'DESC' : 'ASC'}`).join(', ');
    // The matches' ids up to one beyond the limit, each with how many there are.
    const ids = q
      .queryBuilder()
      .from(this.matchingIdsOfEveryWord(q, filter.search).limit(this.countLimit + 1).as('c'))
      .select('c.id', q.raw('COUNT(*) OVER () AS total'), q.raw('ROW_NUMBER() OVER () AS nth'));
    // Every match, of every status, when within the limit (else only the first, with no row read):
    // the tab's rows beyond the cursor are numbered for the page.
    const matches = q
      .queryBuilder()
      .from(ids.as('s'))
      .leftJoin({ r: REQUESTS_TABLE }, (on) => on.on('r.id', '=', 's.id').andOnVal('s.total', '<=', this.countLimit))
      .where('s.total', '<=', this.countLimit)
      .orWhere('s.nth', 1)
      .select(
        's.id',
        's.total',
        'r.status',
        q.raw('COUNT(*) OVER (PARTITION BY r.status) AS status_count'),
        q.raw('ROW_NUMBER() OVER (PARTITION BY r.status ORDER BY s.id) AS nth_of_status'),
        q.raw(`${onPage} AS on_page`, inTabBindings),
        inTab.length === 0
          ? q.raw(`ROW_NUMBER() OVER (ORDER BY ${order}) AS position`)
          : q.raw(`ROW_NUMBER() OVER (PARTITION BY ${onPage} ORDER BY ${order}) AS position`, inTabBindings),
      );
    const rows = (await q
      .queryBuilder()
      .from(matches.as('x'))
      .where('x.nth_of_status', 1)
      // One row more than asked tells whether there is a further page.
      .orWhere((w) => w.where('x.on_page', 1).where('x.position', '<=', limit + 1))
      .select('x.id', 'x.total', 'x.status', 'x.status_count', 'x.on_page', 'x.position')) as Row[];
    if (rows.some((row) => Number(row.total) > this.countLimit)) return null;
    const counts = Object.fromEntries(REQUEST_STATUSES.map((s) => [s, 0])) as Record<RequestStatus, number>;
    for (const row of rows) if (String(row.status) in counts) counts[row.status as RequestStatus] = Number(row.status_count);
    const pageIds = rows
      .filter((row) => Number(row.on_page) === 1 && Number(row.position) <= limit + 1)
      .sort((a, b) => Number(a.position) - Number(b.position))
      .map((row) => Number(row.id));
    return { counts, page: await this.finishPage(q, await this.rowsById(q, pageIds), keys, limit, cursor) };
  }

  /**
   * The ids of the requests matching every word of a search (every request's for none), from the
   * words' index ranges alone: each word's ids are a derived table, the later ones joined to the
   * first through the key the database gives a derived table, and no request row is read.
   */
  private matchingIdsOfEveryWord(q: Queryable, search: string): Knex.QueryBuilder {
    const words = searchWords(search);
    const ids = q.queryBuilder();
    if (words.length === 0) return ids.from({ r: REQUESTS_TABLE }).select('r.id');
    words.forEach((word, i) => {
      const { sql, bindings } = this.matchingIds(word);
      if (i === 0) ids.from(q.raw(`(${sql}) m0`, bindings)).select('m0.id');
      else ids.joinRaw(`JOIN (${sql}) m${i} ON m${i}.id = m0.id`, bindings);
    });
    return ids;
  }

  /** The page from up to `limit + 1` rows beyond the cursor in sort order: its rows, their children and its cursors. */
  private async finishPage(q: Queryable, found: Row[], keys: SortKey[], limit: number, cursor: ListCursor | null): Promise<ListPage> {
    const backwards = cursor?.direction === 'before';
    const more = found.length > limit;
    const rows = found.slice(0, limit);
    if (backwards) rows.reverse();
    const cursorOf = (row: Row | undefined, direction: ListCursor['direction']): ListCursor | null =>
      row ? { direction, values: keys.map((k) => k.valueOf(row)) } : null;
    const first = rows[0];
    const last = rows[rows.length - 1];
    const hasNext = backwards ? true : more;
    const hasPrevious = backwards ? more : cursor !== null;
    const children = await this.childrenOf(
      q,
      rows.map((r) => Number(r.id)),
    );
    return {
      rows: rows.map((r) => listRowFrom(r, children.get(Number(r.id)) ?? [])),
      next: hasNext && rows.length > 0 ? cursorOf(last, 'after') : null,
      previous: hasPrevious && rows.length > 0 ? cursorOf(first, 'before') : null,
    };
  }

  /**
   * The export's rows, oldest first, `limit` at a time after the given (createdAt, id): small
   * reads one after another, so a long export never holds a connection (SQLite has only one).
   */
  async exportBatch(q: Queryable, filter: RequestFilter, after: { createdAt: number; id: number } | null, limit: number): Promise<ListRow[]> {
    const rows = await this.sorted(q, filter, SORT_KEYS.oldest, limit, after ? { direction: 'after', values: [after.createdAt, after.id] } : null);
    const children = await this.childrenOf(
      q,
      rows.map((r) => Number(r.id)),
    );
    return rows.map((r) => listRowFrom(r, children.get(Number(r.id)) ?? []));
  }

  /**
   * Up to `limit` rows beyond the cursor, in sort order. The ids come first, from the sort's index
   * alone (a range read starting at the cursor), then those rows by id: asked for every column at
   * once, MariaDB reads a status's rows from its first one and filters its way to the cursor, so
   * page 200 would cost 200 pages.
   *
   * 'walk' reads the requests in sort order first and looks each one up among the search's matches
   * (see `base`), instead of letting the database start from the matches and sort them all.
   */
  private async sorted(q: Queryable, filter: RequestFilter, keys: SortKey[], limit: number, cursor: ListCursor | null, order: 'walk' | 'best' = 'best'): Promise<Row[]> {
    const backwards = cursor?.direction === 'before';
    const query = this.base(q, filter, order).select('r.id');
    // A cursor without values starts at the end of the order (see statusByStatus).
    if (cursor && cursor.values.length > 0) this.whereBeyond(q, query, keys, cursor.values, backwards);
    const mysql = isMysql(q);
    for (const key of keys) query.orderByRaw(`${key.sql(mysql)} ${key.descending !== backwards ? 'DESC' : 'ASC'}`);
    const ids = ((await query.limit(limit)) as Row[]).map((r) => Number(r.id));
    return this.rowsById(q, ids);
  }

  /** These requests' list columns, in the order of the ids (one a concurrent erasure removed is left out). */
  private async rowsById(q: Queryable, ids: number[]): Promise<Row[]> {
    if (ids.length === 0) return [];
    const rows = (await q({ r: REQUESTS_TABLE }).whereIn('r.id', ids).select(LIST_COLUMNS)) as Row[];
    const byId = new Map(rows.map((r) => [Number(r.id), r]));
    return ids.map((id) => byId.get(id)).filter((r): r is Row => r !== undefined);
  }

  /**
   * Every request sorted by status, unsearched or searched beyond the count limit: ordering by the
   * status's rank would sort every row, so each status is read in turn through its
   * (status, created_at) index until the page is full.
   */
  private async statusByStatus(q: Queryable, search: string, limit: number, cursor: ListCursor | null): Promise<Row[]> {
    const backwards = cursor?.direction === 'before';
    const [rank, createdAt, id] = cursor ? (cursor.values as [number, number, number]) : [backwards ? REQUEST_STATUSES.length - 1 : 0, null, null];
    const ranks = REQUEST_STATUSES.map((_, i) => i).filter((i) => (backwards ? i <= rank : i >= rank));
    if (backwards) ranks.reverse();
    const rows: Row[] = [];
    for (const r of ranks) {
      if (rows.length >= limit) break;
      // Going back, a status before the cursor's is read from its end (its oldest) backwards.
      const within: ListCursor | null =
        r === rank && createdAt !== null && id !== null ? { direction: cursor?.direction ?? 'after', values: [createdAt, id] } : backwards ? { direction: 'before', values: [] } : null;
      rows.push(...(await this.sorted(q, { status: REQUEST_STATUSES[r] as RequestStatus, search }, SORT_KEYS.newest, limit - rows.length, within, 'walk')));
    }
    return rows;
  }

  /** Checks a cursor from a link against the sort it claims to belong to. */
  static validCursorValues(sort: ListSort, status: StatusFilter, values: unknown): values is Array<string | number> {
    const keys = SORT_KEYS[effectiveSort(sort, status)];
    return (
      Array.isArray(values) &&
      values.length === keys.length &&
      keys.every((k, i) => (k.kind === 'number' ? Number.isSafeInteger(values[i]) : typeof values[i] === 'string' && (values[i] as string).length <= 200))
    );
  }

  /**
   * The requests table as r, narrowed by status and by every search word: each word's matching
   * ids are a derived table joined on r.id. 'walk' makes r the outer table, read in the order
   * asked, each row looked up in the matches through the key the database gives a derived table
   * (MariaDB's STRAIGHT_JOIN, SQLite's CROSS JOIN); 'best' leaves the order to the database.
   */
  private base(q: Queryable, filter: RequestFilter, order: 'walk' | 'best' = 'best'): Knex.QueryBuilder {
    const query = q({ r: REQUESTS_TABLE });
    if (filter.status !== 'all') query.where('r.status', filter.status);
    const since = filter.matchesSchoolRecordsSince;
    if (since !== undefined) {
      query.whereExists((sub) =>
        sub.from({ gm: GUARDIAN_MATCHES_TABLE }).whereRaw('gm.request_id = r.id').where('gm.state', 'full').where('gm.records_imported_at', '>=', since),
      );
    }
    const join = order === 'best' ? 'JOIN' : isMysql(q) ? 'STRAIGHT_JOIN' : 'CROSS JOIN';
    searchWords(filter.search).forEach((word, i) => {
      const { sql, bindings } = this.matchingIds(word);
      query.joinRaw(`${join} (${sql}) m${i} ON m${i}.id = r.id`, bindings);
    });
    return query;
  }

  /**
   * The ids of requests a word matches, as a UNION of index range reads (one per column), which
   * both databases run as separate index look-ups, rather than one OR that reads every row.
   */
  private matchingIds(word: string): { sql: string; bindings: Array<string | number> } {
    const pattern = likePrefix(word);
    const branches: Array<[string, string, string]> = [
      [REQUESTS_TABLE, 'id', 'parent_last_name'],
      [REQUESTS_TABLE, 'id', 'parent_first_name'],
      [REQUESTS_TABLE, 'id', 'email'],
      [CHILDREN_TABLE, 'request_id', 'last_name'],
      [CHILDREN_TABLE, 'request_id', 'first_name'],
      [CHILDREN_TABLE, 'request_id', 'tutor_group'],
    ];
    const parts = branches.map(([table, id, column]) => `SELECT ${id} AS id FROM ${table} WHERE ${column} LIKE ? ESCAPE '!'`);
    const bindings: Array<string | number> = branches.map(() => pattern);
    // "1234" or "#1234" is also a request number.
    const number = /^#?(\d{1,9})$/.exec(word);
    if (number) {
      parts.push(`SELECT id AS id FROM ${REQUESTS_TABLE} WHERE id = ?`);
      bindings.push(Number(number[1]));
    }
    return { sql: parts.join(' UNION '), bindings };
  }

  /**
   * Rows strictly beyond the cursor in the sort order: k1 > v1 OR (k1 = v1 AND (k2 > v2 OR …)),
   * plus a plain k1 >= v1 that lets both databases start an index range at the cursor instead of
   * reading from the first row and filtering.
   */
  private whereBeyond(q: Queryable, query: Knex.QueryBuilder, keys: SortKey[], values: Array<string | number>, backwards: boolean): void {
    const { sql, bindings } = this.beyond(isMysql(q), keys, values, backwards);
    query.whereRaw(sql, bindings);
  }

  private beyond(mysql: boolean, keys: SortKey[], values: Array<string | number>, backwards: boolean): { sql: string; bindings: Knex.RawBinding[] } {
    const op = (key: SortKey) => (key.descending !== backwards ? '<' : '>');
    const bindings: Knex.RawBinding[] = [];
    const build = (i: number): string => {
      const key = keys[i] as SortKey;
      const value = values[i] as string | number;
      if (i === keys.length - 1) {
        bindings.push(value);
        return `${key.sql(mysql)} ${op(key)} ?`;
      }
      bindings.push(value, value);
      const inner = `${key.sql(mysql)} ${op(key)} ? OR (${key.sql(mysql)} = ? AND (`;
      return `${inner}${build(i + 1)}))`;
    };
    const first = keys[0] as SortKey;
    const leading = `${first.sql(mysql)} ${op(first)}= ?`;
    const leadingBinding = values[0] as string | number;
    const rest = build(0);
    return { sql: `${leading} AND (${rest})`, bindings: [leadingBinding, ...bindings] };
  }

  private async childrenOf(q: Queryable, requestIds: number[]): Promise<Map<number, ListChild[]>> {
    const byRequest = new Map<number, ListChild[]>();
    if (requestIds.length === 0) return byRequest;
    const rows = (await q(CHILDREN_TABLE)
      .whereIn('request_id', requestIds)
      .orderBy(['request_id', 'position'])
      .select('request_id', 'first_name', 'last_name', 'tutor_group', 'pupil_identifier', 'link_state', 'moodle_user_id')) as Row[];
    for (const row of rows) {
      const id = Number(row.request_id);
      const list = byRequest.get(id) ?? [];
      list.push({
        firstName: String(row.first_name),
        lastName: String(row.last_name),
        tutorGroup: String(row.tutor_group ?? ''),
        pupilIdentifier: nullableString(row.pupil_identifier),
        linkState: row.link_state as ChildLinkState,
        moodleUserId: nullableNumber(row.moodle_user_id),
      });
      byRequest.set(id, list);
    }
    return byRequest;
  }
}
