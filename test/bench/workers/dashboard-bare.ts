// The baseline of the dashboard benchmark, in its own process: a node:http server that runs each
// list page's own SQL through a mysql2 pool and answers the rows as JSON, and nothing else (no
// Express, session, sign-in check, CSRF, knex or template). The parent hands it the statements the
// search repository generates for each measured page ('prepare'); it runs them the way the page
// does: the counts beside the page's id query (for a search, the one statement answering both, or
// for a search matching more than the count limit, answering only that, then the walk giving the
// page's ids), then those rows by id, then their children.
import http from 'node:http';
import mysql, { type RowDataPacket } from 'mysql2/promise';
import { runWorker, serveHttpWorker } from '../support/worker';

export interface Statement {
  sql: string;
  bindings: unknown[];
}

export interface BarePage {
  key: string;
  /** Absent for a search: its one pass answers a row per status (status, status_count) and the page's rows (on_page, position). */
  counts?: Statement;
  /** Asks for one row more than the page shows, which tells whether there is a next page. */
  ids: Statement;
  /** A search's walk, run when its one pass says (total) that it matches more than countLimit. */
  walk?: Statement;
  countLimit?: number;
  pageSize: number;
}

export interface BareAnswer {
  /** Null for a search matching more than the count limit: not counted. */
  counts: Record<string, number> | null;
  rows: Array<Record<string, unknown> & { children: Array<Record<string, unknown>> }>;
}

// The repository's LIST_COLUMNS and child columns, so the same bytes come back.
const ROWS_SQL =
  'select r.id, r.version, r.status, r.request_type, r.source, r.parent_title, r.parent_first_name, r.parent_last_name, r.email, ' +
  'r.created_at, r.decided_at, r.decided_by, r.decision_reason from requests as r where r.id in (?)';
const CHILDREN_SQL =
  'select request_id, first_name, last_name, tutor_group, pupil_identifier, link_state, moodle_user_id from request_children ' +
  'where request_id in (?) order by request_id asc, position asc';

async function main(): Promise<void> {
  const url = process.env.BENCH_DATABASE_URL;
  if (!url) throw new Error('BENCH_DATABASE_URL is not set');
  // The same pool size and number handling as the service's knex pool (src/db/database.ts).
  const pool = mysql.createPool({ uri: url, connectionLimit: 10, charset: 'utf8mb4', supportBigNumbers: true, bigNumberStrings: false, timezone: 'Z' });
  const pages = new Map<string, BarePage>();

  async function answer(page: BarePage): Promise<BareAnswer> {
    if (!page.counts) {
      const [found] = await pool.query<RowDataPacket[]>(page.ids.sql, page.ids.bindings);
      if (found.some((r) => Number(r.total) > (page.countLimit ?? Infinity))) {
        if (!page.walk) throw new Error(`${page.key}: the search matches more than the count limit and has no walk`);
        const [walked] = await pool.query<RowDataPacket[]>(page.walk.sql, page.walk.bindings);
        return { counts: null, rows: await rowsOf(page, walked.map((r) => Number(r.id))) };
      }
      const ids = found
        .filter((r) => Number(r.on_page) === 1 && Number(r.position) <= page.pageSize + 1)
        .sort((a, b) => Number(a.position) - Number(b.position))
        .map((r) => Number(r.id));
      return { counts: Object.fromEntries(found.map((r) => [String(r.status), Number(r.status_count)])), rows: await rowsOf(page, ids) };
    }
    const countsQuery = pool.query<RowDataPacket[]>(page.counts.sql, page.counts.bindings);
    const rowsQuery = (async () => {
      const [idRows] = await pool.query<RowDataPacket[]>(page.ids.sql, page.ids.bindings);
      return rowsOf(
        page,
        idRows.map((r) => Number(r.id)),
      );
    })();
    const [[countRows], rows] = await Promise.all([countsQuery, rowsQuery]);
    return { counts: Object.fromEntries(countRows.map((r) => [String(r.status), Number(r.n)])), rows };
  }

  async function rowsOf(page: BarePage, ids: number[]): Promise<BareAnswer['rows']> {
    if (ids.length === 0) return [];
    // As the repository does: every row the id query found, then the children of the page's.
    const [rows] = await pool.query<RowDataPacket[]>(ROWS_SQL, [ids]);
    const shown = ids.slice(0, page.pageSize);
    const [children] = await pool.query<RowDataPacket[]>(CHILDREN_SQL, [shown]);
    const byId = new Map(rows.map((r) => [Number(r.id), { ...r, children: [] as Array<Record<string, unknown>> }]));
    for (const child of children) byId.get(Number(child.request_id))?.children.push(child);
    return shown.map((id) => byId.get(id)).filter((r) => r !== undefined);
  }

  const server = http.createServer((req, res) => {
    const page = pages.get(decodeURIComponent((req.url ?? '').replace(/^\/pages\//, '')));
    if (req.method !== 'GET' || !page) {
      res.writeHead(404).end();
      return;
    }
    answer(page).then(
      (body) => {
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
        res.end(JSON.stringify(body));
      },
      (error: unknown) => {
        process.stderr.write(`bare page ${page.key} failed: ${String(error)}\n`);
        res.writeHead(500).end();
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  serveHttpWorker(
    server,
    {
      prepare: (page: BarePage) => {
        pages.set(page.key, page);
        return { key: page.key };
      },
    },
    () => pool.end(),
  );
}

runWorker(main);
