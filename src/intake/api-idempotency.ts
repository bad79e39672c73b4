// Idempotent retries of the intake API. An Idempotency-Key belongs to the API key that sent it
// (another school system may well number its form entries the same way), and stands for one
// request body: the same key with a different body is refused rather than answered with the
// earlier request, whose id and status link are not the sender's to learn.
import { createHash } from 'node:crypto';
import { nullableNumber } from '../db/columns';
import type { Database } from '../db/database';
import { isUniqueViolation } from '../db/database';
import { ConflictError } from '../errors';
import type { Queryable, RequestRepository } from '../requests/request-repository';
import type { IntakeOutcome, IntakeService, SubmitMeta } from './intake.service';
import type { ValidRequest } from './request-form';

export const API_IDEMPOTENCY_TABLE = 'api_idempotency_keys';

interface IdempotencyRecord {
  id: number;
  bodyHash: string;
  requestId: number | null;
}

type Row = Record<string, unknown>;

function fromRow(r: Row): IdempotencyRecord {
  return { id: Number(r.id), bodyHash: String(r.body_hash), requestId: nullableNumber(r.request_id) };
}

/** The only code that reads and writes the api_idempotency_keys table. */
export class ApiIdempotencyRepository {
  /** Claims the key for this body; undefined when the API key has used it already. */
  async claim(q: Queryable, apiKeyId: number, key: string, bodyHash: string, now: number): Promise<number | undefined> {
    try {
      const inserted = await q(API_IDEMPOTENCY_TABLE).insert({ api_key_id: apiKeyId, idempotency_key: key, body_hash: bodyHash, request_id: null, created_at: now });
      return Number(inserted[0]);
    } catch (error) {
      if (isUniqueViolation(error)) return undefined;
      throw error;
    }
  }

  async find(q: Queryable, apiKeyId: number, key: string): Promise<IdempotencyRecord | undefined> {
    const row = (await q(API_IDEMPOTENCY_TABLE).where({ api_key_id: apiKeyId, idempotency_key: key }).first()) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  async recordRequest(q: Queryable, id: number, requestId: number): Promise<void> {
    await q(API_IDEMPOTENCY_TABLE).where({ id }).update({ request_id: requestId });
  }

  /** Gives a claim back when its call stored nothing, so a corrected retry may use the key. */
  async release(q: Queryable, id: number): Promise<void> {
    await q(API_IDEMPOTENCY_TABLE).where({ id }).whereNull('request_id').del();
  }
}

/** A stable fingerprint of what was asked for: object keys sorted, so key order does not matter. */
export function requestFingerprint(data: ValidRequest): string {
  const canonical = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(canonical);
    if (value && typeof value === 'object') {
      return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical((value as Record<string, unknown>)[k])]));
    }
    return value;
  };
  return createHash('sha256').update(JSON.stringify(canonical(data))).digest('hex');
}

/**
 * The key as the requests table stores it: scoped to the API key, and hashed so that the scope
 * and a 100-character key still fit the column.
 */
export function scopedIdempotencyKey(apiKeyId: number, key: string): string {
  return `api:${apiKeyId}:${createHash('sha256').update(key).digest('base64url')}`;
}

export const IDEMPOTENCY_MISMATCH_MESSAGE =
  'This Idempotency-Key was already used with different details, so nothing was stored.';
const IDEMPOTENCY_MISMATCH_HELP =
  'Send the same details again to repeat a call, or use a new Idempotency-Key for a new request.';

export class ApiIdempotency {
  private readonly repository = new ApiIdempotencyRepository();

  constructor(
    private readonly db: Database,
    private readonly intake: IntakeService,
    private readonly requests: RequestRepository,
    private readonly now: () => number = Date.now,
  ) {}

  /** Submits once per (API key, Idempotency-Key); a retry with the same body gets the same answer. */
  async submit(apiKeyId: number, idempotencyKey: string, data: ValidRequest, meta: Omit<SubmitMeta, 'idempotencyKey'>): Promise<IntakeOutcome> {
    const bodyHash = requestFingerprint(data);
    const claimed = await this.repository.claim(this.db, apiKeyId, idempotencyKey, bodyHash, this.now());
    if (claimed === undefined) {
      const earlier = await this.repository.find(this.db, apiKeyId, idempotencyKey);
      if (earlier && earlier.bodyHash !== bodyHash) {
        throw new ConflictError(IDEMPOTENCY_MISMATCH_MESSAGE, 'idempotency_key_reused', { help: IDEMPOTENCY_MISMATCH_HELP });
      }
      const request = earlier?.requestId != null ? await this.requests.findById(this.db, earlier.requestId) : undefined;
      if (request) return { outcome: 'replayed', request, statusUrl: this.intake.statusUrl(request.publicId) };
      // The first call is still under way, or stopped before it finished: the scoped key on the
      // request itself makes the two calls store one request between them.
    }
    let outcome: IntakeOutcome;
    try {
      outcome = await this.intake.submit(data, { ...meta, idempotencyKey: scopedIdempotencyKey(apiKeyId, idempotencyKey) });
    } catch (error) {
      if (claimed !== undefined) await this.repository.release(this.db, claimed).catch(() => undefined);
      throw error;
    }
    const record = claimed ?? (await this.repository.find(this.db, apiKeyId, idempotencyKey))?.id;
    if (record !== undefined) await this.repository.recordRequest(this.db, record, outcome.request.id);
    return outcome;
  }
}
