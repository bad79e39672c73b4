// Opens the service's database: MySQL/MariaDB through mysql2, or an embedded SQLite file
// through better-sqlite3. Everything else talks to knex and stays dialect-neutral.
import fs from 'node:fs';
import path from 'node:path';
import knex, { Knex } from 'knex';
import type { DatabaseConfig } from '../config';

export type Database = Knex;

export interface DatabaseOptions {
  /** Connection pool size for MySQL. SQLite always uses one connection. */
  poolMax?: number;
  /**
   * How long a query waits for a connection (MySQL), and how long opening one may take, before
   * it fails as "database unreachable". Tests of an outage make these short.
   */
  acquireConnectionTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Where knex's own warnings go (a lost connection, say); without it knex writes to the console. */
  logger?: { warn(fields: object, message: string): void; error(fields: object, message: string): void; debug(fields: object, message: string): void };
}

function knexLog(logger: DatabaseOptions['logger']): Knex.Config['log'] {
  if (!logger) return undefined;
  return {
    warn: (message: unknown) => logger.warn({ knex: String(message) }, 'database warning'),
    error: (message: unknown) => logger.error({ knex: String(message) }, 'database error'),
    deprecate: (method: unknown, alternative: unknown) => logger.debug({ method, alternative }, 'knex deprecation'),
    debug: (message: unknown) => logger.debug({ knex: String(message) }, 'database debug'),
  };
}

export function createDatabase(database: DatabaseConfig, options: DatabaseOptions = {}): Database {
  if (database.client === 'sqlite') {
    if (database.filename !== ':memory:') fs.mkdirSync(path.dirname(database.filename), { recursive: true });
    return knex({
      client: 'better-sqlite3',
      connection: { filename: database.filename },
      useNullAsDefault: true,
      log: knexLog(options.logger),
      pool: {
        min: 1,
        max: 1,
        afterCreate(connection: { pragma(sql: string): unknown }, done: (err: Error | null, connection: unknown) => void) {
          // WAL lets readers work while a writer commits; busy_timeout makes a second
          // process (the CLI beside the server) wait for the lock instead of failing.
          connection.pragma('journal_mode = WAL');
          connection.pragma('busy_timeout = 5000');
          connection.pragma('foreign_keys = ON');
          done(null, connection);
        },
      },
    });
  }
  return knex({
    client: 'mysql2',
    connection: {
      uri: database.url,
      charset: 'utf8mb4',
      // Times are stored as epoch milliseconds (BIGINT): keep them numbers, not strings.
      supportBigNumbers: true,
      bigNumberStrings: false,
      timezone: 'Z',
      connectTimeout: options.connectTimeoutMs ?? 10_000,
    } as Knex.MySql2ConnectionConfig,
    pool: { min: 0, max: options.poolMax ?? 10 },
    acquireConnectionTimeout: options.acquireConnectionTimeoutMs ?? 10_000,
    log: knexLog(options.logger),
  });
}

/** Answers when the database does; throws (a connection error) when it cannot be reached. */
export async function pingDatabase(db: Database): Promise<void> {
  await db.raw('select 1');
}

export function isMysql(db: Database): boolean {
  return db.client.config.client === 'mysql2';
}

/**
 * Whether a MySQL-family server is MariaDB 10.5 or later, whose INSERT takes RETURNING (MySQL's
 * does not). Asked once per database with SELECT VERSION(): keyed by the knex configuration, which
 * every transaction's client shares with the pool's.
 */
const mysqlInsertReturnsByConfig = new WeakMap<object, Promise<boolean>>();

export function mysqlInsertReturns(q: Knex | Knex.Transaction): Promise<boolean> {
  const config = q.client.config as object;
  let known = mysqlInsertReturnsByConfig.get(config);
  if (!known) {
    known = q.raw('SELECT VERSION() AS version').then(([rows]: [Array<{ version: string }>]) => {
      const version = String(rows[0]?.version ?? '');
      const [major = 0, minor = 0] = version.split('.').map((part) => Number.parseInt(part, 10));
      return /mariadb/i.test(version) && (major > 10 || (major === 10 && minor >= 5));
    });
    // A failed look-up is asked again next time rather than remembered.
    known.catch(() => mysqlInsertReturnsByConfig.delete(config));
    mysqlInsertReturnsByConfig.set(config, known);
  }
  return known;
}

/** True for a unique-constraint violation on either dialect. */
export function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: string; errno?: number; message?: string } | undefined;
  if (!e) return false;
  return (
    e.code === 'ER_DUP_ENTRY' ||
    e.errno === 1062 ||
    e.code === 'SQLITE_CONSTRAINT_UNIQUE' ||
    e.code === 'SQLITE_CONSTRAINT_PRIMARYKEY' ||
    (typeof e.message === 'string' && e.message.includes('UNIQUE constraint failed'))
  );
}

/** True when the error means the database server cannot be reached (as opposed to a bad query). */
export function isConnectionError(error: unknown): boolean {
  const e = error as { code?: string; name?: string; message?: string } | undefined;
  if (!e) return false;
  const codes = new Set([
    'ECONNREFUSED',
    'ECONNRESET',
    'ETIMEDOUT',
    'EPIPE',
    'ENOTFOUND',
    'EHOSTUNREACH',
    'PROTOCOL_CONNECTION_LOST',
    'ER_CON_COUNT_ERROR',
    'ER_SERVER_SHUTDOWN',
    'SQLITE_BUSY',
    'SQLITE_CANTOPEN',
  ]);
  if (e.code && codes.has(e.code)) return true;
  if (e.name === 'KnexTimeoutError') return true;
  return typeof e.message === 'string' && /Can't add new command when connection is in closed state|connection is in closed state/i.test(e.message);
}
