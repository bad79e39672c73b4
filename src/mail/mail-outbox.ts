// Mail waiting to be sent. A message is queued in the same transaction as the change that causes
// it, so it is sent exactly when that change commits; a sender loop delivers it and retries with
// backoff, and several app instances may run the loop against one database.
import type { Knex } from 'knex';
import type { Database } from '../db/database';
import { PeriodicTask } from '../periodic-task';
import type { MailKind } from './mail-messages';
import { MailSendError, type MailLogger, type MailMessage, type MailTransport } from './mail-transport';

export const MAIL_OUTBOX_TABLE = 'mail_outbox';

export type OutboxState = 'pending' | 'sent' | 'failed';

/** A knex instance or an open transaction. */
type Queryable = Knex | Knex.Transaction;

/** Rows per multi-row insert: each carries a whole rendered message (a few KiB). */
const ENQUEUE_CHUNK = 100;

export interface EnqueueOptions {
  kind: MailKind;
  requestId?: number | null;
}

export interface SendDueResult {
  sent: number;
  /** Failed this time and will be tried again later. */
  retrying: number;
  /** Given up on: too many attempts, or the server refused the recipient for good. */
  failed: number;
}

export interface OutboxEvent {
  id: number;
  kind: string;
  requestId: number | null;
  attempts: number;
}

export interface MailOutboxOptions {
  now?: () => number;
  /** Attempts before a message is marked failed (default 12: with the backoff below, about 20 hours). */
  maxAttempts?: number;
  /** Wait after the first failure; doubles each time (default 1 minute). */
  firstRetryDelayMs?: number;
  /** Longest wait between attempts (default 6 hours). */
  maxRetryDelayMs?: number;
  /**
   * How long a claimed message is left to its sender before another instance may take it over.
   * Longer than any SMTP exchange can last, so a message is only sent twice if a sender died mid-send.
   */
  claimTimeoutMs?: number;
  onSent?: (event: OutboxEvent) => void;
  onFailed?: (event: OutboxEvent & { error: string; willRetry: boolean }) => void;
}

export interface OutboxCounters {
  sent: number;
  retrying: number;
  failed: number;
}

export interface OutboxStatus {
  pending: number;
  failed: number;
  /** created_at of the oldest message still waiting, or null. */
  oldestPendingAt: number | null;
  /** The most recent error of a waiting or failed message, for the diagnostics page. */
  lastError: string | null;
}

interface StoredPayload {
  subject: string;
  text?: string;
  html?: string;
  verificationLink?: string;
}

interface OutboxRow {
  id: number;
  kind: string;
  request_id: number | null;
  recipient: string;
  payload: string;
  attempts: number;
  next_attempt_at: number;
}

const MAX_RECIPIENT_LENGTH = 254;

/** The wait before attempt n+1 after n failures: first, 2×first, 4×first, … capped. */
export function retryDelay(failures: number, firstMs: number, maxMs: number): number {
  const exponent = Math.min(Math.max(failures - 1, 0), 30);
  return Math.min(firstMs * 2 ** exponent, maxMs);
}

export class MailOutbox {
  readonly counters: OutboxCounters = { sent: 0, retrying: 0, failed: 0 };
  private readonly now: () => number;
  private readonly maxAttempts: number;
  private readonly firstRetryDelayMs: number;
  private readonly maxRetryDelayMs: number;
  private readonly claimTimeoutMs: number;
  // A database hiccup fails a round: the messages are still queued, the next round picks them up.
  private readonly sender = new PeriodicTask(
    () => this.sendDue(),
    (error) => this.logger.error({ error: (error as Error).message }, 'Mail sender round failed'),
  );

  constructor(
    private readonly db: Database,
    private readonly transport: MailTransport,
    private readonly logger: MailLogger,
    private readonly options: MailOutboxOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.maxAttempts = options.maxAttempts ?? 12;
    this.firstRetryDelayMs = options.firstRetryDelayMs ?? 60_000;
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 6 * 3_600_000;
    this.claimTimeoutMs = options.claimTimeoutMs ?? 10 * 60_000;
  }

  /**
   * Queues a message, one row per recipient, in the caller's transaction: if that transaction
   * rolls back, the mail is never sent. Returns the new row ids.
   */
  async enqueue(trx: Queryable, message: MailMessage, options: EnqueueOptions): Promise<number[]> {
    const ids: number[] = [];
    for (const row of this.outboxRows(message, options)) {
      const inserted = await trx(MAIL_OUTBOX_TABLE).insert(row);
      ids.push(Number(inserted[0]));
    }
    return ids;
  }

