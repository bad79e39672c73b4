// CSV import of pre-approved parents: a preview that checks every row (the form's rules, the
// rows of each parent together, existing requests, and each child's Moodle pupil account) and
// writes nothing but the batch itself; then, once, a commit that creates and approves each
// parent's request through the lifecycle and records the batch in the audit trail. The batch's
// rows are stored one by one: its page reads a page of them, the commit a chunk of parents.
import type { Database } from '../db/database';
import type { Logger } from '../logger';
import type { MoodleUser } from '../moodle/moodle-client';
import { MoodleError } from '../moodle/moodle-error';
import { findPupilCandidates, type PupilLookupClient, type PupilMatch } from '../moodle/pupil-candidates';
import { newPublicId, type Actor, type ApprovedImportInput, type ApprovedImportResult, type RequestLifecycle } from '../requests/request-lifecycle';
import type { RequestRepository } from '../requests/request-repository';
import { STATUS_LABELS, type RequestStatus } from '../requests/request-states';
import { AppError } from '../errors';
import {
  ImportBatchRepository,
  type ImportBatchRecord,
  type ImportBatchSummary,
  type ImportedParent,
  type ImportResult,
  type ImportRowToStore,
  type ParentToImport,
} from './import-batch.repository';
import { checkRows, groupByParent, holdBackIncompleteParents, parentKey, readImportFile, type ImportRow } from './import-csv';
import type { StaffIdentity } from '../staff-auth/staff-accounts.service';

/** A preview older than this must be made again: Moodle and the requests may have changed. */
export const PREVIEW_VALID_MS = 24 * 60 * 60_000;
/** A commit that has not finished in this long was cut short and may be run again. */
const COMMIT_STALE_MS = 15 * 60_000;
/** Moodle look-ups made at the same time. */
const LOOKUP_CONCURRENCY = 4;
/**
 * Rows whose pupils are looked up together (one batched look-up of their identifiers, then each
 * row): only one chunk's Moodle accounts are held at a time, and each row keeps just its pupil.
 */
const MATCH_CHUNK = 500;
/** Rows of a batch's page. */
export const ROWS_PER_PAGE = 200;

/** A parent with one of these already has a request staff must deal with first. */
/** Parents created and approved in one transaction by a commit. */
const COMMIT_CHUNK = 100;
const BLOCKING_STATUSES: readonly RequestStatus[] = ['unverified', 'pending', 'approved', 'provisioned'];

export type PreviewOutcome = { ok: true; batch: ImportBatchRecord } | { ok: false; problem: string };

export type CommitOutcome =
  | { ok: true; batch: ImportBatchRecord }
  | { ok: false; reason: 'not_found' | 'committed' | 'in_progress' | 'expired' | 'nothing_valid'; message: string; batch?: ImportBatchRecord };

export interface ImportDependencies {
  db: Database;
  lifecycle: RequestLifecycle;
  requestRepository: RequestRepository;
  /** Undefined when Moodle is not configured: no child can be matched, so nothing can be imported. */
  moodle: PupilLookupClient | undefined;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  maxChildren: number;
  now?: () => number;
}

/** The key that makes a parent's request of a batch once only, however often the commit runs. */
const importKey = (batch: ImportBatchRecord, parentNumber: number) => `import:${batch.publicId}:${parentNumber}`;

/** Who a parent's group of rows is, for the commit's result. */
function parentOf(group: ImportRow[]): Pick<ImportedParent, 'email' | 'parentName' | 'lines'> {
  const first = group[0] as ImportRow;
  return { email: parentKey(first), parentName: parentNameOf(first), lines: group.map((r) => r.line) };
}

/** The children of a parent's group of rows, as a request holds them. */
const childrenOfGroup = (group: ImportRow[]) =>
  group.map((r) => ({
    firstName: r.values.childFirstName,
    lastName: r.values.childLastName,
    tutorGroup: r.values.tutorGroup,
    pupilIdentifier: r.values.pupilIdentifier || null,
  }));

const approvedMessage = (requestId: number, children: number) =>
  `Request ${requestId} created and approved with ${children === 1 ? 'its child' : `${children} children`}.`;

const parentNameOf = (row: ImportRow) => [row.values.parentTitle, row.values.parentFirstName, row.values.parentLastName].filter((p) => p).join(' ');

