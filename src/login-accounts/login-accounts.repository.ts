// Read-only: the auth table (the parents Moodle's External database authentication lets in),
// each row with its request's status. The request lifecycle stays the only writer.
import { REQUESTS_TABLE, type Queryable } from '../requests/request-repository';
import type { RequestStatus } from '../requests/request-states';

export interface LoginAccountRow {
  username: string;
  firstname: string;
  lastname: string;
  email: string;
  requestId: number;
  /** null if the request row is gone (it never should be while the auth row exists). */
  requestStatus: RequestStatus | null;
}

type Row = Record<string, unknown>;

function fromRow(r: Row): LoginAccountRow {
  return {
    username: String(r.username),
    firstname: String(r.firstname ?? ''),
    lastname: String(r.lastname ?? ''),
    email: String(r.email ?? ''),
    requestId: Number(r.request_id),
    requestStatus: typeof r.status === 'string' ? (r.status as RequestStatus) : null,
  };
}

export class AccountsRepository {
  constructor(private readonly authTable: string) {}

  /** `search` matches a part of the username, name or email, any case. */
  private filtered(q: Queryable, search: string | undefined) {
    const query = q(`${this.authTable} as a`);
    if (search) {
      // "!" escapes LIKE's wildcards the same way on MySQL and SQLite (backslash does not).
      const pattern = `%${search.toLowerCase().replace(/[!%_]/g, (c) => `!${c}`)}%`;
      query.where((w) => {
        for (const column of ['a.username', 'a.email', 'a.firstname', 'a.lastname']) {
          w.orWhereRaw(`lower(${column}) like ? escape '!'`, [pattern]);
        }
      });
    }
    return query;
  }

  async count(q: Queryable, search?: string): Promise<number> {
    const [row] = await this.filtered(q, search).count({ n: '*' });
    return Number(row?.n ?? 0);
  }

  async page(q: Queryable, options: { limit: number; offset: number; search?: string }): Promise<LoginAccountRow[]> {
    const rows = (await this.filtered(q, options.search)
      .leftJoin(`${REQUESTS_TABLE} as r`, 'r.id', 'a.request_id')
      .select('a.username', 'a.firstname', 'a.lastname', 'a.email', 'a.request_id', 'r.status')
      .orderBy('a.username')
      .limit(options.limit)
      .offset(options.offset)) as Row[];
    return rows.map(fromRow);
  }
}
