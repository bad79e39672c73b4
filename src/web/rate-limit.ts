// Rate limits whose counters live in the database (the `rate_limits` table), so several app
// instances behind a load balancer share them. rate-limiter-flexible does the counting.
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { RateLimiterMySQL, RateLimiterRes, RateLimiterSQLite, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Database } from '../db/database';
import { isMysql, mysqlInsertReturns } from '../db/database';
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
  /** One attempt for the key, to be counted with others inside a caller's transaction (`consumeInTransaction`). */
  attempt(key: string, message?: string): RateLimitAttempt;
}

export interface RateLimitAttempt {
  /** The counter's row key, as rate-limiter-flexible names it: `<prefix>:<storedKey>`. */
  rowKey: string;
  points: number;
  durationMs: number;
  limit: string;
  message: string | undefined;
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
    attempt(key: string, message?: string) {
      return {
        rowKey: `${options.keyPrefix}:${storedKey(key)}`,
        points: options.points,
        durationMs: options.durationSeconds * 1000,
        limit: options.keyPrefix,
        message,
      };
    },
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

/**
 * Counts attempts of several limits inside the caller's transaction, so that they commit or roll
 * back with the work they guard (a stored submission): one upsert for all of them, and one read
 * on MariaDB, where the upsert cannot return rows. The counters are the rows rate-limiter-flexible
 * keeps, updated exactly as its fixed window does (RateLimiterMySQL/RateLimiterSQLite
 * `_upsertTransaction`): a row whose window has ended starts again at 1. So `reset`, the
 * library's own reads and the retention purge see them as their own. Throws RateLimitedError for
 * the first attempt, in the order given, that is over its limit. MariaDB 10.5 and later answer the
 * upsert with the counters (RETURNING), saving the read; MySQL and older MariaDB are read after it.
 */
export async function consumeInTransaction(
  trx: Knex.Transaction,
  attempts: readonly RateLimitAttempt[],
  now = Date.now(),
  options: { upsertReturns?: boolean } = {},
): Promise<void> {
  if (attempts.length === 0) return;
  const keys = attempts.map((a) => a.rowKey);
  const values = attempts.flatMap((a) => [a.rowKey, 1, now + a.durationMs]);
  const rowsSql = attempts.map(() => '(?, ?, ?)').join(', ');
  let rows: Array<{ key: string; points: number | string; expire: number | string }>;
  if (trx.client.config.client === 'mysql2') {
    const returns = options.upsertReturns ?? (await mysqlInsertReturns(trx));
    const upsert = `INSERT INTO ?? (\`key\`, points, expire) VALUES ${rowsSql}
       ON DUPLICATE KEY UPDATE points = IF(expire <= ?, VALUES(points), points + VALUES(points)), expire = IF(expire <= ?, VALUES(expire), expire)`;
    if (returns) {
      [rows] = (await trx.raw(`${upsert} RETURNING \`key\`, points, expire`, [RATE_LIMITS_TABLE, ...values, now, now])) as [typeof rows];
    } else {
      await trx.raw(upsert, [RATE_LIMITS_TABLE, ...values, now, now]);
      rows = await trx(RATE_LIMITS_TABLE).whereIn('key', keys).select('key', 'points', 'expire');
    }
  } else {
    rows = (await trx.raw(
      `INSERT INTO ?? (key, points, expire) VALUES ${rowsSql}
       ON CONFLICT(key) DO UPDATE SET
         points = CASE WHEN expire IS NULL OR expire > ? THEN points + excluded.points ELSE excluded.points END,
         expire = CASE WHEN expire IS NULL OR expire > ? THEN expire ELSE excluded.expire END
       RETURNING key, points, expire`,
      [RATE_LIMITS_TABLE, ...values, now, now],
    )) as typeof rows;
  }
  const byKey = new Map(rows.map((r) => [r.key, r]));
  for (const attempt of attempts) {
    const row = byKey.get(attempt.rowKey);
    if (row && Number(row.points) > attempt.points) {
      throw new RateLimitedError((Number(row.expire) - now) / 1000, attempt.message, attempt.limit);
    }
  }
}
