// The one wiring point: builds every service once from the configuration. Tests build the
// same graph with a test configuration (and their own database).
import type { Config } from './config';
import { createDatabase, type Database } from './db/database';
import { migrateToLatest, migrationStatus } from './db/migrator';
import { createLogger, type Logger } from './logger';
import { RequestLifecycle } from './requests/request-lifecycle';
import { RequestRepository } from './requests/request-repository';

export interface ServiceOptions {
  /** Use this database instead of opening the configured one (tests). */
  db?: Database;
  logger?: Logger;
  now?: () => number;
}

export function createServices(config: Readonly<Config>, options: ServiceOptions = {}) {
  const logger = options.logger ?? createLogger(config);
  const db = options.db ?? createDatabase(config.database);
  const requestRepository = new RequestRepository(config.authTable);
  const lifecycle = new RequestLifecycle(db, requestRepository, options.now ? { now: options.now } : {});

  return {
    config,
    logger,
    db,
    requestRepository,
    lifecycle,
    migrate: () => migrateToLatest(db, { authTable: config.authTable }),
    migrationStatus: () => migrationStatus(db, { authTable: config.authTable }),
    async close(): Promise<void> {
      if (!options.db) await db.destroy();
    },
  };
}

export type Services = ReturnType<typeof createServices>;
