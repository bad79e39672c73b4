// Read-only queries behind the provisioning pages: how many cycles there are, which one holds the
// cycle lock, and who the requests and children in a cycle report are. The cycle itself and its
// repository stay the only writers.
import { CYCLES_TABLE } from './cycle-repository';
import { CYCLE_LOCK, heldByReconcile, LOCKS_TABLE } from './cycle-lock';
import { CHILDREN_TABLE, REQUESTS_TABLE, type Queryable } from '../requests/request-repository';
import type { RequestStatus } from '../requests/request-states';

export interface ReportRequest {
  id: number;
  parentName: string;
  email: string;
  status: RequestStatus;
}

export interface ReportChild {
  id: number;
  name: string;
  tutorGroup: string;
}

export interface CycleLockState {
  cycleId: number | null;
  /** False when the holder stopped renewing it (its process died). */
  live: boolean;
}

type Row = Record<string, unknown>;

export class ProvisioningPageRepository {
  async countCycles(q: Queryable): Promise<number> {
    const [row] = await q(CYCLES_TABLE).count({ n: '*' });
    return Number(row?.n ?? 0);
  }

  /** The cycle lock as it stands, from any instance; undefined when no cycle holds it (a Moodle check may). */
  async cycleLock(q: Queryable, now: number): Promise<CycleLockState | undefined> {
    const row = (await q(LOCKS_TABLE).where({ name: CYCLE_LOCK }).first('holder', 'cycle_id', 'expires_at')) as Row | undefined;
    if (!row || heldByReconcile({ holder: String(row.holder) })) return undefined;
    return { cycleId: row.cycle_id === null ? null : Number(row.cycle_id), live: Number(row.expires_at) > now };
  }

  async requestsByIds(q: Queryable, ids: readonly number[]): Promise<Map<number, ReportRequest>> {
    const found = new Map<number, ReportRequest>();
    for (let i = 0; i < ids.length; i += 500) {
      const rows = (await q(REQUESTS_TABLE)
        .whereIn('id', ids.slice(i, i + 500))
        .select('id', 'parent_title', 'parent_first_name', 'parent_last_name', 'email', 'status')) as Row[];
      for (const r of rows) {
        const name = [r.parent_title, r.parent_first_name, r.parent_last_name].filter((p) => typeof p === 'string' && p !== '').join(' ');
        found.set(Number(r.id), { id: Number(r.id), parentName: name, email: String(r.email ?? ''), status: r.status as RequestStatus });
      }
    }
    return found;
  }

  async childrenByIds(q: Queryable, ids: readonly number[]): Promise<Map<number, ReportChild>> {
    const found = new Map<number, ReportChild>();
    for (let i = 0; i < ids.length; i += 500) {
      const rows = (await q(CHILDREN_TABLE).whereIn('id', ids.slice(i, i + 500)).select('id', 'first_name', 'last_name', 'tutor_group')) as Row[];
      for (const r of rows) {
        const name = [r.first_name, r.last_name].filter((p) => typeof p === 'string' && p !== '').join(' ');
        found.set(Number(r.id), { id: Number(r.id), name, tutorGroup: String(r.tutor_group ?? '') });
      }
    }
    return found;
  }
}
