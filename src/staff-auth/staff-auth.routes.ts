// First-run setup, sign-in and sign-out. Everything else in the dashboard sits behind
// requireStaff.
import express, { type Request, type Response, type Router } from 'express';
import { AppError, ValidationError, type FieldProblem } from '../errors';
import type { Services } from '../services';
import { RateLimitedError } from '../web/rate-limit';
import { safeNextPath } from './require-staff';
import type { StaffUserRecord } from './staff-users.repository';

function field(body: unknown, name: string): string {
  const value = (body as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value : '';
}

/** A new session id at sign-in, so a session id planted before sign-in is worth nothing after. */
async function signIn(req: Request, user: StaffUserRecord): Promise<void> {
  await new Promise<void>((resolve, reject) => req.session.regenerate((error) => (error ? reject(error) : resolve())));
  req.session.staffUserId = user.id;
  req.session.sessionGeneration = user.sessionGeneration;
  req.session.signedInAt = Date.now();
  await new Promise<void>((resolve, reject) => req.session.save((error) => (error ? reject(error) : resolve())));
}

export function staffAuthRoutes(services: Services): Router {
  const { staffAccounts, csrf } = services;
  const router = express.Router();

  function renderSetup(req: Request, res: Response, values: Record<string, string>, problems: FieldProblem[], status = 200) {
    res.status(status).render('staff-auth/setup', { title: 'Set up the dashboard', values, problems, csrfToken: csrf.token(req, res) });
  }

  function renderSignIn(req: Request, res: Response, options: { username?: string; problems?: FieldProblem[]; notice?: string; status?: number }) {
    res.status(options.status ?? 200).render('staff-auth/sign-in', {
      title: 'Staff sign-in',
      username: options.username ?? '',
      problems: options.problems ?? [],
      notice: options.notice,
      next: safeNextPath(req.query.next ?? (req.body as Record<string, unknown> | undefined)?.next),
      csrfToken: csrf.token(req, res),
    });
  }

  router.get('/setup', async (req, res) => {
    if (!(await staffAccounts.needsSetup())) return res.redirect(303, '/admin/sign-in');
    renderSetup(req, res, {}, []);
  });

  router.post('/setup', async (req, res) => {
    if (!(await staffAccounts.needsSetup())) return res.redirect(303, '/admin/sign-in');
    const values = {
      setupCode: field(req.body, 'setupCode'),
      username: field(req.body, 'username'),
      displayName: field(req.body, 'displayName'),
      email: field(req.body, 'email'),
    };
    const password = field(req.body, 'password');
    // Every problem is named at once, so the form needs sending again only once.
    const problems = staffAccounts.firstAdminProblems(values.setupCode, { ...values, password });
    if (password !== field(req.body, 'passwordConfirm')) problems.push({ field: 'passwordConfirm', message: 'The two passwords are not the same.' });
    if (problems.length > 0) return renderSetup(req, res, values, problems, 400);
    try {
      const user = await staffAccounts.createFirstAdmin(values.setupCode, { ...values, password });
      await signIn(req, user);
      req.session.flash = { kind: 'success', text: `Welcome, ${user.displayName}. Your administrator account is ready.` };
      res.redirect(303, '/admin');
    } catch (error) {
      if (error instanceof ValidationError) return renderSetup(req, res, values, error.fields, 400);
      throw error;
    }
  });

  router.get('/sign-in', async (req, res) => {
    if (await staffAccounts.needsSetup()) return res.redirect(303, '/admin/setup');
    if (req.session.staffUserId && (await staffAccounts.accountForSession(req.session.staffUserId, req.session.sessionGeneration))) return res.redirect(303, '/admin');
    renderSignIn(req, res, { ...(req.query.ended ? { notice: 'Your session ended. Please sign in again.' } : {}) });
  });

  router.post('/sign-in', async (req, res) => {
    const username = field(req.body, 'username');
    const password = field(req.body, 'password');
    // The form has no browser-side checks (novalidate): an empty field is named here, and costs
    // no sign-in attempt.
    const missing: FieldProblem[] = [];
    if (username.trim() === '') missing.push({ field: 'username', message: 'Enter your username.' });
    if (password === '') missing.push({ field: 'password', message: 'Enter your password.' });
    if (missing.length > 0) return renderSignIn(req, res, { username, problems: missing, status: 400 });
    try {
      const user = await staffAccounts.authenticate(username, password, req.ip ?? 'unknown');
      await signIn(req, user);
      req.log.info({ staffUserId: user.id }, 'staff signed in');
      res.redirect(303, safeNextPath(field(req.body, 'next')));
    } catch (error) {
      if (error instanceof RateLimitedError) {
        res.setHeader('Retry-After', String(error.retryAfterSeconds));
        return renderSignIn(req, res, { username, problems: [{ field: 'password', message: error.message }], status: 429 });
      }
      if (error instanceof AppError && error.code === 'sign_in_failed') {
        return renderSignIn(req, res, { username, problems: [{ field: 'password', message: error.message }], status: 401 });
      }
      throw error;
    }
  });

  router.post('/sign-out', async (req, res) => {
    await new Promise<void>((resolve) => req.session.destroy(() => resolve()));
    res.clearCookie(services.sessionCookieName, { path: '/' });
    res.redirect(303, '/admin/sign-in');
  });

  return router;
}
