// What the migration from the WordPress plugin does with each of its rows, decided from the two
// tables alone (no Moodle, no database): which status each request gets here, which request
// carries each auth username, which auth rows are one, and what is skipped and why.
import type { RequestStatus, RequestType } from '../requests/request-states';
import type { PluginAuthRow, PluginRequestRow } from './plugin-tables.repository';

/** What the plugin's statuses become here, in the office's words in the report. */
const STATUS_MAP: Record<string, RequestStatus | undefined> = {
  pending: 'pending',
  unknown: 'pending',
  approved: 'approved',
  provisioned: 'provisioned',
  rejected: 'denied',
  duplicate: 'duplicate',
  bogus: 'bogus',
};
const ACCESS = new Set(['approved', 'provisioned']);

/** The plugin's request types are the sentences of its form. */
export function requestTypeOf(pluginType: string): RequestType {
  const t = pluginType.trim().toLowerCase();
  if (t.startsWith('i have a moodle account, but cannot log in')) return 'cannot_log_in';
  if (t.startsWith('one or more of my children')) return 'child_not_linked';
  return 'new_account';
}

/** The longest username Moodle (and the auth table) holds. */
export const MAX_USERNAME = 100;

export type PlannedChild = PluginRequestRow['children'][number];

/** A request to be made here: from a plugin request, or from an auth row that had none. */
export interface PlannedRequest {
  /** The plugin request, or null for an auth row without one. */
  request: PluginRequestRow | null;
  status: RequestStatus;
  /** The auth row carried over with it (approved and provisioned only); its username exactly as written. */
  authRow: PluginAuthRow | null;
  children: PlannedChild[];
  /** The plugin request another with the same username was merged into (status duplicate). */
  duplicateOfWpRequestId: number | null;
  notes: string[];
}

/** A plugin row that is not imported, and why. */
export interface SkippedRow {
  table: 'requests' | 'auth';
  id: number;
  reason: string;
}

/** An auth row folded into another with the same username. */
export interface MergedAuthRow {
  row: PluginAuthRow;
  keptAuthRowId: number;
}

export interface MigrationPlan {
  requests: PlannedRequest[];
  skipped: SkippedRow[];
  mergedAuthRows: MergedAuthRow[];
  /** Every username the plugin's auth table gives Moodle that can be carried over. */
  pluginUsernames: Set<string>;
}

const childKey = (c: PlannedChild) => `${c.firstName.trim().toLowerCase()}\u0000${c.lastName.trim().toLowerCase()}`;