/** Runs fn over the items, `limit` at a time; after a failure no further item is started. */
async function eachWithConcurrency<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < items.length && !failed) {
      try {
        await fn(items[next++] as T);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Answers "who has this pupil identifier" from one batched look-up made up front, and anything
 * else from Moodle, so findPupilCandidates keeps its rules and a file of 2,000 children does not
 * cost 2,000 calls. An identifier Moodle matched only in other letter case is asked again as usual.
 */
class PrefetchedIdentifiers implements PupilLookupClient {
  private readonly byIdentifier = new Map<string, MoodleUser[]>();

  constructor(private readonly client: PupilLookupClient) {}

  async prefetch(identifiers: string[]): Promise<void> {
    if (identifiers.length === 0) return;
    const users = await this.client.getUsersByField('idnumber', identifiers);
    const wanted = new Set(identifiers);
    for (const user of users) {
      if (!wanted.has(user.idnumber)) continue;
      this.byIdentifier.set(user.idnumber, [...(this.byIdentifier.get(user.idnumber) ?? []), user]);
    }
    // Nobody has it, not even in other letter case (which some Moodle databases match): none.
    const answered = new Set(users.map((u) => u.idnumber.toLowerCase()));
    for (const identifier of wanted) if (!answered.has(identifier.toLowerCase())) this.byIdentifier.set(identifier, []);
  }

  getUsersByField(...args: Parameters<PupilLookupClient['getUsersByField']>): ReturnType<PupilLookupClient['getUsersByField']> {
    const [field, values] = args;
    const only = values.length === 1 ? String(values[0]) : undefined;
    if (field === 'idnumber' && only !== undefined && this.byIdentifier.has(only)) return Promise.resolve(this.byIdentifier.get(only) ?? []);
    return this.client.getUsersByField(field, values);
  }

  getUsers(...args: Parameters<PupilLookupClient['getUsers']>): ReturnType<PupilLookupClient['getUsers']> {
    return this.client.getUsers(...args);
  }
}

/**
 * Each row with its parent's number in the commit: the parents whose rows all can be imported,
 * numbered in the order they first appear in the file (a parent's rows may be anywhere in it).
 */
function numberParents(rows: readonly ImportRow[]): ImportRowToStore[] {
  const numbers = new Map<string, number>();
  return rows.map((row) => {
    if (row.problems.length > 0 || row.pupil === null) return { row, parentNumber: null };
    const key = parentKey(row);
    let number = numbers.get(key);
    if (number === undefined) {
      number = numbers.size;
      numbers.set(key, number);
    }
    return { row, parentNumber: number };
  });
}

function matchProblem(match: PupilMatch, row: ImportRow): string {
  const identifier = row.values.pupilIdentifier;
  const child = `${row.values.childFirstName} ${row.values.childLastName}`;
  if (match.kind === 'ambiguous') {
    const who = match.candidates
      .slice(0, 5)
      .map((c) => `${c.fullname}${c.department ? `, ${c.department}` : ''}${c.idnumber ? `, ${c.idnumber}` : ''}`)
      .join('; ');
    return `More than one pupil in Moodle could be ${child}: ${who}.${match.note ? ` ${match.note}` : ''} Give the pupil identifier that Moodle has for this child.`;
  }
  if (identifier !== '') return `No pupil in Moodle has the pupil identifier ${identifier}, and no single pupil there is called ${child} in tutor group ${row.values.tutorGroup}.`;
  return `No pupil called ${child} in tutor group ${row.values.tutorGroup} was found in Moodle. Give the pupil identifier that Moodle has for this child.`;
}

export class ImportService {
  private readonly batches = new ImportBatchRepository();
  private readonly now: () => number;

  constructor(private readonly deps: ImportDependencies) {
    this.now = deps.now ?? Date.now;
  }

  get(publicId: string): Promise<ImportBatchRecord | undefined> {
    return this.batches.findByPublicId(this.deps.db, publicId);
  }

  /** The rows of a batch's page (numbered from 1), in the order of the file. */
  rowsPage(batch: ImportBatchSummary, page: number): Promise<ImportRow[]> {
    return this.batches.rowsPage(this.deps.db, batch.id, (page - 1) * ROWS_PER_PAGE, ROWS_PER_PAGE);
  }

  /** How many parents committing the batch imports (those whose rows all can be imported). */
  parentCount(batch: ImportBatchSummary): Promise<number> {
    return this.batches.parentCount(this.deps.db, batch.id);
  }

  recent(limit = 10): Promise<ImportBatchSummary[]> {
    return this.batches.recent(this.deps.db, limit);
  }

  /** Reads and checks the file and keeps the result as a batch to commit; writes nothing else. */
  async preview(file: { buffer: Buffer; name: string }, staff: StaffIdentity): Promise<PreviewOutcome> {
    const read = readImportFile(file.buffer);
    if (!read.ok) return read;
    const { rows } = read;
    checkRows(rows, this.deps.maxChildren);
    await this.checkExistingRequests(rows);
    const moodleProblem = await this.matchPupils(rows);
    if (moodleProblem) return { ok: false, problem: moodleProblem };
    holdBackIncompleteParents(rows);

    const now = this.now();
    const publicId = newPublicId();
    const validRowCount = rows.filter((r) => r.problems.length === 0).length;
    await this.batches.deletePreviewsOlderThan(this.deps.db, now - PREVIEW_VALID_MS);
    const toStore = numberParents(rows);
    const batch = await this.deps.db.transaction((trx) =>
      this.batches.insert(trx, { publicId, fileName: file.name, createdBy: staff.username, createdAt: now, rows: toStore, validRowCount }),
    );
    this.deps.logger.info({ batch: publicId, rows: rows.length, validRows: validRowCount, by: staff.username }, 'import previewed');
    return { ok: true, batch };
  }

  private async checkExistingRequests(rows: ImportRow[]): Promise<void> {
    const emails = [...new Set(rows.map(parentKey).filter((e) => e !== ''))];
    const existing = await this.deps.requestRepository.requestsByEmail(this.deps.db, emails, BLOCKING_STATUSES);
    for (const row of rows) {
      const request = existing.get(parentKey(row));
      if (request) {
        row.problems.push(
          `This parent already has request ${request.id} (“${STATUS_LABELS[request.status].toLowerCase()}”). Deal with it on its own page instead of importing.`,
        );
      }
    }
  }

  /** Finds each child's Moodle pupil. Returns a problem for the whole file when Moodle fails. */
  private async matchPupils(rows: ImportRow[]): Promise<string | null> {
    const toMatch = rows.filter((r) => r.problems.length === 0);
    if (toMatch.length === 0) return null;
    if (!this.deps.moodle) {
      for (const row of toMatch) row.problems.push('Moodle is not set up for this service, so this child’s pupil account could not be found.');
      return null;
    }
    try {
      for (let first = 0; first < toMatch.length; first += MATCH_CHUNK) await this.matchChunk(this.deps.moodle, toMatch.slice(first, first + MATCH_CHUNK));
    } catch (error) {
      if (!(error instanceof MoodleError)) throw error;
      this.deps.logger.warn({ err: error }, 'Moodle look-up failed during an import preview');
      return `Moodle could not be asked about the pupils, so nothing was checked or saved: ${error.message} Try again when Moodle is reachable.`;
    }
    // Two children of one parent cannot be the same pupil.
    for (const group of groupByParent(rows)) {
      const seen = new Map<number, number>();
      for (const row of group) {
        if (!row.pupil || row.problems.length > 0) continue;
        const earlier = seen.get(row.pupil.id);
        if (earlier !== undefined) row.problems.push(`This child was matched to the same Moodle pupil (${row.pupil.name}) as line ${earlier}.`);
        else seen.set(row.pupil.id, row.line);
      }
    }
    return null;
  }

  /** Finds the pupils of one chunk of rows; the chunk's Moodle accounts go when it is done. */
  private async matchChunk(moodle: PupilLookupClient, rows: ImportRow[]): Promise<void> {
    const lookups = new PrefetchedIdentifiers(moodle);
    await lookups.prefetch([...new Set(rows.map((r) => r.values.pupilIdentifier).filter((id) => id !== ''))]);
    await eachWithConcurrency(rows, LOOKUP_CONCURRENCY, async (row) => {
      const v = row.values;
      const match = await findPupilCandidates(lookups, {
        firstName: v.childFirstName,
        lastName: v.childLastName,
        tutorGroup: v.tutorGroup,
        pupilIdentifier: v.pupilIdentifier || null,
      });
      const pupil = match.candidates[0];
      if (match.kind !== 'exact' || !pupil || match.matchedBy === 'none') {
        row.problems.push(matchProblem(match, row));
        return;
      }
      row.pupil = { id: pupil.id, name: pupil.fullname, tutorGroup: pupil.department, identifier: pupil.idnumber, matchedBy: match.matchedBy };
    });
  }

  /**
   * Creates and approves each parent's request, once: the batch is claimed first (a second commit
   * is refused), each request carries an idempotency key of batch and parent (a commit cut short
   * and run again finds what it already made), and the batch's audit event says who and how many.
   */
  async commit(publicId: string, staff: StaffIdentity): Promise<CommitOutcome> {
    const now = this.now();
    const batch = await this.batches.findByPublicId(this.deps.db, publicId);
    if (!batch) return { ok: false, reason: 'not_found', message: 'There is no such import. Upload the file again.' };
    if (batch.state === 'committed') {
      return { ok: false, reason: 'committed', message: 'This import has already been committed, so nothing more was done.', batch };
    }
    if (batch.state === 'previewed' && batch.createdAt < now - PREVIEW_VALID_MS) {
      return { ok: false, reason: 'expired', message: 'This preview is more than a day old, and Moodle or the requests may have changed since. Upload the file again.', batch };
    }
    const parentCount = await this.batches.parentCount(this.deps.db, batch.id);
    if (parentCount === 0) {
      return { ok: false, reason: 'nothing_valid', message: 'No row of this file can be imported. Put the problems right and upload the file again.', batch };
    }
    if (!(await this.batches.claimForCommit(this.deps.db, publicId, staff.username, now, now - COMMIT_STALE_MS))) {
      const current = await this.batches.findByPublicId(this.deps.db, publicId);
      return current?.state === 'committed'
        ? { ok: false, reason: 'committed', message: 'This import has already been committed, so nothing more was done.', batch: current }
        : { ok: false, reason: 'in_progress', message: 'This import is being committed right now (perhaps in another window). Wait a minute and reload this page.', batch: current ?? batch };
    }

    const actor: Actor = { type: 'staff', id: staff.username };
    const parents: ImportedParent[] = [];
    // A chunk of parents read, committed and let go at a time: the batch's rows are never all in memory.
    for (let first = 0; first < parentCount; first += COMMIT_CHUNK) {
      parents.push(...(await this.commitChunk(batch, await this.batches.parentsToImport(this.deps.db, batch.id, first, COMMIT_CHUNK), actor)));
    }
    const result: ImportResult = {
      parents,
      approved: parents.filter((p) => p.outcome === 'approved').length,
      leftPending: parents.filter((p) => p.outcome === 'left_pending').length,
      skipped: parents.filter((p) => p.outcome === 'skipped').length,
    };
    await this.deps.db.transaction(async (trx) => {
      await this.batches.markCommitted(trx, publicId, result, this.now());
      await this.deps.requestRepository.insertAudit(trx, this.now(), [
        {
          actorType: actor.type,
          actorId: actor.id ?? null,
          requestId: null,
          action: 'import_committed',
          details: {
            batch: publicId,
            fileName: batch.fileName,
            rows: batch.rowCount,
            rowsWithProblems: batch.rowCount - batch.validRowCount,
            requestsApproved: result.approved,
            requestsLeftPending: result.leftPending,
            parentsSkipped: result.skipped,
            requestIds: parents.map((p) => p.requestId).filter((id) => id !== null),
          },
        },
      ]);
    });
    this.deps.logger.info({ batch: publicId, by: staff.username, approved: result.approved, leftPending: result.leftPending, skipped: result.skipped }, 'import committed');
    return { ok: true, batch: (await this.batches.findByPublicId(this.deps.db, publicId)) as ImportBatchRecord };
  }

  /**
   * Up to COMMIT_CHUNK parents, created and approved together in one transaction; a parent the
   * set-based path leaves aside, or every parent of the chunk when its transaction fails (a form
   * submitted for one of the addresses meanwhile), goes through commitParent, one at a time.
   */
  private async commitChunk(batch: ImportBatchRecord, chunk: ParentToImport[], actor: Actor): Promise<ImportedParent[]> {
    const items: ApprovedImportInput[] = chunk.map(({ number, rows: group }) => {
      const first = group[0] as ImportRow;
      return {
        idempotencyKey: importKey(batch, number),
        importBatchId: batch.publicId,
        parentTitle: first.values.parentTitle,
        parentFirstName: first.values.parentFirstName,
        parentLastName: first.values.parentLastName,
        email: parentKey(first),
        children: childrenOfGroup(group).map((child, i) => Object.assign(child, { moodleUserId: group[i]?.pupil?.id ?? 0 })),
      };
    });
    let results: ApprovedImportResult[];
    try {
      results = await this.deps.lifecycle.importApprovedRequests(items, actor);
    } catch (error) {
      this.deps.logger.warn({ err: error, batch: batch.publicId, parents: chunk.length }, 'import chunk refused as a whole; committing its parents one at a time');
      results = items.map(() => ({ outcome: 'one_by_one' }));
    }
    const parents: ImportedParent[] = [];
    for (const [offset, { number, rows: group }] of chunk.entries()) {
      const result = results[offset];
      if (result?.outcome === 'approved') {
        const { request, children } = result;
        parents.push({ ...parentOf(group), outcome: 'approved', requestId: request.id, message: approvedMessage(request.id, children.length) });
      } else {
        parents.push(await this.commitParent(batch, number, group, actor));
      }
    }
    return parents;
  }

  private async commitParent(batch: ImportBatchRecord, parentNumber: number, group: ImportRow[], actor: Actor): Promise<ImportedParent> {
    const first = group[0] as ImportRow;
    const base = parentOf(group);
    const email = base.email;
    const idempotencyKey = importKey(batch, parentNumber);
    let requestId: number | null = null;
    try {
      // A commit cut short and run again finds the request it made; otherwise a request made for
      // this parent since the preview (through the form, say) means this one is not imported.
      const earlier = await this.deps.requestRepository.findByIdempotencyKey(this.deps.db, idempotencyKey);
      if (!earlier) {
        const other = (await this.deps.requestRepository.requestsByEmail(this.deps.db, [email], BLOCKING_STATUSES)).get(email);
        if (other) {
          return { ...base, outcome: 'skipped', requestId: null, message: `Not imported: since the preview, this parent has got request ${other.id} (“${STATUS_LABELS[other.status].toLowerCase()}”).` };
        }
      }
      const submitted = await this.deps.lifecycle.submitRequest(
        {
          requestType: 'new_account',
          parentTitle: first.values.parentTitle,
          parentFirstName: first.values.parentFirstName,
          parentLastName: first.values.parentLastName,
          email,
          children: childrenOfGroup(group),
          source: 'import',
          requireVerification: false,
          importBatchId: batch.publicId,
          idempotencyKey,
          joinOpenRequest: false,
        },
        actor,
      );
      requestId = submitted.request.id;
      const status = submitted.request.status;
      if (status !== 'pending') {
        const message = `Request ${requestId} was made by an earlier run of this commit; it is “${STATUS_LABELS[status].toLowerCase()}”.`;
        return { ...base, outcome: status === 'approved' || status === 'provisioned' ? 'approved' : 'skipped', requestId, message };
      }
      const children = submitted.children;
      const approved = await this.deps.lifecycle.approveRequest(
        requestId,
        {
          expectedVersion: submitted.request.version,
          children: children.map((c, i) => ({ childId: c.id, moodleUserId: group[i]?.pupil?.id ?? null })),
        },
        actor,
      );
      return { ...base, outcome: 'approved', requestId: approved.id, message: approvedMessage(approved.id, children.length) };
    } catch (error) {
      if (!(error instanceof AppError)) {
        this.deps.logger.error({ err: error, batch: batch.publicId, requestId }, 'import commit failed for one parent');
      }
      const why = error instanceof AppError ? error.message : 'Something went wrong on our side.';
      if (requestId !== null) return { ...base, outcome: 'left_pending', requestId, message: `Request ${requestId} was created but not approved: ${why} It is waiting for review.` };
      return { ...base, outcome: 'skipped', requestId: null, message: `Not imported: ${why}` };
    }
  }
}
