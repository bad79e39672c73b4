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

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    server.close(async () => {
      await services.close().catch(() => undefined);
      process.exit(0);
    });
    server.closeAllConnections?.();
    setTimeout(() => process.exit(1), 30_000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

if (require.main === module) {
  void main();
}