  /**
   * Queues many messages in the caller's transaction with multi-row inserts (a cycle's "account
   * ready" mails), not one statement per message. The items are taken from the iterable as the
   * rows are written, so a lazy one (a generator rendering each message) holds only one insert's
   * messages at a time, not a whole batch of rendered mail across every insert.
   */
  async enqueueMany(trx: Queryable, items: Iterable<{ message: MailMessage; options: EnqueueOptions }>): Promise<void> {
    let rows: Array<Record<string, unknown>> = [];
    for (const item of items) {
      for (const row of this.outboxRows(item.message, item.options)) rows.push(row);
      if (rows.length >= ENQUEUE_CHUNK) {
        await trx(MAIL_OUTBOX_TABLE).insert(rows.slice(0, ENQUEUE_CHUNK));
        rows = rows.slice(ENQUEUE_CHUNK);
      }
    }
    if (rows.length > 0) await trx(MAIL_OUTBOX_TABLE).insert(rows);
  }

  private outboxRows(message: MailMessage, options: EnqueueOptions): Array<Record<string, unknown>> {
    const recipients = (Array.isArray(message.to) ? message.to : [message.to]).map((r) => r.trim()).filter((r) => r !== '');
    const now = this.now();
    const payload: StoredPayload = { subject: message.subject, text: message.text, html: message.html };
    if (message.verificationLink) payload.verificationLink = message.verificationLink;
    const json = JSON.stringify(payload);
    return recipients.map((recipient) => {
      if (recipient.length > MAX_RECIPIENT_LENGTH || /[\r\n]/.test(recipient)) {
        throw new Error(`Mail of kind ${options.kind} has an invalid recipient address.`);
      }
      return {
        kind: options.kind,
        request_id: options.requestId ?? null,
        recipient,
        payload: json,
        state: 'pending',
        attempts: 0,
        next_attempt_at: now,
        last_error: null,
        created_at: now,
        sent_at: null,
      };
    });
  }

  /**
   * Sends the messages that are due, oldest first. Each row is claimed with a conditional update
   * before it is sent, so when instances run this at the same moment each message goes once.
   */
  async sendDue(options: { limit?: number } = {}): Promise<SendDueResult> {
    const result: SendDueResult = { sent: 0, retrying: 0, failed: 0 };
    const rows = (await this.db(MAIL_OUTBOX_TABLE)
      .where('state', 'pending')
      .andWhere('next_attempt_at', '<=', this.now())
      .orderBy([{ column: 'next_attempt_at' }, { column: 'id' }])
      .limit(options.limit ?? 50)
      .select('id', 'kind', 'request_id', 'recipient', 'payload', 'attempts', 'next_attempt_at')) as OutboxRow[];

    for (const raw of rows) {
      const row = normaliseRow(raw);
      const attempts = await this.claim(row);
      if (attempts === null) continue; // another instance took it
      const outcome = await this.deliver(row, attempts);
      result[outcome.result] += 1;
      // The server is down or will not let us in: the rest would fail the same way. They stay
      // due untouched and are tried on the next round instead of each using up an attempt now.
      if (outcome.serverProblem) break;
    }
    return result;
  }

  /** Runs sendDue every intervalMs (never two rounds at once in this process) until stop(). */
  startSender(intervalMs: number): void {
    this.sender.start(intervalMs);
  }

  /** Stops the loop and waits for a round in progress, so shutdown never cuts a send short. */
  stop(): Promise<void> {
    return this.sender.stop();
  }

  /** Deletes every queued or sent mail of a request (erasure). Run it in the erasure's transaction. */
  async purgeForRequest(trx: Queryable, requestId: number): Promise<number> {
    return Number(await trx(MAIL_OUTBOX_TABLE).where({ request_id: requestId }).delete());
  }

  /** For metrics and the diagnostics page. */
  async status(): Promise<OutboxStatus> {
    const counts = (await this.db(MAIL_OUTBOX_TABLE)
      .whereIn('state', ['pending', 'failed'])
      .groupBy('state')
      .select('state')
      .count({ n: '*' })
      .min({ oldest: 'created_at' })) as Array<{ state: string; n: number | string; oldest: number | string | null }>;
    const latest = (await this.db(MAIL_OUTBOX_TABLE)
      .whereIn('state', ['pending', 'failed'])
      .whereNotNull('last_error')
      .orderBy('id', 'desc')
      .first('last_error')) as { last_error: string } | undefined;
    const pending = counts.find((c) => c.state === 'pending');
    const failed = counts.find((c) => c.state === 'failed');
    return {
      pending: Number(pending?.n ?? 0),
      failed: Number(failed?.n ?? 0),
      oldestPendingAt: pending?.oldest === null || pending?.oldest === undefined ? null : Number(pending.oldest),
      lastError: latest?.last_error ?? null,
    };
  }

