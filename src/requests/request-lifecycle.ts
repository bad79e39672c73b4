// The request lifecycle: the only code that changes a request's status. Each transition is
// guarded, runs in one transaction with its audit event, and uses optimistic locking so a
// provisioning cycle can never overwrite a staff decision made meanwhile. The auth table is
// kept in step here: it holds exactly the parents of approved and provisioned requests.
import { createHash, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { COLUMN_WIDTHS, fitsTextColumn, isIntId, MAX_INT_ID, MAX_STAFF_TEXT } from '../db/columns';
import type { Database } from '../db/database';
import { isUniqueViolation } from '../db/database';
import { AppError, ConflictError, NotFoundError, ValidationError } from '../errors';
import {
  ALLOWED_FROM,
  isAllowed,
  OPEN_STATUSES,
  refusalMessage,
  type LifecycleAction,
  type RequestSource,
  type RequestStatus,
  type RequestType,
} from './request-states';
import {
  RequestRepository,
  type AuditEventInput,
  type AuthRow,
  type ChildRecord,
  type HeldDetailsRecord,
  type NewChildRow,
  type RequestRecord,
  type RowPatch,
} from './request-repository';
import { usernameFromEmail } from './username';

export type ActorType = 'parent' | 'staff' | 'system' | 'cycle' | 'reconcile' | 'api' | 'cli' | 'import';
export interface Actor {
  type: ActorType;
  /** Staff username, cycle id, API key name…; null for a parent or the system. */
  id?: string | null;
}

export interface LifecycleEvent {
  type: string;
  request: RequestRecord;
  children: ChildRecord[];
  actor: Actor;
  details: Record<string, unknown>;
}

/** Called inside the transition's transaction (e.g. to queue mail in the same commit). */
export type LifecycleListener = ((trx: Knex.Transaction, event: LifecycleEvent) => Promise<void>) & {
  /** Optional: takes many events of one transaction at once, with set statements (a cycle's outcomes). */
  many?: (trx: Knex.Transaction, events: LifecycleEvent[]) => Promise<void>;
};

export interface SubmitInput {
  requestType: RequestType;
  parentTitle: string;
  parentFirstName: string;
  parentLastName: string;
  email: string;
  comment?: string | null;
  children: NewChildRow[];
  source: RequestSource;
  /** When false the request starts pending (verification switched off, or a trusted import). */
  requireVerification: boolean;
  verificationTokenHash?: string | null;
  verificationExpiresAt?: number | null;
  /** The raw token, handed to listeners (to mail the link) and never stored. */
  verificationToken?: string | null;
  submitterIp?: string | null;
  submitterAgent?: string | null;
  idempotencyKey?: string | null;
  importBatchId?: string | null;
  /**
   * Hold the submission for an open request for the same email instead of opening a second one
   * (default true). With false, an open request for the address refuses the submission.
   */
  joinOpenRequest?: boolean;
  /**
   * The single-use link that adds a held submission to the open request: the raw token (mailed,
   * never stored) and when it runs out. Needed whenever the submission may join an open request.
   */
  heldDetails?: { token: string; expiresAt: number } | null;
  /**
   * Runs last in the submission's transaction, once it is not a replay: the intake counts its
   * rate limits here, so that the counts and the stored request commit (or roll back) together.
   * Last, because every submission from one address updates the same counter row, whose lock is
   * held until the commit: counted first, the submissions from a school's network would wait for
   * each other's whole transaction instead of only its commit.
   */
  countAttempts?: (trx: Knex.Transaction) => Promise<void>;
}

export interface SubmitResult {
  /** 'extended': joined the address's open request (held until confirmed when held is true). */
  outcome: 'created' | 'extended' | 'replayed';
  request: RequestRecord;
  children: ChildRecord[];
  /** Children of the submission that were added (on 'extended', only those not already there). */
  addedChildren: number;
  /** The submission was kept aside until the link mailed to the address is opened. */
  held: boolean;
}

export interface ChildMatch {
  childId: number;
  /** The Moodle user id of the pupil, or null when staff found no account for this child. */
  moodleUserId: number | null;
}

export interface ApproveInput {
  expectedVersion?: number;
  children: ChildMatch[];
  /** Link to an account that already exists in Moodle (not an auth_db user): no auth row. */
  existingAccount?: { moodleUserId: number; username?: string | null };
  comment?: string | null;
  /** What the approval rests on, in words, kept in its audit event (the school records' evidence). */
  evidence?: string[];
}

export interface DecisionInput {
  expectedVersion?: number;
  reason?: string | null;
}

export interface ProvisioningOutcome {
  requestId: number;
  expectedVersion: number;
  /** The parent's Moodle user id, once found. */
  parentMoodleUserId?: number | null;
  /** Set when the parent's account is not in Moodle yet. */
  waiting?: { message: string } | null;
  linkedChildIds?: number[];
  failedChildren?: Array<{ childId: number; error: string }>;
  /** Problems not tied to one child (an extra context, a conflicting account): not provisioned yet. */
  requestErrors?: string[];
  /** When to try the failed children again. */
  nextAttemptAt?: number | null;
}

export interface OutcomeResult {
  requestId: number;
  applied: boolean;
  status: RequestStatus | null;
  /** Why an outcome was not applied (stale version, request no longer approved). */
  refusal?: string;
}

/** A child of a request decided elsewhere, with what is known of its Moodle pupil account. */
export interface ImportedChildInput extends NewChildRow {
  moodleUserId: number | null;
  /** 'linked' only on a provisioned request, 'matched' only on an approved one; 'unmatched' leaves the pupil for staff to pick. */
  linkState: 'unmatched' | 'matched' | 'linked';
  /** Shown to staff beside the child (why a pupil must be picked). */
  note: string | null;
}

/** A parent of a staff CSV import: a new request, approved at once with every child's pupil as the preview matched it. */
export interface ApprovedImportInput {
  /** Batch and parent: a commit run again finds what it made. */
  idempotencyKey: string;
  importBatchId: string;
  parentTitle: string;
  parentFirstName: string;
  parentLastName: string;
  email: string;
  children: Array<NewChildRow & { moodleUserId: number }>;
}

/**
 * approved: created and approved here. one_by_one: not done here, because something needs the
 * single-request path and its own wording (a request with this key exists already, the address
 * has an open request, the Moodle username cannot be made or is taken, a child's match is not valid).
 */
export type ApprovedImportResult = { outcome: 'approved'; request: RequestRecord; children: ChildRecord[] } | { outcome: 'one_by_one' };

/** A request carried over from the old WordPress plugin, already decided there. */
export interface ExistingRequestInput {
  /** The plugin's own request id; null for a row of its auth table that had no request. */
  wpRequestId: number | null;
  status: RequestStatus;
  requestType: RequestType;
  parentTitle: string;
  parentFirstName: string;
  parentLastName: string;
  email: string;
  parentComment: string | null;
  staffComment: string | null;
  decisionReason: string | null;
  createdAt: number;
  decidedAt: number | null;
  children: ImportedChildInput[];
  /** The plugin's auth row, carried over as it was (username exactly as written): approved and provisioned only. */
  authRow: { username: string; firstname: string; lastname: string; email: string } | null;
  /** Where it came from, for the audit event (the plugin's status, its auth row id, …). */
  details: Record<string, unknown>;
}

export interface ExistingRequestResult {
  wpRequestId: number | null;
  username: string | null;
  /** already_imported: the plugin request, or the auth username, is here already (a second run). */
  outcome: 'imported' | 'already_imported';
  requestId: number | null;
  status: RequestStatus | null;
  /** Set when the request was imported otherwise than asked (an open request for the address already existed). */
  note?: string;
}

/** The audit action of a request imported from the WordPress plugin. */
export const IMPORTED_FROM_WORDPRESS = 'imported_from_wordpress_plugin';

export interface LifecycleOptions {
  now?: () => number;
  listeners?: LifecycleListener[];
}

const STALE_MESSAGE =
  'This request was changed by someone else (or by a provisioning cycle) since it was loaded. Reload it and try again.';

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function newPublicId(): string {
  return randomBytes(16).toString('base64url');
}

/** Outcome rows changed under the recording transaction: it is rolled back and run again. */
class ChangedDuringRecording extends Error {
  constructor() {
    super('A request changed while provisioning outcomes were being recorded.');
  }
}

/** unverified → pending: the address is proven, and its confirmation link stops working. */
function emailVerifiedPatch(now: number): Partial<RequestRecord> {
  // The hash stays, so a link used a second time (by the parent, or by a mail scanner that
  // fetched it first) is recognised and answered "already confirmed" instead of "not valid".
  return { status: 'pending', verifiedAt: now, verificationExpiresAt: null };
}

/** A new request's row: nothing decided, nothing tried yet, version 1; each caller gives what it knows. */
function newRequestRecord(
  fields: Pick<RequestRecord, 'status' | 'requestType' | 'source' | 'parentTitle' | 'parentFirstName' | 'parentLastName' | 'email' | 'createdAt' | 'updatedAt'> &
    Partial<Omit<RequestRecord, 'id' | 'publicId' | 'version'>>,
): Omit<RequestRecord, 'id'> {
  return {
    publicId: newPublicId(),
    parentComment: null,
    staffComment: null,
    moodleUsername: null,
    moodleUserId: null,
    linkExistingAccount: false,
    verificationTokenHash: null,
    verificationExpiresAt: null,
    verifiedAt: null,
    decidedAt: null,
    decidedBy: null,
    decisionReason: null,
    provisionedAt: null,
    attempts: 0,
    lastError: null,
    nextAttemptAt: null,
    waitingSince: null,
    version: 1,
    submitterIp: null,
    submitterAgent: null,
    idempotencyKey: null,
    importBatchId: null,
    erasedAt: null,
    ...fields,
  };
}

function actorLabel(actor: Actor): string {
  return actor.id ? `${actor.type}:${actor.id}` : actor.type;
}

const MOODLE_ID_RANGE = `a whole number from 1 to ${MAX_INT_ID.toLocaleString('en-GB')}`;

/** A reason or staff comment must fit its column: refused, in words, rather than failing on MariaDB. */
function checkStaffText(text: string | null | undefined, field: 'reason' | 'comment'): void {
  if (text && text.length > MAX_STAFF_TEXT) {
    const message = `The ${field} must be ${MAX_STAFF_TEXT.toLocaleString('en-GB')} characters or fewer (it has ${text.length.toLocaleString('en-GB')}).`;
    throw new ValidationError(message, [{ field, message }]);
  }
}

/** Staff comments pile up on a request: the whole must still fit its TEXT column. */
function appendStaffComment(existing: string | null, comment: string): string {
  const combined = existing ? `${existing}\n\n${comment}` : comment;
  if (!fitsTextColumn(combined)) {
    const message = 'There is no room for more comments on this request. Shorten this comment, or keep the notes elsewhere.';
    throw new ValidationError(message, [{ field: 'comment', message }]);
  }
  return combined;
}

function nameKey(first: string, last: string): string {
  return `${first.trim().toLowerCase()}\u0000${last.trim().toLowerCase()}`;
}

export class RequestLifecycle {
  private readonly now: () => number;
  private readonly listeners: LifecycleListener[];

  constructor(
    private readonly db: Database,
    readonly repository: RequestRepository,
    options: LifecycleOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.listeners = [...(options.listeners ?? [])];
  }

  addListener(listener: LifecycleListener): void {
    this.listeners.push(listener);
  }

  // ---------------------------------------------------------------- reads

  async get(id: number): Promise<{ request: RequestRecord; children: ChildRecord[] }> {
    const request = await this.repository.findById(this.db, id);
    if (!request) throw new NotFoundError(`There is no request number ${id}.`);
    return { request, children: await this.repository.children(this.db, id) };
  }

  // ---------------------------------------------------------------- parent actions

  /**
   * Stores a new request, or holds the submission for the address's open request, or replays an
   * idempotent retry. A submission never changes an existing request by itself: what it adds is
   * held until the single-use link mailed to the address is opened (confirmHeldDetails).
   *
   * The database allows one open request per address (open_email), so of two submissions for
   * one address at the same moment one inserts and the other fails on that index; it then runs
   * again, finds the request the first one opened, and is held for it.
   */
  async submitRequest(input: SubmitInput, actor: Actor): Promise<SubmitResult> {
    if (input.children.length === 0) throw new ValidationError('Add at least one child.', [{ field: 'children', message: 'Add at least one child.' }]);
    const email = input.email.trim().toLowerCase();
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.transaction((trx) => this.submitOnce(trx, input, email, actor));
      } catch (error) {
        const code = (error as { code?: string }).code;
        const raced =
          isUniqueViolation(error) || code === 'ER_LOCK_DEADLOCK' || code === 'ER_LOCK_WAIT_TIMEOUT' || (error instanceof ConflictError && error.code === 'stale');
        if (raced && attempt < 8) continue;
        if (isUniqueViolation(error) && input.joinOpenRequest === false) throw this.openRequestExists(email);
        throw error;
      }
    }
  }

  private async submitOnce(trx: Knex.Transaction, input: SubmitInput, email: string, actor: Actor): Promise<SubmitResult> {
    const now = this.now();
    if (input.idempotencyKey) {
      const earlier = await this.findReplay(trx, input.idempotencyKey);
      if (earlier) {
        return { outcome: 'replayed', request: earlier, children: await this.repository.children(trx, earlier.id), addedChildren: 0, held: false };
      }
    }
    const result = await this.storeSubmission(trx, input, email, actor, now);
    await input.countAttempts?.(trx);
    return result;
  }

  /** A new request, or the details held for the address's open request. */
  private async storeSubmission(trx: Knex.Transaction, input: SubmitInput, email: string, actor: Actor, now: number): Promise<SubmitResult> {
    const open = await this.repository.findOpenByEmail(trx, email);
    if (open) {
      if (input.joinOpenRequest === false) throw this.openRequestExists(email);
      // Locked and read again: a locking read sees what another submission committed meanwhile.
      const locked = await this.repository.findById(trx, open.id, { forUpdate: true });
      if (!locked || !isAllowed('extend', locked.status)) throw new ConflictError(STALE_MESSAGE, 'stale');
      return this.holdDetails(trx, locked, input, actor, now);
    }
    const status: RequestStatus = input.requireVerification ? 'unverified' : 'pending';
    const record = newRequestRecord({
      status,
      requestType: input.requestType,
      source: input.source,
      parentTitle: input.parentTitle.trim(),
      parentFirstName: input.parentFirstName.trim(),
      parentLastName: input.parentLastName.trim(),
      email,
      parentComment: input.comment?.trim() || null,
      verificationTokenHash: input.requireVerification ? (input.verificationTokenHash ?? null) : null,
      verificationExpiresAt: input.requireVerification ? (input.verificationExpiresAt ?? null) : null,
      submitterIp: input.submitterIp ?? null,
      submitterAgent: input.submitterAgent ? input.submitterAgent.slice(0, 255) : null,
      idempotencyKey: input.idempotencyKey ?? null,
      importBatchId: input.importBatchId ?? null,
      createdAt: now,
      updatedAt: now,
    });
    const id = await this.repository.insertRequest(trx, record);
    const children = await this.repository.insertChildrenReturning(trx, id, input.children, now);
    const request = { ...record, id };
    await this.audit(trx, now, actor, id, 'submitted', {
      status,
      source: input.source,
      requestType: input.requestType,
      children: children.length,
    });
    await this.emit(trx, {
      type: 'submitted',
      request,
      children,
      actor,
      details: { status, ...(input.verificationToken ? { verificationToken: input.verificationToken } : {}) },
    });
    return { outcome: 'created', request, children, addedChildren: children.length, held: false };
  }

  private openRequestExists(email: string): ConflictError {
    return new ConflictError(
      `There is already an open request for ${email}, so no second one was made. Deal with that request first.`,
      'open_request_exists',
    );
  }

  /** A request by its idempotency key, or the request that details held under that key are for. */
  async findByIdempotencyKey(key: string): Promise<RequestRecord | undefined> {
    return this.findReplay(this.db, key);
  }

  private async findReplay(q: Knex | Knex.Transaction, key: string): Promise<RequestRecord | undefined> {
    const request = await this.repository.findByIdempotencyKey(q, key);
    if (request) return request;
    const held = await this.repository.findHeldDetailsByIdempotencyKey(q, key);
    return held ? this.repository.findById(q, held.requestId) : undefined;
  }

  /**
   * Keeps what a submission adds to an open request aside, and mails the address a single-use
   * link to add it. Anyone can type an address into the form; only its owner can open the link.
   */
  private async holdDetails(trx: Knex.Transaction, request: RequestRecord, input: SubmitInput, actor: Actor, now: number): Promise<SubmitResult> {
    const link = input.heldDetails;
    if (!link) throw new Error('A submission for an address with an open request needs a link to confirm it (heldDetails).');
    await this.repository.deleteExpiredHeldDetails(trx, now);
    const comment = input.comment?.trim() || null;
    await this.repository.insertHeldDetails(trx, {
      requestId: request.id,
      tokenHash: hashToken(link.token),
      expiresAt: link.expiresAt,
      children: input.children.map((c) => ({ firstName: c.firstName, lastName: c.lastName, tutorGroup: c.tutorGroup, pupilIdentifier: c.pupilIdentifier })),
      comment,
      source: input.source,
      actorType: actor.type,
      actorId: actor.id ?? null,
      submitterIp: input.submitterIp ?? null,
      submitterAgent: input.submitterAgent ? input.submitterAgent.slice(0, 255) : null,
      idempotencyKey: input.idempotencyKey ?? null,
      createdAt: now,
    });
    const children = await this.repository.children(trx, request.id);
    const details = { children: input.children.length, commentAdded: comment !== null, source: input.source };
    await this.audit(trx, now, actor, request.id, 'details_held', details);
    await this.emit(trx, {
      type: 'details_held',
      request,
      children,
      actor,
      details: { ...details, heldDetailsToken: link.token, heldDetailsExpiresAt: link.expiresAt },
    });
    return { outcome: 'extended', request, children, addedChildren: 0, held: true };
  }

  /** Held details by the hash of their link, for the page that asks to confirm them. */
  async findHeldDetails(tokenHash: string): Promise<HeldDetailsRecord | undefined> {
    return this.repository.findHeldDetailsByTokenHash(this.db, tokenHash);
  }

  /**
   * The link mailed for held details was opened: adds them to the request (the same merge as
   * ever: children not already named, the comment appended) and drops them, so the link works
   * once. Opening it proves the address, so an unconfirmed request is confirmed by it too.
   */
  async confirmHeldDetails(
    tokenHash: string,
    limits: { maxChildren: number; maxCommentLength: number },
    actor: Actor = { type: 'parent' },
  ): Promise<{ request: RequestRecord; addedChildren: number }> {
    return this.transaction(async (trx) => {
      const now = this.now();
      const held = await this.repository.findHeldDetailsByTokenHash(trx, tokenHash, { forUpdate: true });
      if (!held) {
        throw new NotFoundError('This link is not valid, or it has already been used.', {
          help: 'If you have already added these details, there is nothing more to do.',
        });
      }
      if (held.expiresAt < now) throw new ConflictError('This link has expired.', 'expired');
      let request = await this.lockForAction(trx, held.requestId, 'extend', undefined);
      await this.repository.deleteHeldDetails(trx, held.id);
      if (request.status === 'unverified') request = await this.applyTransition(trx, request, actor, 'email_verified', emailVerifiedPatch(now));
      return this.extendOpenRequest(trx, request, { children: held.children, comment: held.comment, source: held.source, limits }, actor, now);
    });
  }

  /** Adds confirmed details to an open request: children not already named, the comment appended. */
  private async extendOpenRequest(
    trx: Knex.Transaction,
    existing: RequestRecord,
    input: { children: NewChildRow[]; comment: string | null; source: RequestSource; limits: { maxChildren: number; maxCommentLength: number } },
    actor: Actor,
    now: number,
  ): Promise<{ request: RequestRecord; addedChildren: number }> {
    const current = await this.repository.children(trx, existing.id);
    const known = new Set(current.map((c) => nameKey(c.firstName, c.lastName)));
    const added: NewChildRow[] = [];
    for (const child of input.children) {
      const key = nameKey(child.firstName, child.lastName);
      if (!known.has(key)) {
        known.add(key);
        added.push(child);
      }
    }
    const comment = input.comment?.trim();
    const parentComment = comment
      ? existing.parentComment
        ? `${existing.parentComment}\n\n${comment}`
        : comment
      : existing.parentComment;
    if (current.length + added.length > input.limits.maxChildren) {
      const message = `You can add up to ${input.limits.maxChildren} children on one request, and your request in progress already names some of them. Tell us about any others in the comment box.`;
      throw new ValidationError(message, [{ field: 'children', message }]);
    }
    if ((parentComment?.length ?? 0) > input.limits.maxCommentLength) {
      const room = Math.max(0, input.limits.maxCommentLength - (existing.parentComment?.length ?? 0) - 2);
      const message = `Your request in progress already has a comment. Shorten this one to ${room} characters or fewer, or contact the school office.`;
      throw new ValidationError(message, [{ field: 'comment', message }]);
    }
    const ok = await this.repository.updateIfVersion(trx, existing.id, existing.version, { parentComment, updatedAt: now });
    if (!ok) throw new ConflictError(STALE_MESSAGE, 'stale');
    const first = (await this.repository.maxChildPosition(trx, existing.id)) + 1;
    await this.repository.insertChildren(trx, existing.id, added, first, now);
    const request = (await this.repository.findById(trx, existing.id)) as RequestRecord;
    const children = await this.repository.children(trx, existing.id);
    await this.audit(trx, now, actor, existing.id, 'extended', {
      addedChildren: added.length,
      commentAdded: Boolean(comment),
      source: input.source,
    });
    await this.emit(trx, { type: 'extended', request, children, actor, details: { addedChildren: added.length } });
    return { request, addedChildren: added.length };
  }

  /** Follows a verification link: unverified → pending. The link works once and expires; used again, it is refused as already_verified. */
  async verifyEmail(tokenHash: string, actor: Actor = { type: 'parent' }): Promise<RequestRecord> {
    return this.transaction(async (trx) => {
      const now = this.now();
      const found = await this.repository.findByVerificationHash(trx, tokenHash);
      if (!found) {
        throw new NotFoundError('This confirmation link is not valid, or it has already been used.', {
          help: 'If you have already confirmed your address, there is nothing more to do. Otherwise ask for a new link.',
        });
      }
      if (found.verifiedAt !== null) throw new ConflictError('This email address is already confirmed.', 'already_verified');
      if (found.verificationExpiresAt !== null && found.verificationExpiresAt < now) {
        throw new ConflictError('This confirmation link has expired. Ask for a new one from your request page.', 'expired');
      }
      const request = await this.lockForAction(trx, found.id, 'verify_email', undefined);
      return this.applyTransition(trx, request, actor, 'email_verified', emailVerifiedPatch(now));
    });
  }

  /** Stores a new verification token (the old link stops working). */
  async replaceVerificationToken(id: number, token: string, expiresAt: number, actor: Actor): Promise<RequestRecord> {
    return this.transaction(async (trx) => {
      const request = await this.lockForAction(trx, id, 'resend_verification', undefined);
      return this.applyTransition(
        trx,
        request,
        actor,
        'verification_resent',
        { verificationTokenHash: hashToken(token), verificationExpiresAt: expiresAt },
        {},
        { verificationToken: token },
      );
    });
  }

  // ---------------------------------------------------------------- staff decisions

  async approveRequest(id: number, input: ApproveInput, actor: Actor): Promise<RequestRecord> {
    checkStaffText(input.comment?.trim(), 'comment');
    return this.transaction(async (trx) => {
      const now = this.now();
      const request = await this.lockForAction(trx, id, 'approve', input.expectedVersion);
      const children = await this.repository.children(trx, id);
      const matches = this.checkMatches(children, input.children);

      let moodleUsername: string | null;
      let moodleUserId: number | null = null;
      const existing = input.existingAccount;
      if (existing) {
        if (!isIntId(existing.moodleUserId)) {
          throw new ValidationError(`The existing Moodle account id must be ${MOODLE_ID_RANGE}.`);
        }
        moodleUserId = existing.moodleUserId;
        moodleUsername = existing.username?.trim().toLowerCase() || null;
        if (moodleUsername !== null && moodleUsername.length > COLUMN_WIDTHS.moodleUsername) {
          throw new ValidationError(`The existing Moodle account's username must be ${COLUMN_WIDTHS.moodleUsername} characters or fewer.`);
        }
      } else {
        const username = usernameFromEmail(request.email);
        if (!username.ok) throw new ValidationError(username.reason, [{ field: 'email', message: username.reason }], { help: username.reason });
        moodleUsername = username.username;
        const holder = await this.repository.findAuthRowByUsername(trx, moodleUsername);
        if (holder) throw this.usernameTaken(moodleUsername, holder.requestId);
        try {
          await this.repository.insertAuthRow(trx, {
            username: moodleUsername,
            firstname: request.parentFirstName,
            lastname: request.parentLastName,
            email: request.email,
            requestId: request.id,
          });
        } catch (error) {
          // Another transaction approved a request for the same parent at the same moment.
          if (isUniqueViolation(error)) throw this.usernameTaken(moodleUsername, null);
          throw error;
        }
      }

      for (const match of matches) {
        await this.repository.updateChild(trx, match.childId, {
          moodleUserId: match.moodleUserId,
          linkState: match.moodleUserId === null ? 'not_found' : 'matched',
          lastError: null,
          attempts: 0,
          nextAttemptAt: null,
          updatedAt: now,
        });
      }
      const comment = input.comment?.trim();
      return this.applyTransition(
        trx,
        request,
        actor,
        'approved',
        {
          status: 'approved',
          moodleUsername,
          moodleUserId,
          linkExistingAccount: Boolean(existing),
          decidedAt: now,
          decidedBy: actorLabel(actor),
          decisionReason: null,
          attempts: 0,
          lastError: null,
          nextAttemptAt: null,
          waitingSince: null,
          ...(comment ? { staffComment: appendStaffComment(request.staffComment, comment) } : {}),
        },
        {
          children: matches.map((m) => ({ childId: m.childId, moodleUserId: m.moodleUserId })),
          existingAccount: existing ? existing.moodleUserId : null,
          ...(input.evidence && input.evidence.length > 0 ? { evidence: input.evidence } : {}),
        },
      );
    });
  }

  private usernameTaken(username: string, holderRequestId: number | null): ConflictError {
    const which = holderRequestId === null ? 'Another request' : `Request ${holderRequestId}`;
    return new ConflictError(
      `${which} for the same parent (${username}) is already approved, so this one was not approved. ` +
        'Mark this request as a duplicate, or revoke the other request first.',
      'username_taken',
      { help: 'A parent has one Moodle account; approve one request per parent.' },
    );
  }

  private checkMatches(children: ChildRecord[], matches: ChildMatch[]): ChildMatch[] {
    const candidates = children.filter((c) => c.linkState !== 'revoked');
    const byId = new Map(matches.map((m) => [m.childId, m]));
    if (byId.size !== matches.length) throw new ValidationError('A child was given twice.');
    for (const m of matches) {
      if (!candidates.some((c) => c.id === m.childId)) {
        throw new ValidationError(`Child ${m.childId} is not part of this request.`);
      }
      if (m.moodleUserId !== null && !isIntId(m.moodleUserId)) {
        throw new ValidationError(`A Moodle pupil id must be ${MOODLE_ID_RANGE}.`);
      }
    }
    const missing = candidates.filter((c) => !byId.has(c.id));
    if (missing.length > 0) {
      const names = missing.map((c) => `${c.firstName} ${c.lastName}`).join(', ');
      throw new ValidationError(`Choose a Moodle pupil account (or "not found") for every child: ${names}.`);
    }
    const matched = matches.filter((m) => m.moodleUserId !== null);
    if (matched.length === 0) {
      throw new ValidationError('At least one child must be matched to a Moodle pupil account to approve the request.');
    }
    const seen = new Set<number>();
    for (const m of matched) {
      if (seen.has(m.moodleUserId as number)) throw new ValidationError('Two children were matched to the same Moodle pupil account.');
      seen.add(m.moodleUserId as number);
    }
    return matches;
  }

  async denyRequest(id: number, input: DecisionInput, actor: Actor): Promise<RequestRecord> {
    const reason = input.reason?.trim();
    if (!reason) throw new ValidationError('Give a reason: the parent is told why the request was not approved.', [{ field: 'reason', message: 'Give a reason for denying: the parent is emailed it.' }]);
    return this.close(id, 'deny', 'denied', 'denied', { ...input, reason }, actor);
  }

  async markDuplicate(id: number, input: DecisionInput & { duplicateOf?: number | null }, actor: Actor): Promise<RequestRecord> {
    return this.close(id, 'mark_duplicate', 'duplicate', 'marked_duplicate', input, actor, { duplicateOf: input.duplicateOf ?? null });
  }

  async markBogus(id: number, input: DecisionInput, actor: Actor): Promise<RequestRecord> {
    return this.close(id, 'mark_bogus', 'bogus', 'marked_bogus', input, actor);
  }

  async revokeRequest(id: number, input: DecisionInput, actor: Actor): Promise<RequestRecord> {
    return this.close(id, 'revoke', 'revoked', 'revoked', input, actor);
  }

  /** deny, duplicate, bogus and revoke: the parent loses any access this request gave. */
  private async close(
    id: number,
    action: LifecycleAction,
    status: RequestStatus,
    event: string,
    input: DecisionInput,
    actor: Actor,
    extra: Record<string, unknown> = {},
  ): Promise<RequestRecord> {
    checkStaffText(input.reason?.trim(), 'reason');
    return this.transaction(async (trx) => {
      const now = this.now();
      const request = await this.lockForAction(trx, id, action, input.expectedVersion);
      const removedAuthRow = (await this.repository.deleteAuthRowForRequest(trx, id)) > 0;
      const revokedChildren = await this.revokeLinks(trx, request, await this.repository.children(trx, id), now);
      return this.applyTransition(
        trx,
        request,
        actor,
        event,
        {
          status,
          decidedAt: now,
          decidedBy: actorLabel(actor),
          decisionReason: input.reason?.trim() || null,
          nextAttemptAt: null,
        },
        { ...extra, removedAuthRow, revokedChildren, reason: input.reason?.trim() || null },
      );
    });
  }

  /**
   * Marks every matched or linked child revoked. When the request had been approved, a cycle may
   * have assigned roles already, so each is queued for unassignment (a no-op in Moodle if absent).
   */
  private async revokeLinks(trx: Knex.Transaction, request: RequestRecord, children: ChildRecord[], now: number): Promise<number[]> {
    const mayHaveRoles = request.status === 'approved' || request.status === 'provisioned';
    const affected = children.filter((c) => c.linkState === 'matched' || c.linkState === 'linked').map((c) => c.id);
    if (affected.length > 0) {
      await this.repository.updateChildren(trx, affected, {
        linkState: 'revoked',
        revokedAt: now,
        unassignPending: mayHaveRoles,
        attempts: 0,
        nextAttemptAt: null,
        updatedAt: now,
      });
    }
    return affected;
  }

  /** Revokes one child's link. With no link left, the whole request is revoked. */
  async revokeChild(id: number, childId: number, input: DecisionInput, actor: Actor): Promise<RequestRecord> {
    checkStaffText(input.reason?.trim(), 'reason');
    return this.transaction(async (trx) => {
      const now = this.now();
      const request = await this.lockForAction(trx, id, 'revoke_child', input.expectedVersion);
      const children = await this.repository.children(trx, id);
      const child = children.find((c) => c.id === childId);
      if (!child) throw new NotFoundError(`Child ${childId} is not part of request ${id}.`);
      if (child.linkState !== 'matched' && child.linkState !== 'linked') {
        throw new ConflictError(`This child has no link to revoke (it is ${child.linkState.replace('_', ' ')}).`, 'refused');
      }
      await this.revokeLinks(trx, request, [child], now);
      const remaining = children.filter((c) => c.id !== childId && (c.linkState === 'matched' || c.linkState === 'linked'));
      const reason = input.reason?.trim() || null;
      if (remaining.length === 0) {
        const removedAuthRow = (await this.repository.deleteAuthRowForRequest(trx, id)) > 0;
        return this.applyTransition(
          trx,
          request,
          actor,
          'revoked',
          { status: 'revoked', decidedAt: now, decidedBy: actorLabel(actor), decisionReason: reason, nextAttemptAt: null },
          { childId, lastChild: true, removedAuthRow, reason },
        );
      }
      return this.applyTransition(trx, request, actor, 'child_revoked', { updatedAt: now }, { childId, reason });
    });
  }

  /**
   * Staff pick the Moodle pupil of a child that has none on a request with access (one an import
   * from the WordPress plugin could not match, or one found later). The child is matched; a
   * provisioned request goes back to approved, so the next cycle links the child and marks it
   * provisioned again. The parent's access is never interrupted: the auth row stays.
   */
  async pickPupil(id: number, input: { childId: number; moodleUserId: number; expectedVersion?: number }, actor: Actor): Promise<RequestRecord> {
    if (!isIntId(input.moodleUserId)) {
      const message = `A Moodle pupil id must be ${MOODLE_ID_RANGE}.`;
      throw new ValidationError(message, [{ field: 'moodleUserId', message }]);
    }
    return this.transaction(async (trx) => {
      const now = this.now();
      const request = await this.lockForAction(trx, id, 'pick_pupil', input.expectedVersion);
      const children = await this.repository.children(trx, id);
      const child = children.find((c) => c.id === input.childId);
      if (!child) throw new NotFoundError(`Child ${input.childId} is not part of request ${id}.`);
      if (child.linkState !== 'unmatched' && child.linkState !== 'not_found') {
        throw new ConflictError(`This child already has a pupil account (it is ${child.linkState.replace('_', ' ')}).`, 'refused');
      }
      if (children.some((c) => c.id !== child.id && c.moodleUserId === input.moodleUserId && (c.linkState === 'matched' || c.linkState === 'linked'))) {
        const message = 'Another child on this request already has that Moodle pupil account.';
        throw new ValidationError(message, [{ field: 'moodleUserId', message }]);
      }
      await this.repository.updateChild(trx, child.id, { moodleUserId: input.moodleUserId, linkState: 'matched', lastError: null, attempts: 0, nextAttemptAt: null, updatedAt: now });
      return this.applyTransition(
        trx,
        request,
        actor,
        'pupil_picked',
        { ...(request.status === 'provisioned' ? { status: 'approved' as const } : {}), nextAttemptAt: null },
        { childId: child.id, moodleUserId: input.moodleUserId },
      );
    });
  }

  async addStaffComment(id: number, comment: string, actor: Actor, expectedVersion?: number): Promise<RequestRecord> {
    const text = comment.trim();
    if (!text) throw new ValidationError('The comment is empty.', [{ field: 'comment', message: 'Write a comment before adding it.' }]);
    checkStaffText(text, 'comment');
    return this.transaction(async (trx) => {
      const request = await this.lockForAction(trx, id, 'comment', expectedVersion);
      const staffComment = appendStaffComment(request.staffComment, text);
      return this.applyTransition(trx, request, actor, 'commented', { staffComment }, {});
    });
  }

  // ---------------------------------------------------------------- requests decided elsewhere

  /**
   * Imports requests already decided in the old WordPress plugin, all in one transaction: each
   * request with its status as it was, its children (linked, matched, or left for staff to pick),
   * its auth row when it has access, and the audit event "imported from the WordPress plugin".
   * Idempotent: a plugin request already imported (by its id), or an auth username already in the
   * auth table, is skipped, so running the migration again imports nothing twice. A pending request
   * for an address that already has an open request is imported as its duplicate (one open request
   * per address).
   */
  async importExistingRequests(items: ExistingRequestInput[], actor: Actor): Promise<ExistingRequestResult[]> {
    for (const item of items) this.checkExistingRequest(item);
    if (items.length === 0) return [];
    return this.transaction(async (trx) => {
      const now = this.now();
      const wpIds = items.map((i) => i.wpRequestId).filter((id): id is number => id !== null);
      const imported = await this.repository.requestIdsByWpRequestId(trx, wpIds);
      const usernames = items.map((i) => i.authRow?.username).filter((u): u is string => u !== undefined);
      // Keyed without letter case: MariaDB's collation finds "Parent@x" for "parent@x" and its unique
      // index would refuse both, so one is "already here" for the other, as Moodle sees it too.
      const holders = new Map([...(await this.repository.authRowsByUsername(trx, usernames))].map(([u, row]) => [u.toLowerCase(), row]));
      const results: ExistingRequestResult[] = [];
      const audits: AuditEventInput[] = [];
      const childRows: Parameters<RequestRepository['insertChildrenWithState']>[1] = [];
      const authRows: Array<Omit<AuthRow, 'id'>> = [];
      const created: RequestRecord[] = [];
      for (const item of items) {
        const username = item.authRow?.username ?? null;
        const already = item.wpRequestId !== null ? imported.get(item.wpRequestId) : undefined;
        const holder = username !== null ? holders.get(username.toLowerCase()) : undefined;
        if (already !== undefined || holder !== undefined) {
          results.push({ wpRequestId: item.wpRequestId, username, outcome: 'already_imported', requestId: already ?? holder?.requestId ?? null, status: null });
          continue;
        }
        const email = item.email.trim().toLowerCase();
        let status = item.status;
        let decisionReason = item.decisionReason;
        let duplicateOf: number | null = null;
        if (OPEN_STATUSES.includes(status) && email !== '') {
          const open = await this.repository.findOpenByEmail(trx, email);
          if (open) {
            status = 'duplicate';
            duplicateOf = open.id;
            decisionReason = `Request ${open.id} is already open for ${email}.`;
          }
        }
        const closed = !OPEN_STATUSES.includes(status);
        const record = newRequestRecord({
          status,
          requestType: item.requestType,
          source: 'wordpress_plugin',
          parentTitle: item.parentTitle.trim(),
          parentFirstName: item.parentFirstName.trim(),
          parentLastName: item.parentLastName.trim(),
          email,
          parentComment: item.parentComment,
          staffComment: item.staffComment,
          moodleUsername: username,
          decidedAt: closed ? (item.decidedAt ?? now) : null,
          decidedBy: closed ? actorLabel(actor) : null,
          decisionReason,
          provisionedAt: status === 'provisioned' ? (item.decidedAt ?? now) : null,
          wpRequestId: item.wpRequestId,
          createdAt: item.createdAt,
          updatedAt: now,
        });
        const id = await this.repository.insertRequest(trx, record);
        created.push({ ...record, id });
        item.children.forEach((child, position) =>
          childRows.push({
            requestId: id,
            position,
            child,
            moodleUserId: child.moodleUserId,
            linkState: child.linkState,
            linkedAt: child.linkState === 'linked' ? now : null,
            lastError: child.note,
          }),
        );
        if (item.authRow) authRows.push({ ...item.authRow, requestId: id });
        audits.push(
          this.auditInput(actor, id, IMPORTED_FROM_WORDPRESS, {
            ...item.details,
            status,
            source: 'wordpress_plugin',
            children: item.children.length,
            ...(duplicateOf !== null ? { duplicateOf } : {}),
          }),
        );
        results.push({
          wpRequestId: item.wpRequestId,
          username,
          outcome: 'imported',
          requestId: id,
          status,
          ...(duplicateOf !== null ? { note: `imported as a duplicate of request ${duplicateOf}, which is already open for this address` } : {}),
        });
      }
      await this.repository.insertChildrenWithState(trx, childRows, now);
      await this.repository.insertAuthRows(trx, authRows);
      await this.repository.insertAudit(trx, now, audits);
      const childrenOf = await this.repository.childrenOfMany(
        trx,
        created.map((r) => r.id),
      );
      for (const request of created) {
        await this.emit(trx, { type: 'imported', request, children: childrenOf.get(request.id) ?? [], actor, details: { source: 'wordpress_plugin' } });
      }
      return results;
    });
  }

  /**
   * Creates and approves many import requests in one transaction, with set-based statements: the
   * same rows, audit events ("submitted", then "approved") and lifecycle events as submitRequest
   * followed by approveRequest for each, in a few statements for the lot instead of about twenty
   * per parent. Anything out of the ordinary is left to that single-request path (one_by_one),
   * and a unique index refusing a row (a form submitted for the same address meanwhile) fails the
   * whole transaction, so a caller can fall back to it for every item.
   */
  async importApprovedRequests(items: ApprovedImportInput[], actor: Actor): Promise<ApprovedImportResult[]> {
    if (items.length === 0) return [];
    return this.transaction(async (trx) => {
      const now = this.now();
      const emails = items.map((item) => item.email.trim().toLowerCase());
      const keys = items.map((item) => item.idempotencyKey);
      const keysTaken = await this.repository.idempotencyKeysTaken(trx, keys);
      // An address with an open request, or one that has (or is getting) access, is the single path's to refuse.
      const openEmails = new Set(
        [...(await this.repository.requestsByEmail(trx, emails, [...OPEN_STATUSES, 'approved', 'provisioned'])).keys()].map((e) => e.toLowerCase()),
      );
      const usernames = emails.map((email) => usernameFromEmail(email));
      const holders = await this.repository.authRowsByUsername(
        trx,
        usernames.flatMap((u) => (u.ok ? [u.username] : [])),
      );
      const heldUsernames = new Set([...holders.keys()].map((u) => u.toLowerCase()));
      const seenUsernames = new Set<string>();
      const planned: Array<{ index: number; record: Omit<RequestRecord, 'id'>; username: string }> = [];
      for (const [index, item] of items.entries()) {
        const email = emails[index] as string;
        const username = usernames[index] as ReturnType<typeof usernameFromEmail>;
        if (!username.ok) continue;
        const taken = username.username.toLowerCase();
        const pupils = item.children.map((c) => c.moodleUserId);
        const ordinary =
          !keysTaken.has(item.idempotencyKey) &&
          !openEmails.has(email) &&
          !heldUsernames.has(taken) &&
          !seenUsernames.has(taken) &&
          item.children.length > 0 &&
          pupils.every(isIntId) &&
          new Set(pupils).size === pupils.length;
        if (!ordinary) continue;
        seenUsernames.add(taken);
        const fields = {
          status: 'approved' as const,
          requestType: 'new_account' as const,
          source: 'import' as const,
          parentTitle: item.parentTitle.trim(),
          parentFirstName: item.parentFirstName.trim(),
          parentLastName: item.parentLastName.trim(),
          email,
          moodleUsername: username.username,
          decidedAt: now,
          decidedBy: actorLabel(actor),
          idempotencyKey: item.idempotencyKey,
          importBatchId: item.importBatchId,
          createdAt: now,
          updatedAt: now,
        };
        // Submitted (version 1), then approved (version 2), as the single-request path leaves it.
        // Object.assign rather than spreads merged with more properties (see recordProvisioningOutcomes).
        planned.push({ index, record: Object.assign(newRequestRecord(fields), { version: 2 }), username: username.username });
      }
      // All of them in one statement (their keys give back their ids), not one INSERT each.
      const ids = await this.repository.insertKeyedRequests(
        trx,
        planned.map((p) => p.record),
      );
      const plan = planned.map(({ index, record, username }) => ({ index, record: Object.assign(record, { id: ids.get(record.idempotencyKey as string) as number }), username }));
      await this.repository.insertChildrenWithState(
        trx,
        plan.flatMap(({ index, record }) =>
          (items[index] as ApprovedImportInput).children.map((child, position) => ({
            requestId: record.id,
            position,
            child: { firstName: child.firstName, lastName: child.lastName, tutorGroup: child.tutorGroup, pupilIdentifier: child.pupilIdentifier },
            moodleUserId: child.moodleUserId,
            linkState: 'matched' as const,
            linkedAt: null,
            lastError: null,
          })),
        ),
        now,
      );
      await this.repository.insertAuthRows(
        trx,
        plan.map(({ record, username }) => ({ username, firstname: record.parentFirstName, lastname: record.parentLastName, email: record.email, requestId: record.id })),
      );
      const childrenOf = await this.repository.childrenOfMany(
        trx,
        plan.map((p) => p.record.id),
      );
      const audits: AuditEventInput[] = [];
      const events: LifecycleEvent[] = [];
      for (const { record } of plan) {
        const children = childrenOf.get(record.id) ?? [];
        const submitted = { status: 'pending', source: 'import', requestType: record.requestType, children: children.length };
        const approved = { from: 'pending', to: 'approved', children: children.map((c) => ({ childId: c.id, moodleUserId: c.moodleUserId })), existingAccount: null };
        audits.push(this.auditInput(actor, record.id, 'submitted', submitted), this.auditInput(actor, record.id, 'approved', approved));
        const asSubmitted: RequestRecord = Object.assign({}, record, { status: 'pending' as const, moodleUsername: null, decidedAt: null, decidedBy: null, version: 1 });
        const unmatched = children.map((c): ChildRecord => Object.assign({}, c, { moodleUserId: null, linkState: 'unmatched' as const }));
        events.push(
          { type: 'submitted', request: asSubmitted, children: unmatched, actor, details: { status: 'pending' } },
          { type: 'approved', request: record, children, actor, details: { children: approved.children, existingAccount: null } },
        );
      }
      await this.repository.insertAudit(trx, now, audits);
      await this.emitMany(trx, events);
      const byIndex = new Map(plan.map((p) => [p.index, p.record]));
      return items.map((_, index): ApprovedImportResult => {
        const record = byIndex.get(index);
        return record ? { outcome: 'approved', request: record, children: childrenOf.get(record.id) ?? [] } : { outcome: 'one_by_one' };
      });
    });
  }

  /** The same guards as the transitions: access exactly with an auth row, links only where the status allows them. */
  private checkExistingRequest(item: ExistingRequestInput): void {
    const access = item.status === 'approved' || item.status === 'provisioned';
    if (access !== (item.authRow !== null)) {
      throw new ValidationError(`An imported request that is ${item.status} must ${access ? '' : 'not '}come with a row of the auth table.`);
    }
    if (item.authRow && (item.authRow.username === '' || item.authRow.username.length > COLUMN_WIDTHS.moodleUsername)) {
      throw new ValidationError(`A Moodle username must be 1 to ${COLUMN_WIDTHS.moodleUsername} characters long (got ${item.authRow.username.length}).`);
    }
    for (const child of item.children) {
      const allowed = child.linkState === 'unmatched' || (child.linkState === 'linked' ? item.status === 'provisioned' : item.status === 'approved');
      if (!allowed) throw new ValidationError(`A child cannot be ${child.linkState} on a request that is ${item.status}.`);
      if ((child.linkState === 'unmatched') !== (child.moodleUserId === null) || (child.moodleUserId !== null && !isIntId(child.moodleUserId))) {
        throw new ValidationError(`A ${child.linkState} child needs ${child.linkState === 'unmatched' ? 'no' : 'a'} Moodle pupil account.`);
      }
    }
  }

  // ---------------------------------------------------------------- provisioning outcomes

  /** Refuses unless every matched child is linked; then approved → provisioned. */
  async markProvisioned(id: number, input: { expectedVersion?: number }, actor: Actor): Promise<RequestRecord> {
    return this.transaction(async (trx) => {
      const request = await this.lockForAction(trx, id, 'record_outcome', input.expectedVersion);
      const children = await this.repository.children(trx, id);
      const unlinked = children.filter((c) => c.linkState === 'matched');
      if (unlinked.length > 0 || !children.some((c) => c.linkState === 'linked')) {
        throw new ConflictError(
          `Cannot mark the request provisioned: ${unlinked.length || 'no'} matched ${unlinked.length === 1 ? 'child is' : 'children are'} not linked in Moodle yet.`,
          'refused',
        );
      }
      return this.applyTransition(trx, request, actor, 'provisioned', { status: 'provisioned', provisionedAt: this.now(), lastError: null, nextAttemptAt: null, waitingSince: null });
    });
  }

  /**
   * Records a cycle's outcomes for many requests in one transaction. Each is applied only if
   * the request is still approved at the version the cycle read; the rest are reported back.
   * The writes are set queries (a few statements per 500 requests, not one per request).
   */
  async recordProvisioningOutcomes(outcomes: ProvisioningOutcome[], actor: Actor): Promise<OutcomeResult[]> {
    if (outcomes.length === 0) return [];
    return this.transaction(async (trx) => {
      const now = this.now();
      const ids = outcomes.map((o) => o.requestId);
      const requests = new Map((await this.repository.findManyByIds(trx, ids, { forUpdate: true })).map((r) => [r.id, r]));
      const childrenByRequest = await this.repository.childrenOfMany(trx, ids);
      const results: OutcomeResult[] = [];
      const linkedIds: number[] = [];
      const audits: AuditEventInput[] = [];
      // Each request provisioned now, and whether it had been before (a pupil picked later for a parent who already has the account).
      const provisioned: Array<{ request: RequestRecord; again: boolean }> = [];
      const requestUpdates: Array<RowPatch<RequestRecord> & { expectedVersion: number }> = [];
      const failedChildUpdates: Array<RowPatch<ChildRecord>> = [];
      const updatedIds = new Set<number>();

      for (const outcome of outcomes) {
        const request = requests.get(outcome.requestId);
        if (!request) {
          results.push({ requestId: outcome.requestId, applied: false, status: null, refusal: 'The request no longer exists.' });
          continue;
        }
        if (request.version !== outcome.expectedVersion || !isAllowed('record_outcome', request.status)) {
          results.push({
            requestId: request.id,
            applied: false,
            status: request.status,
            refusal:
              request.version !== outcome.expectedVersion
                ? 'The request changed while the cycle ran; its new state stands.'
                : refusalMessage('record_outcome', request.status),
          });
          continue;
        }
        if (updatedIds.has(request.id)) {
          // A second outcome for one request: the first already moved it past the version read.
          results.push({ requestId: request.id, applied: false, status: request.status, refusal: STALE_MESSAGE });
          continue;
        }
        const children = childrenByRequest.get(request.id) ?? [];
        const matched = new Map(children.filter((c) => c.linkState === 'matched').map((c) => [c.id, c]));
        const linked = (outcome.linkedChildIds ?? []).filter((id) => matched.has(id));
        const failed = (outcome.failedChildren ?? []).filter((f) => matched.has(f.childId));
        for (const f of failed) {
          const child = matched.get(f.childId) as ChildRecord;
          failedChildUpdates.push({
            id: f.childId,
            patch: { lastError: f.error, attempts: child.attempts + 1, nextAttemptAt: outcome.nextAttemptAt ?? null, updatedAt: now },
          });
        }
        linkedIds.push(...linked);
        const stillUnlinked = [...matched.keys()].filter((id) => !linked.includes(id));
        const requestErrors = outcome.requestErrors ?? [];
        const isProvisioned =
          stillUnlinked.length === 0 && requestErrors.length === 0 && (linked.length > 0 || children.some((c) => c.linkState === 'linked'));
        const waiting = outcome.waiting ?? null;
        const problems = [...requestErrors, ...failed.map((f) => f.error)];
        const patch: Partial<RequestRecord> = {
          moodleUserId: outcome.parentMoodleUserId ?? request.moodleUserId,
          waitingSince: waiting ? (request.waitingSince ?? now) : null,
          lastError: waiting ? waiting.message : problems.length > 0 ? problems.join('\n') : null,
          attempts: problems.length > 0 ? request.attempts + 1 : waiting ? request.attempts : 0,
          nextAttemptAt: isProvisioned ? null : (outcome.nextAttemptAt ?? null),
          updatedAt: now,
        };
        if (isProvisioned) {
          patch.status = 'provisioned';
          patch.provisionedAt = now;
        }
        requestUpdates.push({ id: request.id, expectedVersion: request.version, patch });
        updatedIds.add(request.id);
        // A copy of the record with the patch written into it: not spreads merged into one literal,
        // which on this Node (V8 11.3) make new hidden classes in the old space on every call.
        const after: RequestRecord = Object.assign({ ...request }, patch);
        after.version = request.version + 1;
        results.push({ requestId: request.id, applied: true, status: after.status });
        if (linked.length > 0) audits.push(this.auditInput(actor, request.id, 'children_linked', { childIds: linked, parentMoodleUserId: after.moodleUserId }));
        if (failed.length > 0 || requestErrors.length > 0) {
          audits.push(this.auditInput(actor, request.id, 'link_failed', { children: failed, problems: requestErrors }));
        }
        if (waiting && request.waitingSince === null) audits.push(this.auditInput(actor, request.id, 'waiting_for_moodle', { message: waiting.message }));
        if (isProvisioned) {
          audits.push(this.auditInput(actor, request.id, 'provisioned', { from: 'approved', to: 'provisioned' }));
          provisioned.push({ request: after, again: request.provisionedAt !== null });
        }
      }
      await this.repository.updateChildrenEach(trx, failedChildUpdates);
      const changed = await this.repository.updateManyIfVersion(trx, requestUpdates);
      // The rows were read under this transaction's locks, so nobody can have changed them since;
      // if somebody did, start over from a fresh read, which refuses those outcomes properly.
      if (changed !== requestUpdates.length) throw new ChangedDuringRecording();
      const linkedPatch = { linkState: 'linked' as const, linkedAt: now, lastError: null, nextAttemptAt: null, updatedAt: now };
      if (linkedIds.length > 0) await this.repository.updateChildren(trx, linkedIds, linkedPatch);
      await this.repository.insertAudit(trx, now, audits);
      if (provisioned.length > 0) {
        // The children as the two writes above left them, in the same order: the rows read at the
        // start of this transaction with the same patches applied, instead of reading them again.
        const linkedSet = new Set(linkedIds);
        const failedPatches = new Map(failedChildUpdates.map((u) => [u.id, u.patch]));
        const childAfter = (child: ChildRecord): ChildRecord => {
          const failedPatch = failedPatches.get(child.id);
          const afterFailed = failedPatch ? Object.assign({ ...child }, failedPatch) : child;
          return linkedSet.has(child.id) ? Object.assign({ ...afterFailed }, linkedPatch) : afterFailed;
        };
        await this.emitMany(
          trx,
          provisioned.map(({ request, again }) => ({
            type: 'provisioned',
            request,
            children: (childrenByRequest.get(request.id) ?? []).map(childAfter),
            actor,
            details: again ? { alreadyHadAccount: true } : {},
          })),
        );
      }
      return results;
    });
  }

  /** The cycle removed the Parent role for these revoked children in Moodle. */
  async recordUnassigned(childIds: number[], actor: Actor): Promise<void> {
    if (childIds.length === 0) return;
    await this.transaction(async (trx) => {
      const now = this.now();
      const children = await this.repository.childrenPendingUnassign(trx, childIds);
      await this.repository.updateChildren(
        trx,
        children.map((c) => c.id),
        { unassignPending: false, lastError: null, attempts: 0, nextAttemptAt: null, updatedAt: now },
      );
      await this.repository.insertAudit(
        trx,
        now,
        children.map((c) => this.auditInput(actor, c.requestId, 'role_unassigned', { childId: c.id, moodleUserId: c.moodleUserId })),
      );
    });
  }

  async recordUnassignFailed(childId: number, error: string, nextAttemptAt: number | null, actor: Actor): Promise<void> {
    await this.transaction(async (trx) => {
      const now = this.now();
      const child = await this.repository.findChild(trx, childId);
      if (!child) return;
      await this.repository.updateChild(trx, childId, { lastError: error, attempts: child.attempts + 1, nextAttemptAt, updatedAt: now });
      await this.repository.insertAudit(trx, now, [this.auditInput(actor, child.requestId, 'unassign_failed', { childId, error })]);
    });
  }

  // ---------------------------------------------------------------- internals

  /** Reads and locks the request, checks the action is allowed from its status and the version. */
  private async lockForAction(
    trx: Knex.Transaction,
    id: number,
    action: LifecycleAction,
    expectedVersion: number | undefined,
  ): Promise<RequestRecord> {
    const request = await this.repository.findById(trx, id, { forUpdate: true });
    if (!request) throw new NotFoundError(`There is no request number ${id}.`);
    // An erased request keeps only what happened to it: acting on it again could only bring
    // personal data back (a comment) or reach a parent nobody may identify any more.
    if (request.erasedAt !== null) throw new ConflictError(`The personal data of request ${id} has been erased, so nothing more can be done with it.`, 'erased');
    if (expectedVersion !== undefined && request.version !== expectedVersion) {
      throw new ConflictError(STALE_MESSAGE, 'stale');
    }
    if (!ALLOWED_FROM[action].includes(request.status)) {
      throw new ConflictError(refusalMessage(action, request.status), 'refused');
    }
    return request;
  }

  /** Writes the patch at the locked version, the audit event, and tells the listeners. */
  private async applyTransition(
    trx: Knex.Transaction,
    request: RequestRecord,
    actor: Actor,
    event: string,
    patch: Partial<RequestRecord>,
    details: Record<string, unknown> = {},
    /** Given to listeners only, never written to the audit trail (e.g. a raw token). */
    eventOnly: Record<string, unknown> = {},
  ): Promise<RequestRecord> {
    const now = this.now();
    const ok = await this.repository.updateIfVersion(trx, request.id, request.version, { ...patch, updatedAt: now });
    if (!ok) throw new ConflictError(STALE_MESSAGE, 'stale');
    // Details held for a request that is no longer open can never be added: drop them with it.
    if (patch.status !== undefined && !OPEN_STATUSES.includes(patch.status)) await this.repository.deleteHeldDetailsForRequest(trx, request.id);
    const after = (await this.repository.findById(trx, request.id)) as RequestRecord;
    const statusChange = after.status !== request.status ? { from: request.status, to: after.status } : {};
    await this.audit(trx, now, actor, request.id, event, { ...statusChange, ...details });
    await this.emit(trx, {
      type: event,
      request: after,
      children: await this.repository.children(trx, request.id),
      actor,
      details: { ...details, ...eventOnly },
    });
    return after;
  }

  private auditInput(actor: Actor, requestId: number | null, action: string, details: Record<string, unknown>): AuditEventInput {
    return { actorType: actor.type, actorId: actor.id ?? null, requestId, action, details };
  }

  private async audit(trx: Knex.Transaction, now: number, actor: Actor, requestId: number | null, action: string, details: Record<string, unknown>) {
    await this.repository.insertAudit(trx, now, [this.auditInput(actor, requestId, action, details)]);
  }

  private async emit(trx: Knex.Transaction, event: LifecycleEvent): Promise<void> {
    for (const listener of this.listeners) await listener(trx, event);
  }

  /** Many events of one transaction: a listener that can take them together does, the others one by one. */
  private async emitMany(trx: Knex.Transaction, events: LifecycleEvent[]): Promise<void> {
    for (const listener of this.listeners) {
      if (listener.many) await listener.many(trx, events);
      else for (const event of events) await listener(trx, event);
    }
  }

  /** Runs fn in a transaction, retrying a MySQL deadlock (the whole transaction was rolled back). */
  private async transaction<T>(fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.db.transaction(fn);
      } catch (error) {
        const code = (error as { code?: string }).code;
        const retryable = code === 'ER_LOCK_DEADLOCK' || code === 'ER_LOCK_WAIT_TIMEOUT' || error instanceof ChangedDuringRecording;
        if (!(error instanceof AppError) && retryable && attempt < 3) continue;
        throw error;
      }
    }
  }

  // ---------------------------------------------------------------- privacy

  /**
   * Erases a request's personal data in one transaction: the parent's and children's names, the
   * email address, comments, reasons, the submitter's address, the Moodle account names and ids,
   * the confirmation token, and the same from its audit events, whose rows stay (what happened,
   * when, and which staff member did it). Listeners purge what else they keep for the request
   * (its queued mail). An open request is closed by it, so it leaves the review queue.
   */
  async eraseRequest(id: number, input: { expectedVersion?: number }, actor: Actor): Promise<RequestRecord> {
    return this.transaction(async (trx) => {
      const now = this.now();
      const request = await this.lockForAction(trx, id, 'erase', input.expectedVersion);
      const children = await this.repository.children(trx, id);
      // Taking the Parent role away in Moodle needs the parent's and the child's Moodle ids.
      if (children.some((c) => c.unassignPending)) {
        throw new ConflictError(
          'A child on this request still has to be unlinked in Moodle, which the next provisioning cycle does. Erase the request after that cycle has run.',
          'refused',
        );
      }
      await this.repository.eraseChildren(trx, id, now);
      await this.repository.deleteHeldDetailsForRequest(trx, id);
      await this.repository.rewriteAuditDetails(trx, id, auditDetailsWithoutPersonalData);
      const closes = request.status === 'unverified' || request.status === 'pending';
      return this.applyTransition(
        trx,
        request,
        actor,
        'erased',
        {
          ...(closes ? { status: 'denied' as const, decidedAt: now, decidedBy: actorLabel(actor) } : {}),
          parentTitle: '',
          parentFirstName: '',
          parentLastName: '',
          email: '',
          parentComment: null,
          staffComment: null,
          decisionReason: null,
          moodleUsername: null,
          moodleUserId: null,
          linkExistingAccount: false,
          verificationTokenHash: null,
          verificationExpiresAt: null,
          lastError: null,
          nextAttemptAt: null,
          waitingSince: null,
          submitterIp: null,
          submitterAgent: null,
          idempotencyKey: null,
          erasedAt: now,
        },
        { children: children.length },
        // Listeners erase what they keep under the address (it is blank on the request from now on).
        { erasedEmail: request.email },
      );
    });
  }
}

