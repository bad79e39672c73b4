// The school's guardian records: importing a snapshot of the MIS contact export (it replaces the
// one before, atomically, and is audited), matching confirmed requests against it (when a request
// is confirmed, and again for every waiting request after each import), and, with
// GUARDIAN_MATCH=auto, approving a full match through the lifecycle as "the school records".
import type { Knex } from 'knex';
import type { Database } from '../db/database';
import { AppError } from '../errors';
import type { Logger } from '../logger';
import type { MoodleUser } from '../moodle/moodle-client';
import { MoodleError } from '../moodle/moodle-error';
import type { PupilLookupClient } from '../moodle/pupil-candidates';
import type { Actor, ChildMatch, LifecycleEvent, RequestLifecycle } from '../requests/request-lifecycle';
import type { RequestRepository } from '../requests/request-repository';
import { pupilIdOf, type GuardianRecord, type GuardianSnapshotRead, type PupilIdField } from './guardian-records-csv';
import {
  GuardianRecordsRepository,
  type GuardianImport,
  type GuardianImportSource,
  type StoredMatch,
} from './guardian-records.repository';
import { buildRecordIndex, matchRequest, normaliseName, type MatchResult, type RequestToMatch } from './guardian-matching';

const DAY_MS = 86_400_000;
/** A preview nobody made current is deleted after this long. */
export const STAGED_VALID_MS = DAY_MS;
/** Requests matched per round: their records, Moodle look-ups and saved results together. */
const MATCH_BATCH = 1000;

export const SCHOOL_RECORDS_ACTOR: Actor = { type: 'system', id: 'school_records' };

export interface GuardianSettings {
  match: 'off' | 'suggest' | 'auto';
  maxAgeDays: number;
  pupilIdField: PupilIdField;
}

export interface GuardianRecordsDependencies {
  db: Database;
  lifecycle: RequestLifecycle;
  requests: RequestRepository;
  /** Undefined when Moodle is not configured: nothing can be matched. */
  moodle: PupilLookupClient | undefined;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  settings: GuardianSettings;
  repository?: GuardianRecordsRepository;
  now?: () => number;
}

/** What the stored match says, for the request page and the list. */
export interface RequestEvidence {
  state: StoredMatch['state'];
  result: MatchResult | null;
  /** Why the match could not be made (Moodle down); it is tried again. */
  error: string | null;
  recordsImportedAt: number | null;
  /** The records are older than GUARDIAN_RECORDS_MAX_AGE_DAYS. */
  stale: boolean;
  checkedAt: number;
}

export type ImportOutcome =
  | { ok: true; import: GuardianImport; matched: MatchRunSummary }
  | { ok: false; problem: string; import?: GuardianImport };

export interface MatchRunSummary {
  checked: number;
  full: number;
  partial: number;
  none: number;
  errors: number;
  approved: number;
}

/** "today", "yesterday", "2 days ago": how old the records are, for staff. */
export function describeRecordsAge(importedAt: number | null, now: number): string {
  if (importedAt === null) return 'never';
  const days = Math.floor((now - importedAt) / DAY_MS);
  if (days <= 0) return 'today';
  return days === 1 ? 'yesterday' : `${days} days ago`;
}

const emptySummary = (): MatchRunSummary => ({ checked: 0, full: 0, partial: 0, none: 0, errors: 0, approved: 0 });

function countPupilsAndContacts(records: readonly GuardianRecord[], pupilIdField: PupilIdField) {
  return {
    pupilCount: new Set(records.map((r) => normaliseName(pupilIdOf(r, pupilIdField)))).size,
    contactCount: new Set(records.map((r) => r.contactEmail)).size,
  };
}

