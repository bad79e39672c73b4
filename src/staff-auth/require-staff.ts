// Every dashboard page and action passes through here: no signed-in, active staff account, no
// access. Also sets what every dashboard page needs (who is signed in, the CSRF token, a flash).
import type { NextFunction, Request, Response } from 'express';
import { AppError } from '../errors';
import type { Services } from '../services';
import { identityOf } from './staff-accounts.service';
import { can, type Permission } from './staff-permissions';

/** Only same-site dashboard paths are followed after sign-in (no open redirect). */
export function safeNextPath(value: unknown): string {
  if (typeof value !== 'string' || !/^\/admin(\/[\w\-./?=&%]*)?$/.test(value) || value.includes('//')) return '/admin';
  // "/admin/../request" must not climb out of the dashboard.
  return value.split(/[/?]/).some((segment) => segment === '..' || segment === '.') ? '/admin' : value;
}

/** Shows a one-line message on the page after the next redirect. */
export function flash(req: Request, kind: 'success' | 'error', text: string): void {
  req.session.flash = { kind, text };
}

export function requireStaff(services: Services) {
  const { staffAccounts, config } = services;
  return async (req: Request, res: Response, next: NextFunction) => {
    const userId = req.session?.staffUserId;
    const signedInAt = req.session?.signedInAt ?? 0;
    const user = userId ? await staffAccounts.accountForSession(userId, req.session.sessionGeneration) : undefined;
    const expired = user !== undefined && signedInAt + config.staff.sessionMaxMs < Date.now();
    if (!user || expired) {
      if (userId) await new Promise<void>((resolve) => req.session.destroy(() => resolve()));
      if (req.method === 'GET' && req.accepts(['html', 'json']) !== 'json') {
        const target = encodeURIComponent(req.originalUrl);
        return res.redirect(303, (await staffAccounts.needsSetup()) ? '/admin/setup' : `/admin/sign-in?next=${target}${userId ? '&ended=1' : ''}`);
      }
      return next(
        new AppError('You are not signed in to the dashboard (or your session has ended), so nothing was changed.', 401, 'not_signed_in', {
          help: 'Sign in again at /admin/sign-in, then repeat what you were doing.',
        }),
      );
    }
    res.locals.staff = identityOf(user);
    // Pages offer only what the person may do (the routes refuse the rest anyway).
    res.locals.can = (permission: Permission) => can(user.role, permission);
    res.locals.csrfToken = services.csrf.token(req, res);
    res.locals.currentPath = req.path;
    if (req.session.flash) {
      res.locals.flash = req.session.flash;
      delete req.session.flash;
    }
    next();
  };
}
