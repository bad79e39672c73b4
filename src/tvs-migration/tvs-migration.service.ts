// Moving a school from the old WordPress plugin: `plan` says what would happen to every row of
// its two tables and changes nothing; `run` imports through the request lifecycle, idempotently,
// and asserts the cut-over invariant (every username Moodle's auth_db reads from the plugin is in
// this service's auth table, and nobody else was added); `check` compares the plugin's auth
// table, this service's, and Moodle's auth_db accounts before and after re-pointing Moodle.
import type { Knex } from 'knex';
import { fitsTextColumn } from '../db/columns';
import { AppError } from '../errors';
import type { Database } from '../db/database';
import type { Logger } from '../logger';
import type { MoodleClient, MoodleUser } from '../moodle/moodle-client';
import { MoodleError } from '../moodle/moodle-error';
import { findPupilCandidates, sameName, type PupilLookupClient, type PupilMatch } from '../moodle/pupil-candidates';
import type { Actor, ExistingRequestInput, ExistingRequestResult, ImportedChildInput, RequestLifecycle } from '../requests/request-lifecycle';
import type { RequestRepository } from '../requests/request-repository';
import { STATUS_LABELS, type RequestStatus } from '../requests/request-states';
import { PluginTablesRepository, type PluginAuthRow, type PluginRequestRow } from './plugin-tables.repository';
import { planMigration, requestTypeOf, type PlannedChild, type PlannedRequest } from './tvs-migration-plan';
import { TvsMigrationRepository } from './tvs-migration.repository';

/** The WordPress database and its table prefix; display never shows the password. */
export interface PluginSource {
  db: Knex;
  prefix: string;
  display: string;
}

export interface TvsMigrationDependencies {
  db: Database;
  lifecycle: RequestLifecycle;
  requestRepository: RequestRepository;
  /** Undefined when Moodle is not configured. */
  moodle: (PupilLookupClient & Pick<MoodleClient, 'getUsers'>) | undefined;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  now?: () => number;
  /** Requests imported per transaction. */
  batchSize?: number;
}

/** One line of the report (printed, and written as CSV). */
export interface ReportRow {
  table: 'requests' | 'auth';
  pluginId: number;
  parent: string;
  email: string;
  username: string;
  pluginStatus: string;
  /** What happens to the row, in words. */
  outcome: string;
  serviceStatus: RequestStatus | '';
  serviceRequestId: number | null;
  children: string;
  notes: string;
}

export interface InvariantResult {
  /** Plugin auth usernames missing from this service's auth table: Moodle would suspend them. */
  missing: string[];
  /** Usernames the migration added that the plugin's auth table does not have. */
  added: string[];
}

export interface MigrationReport {
  rows: ReportRow[];
  counts: { imported: number; alreadyImported: number; skipped: number; childrenMatched: number; childrenToPick: number; authRows: number; usernames: number };
  /** Set by run: the invariant, checked after the import. */
  invariant?: InvariantResult;
}

export interface CheckEntry {
  username: string;
  why: string;
}

export interface CheckResult {
  wouldBeSuspended: CheckEntry[];
  wouldNewlyLogIn: CheckEntry[];
  counts: { plugin: number; service: number; moodle: number };
  /** Why Moodle could not be compared (then the check cannot pass). */
  moodleProblem: string | undefined;
  ok: boolean;
}

const MOODLE_NOT_SET_UP = 'Moodle is not set up for this service (MOODLE_URL and MOODLE_TOKEN)';
/** Surnames looked up in Moodle at the same time. */
const LOOKUP_CONCURRENCY = 4;

const fit = (value: string, width: number): string => value.trim().slice(0, width);

/** A stored MySQL DATETIME ("2019-09-03 10:11:12", as WordPress wrote it) as a time; null when none. */
function timeOf(value: string | null): number | null {
  if (value === null) return null;
  const t = Date.parse(`${value.replace(' ', 'T')}Z`);
  return Number.isNaN(t) ? null : t;
}

