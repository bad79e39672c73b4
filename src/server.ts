// Starts the service: reads the configuration, opens and migrates the database, listens,
// and shuts down cleanly on SIGTERM/SIGINT.
import type { Server } from 'node:http';
import { createApp } from './app';
import { loadConfig } from './config';
import { ConfigError } from './errors';
import { createServices, type Services } from './services';

export async function startServer(services: Services): Promise<Server> {
  const { config, logger } = services;
  const applied = await services.migrate();
  if (applied.length > 0) logger.info({ applied: applied.length }, 'database migrated');
  const app = createApp(services);
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(config.port, config.host, () => resolve(s));
    s.on('error', reject);
  });
  return server;
}

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n${error.help ?? ''}\n`);
      process.exit(1);
    }
    throw error;
  }
  const services = createServices(config);
  const { logger } = services;
  if (config.sessionSecretGenerated) {
    logger.warn('SESSION_SECRET is not set: using a random one for this run (staff sessions end at restart)');
  }
  let server: Server;
  try {
    server = await startServer(services);
  } catch (error) {
    logger.fatal({ err: error }, 'could not start');
    process.stderr.write(`Could not start: ${(error as Error).message}\n`);
    await services.close().catch(() => undefined);
    process.exit(1);
  }
  services.startBackground();
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  logger.info({ port, database: config.database.display }, 'listening');
  const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  const listenUrl = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  process.stdout.write(`Moodle Parent Provisioning is running at ${listenUrl}\n`);
  if (config.baseUrl !== listenUrl) process.stdout.write(`  Public address (BASE_URL): ${config.baseUrl}\n`);
  process.stdout.write(`  Database: ${config.database.display}\n`);
  // The first person to open the dashboard needs the setup code; say where, beside the address.
  if (await services.staffAccounts.needsSetup().catch(() => false)) {
    process.stdout.write(`  Staff dashboard: open ${listenUrl}/admin/setup with the one-time setup code ${services.staffAccounts.setupCode()}\n`);
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const forced = setTimeout(() => {
      logger.error({ graceMs: SHUTDOWN_GRACE_MS }, 'shutdown took too long: exiting without waiting further');
      process.exit(1);
    }, SHUTDOWN_GRACE_MS);
    forced.unref();
    shutDown(server, services).then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

/**
 * How long a shutdown may take before the process exits anyway. A cycle stopped in the middle of
 * a step is marked interrupted by the next cycle, and its lock is taken over once expired.
 */
const SHUTDOWN_GRACE_MS = 30_000;

/**
 * Stops taking requests at once and lets those under way finish; a running provisioning cycle
 * finishes the step it is on, records what it did, marks itself stopped and releases its lock;
 * then the schedule, the mail sender and the database are closed.
 */
export async function shutDown(server: Server, services: Services): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // A keep-alive connection is closed as soon as its request under way has been answered.
  const closeIdle = setInterval(() => server.closeIdleConnections(), 100);
  try {
    server.closeIdleConnections();
    await Promise.all([services.cycle.requestStop(), services.reconcile.requestStop()]);
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, REQUEST_GRACE_MS).unref())]);
    server.closeAllConnections();
    await closed;
  } finally {
    clearInterval(closeIdle);
  }
  await services.close();
}

/** How long requests under way get to finish once the service is stopping. */
const REQUEST_GRACE_MS = 10_000;

if (require.main === module) {
  void main();
}