export function planMigration(requests: PluginRequestRow[], authRows: PluginAuthRow[]): MigrationPlan {
  const skipped: SkippedRow[] = [];
  const mergedAuthRows: MergedAuthRow[] = [];
  const byId = new Map(requests.map((r) => [r.id, r]));

  // One group per username, kept exactly as first written: Moodle knows the account by it.
  const groups = new Map<string, PluginAuthRow[]>();
  const firstWritten = new Map<string, string>();
  for (const row of authRows) {
    if (row.username.trim() === '') {
      skipped.push({ table: 'auth', id: row.id, reason: 'The username is empty: Moodle has no account for it.' });
      continue;
    }
    if (row.username.length > MAX_USERNAME) {
      skipped.push({ table: 'auth', id: row.id, reason: `The username is longer than ${MAX_USERNAME} characters: Moodle cannot have an account with it.` });
      continue;
    }
    // Moodle lower-cases the usernames auth_db reads: "Parent@x" and "parent@x" are one account.
    const same = firstWritten.get(row.username.toLowerCase()) ?? row.username;
    firstWritten.set(row.username.toLowerCase(), same);
    const group = groups.get(same);
    if (group) group.push(row);
    else groups.set(same, [row]);
  }

  // The plugin request that carries each username: the one its auth row names, else one whose
  // provisioned username it is; approved or provisioned, and each request carries one username.
  const owner = new Map<string, PluginRequestRow>();
  const ownedBy = new Map<number, string>();
  const byUsername = new Map<string, PluginRequestRow[]>();
  const lower = (u: string) => u.toLowerCase();
  for (const r of requests) {
    if (!ACCESS.has(r.status) || r.provisionedUsername === '') continue;
    const list = byUsername.get(lower(r.provisionedUsername));
    if (list) list.push(r);
    else byUsername.set(lower(r.provisionedUsername), [r]);
  }
  for (const [username, rows] of groups) {
    const named = rows.map((row) => byId.get(row.requestId)).filter((r): r is PluginRequestRow => r !== undefined && ACCESS.has(r.status));
    const candidates = [...named, ...(byUsername.get(lower(username)) ?? [])].filter((r) => !ownedBy.has(r.id));
    const chosen = candidates.find((r) => lower(r.provisionedUsername) === lower(username)) ?? candidates[0];
    if (chosen) {
      owner.set(lower(username), chosen);
      ownedBy.set(chosen.id, username);
    }
    const [kept, ...others] = rows;
    for (const other of others) mergedAuthRows.push({ row: other, keptAuthRowId: (kept as PluginAuthRow).id });
  }

  const planned: PlannedRequest[] = [];
  const plannedByWpId = new Map<number, PlannedRequest>();
  for (const r of requests) {
    const mapped = STATUS_MAP[r.status];
    if (r.status === 'deleting') {
      skipped.push({ table: 'requests', id: r.id, reason: 'The plugin was deleting this request (status “deleting”) when it stopped: not imported.' });
      continue;
    }
    if (mapped === undefined) {
      skipped.push({ table: 'requests', id: r.id, reason: `The status “${r.status}” is not one the plugin uses: not imported.` });
      continue;
    }
    const notes: string[] = [];
    let status = mapped;
    let authRow: PluginAuthRow | null = null;
    let duplicateOf: number | null = null;
    if (r.status === 'unknown') notes.push('The plugin had this request as “unknown”: it waits for review here.');
    if (ACCESS.has(r.status)) {
      const username = ownedBy.get(r.id);
      const holder = r.provisionedUsername === '' ? undefined : owner.get(lower(r.provisionedUsername));
      if (username !== undefined) {
        authRow = (groups.get(username) as PluginAuthRow[])[0] as PluginAuthRow;
      } else if (holder !== undefined) {
        status = 'duplicate';
        duplicateOf = holder.id;
        notes.push(`Plugin request ${holder.id} has the same username (${r.provisionedUsername}): this one is imported as its duplicate and its children are added there.`);
      } else {
        status = 'revoked';
        notes.push('The plugin’s auth table has no row for this parent, so they cannot log in today: imported as “access removed”.');
      }
    }
    const entry: PlannedRequest = { request: r, status, authRow, children: [...r.children], duplicateOfWpRequestId: duplicateOf, notes };
    planned.push(entry);
    plannedByWpId.set(r.id, entry);
  }

  // A parent's second request with the same account: its children belong on the first.
  for (const entry of planned) {
    if (entry.duplicateOfWpRequestId === null) continue;
    const target = plannedByWpId.get(entry.duplicateOfWpRequestId);
    if (!target) continue;
    const known = new Set(target.children.map(childKey));
    for (const child of entry.children) {
      if (known.has(childKey(child))) continue;
      known.add(childKey(child));
      target.children.push(child);
    }
  }

  // Auth rows no approved or provisioned request carries (added by hand, or left behind):
  // each becomes a provisioned request of its own, so the parent keeps their access.
  for (const [username, rows] of groups) {
    if (owner.has(lower(username))) continue;
    const row = rows[0] as PluginAuthRow;
    const named = byId.get(row.requestId);
    const why = named
      ? `Its request (${named.id}) is “${named.status}” in the plugin, but the parent can log in today`
      : row.requestId > 0
        ? `The request it names (${row.requestId}) is not in the plugin`
        : 'It names no request (added by hand)';
    planned.push({ request: null, status: 'provisioned', authRow: row, children: [], duplicateOfWpRequestId: null, notes: [`${why}: imported as a request of its own, with access kept.`] });
  }

  return { requests: planned, skipped, mergedAuthRows, pluginUsernames: new Set(groups.keys()) };
}