/** The plugin's comments, labelled, within what a TEXT column holds. */
function staffCommentOf(notes: string[], request: PluginRequestRow | null): string | null {
  const parts = [...notes.map((n) => `Imported from the WordPress plugin: ${n}`)];
  if (request?.staffComment.trim()) parts.push(`Staff comment in the WordPress plugin: ${request.staffComment.trim()}`);
  if (request?.systemComment.trim()) parts.push(`System comment in the WordPress plugin: ${request.systemComment.trim()}`);
  let text = parts.join('\n\n');
  while (text !== '' && !fitsTextColumn(text)) text = text.slice(0, Math.floor(text.length * 0.9));
  return text === '' ? null : text;
}

const childName = (c: PlannedChild) => `${c.firstName.trim()} ${c.lastName.trim()}`.trim();
const matchKey = (c: PlannedChild) => `${c.firstName.trim().toLowerCase()}\u0000${c.lastName.trim().toLowerCase()}\u0000${c.tutorGroup.trim().toLowerCase()}`;

/**
 * Answers the name look-ups of findPupilCandidates from one look-up per surname made up front
 * (a few at a time), so its rules stay the same and 10,000 requests do not cost 30,000 calls.
 */
class PupilsBySurname implements PupilLookupClient {
  private readonly bySurname = new Map<string, MoodleUser[]>();

  constructor(private readonly client: PupilLookupClient) {}

  async prefetch(surnames: string[]): Promise<void> {
    const wanted = [...new Set(surnames.map((s) => s.trim()).filter((s) => s !== ''))].filter((s) => !this.bySurname.has(s.toLowerCase()));
    let next = 0;
    const worker = async () => {
      while (next < wanted.length) {
        const surname = wanted[next++] as string;
        this.bySurname.set(surname.toLowerCase(), await this.client.getUsers([{ key: 'lastname', value: surname }]));
      }
    };
    await Promise.all(Array.from({ length: Math.min(LOOKUP_CONCURRENCY, wanted.length) }, worker));
  }

  getUsersByField(...args: Parameters<PupilLookupClient['getUsersByField']>): ReturnType<PupilLookupClient['getUsersByField']> {
    return this.client.getUsersByField(...args);
  }

  getUsers(...args: Parameters<PupilLookupClient['getUsers']>): ReturnType<PupilLookupClient['getUsers']> {
    const [criteria] = args;
    const lastname = criteria.find((c) => c.key === 'lastname')?.value;
    const firstname = criteria.find((c) => c.key === 'firstname')?.value;
    const cached = lastname === undefined ? undefined : this.bySurname.get(String(lastname).trim().toLowerCase());
    if (cached === undefined || criteria.some((c) => c.key !== 'lastname' && c.key !== 'firstname')) return this.client.getUsers(...args);
    // Moodle compares names without letter case; findPupilCandidates narrows these further.
    const first = firstname === undefined ? undefined : String(firstname).trim();
    return Promise.resolve(cached.filter((u) => first === undefined || sameName(u.firstname, first)));
  }
}

export class TvsMigration {
  private readonly now: () => number;
  private readonly repository = new TvsMigrationRepository();

  constructor(private readonly deps: TvsMigrationDependencies) {
    this.now = deps.now ?? Date.now;
  }

  /** Imported requests with access that still have a child whose pupil staff must pick (for the overview's banner). */
  importedNeedingPupil(limit = 10): Promise<{ count: number; requests: Array<{ id: number; parentName: string }> }> {
    return this.repository.importedNeedingPupil(this.deps.db, limit);
  }

  /** What `run` would do with every row of the plugin's tables. Writes nothing anywhere. */
  async plan(source: PluginSource): Promise<MigrationReport> {
    const prepared = await this.prepare(source);
    return this.report(prepared, new Map(), false);
  }