  // ------------------------------------------------------------------ internals

  /**
   * Takes the row for this sender: counts the attempt and pushes next_attempt_at past the claim
   * timeout, but only if nobody changed the row since it was read. Returns the attempt number.
   */
  private async claim(row: OutboxRow): Promise<number | null> {
    const attempts = row.attempts + 1;
    const changed = await this.db(MAIL_OUTBOX_TABLE)
      .where({ id: row.id, state: 'pending', attempts: row.attempts, next_attempt_at: row.next_attempt_at })
      .update({ attempts, next_attempt_at: this.now() + this.claimTimeoutMs });
    return Number(changed) === 1 ? attempts : null;
  }

  private async deliver(row: OutboxRow, attempts: number): Promise<{ result: keyof SendDueResult; serverProblem: boolean }> {
    const event: OutboxEvent = { id: row.id, kind: row.kind, requestId: row.request_id, attempts };
    let payload: StoredPayload;
    try {
      payload = JSON.parse(row.payload) as StoredPayload;
      if (typeof payload.subject !== 'string' || typeof payload.text !== 'string' || typeof payload.html !== 'string') {
        throw new Error('incomplete');
      }
    } catch {
      await this.markFailed(row, attempts, 'The stored message is damaged and cannot be sent.', false);
      this.report(event, 'The stored message is damaged and cannot be sent.', false);
      return { result: 'failed', serverProblem: false };
    }

    try {
      const message: MailMessage = { to: row.recipient, subject: payload.subject, text: payload.text, html: payload.html };
      if (payload.verificationLink) message.verificationLink = payload.verificationLink;
      await this.transport.send(message);
    } catch (error) {
      const problem =
        error instanceof MailSendError ? error : new MailSendError(`The message could not be sent: ${(error as Error).message}`, false, false);
      const willRetry = !problem.permanent && attempts < this.maxAttempts;
      await this.markFailed(row, attempts, problem.message, willRetry);
      this.report(event, problem.message, willRetry);
      return { result: willRetry ? 'retrying' : 'failed', serverProblem: problem.serverProblem };
    }

    // The body holds personal data and, for verification, a live link: keep only what is needed
    // to show that a mail of this kind went to this address at this time.
    await this.db(MAIL_OUTBOX_TABLE)
      .where({ id: row.id })
      .update({ state: 'sent', sent_at: this.now(), last_error: null, payload: JSON.stringify({ subject: payload.subject }) });
    this.counters.sent += 1;
    this.options.onSent?.(event);
    this.logger.info({ outboxId: row.id, kind: row.kind, requestId: row.request_id, attempts }, 'Mail sent');
    return { result: 'sent', serverProblem: false };
  }

  private async markFailed(row: OutboxRow, attempts: number, error: string, willRetry: boolean): Promise<void> {
    const now = this.now();
    const patch: Record<string, unknown> = willRetry
      ? { last_error: error, next_attempt_at: now + retryDelay(attempts, this.firstRetryDelayMs, this.maxRetryDelayMs) }
      : { last_error: error, state: 'failed', payload: JSON.stringify({ subject: safeSubject(row.payload) }) };
    // Conditional on our claim: a sender that took over after the claim timeout owns the row now.
    await this.db(MAIL_OUTBOX_TABLE).where({ id: row.id, state: 'pending', attempts }).update(patch);
  }

  private report(event: OutboxEvent, error: string, willRetry: boolean): void {
    if (willRetry) this.counters.retrying += 1;
    else this.counters.failed += 1;
    this.options.onFailed?.({ ...event, error, willRetry });
    const details = { outboxId: event.id, kind: event.kind, requestId: event.requestId, attempts: event.attempts, error };
    if (willRetry) this.logger.warn(details, 'Mail not sent; it will be tried again');
    else this.logger.error(details, 'Mail not sent; giving up on it');
  }
}

function normaliseRow(raw: OutboxRow): OutboxRow {
  // mysql2 and better-sqlite3 agree on numbers here, but BIGINT may come back as a string elsewhere.
  return {
    id: Number(raw.id),
    kind: String(raw.kind),
    request_id: raw.request_id === null ? null : Number(raw.request_id),
    recipient: String(raw.recipient),
    payload: String(raw.payload),
    attempts: Number(raw.attempts),
    next_attempt_at: Number(raw.next_attempt_at),
  };
}

function safeSubject(payload: string): string {
  try {
    const parsed = JSON.parse(payload) as { subject?: unknown };
    return typeof parsed.subject === 'string' ? parsed.subject : '';
  } catch {
    return '';
  }
}
