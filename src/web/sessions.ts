// Staff sign-in sessions (express-session), stored in the database by connect-session-knex so
// that several app instances behind a load balancer share them. Only the dashboard uses them.
import type { RequestHandler } from 'express';
import session from 'express-session';
import { ConnectSessionKnexStore } from 'connect-session-knex';
import type { Config } from '../config';
import type { Database } from '../db/database';
import type { Logger } from '../logger';

export const SESSIONS_TABLE = 'sessions';

declare module 'express-session' {
  interface SessionData {
    staffUserId: number;
    /** The account's session generation at sign-in; a reset or disable since ends the session. */
    sessionGeneration: number;
    signedInAt: number;
    /** One message shown on the next page (after a redirect). */
    flash: { kind: 'success' | 'error'; text: string };
  }
}

export function sessionCookieName(config: Pick<Config, 'baseUrl'>): string {
  // __Host- cookies are only accepted over https with Path=/ and no Domain.
  return config.baseUrl.startsWith('https://') ? '__Host-mpp.sid' : 'mpp.sid';
}

export function createSessionMiddleware(config: Pick<Config, 'baseUrl' | 'sessionSecret' | 'staff'>, db: Database, logger: Logger): RequestHandler {
  let handler: RequestHandler | undefined;
  // The store checks its table when it is created, so it is created at the first request,
  // after the start-up migrations have run.
  const build = (): RequestHandler => {
    const store = new ConnectSessionKnexStore({
      knex: db,
      tableName: SESSIONS_TABLE,
      createTable: false,
      cleanupInterval: 15 * 60_000,
      onDbCleanupError: (error) => logger.warn({ err: error }, 'could not delete expired staff sessions'),
    });
    return session({
      name: sessionCookieName(config),
      secret: config.sessionSecret,
      store,
      resave: false,
      saveUninitialized: false,
      // Each request moves the expiry on, so the cookie's max age is the idle timeout.
      rolling: true,
      cookie: {
        httpOnly: true,
        sameSite: 'lax',
        secure: config.baseUrl.startsWith('https://'),
        path: '/',
        maxAge: config.staff.sessionIdleMs,
      },
    });
  };
  return (req, res, next) => {
    handler ??= build();
    handler(req, res, next);
  };
}
