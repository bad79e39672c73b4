// The service-side queries of the move from the WordPress plugin: the auth table's usernames
// (for the cut-over invariant and the check) and the imported requests still needing a pupil.
import type { Queryable } from '../requests/request-repository';
import { CHILDREN_TABLE, REQUESTS_TABLE } from '../requests/request-repository';
import { ACCESS_STATUSES } from '../requests/request-states';

export class TvsMigrationRepository {
  async authUsernames(q: Queryable, authTable: string): Promise<Set<string>> {
    const rows = (await q(authTable).select('username')) as Array<{ username: string }>;
    return new Set(rows.map((r) => String(r.username)));
  }

  /**
   * Imported requests with access (approved, provisioned) that have a child whose pupil staff must
   * pick: how many, and the first few, oldest first.
   */
  async importedNeedingPupil(q: Queryable, limit: number): Promise<{ count: number; requests: Array<{ id: number; parentName: string }> }> {
    const needing = () =>
      q(REQUESTS_TABLE)
        .where({ source: 'wordpress_plugin' })
        .whereIn('status', ACCESS_STATUSES)
        .whereExists(q(CHILDREN_TABLE).whereRaw('??.?? = ??.??', [CHILDREN_TABLE, 'request_id', REQUESTS_TABLE, 'id']).where({ link_state: 'unmatched' }));
    const row = (await needing().count({ n: '*' }).first()) as { n: number | string } | undefined;
    const rows = (await needing().select('id', 'parent_first_name', 'parent_last_name').orderBy('id').limit(limit)) as Array<Record<string, unknown>>;
    return {
      count: Number(row?.n ?? 0),
      requests: rows.map((r) => ({ id: Number(r.id), parentName: `${String(r.parent_first_name)} ${String(r.parent_last_name)}`.trim() })),
    };
  }
}
