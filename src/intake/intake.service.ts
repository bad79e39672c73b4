// The intake's logic: storing a parent's request (from the form or the API) after the abuse
// checks, confirming an email address, sending a new confirmation link, and the status page.
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { Config } from '../config';
import type { Database } from '../db/database';
import { isUniqueViolation, pingDatabase } from '../db/database';
import { ConflictError, NotFoundError, ValidationError } from '../errors';
import { hashToken, type Actor, type RequestLifecycle, type SubmitResult } from '../requests/request-lifecycle';
import type { ChildRecord, RequestRecord, RequestRepository } from '../requests/request-repository';
import type { RequestSource, RequestStatus } from '../requests/request-states';
import { consumeInTransaction, type RateLimit } from '../web/rate-limit';
import { MAX_COMMENT, type ValidRequest } from './request-form';
import { buildTimeline, nextStepsFor, PARENT_STATUS_LABELS, type TimelineEntry } from './status-timeline';

export interface IntakeRateLimits {
  /** Stored submissions per client address per hour (the form only: the API has one caller). */
  perIp: RateLimit;
  /** Stored submissions per email address per day, until the address is confirmed. */
  perEmail: RateLimit;
  /** New confirmation links per request per hour. */
  resend: RateLimit;
}

export interface SubmitMeta {
  source: RequestSource;
  actor: Actor;
  ip?: string | null;
  agent?: string | null;
  idempotencyKey?: string | null;
}

export interface IntakeOutcome {
  outcome: SubmitResult['outcome'];
  request: RequestRecord;
  statusUrl: string;
}

export type VerifyOutcome =
  | { kind: 'verified'; request: RequestRecord; statusUrl: string }
  | Exclude<ConfirmationLinkState, { kind: 'ready' }>;

/** What a confirmation link would do, found without using it (a mail scanner's GET must not). */
export type ConfirmationLinkState =
  | { kind: 'ready' }
  | { kind: 'already-confirmed'; publicId: string; requestNumber: number }
  | { kind: 'invalid' }
  | { kind: 'expired'; publicId: string }
  | { kind: 'closed' };

export type HeldDetailsOutcome =
  | { kind: 'added'; request: RequestRecord; statusUrl: string }
  | { kind: 'invalid' }
  | { kind: 'expired' }
  | { kind: 'closed' }
  | { kind: 'too-much'; message: string };

export interface StatusView {
  kind: 'request';
  request: RequestRecord;
  children: ChildRecord[];
  statusLabel: string;
  nextSteps: string[];
  timeline: TimelineEntry[];
}

/** A status link whose request was erased: only when, so the parent knows what became of it. */
export interface ErasedStatusView {
  kind: 'erased';
  erasedAt: number;
}

const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;
const PUBLIC_ID_PATTERN = /^[A-Za-z0-9_-]{22}$/;

export function newVerificationToken(): string {
  return randomBytes(32).toString('base64url');
}

export class IntakeService {
  private readonly now: () => number;