  /** Imports everything not imported yet, then checks the invariant. */
  async run(source: PluginSource, actor: Actor): Promise<MigrationReport> {
    // Without Moodle every child would be left for staff to pick by hand: match them first.
    if (!this.deps.moodle) {
      throw new AppError(`Nothing was imported: ${MOODLE_NOT_SET_UP}, so the children cannot be matched to their pupils.`, 409, 'moodle_not_configured', {
        help: 'Set MOODLE_URL and MOODLE_TOKEN (see docs/moodle-setup.md), check with "npm run cli -- doctor", then run again.',
      });
    }
    const prepared = await this.prepare(source);
    const before = await this.repository.authUsernames(this.deps.db, this.deps.requestRepository.authTable);
    const results = new Map<PlannedRequest, ExistingRequestResult>();
    const toImport = prepared.plan.requests.filter((p) => !prepared.alreadyHere(p));
    const batchSize = this.deps.batchSize ?? 200;
    for (let i = 0; i < toImport.length; i += batchSize) {
      const batch = toImport.slice(i, i + batchSize);
      const outcomes = await this.deps.lifecycle.importExistingRequests(
        batch.map((p) => this.inputFor(p, prepared.matches)),
        actor,
      );
      batch.forEach((p, index) => results.set(p, outcomes[index] as ExistingRequestResult));
    }
    const report = this.report(prepared, results, true);
    report.invariant = await this.invariant(prepared.plan.pluginUsernames, before);
    this.deps.logger.info(
      { imported: report.counts.imported, alreadyImported: report.counts.alreadyImported, skipped: report.counts.skipped, missing: report.invariant.missing.length, added: report.invariant.added.length },
      'tvs-migrate run finished',
    );
    return report;
  }

  /** Every plugin auth username is in this service's auth table, and nobody else was added. */
  async invariant(pluginUsernames: ReadonlySet<string>, before: ReadonlySet<string>): Promise<InvariantResult> {
    const after = await this.repository.authUsernames(this.deps.db, this.deps.requestRepository.authTable);
    const afterLower = new Set([...after].map((u) => u.toLowerCase()));
    const pluginLower = new Set([...pluginUsernames].map((u) => u.toLowerCase()));
    return {
      missing: [...pluginUsernames].filter((u) => !after.has(u) && !afterLower.has(u.toLowerCase())).sort(),
      added: [...after].filter((u) => !before.has(u) && !pluginLower.has(u.toLowerCase())).sort(),
    };
  }

  /**
   * Before and after re-pointing Moodle's auth_db: who would be suspended, and who would newly be
   * able to log in, by Moodle reading this service's auth table instead of the plugin's.
   */
  async check(source: PluginSource): Promise<CheckResult> {
    const tables = new PluginTablesRepository(source.prefix);
    await this.requireTables(source, tables);
    const pluginRows = await tables.authRows(source.db);
    const plugin = new Set(pluginRows.map((r) => r.username).filter((u) => u.trim() !== ''));
    const service = await this.repository.authUsernames(this.deps.db, this.deps.requestRepository.authTable);
    const serviceLower = new Set([...service].map((u) => u.toLowerCase()));
    const pluginLower = new Set([...plugin].map((u) => u.toLowerCase()));
    let moodleUsers: MoodleUser[] = [];
    let moodleProblem: string | undefined;
    if (!this.deps.moodle) moodleProblem = MOODLE_NOT_SET_UP;
    else {
      try {
        moodleUsers = await this.deps.moodle.getUsers([{ key: 'auth', value: 'db' }]);
      } catch (error) {
        if (!(error instanceof MoodleError)) throw error;
        moodleProblem = error.message;
      }
    }
    const active = new Set(moodleUsers.filter((u) => !u.suspended).map((u) => u.username.toLowerCase()));
    const suspended = new Set(moodleUsers.filter((u) => u.suspended).map((u) => u.username.toLowerCase()));
    const wouldBeSuspended: CheckEntry[] = [];
    const listed = new Set<string>();
    for (const username of [...plugin].sort()) {
      if (serviceLower.has(username.toLowerCase())) continue;
      listed.add(username.toLowerCase());
      wouldBeSuspended.push({ username, why: 'in the plugin’s auth table, not in this service’s' });
    }
    for (const user of moodleUsers.filter((u) => !u.suspended).sort((a, b) => a.username.localeCompare(b.username))) {
      const key = user.username.toLowerCase();
      if (serviceLower.has(key) || listed.has(key)) continue;
      wouldBeSuspended.push({ username: user.username, why: `an External database (auth_db) account in Moodle (user ${user.id}) that this service’s auth table does not have` });
    }
    const wouldNewlyLogIn: CheckEntry[] = [];
    for (const username of [...service].sort()) {
      const key = username.toLowerCase();
      if (pluginLower.has(key) || active.has(key)) continue;
      wouldNewlyLogIn.push({
        username,
        why: suspended.has(key) ? 'suspended in Moodle now: the sync would bring the account back' : 'in this service’s auth table only: the sync would create the account',
      });
    }
    return {
      wouldBeSuspended,
      wouldNewlyLogIn,
      counts: { plugin: plugin.size, service: service.size, moodle: moodleUsers.length },
      moodleProblem,
      ok: moodleProblem === undefined && wouldBeSuspended.length === 0 && wouldNewlyLogIn.length === 0,
    };
  }

