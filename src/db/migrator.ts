// Runs the knex migrations in migrations/. Names are stored without their extension so the
// same database can be migrated from TypeScript (tests, tsx) and from the compiled build.
import fs from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import type { Database } from './database';

const runningFromTypeScript = __filename.endsWith('.ts');
// src/db → ../../migrations; dist/src/db → ../../migrations (the compiled copies).
export const MIGRATIONS_DIR = path.resolve(__dirname, '..', '..', 'migrations');
const EXTENSION = runningFromTypeScript ? '.ts' : '.js';

interface MigrationModule {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

class ProjectMigrationSource implements Knex.MigrationSource<string> {
  async getMigrations(): Promise<string[]> {
    return fs
      .readdirSync(MIGRATIONS_DIR)
      .filter((f) => f.endsWith(EXTENSION) && !f.endsWith('.d.ts') && /^\d{14}_/.test(f))
      .map((f) => f.slice(0, -EXTENSION.length))
      .sort();
  }
  getMigrationName(migration: string): string {
    return migration;
  }
  async getMigration(migration: string): Promise<MigrationModule> {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(path.join(MIGRATIONS_DIR, migration + EXTENSION)) as MigrationModule;
  }
}

export interface MigrationOptions {
  authTable: string;
}

function migratorConfig(): Knex.MigratorConfig {
  return { migrationSource: new ProjectMigrationSource(), tableName: 'knex_migrations' };
}

/** Gives the migrations their parameters (the auth table's name) without importing app code. */
function withParams(db: Database, options: MigrationOptions): Database {
  return db.withUserParams({ authTable: options.authTable });
}

export async function migrateToLatest(db: Database, options: MigrationOptions): Promise<string[]> {
  const [, applied] = (await withParams(db, options).migrate.latest(migratorConfig())) as [number, string[]];
  return applied;
}

export async function rollbackAll(db: Database, options: MigrationOptions): Promise<string[]> {
  const [, reverted] = (await withParams(db, options).migrate.rollback(migratorConfig(), true)) as [number, string[]];
  return reverted;
}

export interface MigrationStatus {
  applied: string[];
  pending: string[];
}

export async function migrationStatus(db: Database, options: MigrationOptions): Promise<MigrationStatus> {
  const [applied, pending] = (await withParams(db, options).migrate.list(migratorConfig())) as [
    Array<{ name: string } | string>,
    Array<string | { file: string }>,
  ];
  const name = (m: { name: string } | { file: string } | string) =>
    typeof m === 'string' ? m : 'name' in m ? m.name : m.file;
  return { applied: applied.map(name), pending: pending.map(name) };
}