  constructor(
    private readonly config: Pick<Config, 'baseUrl' | 'intake' | 'moodle'>,
    private readonly db: Database,
    private readonly lifecycle: RequestLifecycle,
    private readonly repository: RequestRepository,
    private readonly limits: IntakeRateLimits,
    options: { now?: () => number } = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  /** Throws a connection error when the database cannot be reached. */
  async checkAvailable(): Promise<void> {
    await pingDatabase(this.db);
  }

  statusUrl(publicId: string): string {
    return `${this.config.baseUrl}/request/status/${encodeURIComponent(publicId)}`;
  }

  /**
   * Stores a validated request, or holds it for the parent's open one until the link mailed to
   * the address is opened. Counts towards the rate limits. The caller learns which (the API's
   * outcome); a parent's page must not, so that the form does not tell who has asked.
   */
  async submit(data: ValidRequest, meta: SubmitMeta): Promise<IntakeOutcome> {
    if (meta.idempotencyKey) {
      // A retry of a call that already landed is answered without counting against the limits.
      const earlier = await this.lifecycle.findByIdempotencyKey(meta.idempotencyKey);
      if (earlier) return { outcome: 'replayed', request: earlier, statusUrl: this.statusUrl(earlier.publicId) };
    }
    // Counted inside the submission's own transaction (one commit for all of it).
    const attempts = [
      ...(meta.source === 'form' && meta.ip ? [this.limits.perIp.attempt(meta.ip)] : []),
      this.limits.perEmail.attempt(data.email, 'Too many requests for this email address; try again tomorrow.'),
    ];

    const requireVerification = this.config.intake.requireEmailVerification;
    const token = requireVerification ? newVerificationToken() : null;
    const expiresAt = this.now() + this.config.intake.verificationTtlMs;
    const input = {
      requestType: data.requestType,
      parentTitle: data.title,
      parentFirstName: data.firstName,
      parentLastName: data.lastName,
      email: data.email,
      comment: data.comment,
      children: data.children,
      source: meta.source,
      requireVerification,
      verificationTokenHash: token ? hashToken(token) : null,
      verificationExpiresAt: token ? expiresAt : null,
      verificationToken: token,
      // Used only if the address already has an open request: its own link, never the request's.
      heldDetails: { token: newVerificationToken(), expiresAt },
      submitterIp: meta.ip ?? null,
      submitterAgent: meta.agent ?? null,
      idempotencyKey: meta.idempotencyKey ?? null,
      countAttempts: (trx: Knex.Transaction) => consumeInTransaction(trx, attempts, this.now()),
    };
    let result: SubmitResult;
    try {
      result = await this.lifecycle.submitRequest(input, meta.actor);
    } catch (error) {
      // Two calls with the same idempotency key at the same moment: the other one won.
      if (meta.idempotencyKey && isUniqueViolation(error)) {
        const earlier = await this.lifecycle.findByIdempotencyKey(meta.idempotencyKey);
        if (earlier) return { outcome: 'replayed', request: earlier, statusUrl: this.statusUrl(earlier.publicId) };
      }
      throw error;
    }
    return { outcome: result.outcome, request: result.request, statusUrl: this.statusUrl(result.request.publicId) };
  }

  /** Says what a confirmation link would do, changing nothing. */
  async checkConfirmationLink(token: string): Promise<ConfirmationLinkState> {
    if (!TOKEN_PATTERN.test(token)) return { kind: 'invalid' };
    const request = await this.repository.findByVerificationHash(this.db, hashToken(token));
    if (!request || request.erasedAt !== null) return { kind: 'invalid' };
    // Whoever holds the link received it at the address, so they may see the request page.
    if (request.verifiedAt !== null) return { kind: 'already-confirmed', publicId: request.publicId, requestNumber: request.id };
    // The school closed the request before it was confirmed.
    if (request.status !== 'unverified') return { kind: 'closed' };
    if (request.verificationExpiresAt !== null && request.verificationExpiresAt < this.now()) return { kind: 'expired', publicId: request.publicId };
    return { kind: 'ready' };
  }

  /** Uses a confirmation link (the parent pressed the button). Never throws for a bad link: each case has its own page. */
  async verifyEmail(token: string): Promise<VerifyOutcome> {
    const state = await this.checkConfirmationLink(token);
    if (state.kind !== 'ready') return state;
    try {
      const request = await this.lifecycle.verifyEmail(hashToken(token), { type: 'parent' });
      // The per-email limit counts unconfirmed submissions only: the owner of a confirmed
      // address may send the form again (for a second child) without being refused. The
      // address is confirmed either way: should this fail, the count simply runs out by itself.
      await this.limits.perEmail.reset(request.email).catch(() => undefined);
      return { kind: 'verified', request, statusUrl: this.statusUrl(request.publicId) };
    } catch (error) {
      // Changed since the check (a second press of the button, the school closing the request).
      if (error instanceof NotFoundError || error instanceof ConflictError) {
        const now = await this.checkConfirmationLink(token);
        return now.kind === 'ready' ? { kind: 'closed' } : now;
      }
      throw error;
    }
  }

  /** Whether the link for held details can still be used (the page before the button). */
  async heldDetailsLink(token: string): Promise<'valid' | 'invalid' | 'expired'> {
    if (!TOKEN_PATTERN.test(token)) return 'invalid';
    const held = await this.lifecycle.findHeldDetails(hashToken(token));
    if (!held) return 'invalid';
    return held.expiresAt < this.now() ? 'expired' : 'valid';
  }

  /** Adds held details to the request once the link mailed to the address is used. Never throws for a bad link. */
  async confirmHeldDetails(token: string): Promise<HeldDetailsOutcome> {
    if (!TOKEN_PATTERN.test(token)) return { kind: 'invalid' };
    try {
      const { request } = await this.lifecycle.confirmHeldDetails(
        hashToken(token),
        { maxChildren: this.config.intake.maxChildren, maxCommentLength: MAX_COMMENT },
        { type: 'parent' },
      );
      return { kind: 'added', request, statusUrl: this.statusUrl(request.publicId) };
    } catch (error) {
      if (error instanceof NotFoundError) return { kind: 'invalid' };
      if (error instanceof ValidationError) return { kind: 'too-much', message: error.message };
      if (error instanceof ConflictError && error.code === 'expired') return { kind: 'expired' };
      if (error instanceof ConflictError && error.code !== 'stale') return { kind: 'closed' };
      throw error;
    }
  }

  /** Sends a new confirmation link; 'not-needed' when the address is already confirmed. */
  async resendVerification(publicId: string): Promise<'sent' | 'not-needed'> {
    const request = await this.findByPublicId(publicId);
    if (request.status !== 'unverified') return 'not-needed';
    await this.limits.resend.consume(String(request.id), 'We have sent several new links recently; please wait an hour and check your email again.');
    const token = newVerificationToken();
    try {
      await this.lifecycle.replaceVerificationToken(request.id, token, this.now() + this.config.intake.verificationTtlMs, { type: 'parent' });
    } catch (error) {
      if (error instanceof ConflictError) return 'not-needed';
      throw error;
    }
    return 'sent';
  }

  /**
   * The status page's content. An erased request keeps its public id, so its old link can say
   * what became of it (closed, details removed on a date) instead of "no such page"; nothing
   * else of it is left to show.
   */
  async statusView(publicId: string): Promise<StatusView | ErasedStatusView> {
    if (PUBLIC_ID_PATTERN.test(publicId)) {
      const found = await this.repository.findByPublicId(this.db, publicId);
      if (found && found.erasedAt !== null) return { kind: 'erased', erasedAt: found.erasedAt };
    }
    const request = await this.findByPublicId(publicId);
    const children = await this.repository.children(this.db, request.id);
    const events = await this.repository.auditFor(this.db, request.id);
    const status: RequestStatus = request.status;
    // Moodle is connected when both are set, as the service builds its Moodle client.
    const moodleConfigured = Boolean(this.config.moodle.url && this.config.moodle.token);
    return {
      kind: 'request',
      request,
      children,
      statusLabel: status === 'approved' && !moodleConfigured ? 'Approved: your account will be set up later' : PARENT_STATUS_LABELS[status],
      nextSteps: nextStepsFor(status, moodleConfigured),
      timeline: buildTimeline(request, children, events),
    };
  }

  private async findByPublicId(publicId: string): Promise<RequestRecord> {
    const notFound = new NotFoundError('There is no request at this address.', {
      help: 'Check that you copied the whole link from the email. If it still does not work, contact the school office.',
    });
    if (!PUBLIC_ID_PATTERN.test(publicId)) throw notFound;
    const request = await this.repository.findByPublicId(this.db, publicId);
    if (!request || request.erasedAt !== null) throw notFound;
    return request;
  }
}