  // ------------------------------------------------------------------ internals

  private async requireTables(source: PluginSource, tables: PluginTablesRepository): Promise<void> {
    const missing = await tables.missingTables(source.db);
    if (missing.length > 0) {
      throw new TvsSourceError(
        `The WordPress database ${source.display} has no table ${missing.join(' or ')}.`,
        'Check the database named in --from (or TVS_MIGRATE_FROM) and the table prefix (--prefix, default wp_).',
      );
    }
  }

  private async prepare(source: PluginSource) {
    const tables = new PluginTablesRepository(source.prefix);
    await this.requireTables(source, tables);
    const requests = await tables.requests(source.db);
    const authRows = await tables.authRows(source.db);
    const plan = planMigration(requests, authRows);
    const { db } = this.deps;
    const importedIds = await this.deps.requestRepository.requestIdsByWpRequestId(
      db,
      requests.map((r) => r.id),
    );
    const holders = new Map(
      [...(await this.deps.requestRepository.authRowsByUsername(db, [...plan.pluginUsernames]))].map(([u, row]) => [u.toLowerCase(), row.requestId]),
    );
    /** The service request this planned one already is (a second run), if any. */
    const existingRequestOf = (p: PlannedRequest): number | undefined =>
      (p.request ? importedIds.get(p.request.id) : undefined) ?? (p.authRow ? holders.get(p.authRow.username.toLowerCase()) : undefined);
    const alreadyHere = (p: PlannedRequest) => existingRequestOf(p) !== undefined;
    const matches = await this.matchChildren(plan.requests.filter((p) => !alreadyHere(p) && p.request !== null && ['pending', 'approved', 'provisioned'].includes(p.status)));
    return { plan, authRows, matches, alreadyHere, existingRequestOf };
  }

  /** Each child's Moodle pupil, by first name + last name + tutor group, as the plugin matched. */
  private async matchChildren(planned: PlannedRequest[]): Promise<Map<string, PupilMatch | string>> {
    const matches = new Map<string, PupilMatch | string>();
    const children = planned.flatMap((p) => p.children);
    if (children.length === 0) return matches;
    if (!this.deps.moodle) {
      for (const c of children) matches.set(matchKey(c), `Moodle was not asked: ${MOODLE_NOT_SET_UP}.`);
      return matches;
    }
    const lookups = new PupilsBySurname(this.deps.moodle);
    await lookups.prefetch(children.map((c) => c.lastName));
    for (const child of children) {
      const key = matchKey(child);
      if (!matches.has(key)) matches.set(key, await findPupilCandidates(lookups, { firstName: child.firstName, lastName: child.lastName, tutorGroup: child.tutorGroup }));
    }
    return matches;
  }

