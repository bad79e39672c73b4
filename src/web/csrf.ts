// CSRF protection for the public form: stateless double-submit tokens (csrf-csrf) signed with
// the session secret. The token sits in an httpOnly cookie and in a hidden form field.
import type { NextFunction, Request, Response } from 'express';
import { doubleCsrf } from 'csrf-csrf';
import type { Config } from '../config';

export const CSRF_FIELD = '_csrf';

export interface Csrf {
  /** Checks POSTs (and other unsafe methods); GET and HEAD pass. */
  protect: (req: Request, res: Response, next: NextFunction) => void;
  /** The token for a form on this response (sets the cookie when needed). */
  token: (req: Request, res: Response) => string;
  cookieName: string;
}

export function isCsrfError(error: unknown): boolean {
  return (error as { code?: string } | undefined)?.code === 'EBADCSRFTOKEN';
}

export function createCsrf(config: Pick<Config, 'baseUrl' | 'sessionSecret' | 'intake'>): Csrf {
  const https = config.baseUrl.startsWith('https://');
  // A form framed by the school's site is a third-party context: browsers only send the cookie
  // there when it is SameSite=None, which they only accept with Secure, i.e. over https.
  // Over plain http an embedded form cannot keep its CSRF cookie (see docs/wordpress.md).
  const embedded = config.intake.embedOrigins.length > 0 && https;
  // __Host- cookies must be Secure, Path=/ and without Domain: only possible over https.
  const cookieName = https ? '__Host-mpp.csrf' : 'mpp.csrf';
  const { doubleCsrfProtection, generateCsrfToken } = doubleCsrf({
    getSecret: () => config.sessionSecret,
    // Parents have no session: their token is bound to the signed cookie value alone. A signed-in
    // staff member's token is also bound to the session, so it dies with the session.
    getSessionIdentifier: (req) => (req.session?.staffUserId ? req.sessionID : ''),
    cookieName,
    cookieOptions: { httpOnly: true, sameSite: embedded ? 'none' : 'strict', secure: https, path: '/' },
    getCsrfTokenFromRequest: (req) => {
      const fromBody = (req.body as Record<string, unknown> | undefined)?.[CSRF_FIELD];
      return typeof fromBody === 'string' ? fromBody : req.get('x-csrf-token');
    },
  });
  return {
    protect: doubleCsrfProtection,
    token: (req, res) => generateCsrfToken(req, res),
    cookieName,
  };
}