/** Audit detail keys that say what happened without saying who; their values are ids, counts and states. */
const AUDIT_KEYS_KEPT_ON_ERASURE: ReadonlySet<string> = new Set([
  'from',
  'to',
  'status',
  'source',
  'requestType',
  'children',
  'addedChildren',
  'commentAdded',
  'removedAuthRow',
  'revokedChildren',
  'childId',
  'childIds',
  'lastChild',
  'duplicateOf',
]);

/**
 * An audit event's details as they stay after erasure. Only known keys are kept, so a detail added
 * later (a reason, a message naming an account) is dropped unless it is added here on purpose;
 * lists keep only the children's ids (not the Moodle accounts they were matched to).
 */
export function auditDetailsWithoutPersonalData(details: Record<string, unknown>): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(details)) {
    if (!AUDIT_KEYS_KEPT_ON_ERASURE.has(key)) continue;
    if (typeof value === 'number' || typeof value === 'boolean' || value === null) kept[key] = value;
    else if (typeof value === 'string' && /^[a-z_]{1,40}$/.test(value)) kept[key] = value;
    else if (Array.isArray(value)) {
      kept[key] = value
        .map((item: unknown) => (typeof item === 'number' ? item : (item as { childId?: unknown } | null)?.childId))
        .filter((item): item is number => typeof item === 'number');
    }
  }
  return kept;
}
