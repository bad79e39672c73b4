// Fresh MariaDB databases for the benchmarks, named mpp_bench_*, migrated to the latest schema,
// and dropped afterwards (run.ts also drops them when the run is interrupted).
import { randomBytes } from 'node:crypto';
import knex from 'knex';
import type { DatabaseConfig } from '../../../src/config';
import { createDatabase, type Database } from '../../../src/db/database';
import { migrateToLatest } from '../../../src/db/migrator';

export const BENCH_AUTH_TABLE = 'moodle_auth_users';
const PREFIX = 'mpp_bench_';

export interface BenchDatabase {
  name: string;
  url: string;
  /** A knex handle for the bench itself (seeding, checks); the service opens its own. */
  db: Database;
  drop(): Promise<void>;
}

export class BenchDatabases {
  private readonly open = new Set<BenchDatabase>();

  constructor(readonly serverUrl: string) {}

  private admin() {
    return knex({ client: 'mysql2', connection: { uri: this.serverUrl, connectTimeout: 5000 } as never, pool: { min: 0, max: 1 } });
  }

  async serverVersion(): Promise<string> {
    const admin = this.admin();
    try {
      const [rows] = (await admin.raw('SELECT VERSION() AS version')) as [Array<{ version: string }>];
      return rows[0]?.version ?? 'unknown';
    } finally {
      await admin.destroy();
    }
  }

  async create(purpose: string): Promise<BenchDatabase> {
    const name = `${PREFIX}${purpose.replace(/[^a-z0-9_]/gi, '_')}_${randomBytes(3).toString('hex')}`;
    const admin = this.admin();
    try {
      await admin.raw(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
    } finally {
      await admin.destroy();
    }
    const url = new URL(this.serverUrl);
    url.pathname = `/${name}`;
    const config: DatabaseConfig = { client: 'mysql', url: url.toString(), display: url.toString() };
    const db = createDatabase(config);
    await migrateToLatest(db, { authTable: BENCH_AUTH_TABLE });
    const handle: BenchDatabase = {
      name,
      url: url.toString(),
      db,
      drop: async () => {
        this.open.delete(handle);
        await db.destroy().catch(() => undefined);
        const dropper = this.admin();
        try {
          await dropper.raw(`DROP DATABASE IF EXISTS \`${name}\``);
        } finally {
          await dropper.destroy();
        }
      },
    };
    this.open.add(handle);
    return handle;
  }

  async dropAll(): Promise<void> {
    for (const handle of [...this.open]) await handle.drop().catch(() => undefined);
  }
}
