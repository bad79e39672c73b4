// Read-only queries behind the dashboard's overview pages (the request lifecycle and its
// repository stay the only writers).
import { REQUESTS_TABLE, type Queryable } from '../requests/request-repository';
import { REQUEST_STATUSES, type RequestStatus } from '../requests/request-states';

export class DashboardRepository {
  /** How many requests are in each status (every status present, zero when none). */
  async countByStatus(q: Queryable): Promise<Record<RequestStatus, number>> {
    const rows = (await q(REQUESTS_TABLE).select('status').count({ n: '*' }).groupBy('status')) as { status: string; n: number | string }[];
    const counts = Object.fromEntries(REQUEST_STATUSES.map((s) => [s, 0])) as Record<RequestStatus, number>;
    for (const row of rows) if (row.status in counts) counts[row.status as RequestStatus] = Number(row.n);
    return counts;
  }
}