export class GuardianRecordsService {
  readonly repository: GuardianRecordsRepository;
  private readonly now: () => number;
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly deps: GuardianRecordsDependencies) {
    this.repository = deps.repository ?? new GuardianRecordsRepository();
    this.now = deps.now ?? Date.now;
  }

  get settings(): GuardianSettings {
    return this.deps.settings;
  }

  currentImport(): Promise<GuardianImport | undefined> {
    return this.repository.currentImport(this.deps.db);
  }

  recentImports(limit = 10): Promise<GuardianImport[]> {
    return this.repository.recentImports(this.deps.db, limit);
  }

  findImport(id: number): Promise<GuardianImport | undefined> {
    return this.repository.findImport(this.deps.db, id);
  }

  /** Records imported before this are too old to approve on or to tag a request as matching. */
  freshSince(): number {
    return this.now() - this.deps.settings.maxAgeDays * DAY_MS;
  }

  isStale(importedAt: number | null): boolean {
    return importedAt === null || importedAt < this.freshSince();
  }

  /** Of these requests, those that match the records fully, on records not too old (the list's tag). */
  async fullyMatching(requestIds: readonly number[]): Promise<Set<number>> {
    if (this.deps.settings.match === 'off') return new Set();
    const evidence = await this.evidenceFor(requestIds);
    return new Set([...evidence].filter(([, e]) => e.state === 'full' && !e.stale).map(([id]) => id));
  }

  /**
   * The pupils a full match names, for approving the request with them (bulk approve); undefined
   * when the request does not match fully on records recent enough, or its children changed since.
   */
  async approvalMatches(requestId: number, activeChildIds: readonly number[]): Promise<ChildMatch[] | undefined> {
    if (this.deps.settings.match === 'off') return undefined;
    const evidence = (await this.evidenceFor([requestId])).get(requestId);
    if (!evidence || evidence.state !== 'full' || evidence.stale || !evidence.result) return undefined;
    const matches = evidence.result.children.filter((c) => c.matched && c.moodleUserId !== null).map((c) => ({ childId: c.childId, moodleUserId: c.moodleUserId }));
    const same = matches.length === activeChildIds.length && activeChildIds.every((id) => matches.some((m) => m.childId === id));
    return same ? matches : undefined;
  }

  // ---------------------------------------------------------------- importing

  /** Writes a snapshot as a staged import, for staff to check before it replaces the current one. */
  async stage(read: GuardianSnapshotRead, meta: { source: GuardianImportSource; fileName: string; createdBy: string }): Promise<ImportOutcome> {
    if (read.records.length === 0) return { ok: false, problem: this.nothingToKeep(read) };
    const now = this.now();
    await this.repository.deleteStagedBefore(this.deps.db, now - STAGED_VALID_MS);
    const id = await this.deps.db.transaction((trx) => this.writeStaged(trx, read, meta, now));
    return { ok: true, import: (await this.repository.findImport(this.deps.db, id)) as GuardianImport, matched: emptySummary() };
  }

  /**
   * Makes a staged import current: in one transaction the previous records are deleted and the
   * import audited; then every waiting request is matched again.
   */
  async commitStaged(id: number, actor: Actor): Promise<ImportOutcome> {
    const staged = await this.repository.findImport(this.deps.db, id);
    if (!staged) return { ok: false, problem: 'There is no such import. Upload the file again.' };
    if (staged.state !== 'staged') return { ok: false, problem: 'This import has already been used; nothing more was done.', import: staged };
    if (staged.createdAt < this.now() - STAGED_VALID_MS) return { ok: false, problem: 'This preview is more than a day old. Upload the file again.', import: staged };
    const made = await this.deps.db.transaction(async (trx) => this.replaceWith(trx, staged, actor));
    if (!made) return { ok: false, problem: 'This import has already been used; nothing more was done.', import: staged };
    return this.afterImport(id);
  }

  /**
   * Imports a snapshot in one step (the CLI and the API): written and made current in ONE
   * transaction, so a failure anywhere leaves the previous records whole.
   */
  async importSnapshot(read: GuardianSnapshotRead, meta: { source: GuardianImportSource; fileName: string; actor: Actor }): Promise<ImportOutcome> {
    if (read.records.length === 0) return { ok: false, problem: this.nothingToKeep(read) };
    const now = this.now();
    const createdBy = meta.actor.id ? `${meta.actor.type}:${meta.actor.id}` : meta.actor.type;
    const id = await this.deps.db.transaction(async (trx) => {
      const importId = await this.writeStaged(trx, read, { source: meta.source, fileName: meta.fileName, createdBy }, now);
      const staged = (await this.repository.findImport(trx, importId)) as GuardianImport;
      await this.replaceWith(trx, staged, meta.actor);
      return importId;
    });
    return this.afterImport(id);
  }

  private nothingToKeep(read: GuardianSnapshotRead): string {
    const first = read.problems.slice(0, 3).map((p) => `line ${p.line}: ${p.message}`).join(' ');
    return read.problems.length > 0
      ? `No row could be kept, so the current records were not replaced. ${first}`
      : 'No row has a contact email address, so there is nothing to match requests against; the current records were not replaced.';
  }

  private async writeStaged(trx: Knex.Transaction, read: GuardianSnapshotRead, meta: { source: GuardianImportSource; fileName: string; createdBy: string }, now: number): Promise<number> {
    const counts = countPupilsAndContacts(read.records, this.deps.settings.pupilIdField);
    const id = await this.repository.insertImport(trx, {
      state: 'staged',
      source: meta.source,
      fileName: meta.fileName,
      createdBy: meta.createdBy,
      createdAt: now,
      rowCount: read.rowCount,
      keptCount: read.records.length,
      ...counts,
      problems: read.problems,
    });
    await this.repository.insertRecords(trx, id, read.records);
    return id;
  }

  private async replaceWith(trx: Knex.Transaction, staged: GuardianImport, actor: Actor): Promise<boolean> {
    const now = this.now();
    const previous = await this.repository.currentImport(trx);
    if (!(await this.repository.makeCurrent(trx, staged.id, now))) return false;
    await this.deps.requests.insertAudit(trx, now, [
      {
        actorType: actor.type,
        actorId: actor.id ?? null,
        requestId: null,
        action: 'guardian_records_imported',
        details: {
          importId: staged.id,
          source: staged.source,
          fileName: staged.fileName,
          rows: staged.rowCount,
          kept: staged.keptCount,
          rowsWithProblems: staged.problems.length,
          pupils: staged.pupilCount,
          contacts: staged.contactCount,
          replaced: previous?.id ?? null,
        },
      },
    ]);
    return true;
  }

  private async afterImport(id: number): Promise<ImportOutcome> {
    const current = (await this.repository.findImport(this.deps.db, id)) as GuardianImport;
    this.deps.logger.info({ importId: id, kept: current.keptCount, source: current.source }, 'guardian records imported');
    const matched = await this.rematchPending();
    return { ok: true, import: current, matched };
  }

  // ---------------------------------------------------------------- matching

  /**
   * A lifecycle listener: once a request is confirmed (its email verified, or sent with
   * verification off, or its held details added), it is matched after the transaction commits.
   * Matching never holds up or fails the confirmation: when Moodle cannot be asked, the match is
   * stored as not made and tried again after the next provisioning cycle and the next import.
   */
  readonly confirmationListener = async (trx: Knex.Transaction, event: LifecycleEvent): Promise<void> => {
    if (event.type === 'erased') {
      await this.eraseFor(trx, event.request.id, typeof event.details.erasedEmail === 'string' ? event.details.erasedEmail : '');
      return;
    }
    if (this.deps.settings.match === 'off' || event.request.status !== 'pending') return;
    const confirmed = event.type === 'email_verified' || event.type === 'extended' || (event.type === 'submitted' && event.request.source !== 'import');
    if (!confirmed) return;
    const id = event.request.id;
    const run = trx.executionPromise
      .then(() => this.matchRequests([id]))
      .catch((error: unknown) => this.deps.logger.error({ err: error, requestId: id }, 'could not match a request against the guardian records'));
    this.inFlight.add(run);
    void run.finally(() => this.inFlight.delete(run));
  };

  /** Resolves when every match started by a confirmation has finished (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /** Matches every waiting request again (after an import); matches of requests no longer waiting go. */
  async rematchPending(): Promise<MatchRunSummary> {
    await this.repository.deleteMatchesNotPending(this.deps.db);
    return this.matchRequests(await this.repository.pendingRequestIds(this.deps.db));
  }

  /**
   * After each provisioning cycle: matches again the waiting requests whose match Moodle stopped,
   * and deletes previews nobody confirmed within a day (they hold personal data for no purpose).
   */
  async afterCycle(): Promise<MatchRunSummary> {
    await this.repository.deleteStagedBefore(this.deps.db, this.now() - STAGED_VALID_MS);
    const ids = await this.repository.requestIdsWithMatchErrors(this.deps.db);
    return ids.length === 0 ? emptySummary() : this.matchRequests(ids);
  }

  /** Matches these requests (those waiting for review) against the current records and stores what each says. */
  async matchRequests(requestIds: readonly number[]): Promise<MatchRunSummary> {
    const summary = emptySummary();
    if (this.deps.settings.match === 'off' || requestIds.length === 0) return summary;
    const current = await this.repository.currentImport(this.deps.db);
    if (!current) return summary;
    for (let i = 0; i < requestIds.length; i += MATCH_BATCH) {
      await this.matchBatch(requestIds.slice(i, i + MATCH_BATCH), current, summary);
    }
    return summary;
  }

  private async matchBatch(ids: readonly number[], current: GuardianImport, summary: MatchRunSummary): Promise<void> {
    const { db } = this.deps;
    const pupilIdField = this.deps.settings.pupilIdField;
    const requests = (await this.deps.requests.findManyByIds(db, [...ids])).filter((r) => r.status === 'pending' && r.erasedAt === null);
    if (requests.length === 0) return;
    const childrenByRequest = await this.deps.requests.childrenOfMany(db, requests.map((r) => r.id));
    const toMatch: Array<RequestToMatch & { version: number }> = requests.map((r) => ({
      id: r.id,
      version: r.version,
      email: r.email,
      children: (childrenByRequest.get(r.id) ?? [])
        .filter((c) => c.linkState !== 'revoked')
        .map((c) => ({ id: c.id, firstName: c.firstName, lastName: c.lastName, tutorGroup: c.tutorGroup ?? '', pupilIdentifier: c.pupilIdentifier })),
    }));
    const children = toMatch.flatMap((r) => r.children);
    const records = [
      ...(await this.repository.recordsByEmails(db, current.id, toMatch.map((r) => r.email))),
      ...(await this.repository.recordsForPupils(db, current.id, {
        identifiers: children.map((c) => c.pupilIdentifier?.trim() ?? '').filter((i) => i !== ''),
        surnames: children.map((c) => c.lastName.trim()),
      })),
    ];
    // The same record may come back from both look-ups: index each once.
    const unique = new Map<string, GuardianRecord>();
    for (const r of records) unique.set(`${r.contactEmail}\u0000${pupilIdOf(r, pupilIdField)}`, r);
    const index = buildRecordIndex(unique.values());

    const now = this.now();
    const stored: StoredMatch[] = [];
    let moodleByIdnumber: Map<string, MoodleUser[]> | undefined;
    let moodleProblem: string | undefined;
    try {
      moodleByIdnumber = await this.lookUpPupils(toMatch, index);
    } catch (error) {
      if (!(error instanceof MoodleError) && !(error instanceof NoMoodleError)) throw error;
      moodleProblem = error.message;
      this.deps.logger.warn({ err: error, requests: toMatch.length }, 'guardian records: Moodle could not be asked; the matches are tried again later');
    }
    const toApprove: Array<{ request: (typeof toMatch)[number]; result: MatchResult }> = [];
    for (const request of toMatch) {
      summary.checked += 1;
      if (!moodleByIdnumber) {
        summary.errors += 1;
        stored.push({ requestId: request.id, state: 'error', importId: current.id, recordsImportedAt: current.importedAt, checkedAt: now, result: { error: moodleProblem } });
        continue;
      }
      const result = matchRequest(request, index, moodleByIdnumber, pupilIdField);
      summary[result.state] += 1;
      stored.push({ requestId: request.id, state: result.state, importId: current.id, recordsImportedAt: current.importedAt, checkedAt: now, result });
      if (result.state === 'full' && this.deps.settings.match === 'auto' && !this.isStale(current.importedAt)) toApprove.push({ request, result });
    }
    await db.transaction((trx) => this.repository.saveMatches(trx, stored));
    for (const { request, result } of toApprove) {
      if (await this.approve(request.id, request.version, result, current)) summary.approved += 1;
    }
  }

  /** One batched look-up of every pupil the requests' contacts have (never one call per row). */
  private async lookUpPupils(requests: readonly RequestToMatch[], index: ReturnType<typeof buildRecordIndex>): Promise<Map<string, MoodleUser[]>> {
    const identifiers = new Set<string>();
    for (const request of requests) {
      for (const record of index.byEmail.get(request.email.trim().toLowerCase()) ?? []) {
        const id = pupilIdOf(record, this.deps.settings.pupilIdField);
        if (id !== '') identifiers.add(id);
      }
    }
    const found = new Map<string, MoodleUser[]>();
    if (identifiers.size === 0) return found;
    if (!this.deps.moodle) throw new NoMoodleError();
    for (const user of await this.deps.moodle.getUsersByField('idnumber', [...identifiers])) {
      const key = user.idnumber.toLowerCase();
      found.set(key, [...(found.get(key) ?? []), user]);
    }
    return found;
  }

  private async approve(requestId: number, version: number, result: MatchResult, current: GuardianImport): Promise<boolean> {
    const importedOn = new Date(current.importedAt ?? 0).toISOString().slice(0, 10);
    try {
      await this.deps.lifecycle.approveRequest(
        requestId,
        {
          expectedVersion: version,
          children: result.children.map((c) => ({ childId: c.childId, moodleUserId: c.moodleUserId })),
          evidence: [...result.children.map((c) => c.evidence ?? ''), `School records imported on ${importedOn} (import ${current.id}).`],
        },
        SCHOOL_RECORDS_ACTOR,
      );
      return true;
    } catch (error) {
      // Changed meanwhile, or refused (the parent already has an approved request): staff decide.
      if (!(error instanceof AppError)) throw error;
      this.deps.logger.info({ requestId, reason: error.message }, 'guardian records: a full match was left for staff');
      return false;
    }
  }

  // ---------------------------------------------------------------- reading and erasing

  /** What the records say about these requests (for the list and the request page). */
  async evidenceFor(requestIds: readonly number[]): Promise<Map<number, RequestEvidence>> {
    // Switched off: what was matched before is not shown (nor used) any more.
    if (this.deps.settings.match === 'off') return new Map();
    const stored = await this.repository.matchesFor(this.deps.db, requestIds);
    const out = new Map<number, RequestEvidence>();
    for (const [id, m] of stored) {
      const error = m.state === 'error' ? String((m.result as { error?: unknown } | null)?.error ?? 'Moodle could not be asked.') : null;
      out.set(id, {
        state: m.state,
        result: m.state === 'error' ? null : (m.result as MatchResult),
        error,
        recordsImportedAt: m.recordsImportedAt,
        stale: this.isStale(m.recordsImportedAt),
        checkedAt: m.checkedAt,
      });
    }
    return out;
  }

  /**
   * When a request is erased: what matching said about it goes, and the records with its address,
   * unless another request (not erased) still has that address.
   */
  private async eraseFor(trx: Knex.Transaction, requestId: number, email: string): Promise<void> {
    await this.repository.deleteMatch(trx, requestId);
    if (email === '') return;
    const others = await this.deps.requests.findByEmailAndStatuses(trx, email, ['unverified', 'pending', 'approved', 'provisioned', 'denied', 'duplicate', 'bogus', 'revoked']);
    if (others.some((r) => r.id !== requestId && r.erasedAt === null)) return;
    await this.repository.deleteRecordsWithEmail(trx, email);
  }
}

class NoMoodleError extends Error {
  constructor() {
    super('Moodle is not set up for this service, so the pupils of the school records cannot be found in it.');
  }
}
