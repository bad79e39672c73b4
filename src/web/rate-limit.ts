// Rate limits whose counters live in the database (the `rate_limits` table), so several app
// instances behind a load balancer share them. rate-limiter-flexible does the counting.
import { createHash } from 'node:crypto';
import { RateLimiterMySQL, RateLimiterRes, RateLimiterSQLite, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Database } from '../db/database';
import { isMysql } from '../db/database';
import { AppError } from '../errors';

export const RATE_LIMITS_TABLE = 'rate_limits';

export interface RateLimitOptions {
  /** Distinguishes this limit's counters from the others' in the shared table. */
  keyPrefix: string;
  points: number;
  durationSeconds: number;
}

/** Too many attempts: 429 with Retry-After; the message is safe to show. */
export class RateLimitedError extends AppError {
  readonly retryAfterSeconds: number;
  /** The keyPrefix of the limit that was reached, so a page can say which one in its own words. */
  readonly limit: string | undefined;
  constructor(retryAfterSeconds: number, message = 'Too many requests from this address; try again later.', limit?: string) {
    super(message, 429, 'rate_limited', { help: 'Wait a while before trying again. If you need help now, contact the school office.' });
    this.retryAfterSeconds = Math.max(1, Math.ceil(retryAfterSeconds));
    this.limit = limit;
  }
}

export interface RateLimit {
  /** Counts one attempt for the key; throws RateLimitedError once the limit is used up. */
  consume(key: string, message?: string): Promise<void>;
  /** Forgets the key's attempts (say, once what they were waiting for has happened). */
  reset(key: string): Promise<void>;
}

function databaseName(db: Database): string {
  const connection = db.client.config.connection as { uri?: string; database?: string };
  if (connection.database) return connection.database;
  const uri = connection.uri ? new URL(connection.uri) : undefined;
  const name = uri ? decodeURIComponent(uri.pathname.replace(/^\//, '')) : '';
  if (!name) throw new Error('The MySQL connection names no database; rate limits need one.');
  return name;
}

/**
 * What is stored for a key: its SHA-256. Keys are email addresses and client addresses, which
 * have no business sitting readable in the table, and an email address can be longer than the
 * key column once the limit's prefix is added.
 */
export function storedKey(key: string): string {
  return createHash('sha256').update(key).digest('base64url');
}

/**
 * A rate-limiter-flexible limiter on the shared table, for callers that need more than
 * `consume` (get, block, reward, delete). Keys given to it should go through `storedKey`.
 */
export function createLimiter(db: Database, options: RateLimitOptions & { blockDurationSeconds?: number }): RateLimiterAbstract {
  const common = {
    storeClient: db,
    storeType: 'knex',
    tableName: RATE_LIMITS_TABLE,
    // The table comes from a migration (20261121121000_create_rate_limits).
    tableCreated: true,
    keyPrefix: options.keyPrefix,
    points: options.points,
    duration: options.durationSeconds,
    ...(options.blockDurationSeconds ? { blockDuration: options.blockDurationSeconds } : {}),
  };
  // The library's own purge is a timer per limiter that keeps querying after the database is
  // closed; expired counters are removed by the daily retention run instead (clearExpiredRateLimits).
  return isMysql(db)
    ? new RateLimiterMySQL({ ...common, dbName: databaseName(db), clearExpiredByTimeout: false })
    : new RateLimiterSQLite({ ...common, clearExpiredByTimeout: false });
}

/** Deletes counters that expired more than an hour before `now`; returns how many. */
export async function clearExpiredRateLimits(db: Database, now: number): Promise<number> {
  return db(RATE_LIMITS_TABLE).where('expire', '<', now - 60 * 60 * 1000).delete();
}

export function createRateLimit(db: Database, options: RateLimitOptions): RateLimit {
  const limiter = createLimiter(db, options);
  return {
    async consume(key: string, message?: string) {
      try {
        await limiter.consume(storedKey(key));
      } catch (rejection) {
        // A RateLimiterRes means "over the limit"; anything else is a database error.
        if (rejection instanceof RateLimiterRes) throw new RateLimitedError(rejection.msBeforeNext / 1000, message, options.keyPrefix);
        throw rejection;
      }
    },
    async reset(key: string) {
      await limiter.delete(storedKey(key));
    },
  };
}
