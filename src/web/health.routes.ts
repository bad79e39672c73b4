// Endpoints for load balancers and monitoring: /healthz (the process answers), /readyz (it can
// do its work: database reachable, migrations current) and /metrics (Prometheus, behind a token).
import { createHash, timingSafeEqual } from 'node:crypto';
import express, { type Request, type Response, type Router } from 'express';
import { isConnectionError } from '../db/database';
import type { Services } from '../services';

/** A readiness probe must answer before the balancer gives up on it, even when the database hangs. */
export const READINESS_TIMEOUT_MS = 5000;

type HealthServices = Pick<Services, 'config' | 'logger' | 'metrics' | 'migrationStatus'>;

class ReadinessTimeout extends Error {}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new ReadinessTimeout(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function unreadyReason(error: unknown): string {
  if (error instanceof ReadinessTimeout) return 'The database did not answer in time.';
  if (isConnectionError(error)) return 'The database cannot be reached.';
  // knex refuses to list migrations when the database has some this code does not know: an
  // instance left on the old version after another one upgraded the database.
  if (/migration directory is corrupt/i.test((error as Error)?.message ?? '')) {
    return 'The database was upgraded by a newer version of this service; upgrade this instance too.';
  }
  return 'The database could not be checked.';
}

// Digests first: timingSafeEqual needs equal lengths, and comparing digests gives away no length.
function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function bearerToken(req: Request): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.get('authorization') ?? '');
  return match?.[1];
}

export function healthRoutes(services: HealthServices): Router {
  const { config, logger, metrics } = services;
  const router = express.Router();
  const noStore = (res: Response) => res.setHeader('Cache-Control', 'no-store');

  router.get('/healthz', (_req, res) => {
    noStore(res);
    res.json({ status: 'ok' });
  });

  router.get('/readyz', async (req, res) => {
    noStore(res);
    let status;
    try {
      status = await withTimeout(services.migrationStatus(), READINESS_TIMEOUT_MS);
    } catch (error) {
      const reason = unreadyReason(error);
      // The address and driver message stay in the log: this endpoint is public.
      (req.log ?? logger).warn({ error: (error as Error).message }, `not ready: ${reason}`);
      res.status(503).json({ status: 'unavailable', reason });
      return;
    }
    if (status.pending.length > 0) {
      res.status(503).json({
        status: 'unavailable',
        reason: `The database is reachable but ${status.pending.length} migration(s) have not been applied.`,
      });
      return;
    }
    res.json({ status: 'ready', migrations: status.applied.length });
  });

  router.get('/metrics', async (req, res, next) => {
    const expected = config.metricsToken;
    // Without a token configured, /metrics does not exist: nothing to find for a scanner.
    if (expected === undefined) return next();
    noStore(res);
    const given = bearerToken(req);
    if (given === undefined || !sameSecret(given, expected)) {
      res.status(401).setHeader('WWW-Authenticate', 'Bearer realm="metrics"').type('text/plain').send('A valid metrics token is required.\n');
      return;
    }
    const text = await metrics.render();
    res.setHeader('Content-Type', metrics.contentType);
    res.send(text);
  });

  return router;
}
