// Real databases for integration tests: a fresh SQLite file and a fresh MariaDB database per
// test file. Under CI an unreachable MariaDB fails the run; on a laptop without it, the
// MariaDB variants are skipped with a visible message.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import knex from 'knex';
import { createDatabase, type Database } from '../../src/db/database';
import { migrateToLatest } from '../../src/db/migrator';
import type { DatabaseConfig } from '../../src/config';

export const TEST_AUTH_TABLE = 'moodle_auth_users';
const MYSQL_SERVER_URL = process.env.TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';

export type Dialect = 'sqlite' | 'mariadb';

export interface TestDatabase {
  dialect: Dialect;
  db: Database;
  config: DatabaseConfig;
  /** Drops the database (MariaDB) or deletes the file (SQLite) and closes connections. */
  destroy(): Promise<void>;
}

let mariadbReachable: Promise<string | undefined> | undefined;

/** Resolves to undefined when MariaDB answers, or to the reason it does not. */
export function mariadbProblem(): Promise<string | undefined> {
  mariadbReachable ??= (async () => {
    const probe = knex({ client: 'mysql2', connection: { uri: MYSQL_SERVER_URL, connectTimeout: 3000 } as never, pool: { min: 0, max: 1 } });
    try {
      await probe.raw('select 1');
      return undefined;
    } catch (error) {
      return (error as Error).message;
    } finally {
      await probe.destroy();
    }
  })();
  return mariadbReachable;
}

export async function createTestDatabase(dialect: Dialect, options: { migrate?: boolean } = {}): Promise<TestDatabase> {
  const migrate = options.migrate ?? true;
  if (dialect === 'sqlite') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-test-'));
    const filename = path.join(dir, 'test.sqlite');
    const config: DatabaseConfig = { client: 'sqlite', filename, display: `sqlite:${filename}` };
    const db = createDatabase(config);
    if (migrate) await migrateToLatest(db, { authTable: TEST_AUTH_TABLE });
    return {
      dialect,
      db,
      config,
      async destroy() {
        await db.destroy();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const name = `mpp_t_${process.pid}_${randomBytes(4).toString('hex')}`;
  const server = knex({ client: 'mysql2', connection: { uri: MYSQL_SERVER_URL } as never, pool: { min: 0, max: 1 } });
  await server.raw(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  await server.destroy();
  const url = new URL(MYSQL_SERVER_URL);
  url.pathname = `/${name}`;
  const config: DatabaseConfig = { client: 'mysql', url: url.toString(), display: url.toString() };
  const db = createDatabase(config);
  if (migrate) await migrateToLatest(db, { authTable: TEST_AUTH_TABLE });
  return {
    dialect,
    db,
    config,
    async destroy() {
      await db.destroy();
      const admin = knex({ client: 'mysql2', connection: { uri: MYSQL_SERVER_URL } as never, pool: { min: 0, max: 1 } });
      await admin.raw(`DROP DATABASE IF EXISTS \`${name}\``);
      await admin.destroy();
    },
  };
}

export const DIALECTS: readonly Dialect[] = ['sqlite', 'mariadb'];

/**
 * Why this dialect's tests must be skipped, or false to run them. Never skips under CI:
 * there an unreachable MariaDB makes the tests fail when they try to connect.
 */
export async function skipReason(dialect: Dialect): Promise<string | false> {
  if (dialect === 'sqlite' || process.env.CI) return false;
  const problem = await mariadbProblem();
  if (problem === undefined) return false;
  const reason = `MariaDB is not reachable at ${MYSQL_SERVER_URL} (${problem}); start it to run these tests`;
  process.stderr.write(`\n*** SKIPPING MariaDB tests: ${reason}\n\n`);
  return reason;
}
