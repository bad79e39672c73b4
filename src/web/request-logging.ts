// Gives each HTTP request an id (echoed in X-Request-Id) and logs one line when it ends:
// method, path, status and duration. The path leaves out the query string and masks the
// secrets some paths carry (confirmation tokens, status-page ids), since log files travel.
import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from '../logger';

declare module 'express-serve-static-core' {
  interface Request {
    id: string;
    log: Logger;
  }
}

/** Paths whose next segment is a secret: whoever holds it may act on the request. */
const SECRET_SEGMENT_AFTER: ReadonlyArray<{ prefix: string; mask: string }> = [
  { prefix: '/request/verify/', mask: ':token' },
  { prefix: '/request/status/', mask: ':publicId' },
];

// Random ids and tokens (base64url, hex) are long and mix digits or letter cases; the
// service's own words in paths are short or lower-case.
function looksSecret(segment: string): boolean {
  if (segment.length < 20 || !/^[A-Za-z0-9_=-]+$/.test(segment)) return false;
  return /[0-9]/.test(segment) || (/[a-z]/.test(segment) && /[A-Z]/.test(segment));
}

/** The path as it may be logged: no query string, no fragment, no tokens, no email addresses. */
export function loggablePath(originalUrl: string): string {
  let path = originalUrl.split(/[?#]/, 1)[0] ?? '';
  for (const { prefix, mask } of SECRET_SEGMENT_AFTER) {
    if (path.startsWith(prefix)) {
      const rest = path.slice(prefix.length);
      const slash = rest.indexOf('/');
      path = prefix + mask + (slash === -1 ? '' : rest.slice(slash));
      break;
    }
  }
  return path
    .split('/')
    .map((segment) => {
      if (segment.startsWith(':')) return segment;
      let decoded = segment;
      try {
        decoded = decodeURIComponent(segment);
      } catch {
        // A malformed escape is logged as sent; the checks below still apply to it.
      }
      if (decoded.includes('@')) return ':email';
      return looksSecret(decoded) ? ':secret' : segment;
    })
    .join('/');
}

/** Probes that monitoring sends every few seconds: logged only at debug level unless they fail. */
const PROBE_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

export function requestLogging(logger: Logger) {
  return (req: Request, res: Response, next: NextFunction) => {
    const incoming = req.get('x-request-id');
    req.id = incoming && /^[A-Za-z0-9._-]{1,64}$/.test(incoming) ? incoming : randomUUID();
    req.log = logger.child({ requestId: req.id });
    res.setHeader('X-Request-Id', req.id);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      // originalUrl, not path: inside a router, req.path has lost the router's mount point.
      const path = loggablePath(req.originalUrl);
      const details = { method: req.method, path, status: res.statusCode, ms: Math.round(ms * 10) / 10 };
      if (PROBE_PATHS.has(path) && res.statusCode < 400) req.log.debug(details, 'request');
      else req.log.info(details, 'request');
    });
    next();
  };
}