  private inputFor(p: PlannedRequest, matches: Map<string, PupilMatch | string>): ExistingRequestInput {
    const r = p.request;
    const auth = p.authRow;
    const access = p.status === 'approved' || p.status === 'provisioned';
    const children: ImportedChildInput[] = p.children.map((c) => {
      const base = { firstName: fit(c.firstName, 100), lastName: fit(c.lastName, 100), tutorGroup: fit(c.tutorGroup, 50), pupilIdentifier: null };
      const match = matches.get(matchKey(c));
      const pupil = typeof match === 'object' && match.kind === 'exact' ? match.candidates[0] : undefined;
      if (access && pupil) return { ...base, moodleUserId: pupil.id, linkState: p.status === 'provisioned' ? 'linked' : 'matched', note: null };
      return { ...base, moodleUserId: null, linkState: 'unmatched', note: access ? pickNote(c, match) : null };
    });
    const createdAt = timeOf(r?.dateCreated ?? null) ?? timeOf(r?.dateUpdated ?? null) ?? this.now();
    return {
      wpRequestId: r?.id ?? null,
      status: p.status,
      requestType: requestTypeOf(r?.requestType ?? ''),
      parentTitle: fit(r?.parentTitle ?? auth?.parentTitle ?? '', 20),
      parentFirstName: fit(r?.parentFirstName ?? auth?.parentFirstName ?? '', 100),
      parentLastName: fit(r?.parentLastName ?? auth?.parentLastName ?? '', 100),
      email: fit(r?.parentEmail ?? auth?.parentEmail ?? '', 254),
      parentComment: r?.parentComment.trim() ? r.parentComment.trim().slice(0, 4000) : null,
      staffComment: staffCommentOf(p.notes, r),
      decisionReason: p.status === 'denied' ? 'Not approved in the WordPress plugin.' : null,
      createdAt,
      decidedAt: timeOf(r?.dateApproved ?? null) ?? timeOf(r?.dateUpdated ?? null) ?? createdAt,
      children,
      // The auth row as Moodle reads it today, so the switch changes nothing in the parent's profile.
      authRow: auth ? { username: auth.username, firstname: fit(auth.parentFirstName, 100), lastname: fit(auth.parentLastName, 100), email: fit(auth.parentEmail, 100) } : null,
      details: {
        wpRequestId: r?.id ?? null,
        pluginStatus: r?.status ?? null,
        authRowId: auth?.id ?? null,
        ...(p.duplicateOfWpRequestId !== null ? { duplicateOfWpRequest: p.duplicateOfWpRequestId } : {}),
      },
    };
  }

