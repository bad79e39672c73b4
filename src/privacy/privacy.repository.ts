// The queries behind erasure, retention and a pupil's access history. Reads the request tables;
// its writes are to the provisioning cycle reports, whose per-request messages can name a
// parent's Moodle account and must go when that request is erased, and the blanking of the
// address and browser requests were sent from once SUBMITTER_DETAILS_DAYS have passed.
import { parseJsonColumn } from '../db/columns';
import { CYCLE_OUTCOMES_TABLE } from '../provisioning/cycle-repository';
import {
  AUDIT_TABLE,
  auditFromRow,
  CHILDREN_TABLE,
  childFromRow,
  HELD_DETAILS_TABLE,
  REQUESTS_TABLE,
  requestFromRow,
  type AuditEventRecord,
  type ChildRecord,
  type Queryable,
  type RequestRecord,
} from '../requests/request-repository';
import type { RequestStatus } from '../requests/request-states';

type Row = Record<string, unknown>;

export interface PupilLinkRow {
  child: ChildRecord;
  request: RequestRecord;
}

export class PrivacyRepository {
  /** Requests in these statuses, not erased yet, decided before the cutoff, oldest first. */
  async decidedBefore(q: Queryable, statuses: readonly RequestStatus[], cutoff: number): Promise<number[]> {
    const rows = (await q(REQUESTS_TABLE)
      .whereIn('status', statuses)
      .whereNull('erased_at')
      .where('decided_at', '<', cutoff)
      .orderBy('id')
      .select('id')) as Row[];
    return rows.map((r) => Number(r.id));
  }

  /**
   * Blanks the submitter's address and browser on up to `limit` requests sent before the cutoff
   * (whatever their status), in one set-based statement. Returns how many it blanked: fewer than
   * `limit` means none is left.
   */
  async eraseSubmitterDetailsBefore(q: Queryable, cutoff: number, limit: number): Promise<number> {
    const ids = ((await q(REQUESTS_TABLE)
      .where('created_at', '<', cutoff)
      .where((w) => w.whereNotNull('submitter_ip').orWhereNotNull('submitter_agent'))
      .orderBy('id')
      .limit(limit)
      .select('id')) as Row[]).map((r) => Number(r.id));
    if (ids.length === 0) return 0;
    // version and updated_at stay: this is no change to the request that staff are deciding on.
    await q(REQUESTS_TABLE).whereIn('id', ids).update({ submitter_ip: null, submitter_agent: null });
    return ids.length;
  }

  /** The same for details held until an address confirms them (they expire sooner anyway). */
  async eraseHeldSubmitterDetailsBefore(q: Queryable, cutoff: number): Promise<number> {
    return q(HELD_DETAILS_TABLE)
      .where('created_at', '<', cutoff)
      .where((w) => w.whereNotNull('submitter_ip').orWhereNotNull('submitter_agent'))
      .update({ submitter_ip: null, submitter_agent: null });
  }

  /**
   * Removes what the cycle reports say about one request beyond its outcome: the messages (which
   * can name the parent's Moodle account) and the per-child errors. Run in the erasure's transaction.
   */
  async scrubCycleReports(q: Queryable, requestId: number): Promise<number> {
    const rows = (await q(CYCLE_OUTCOMES_TABLE).where({ request_id: requestId }).select('id', 'children')) as Row[];
    for (const row of rows) {
      const children = parseJsonColumn<unknown[]>(row.children, []);
      const kept = (Array.isArray(children) ? children : []).map((c) => {
        const child = (c ?? {}) as Record<string, unknown>;
        return { childId: child.childId, outcome: child.outcome };
      });
      await q(CYCLE_OUTCOMES_TABLE).where({ id: row.id }).update({ message: null, children: JSON.stringify(kept) });
    }
    return rows.length;
  }

  /** Every child row ever matched to this Moodle pupil account, with its request, oldest first. */
  async linksOfPupil(q: Queryable, moodleUserId: number): Promise<PupilLinkRow[]> {
    const children = ((await q(CHILDREN_TABLE).where({ moodle_user_id: moodleUserId }).orderBy('id')) as Row[]).map(childFromRow);
    if (children.length === 0) return [];
    const requestIds = [...new Set(children.map((c) => c.requestId))];
    const requests = new Map<number, RequestRecord>();
    for (let i = 0; i < requestIds.length; i += 500) {
      const rows = (await q(REQUESTS_TABLE).whereIn('id', requestIds.slice(i, i + 500))) as Row[];
      for (const row of rows) {
        const request = requestFromRow(row);
        requests.set(request.id, request);
      }
    }
    return children.flatMap((child) => {
      const request = requests.get(child.requestId);
      return request ? [{ child, request }] : [];
    });
  }

  /** The audit events of these requests, in order, by request. */
  async auditOfRequests(q: Queryable, requestIds: number[]): Promise<Map<number, AuditEventRecord[]>> {
    const byRequest = new Map<number, AuditEventRecord[]>(requestIds.map((id) => [id, []]));
    for (let i = 0; i < requestIds.length; i += 500) {
      const rows = (await q(AUDIT_TABLE)
        .whereIn('request_id', requestIds.slice(i, i + 500))
        .orderBy('id')) as Row[];
      for (const row of rows) {
        const event = auditFromRow(row);
        if (event.requestId !== null) byRequest.get(event.requestId)?.push(event);
      }
    }
    return byRequest;
  }
}