  private report(prepared: Awaited<ReturnType<TvsMigration['prepare']>>, results: Map<PlannedRequest, ExistingRequestResult>, running: boolean): MigrationReport {
    const { plan, matches } = prepared;
    const rows: ReportRow[] = [];
    const counts = { imported: 0, alreadyImported: 0, skipped: 0, childrenMatched: 0, childrenToPick: 0, authRows: prepared.authRows.length, usernames: plan.pluginUsernames.size };
    const carriedBy = new Map<number, { p: PlannedRequest; requestId: number | null }>();

    for (const p of plan.requests) {
      const result = results.get(p);
      const existing = prepared.existingRequestOf(p);
      const already = result ? result.outcome === 'already_imported' : existing !== undefined;
      const requestId = result?.requestId ?? existing ?? null;
      const status = (result?.status ?? p.status) as RequestStatus;
      if (already) counts.alreadyImported += 1;
      else counts.imported += 1;
      if (p.authRow) carriedBy.set(p.authRow.id, { p, requestId });
      const childText = p.children
        .map((c) => {
          const match = matches.get(matchKey(c));
          if (match === undefined) return `${childName(c)} (${c.tutorGroup || 'no tutor group'}): not looked up`;
          if (typeof match === 'string') return `${childName(c)} (${c.tutorGroup || 'no tutor group'}): ${match}`;
          const access = status === 'approved' || status === 'provisioned';
          if (match.kind === 'exact') {
            if (!already) counts.childrenMatched += 1;
            return `${childName(c)} (${c.tutorGroup || 'no tutor group'}): matched to Moodle user ${match.candidates[0]?.id}`;
          }
          if (access && !already) counts.childrenToPick += 1;
          return `${childName(c)} (${c.tutorGroup || 'no tutor group'}): ${match.kind === 'ambiguous' ? `ambiguous (${match.candidates.length} pupils)` : 'not found'}${access ? ', staff pick the pupil' : ''}`;
        })
        .join('; ');
      const verb = already ? 'already imported' : running ? 'imported' : 'would be imported';
      const r = p.request;
      rows.push({
        table: r ? 'requests' : 'auth',
        pluginId: r ? r.id : (p.authRow as PluginAuthRow).id,
        parent: [r?.parentTitle ?? p.authRow?.parentTitle, r?.parentFirstName ?? p.authRow?.parentFirstName, r?.parentLastName ?? p.authRow?.parentLastName].filter((x) => x && x.trim()).join(' '),
        email: r?.parentEmail ?? p.authRow?.parentEmail ?? '',
        username: p.authRow?.username ?? r?.provisionedUsername ?? '',
        pluginStatus: r ? r.status : '(auth row without a request)',
        outcome: `${verb}${already && requestId !== null ? ` (request ${requestId})` : ''} as “${STATUS_LABELS[status]}”${p.authRow ? ', with its auth row' : ''}`,
        serviceStatus: status,
        serviceRequestId: requestId,
        children: childText,
        notes: [...p.notes, ...(result?.note ? [result.note] : [])].join(' '),
      });
    }
    for (const s of plan.skipped) {
      counts.skipped += 1;
      rows.push({ table: s.table, pluginId: s.id, parent: '', email: '', username: '', pluginStatus: '', outcome: 'skipped', serviceStatus: '', serviceRequestId: null, children: '', notes: s.reason });
    }
    const carriedWords = running ? 'carried over' : 'would be carried over';
    for (const row of prepared.authRows) {
      const carried = carriedBy.get(row.id);
      const merged = plan.mergedAuthRows.find((m) => m.row.id === row.id);
      if (!carried && !merged) continue;
      rows.push({
        table: 'auth',
        pluginId: row.id,
        parent: [row.parentTitle, row.parentFirstName, row.parentLastName].filter((x) => x.trim()).join(' '),
        email: row.parentEmail,
        username: row.username,
        pluginStatus: '',
        outcome: merged
          ? `one with auth row ${merged.keptAuthRowId} (same username)`
          : `${carriedWords} with ${carried?.p.request ? `the plugin's request ${carried.p.request.id}` : 'a request of its own'}${carried?.requestId ? ` (request ${carried.requestId} here)` : ''}`,
        serviceStatus: '',
        serviceRequestId: carried?.requestId ?? null,
        children: '',
        notes:
          merged && merged.row.username !== plan.requests.find((p) => p.authRow?.id === merged.keptAuthRowId)?.authRow?.username
            ? 'The usernames differ only in letter case: Moodle treats them as one account.'
            : '',
      });
    }
    return { rows, counts };
  }
}

function pickNote(child: PlannedChild, match: PupilMatch | string | undefined): string {
  const who = `${childName(child)}${child.tutorGroup.trim() ? ` (${child.tutorGroup.trim()})` : ''}`;
  if (typeof match === 'string') return `Pick the pupil: ${match}`;
  if (match === undefined || match.kind === 'not_found') return `Pick the pupil: no pupil called ${who} was found in Moodle when this request was imported.`;
  const list = match.candidates
    .slice(0, 5)
    .map((c) => `${c.fullname}, ${c.department || 'no tutor group'} (${c.username})`)
    .join('; ');
  return `Pick the pupil: more than one pupil in Moodle could be ${who}: ${list}.${match.note ? ` ${match.note}` : ''}`;
}

/** The WordPress database is not what was expected (wrong database or prefix). */
export class TvsSourceError extends AppError {
  constructor(message: string, help: string) {
    super(message, 400, 'tvs_source', { help });
  }
}
