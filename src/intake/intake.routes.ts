// The public request form, the email confirmation link, and the parent's status page.
// Thin: read and validate, call the intake service, render.
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import { NotFoundError, ValidationError, type FieldProblem } from '../errors';
import type { Services } from '../services';
import { isCsrfError } from '../web/csrf';
import { RateLimitedError } from '../web/rate-limit';
import { addHeldDetailsRoutes } from './held-details.routes';
import { privacyNoticeHref } from './privacy-notice.routes';
import type { ConfirmationLinkState } from './intake.service';
import { emptyChild, emptyForm, readForm, validateForm, type FormValues } from './request-form';

const FORM_TITLE = 'Ask for a Moodle parent account';

/** Pages behind secret links: never cached, never indexed, never leaked through Referer. */
function privatePage(res: Response) {
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('X-Robots-Tag', 'noindex');
}

function durationText(ms: number): string {
  const hours = Math.round(ms / 3_600_000);
  if (hours >= 48 && hours % 24 === 0) return `${hours / 24} days`;
  return hours === 1 ? '1 hour' : `${hours} hours`;
}

const dateFormat = new Intl.DateTimeFormat('en-GB', { dateStyle: 'long', timeStyle: 'short', timeZone: 'Europe/London' });
const timeFormat = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', timeZone: 'Europe/London' });
const dayOnlyFormat = new Intl.DateTimeFormat('en-GB', { dateStyle: 'long', timeZone: 'Europe/London' });
const dayFormat = new Intl.DateTimeFormat('en-GB', { weekday: 'long', day: 'numeric', month: 'long', timeZone: 'Europe/London' });

export interface LimitedNotice {
  reason: string;
  /** "after 18:40 (in about 25 minutes)" */
  when: string;
}

/** Says which limit was reached and when the form can be sent again, in a parent's words. */
export function limitedNotice(error: RateLimitedError, now: number): LimitedNotice {
  const reason =
    error.limit === 'form_email'
      ? 'We have already received several requests for this email address today that have not been confirmed yet. If you have sent the form before, look for our email and confirm your address with the link in it: after that you can send the form again straight away.'
      : 'This form has been sent many times from your network (for example the school’s Wi-Fi) in the last hour, so we cannot take more from it just now.';
  const at = now + error.retryAfterSeconds * 1000;
  // Rounded up to the next minute, so "after 18:40" is never a minute too early.
  const atMinute = Math.ceil(at / 60_000) * 60_000;
  const sameDay = dayFormat.format(new Date(now)) === dayFormat.format(new Date(atMinute));
  const clock = timeFormat.format(new Date(atMinute)) + (sameDay ? '' : ` on ${dayFormat.format(new Date(atMinute))}`);
  const minutes = Math.max(1, Math.ceil(error.retryAfterSeconds / 60));
  const hours = Math.round(minutes / 60);
  const wait = minutes < 60 ? (minutes === 1 ? 'about a minute' : `about ${minutes} minutes`) : hours === 1 ? 'about an hour' : `about ${hours} hours`;
  return { reason, when: `after ${clock} (in ${wait})` };
}

export function intakeRoutes(services: Services): Router {
  const { config, intake, csrf } = services;
  const maxChildren = config.intake.maxChildren;
  const router = express.Router();

  // Form bodies only here; small, since a request with the most children is a few kilobytes.
  router.use(express.urlencoded({ extended: true, limit: '20kb', parameterLimit: 200 }));
  router.use(csrf.protect);

  function renderForm(req: Request, res: Response, values: FormValues, problems: FieldProblem[], focusField?: string, limited?: LimitedNotice) {
    res.status(limited ? 429 : problems.length > 0 ? 400 : 200).render('intake/form', {
      title: FORM_TITLE,
      values,
      problems,
      limited,
      focusField,
      maxChildren,
      privacyNoticeUrl: privacyNoticeHref(config),
      csrfToken: csrf.token(req, res),
    });
  }

  // The same page whether the address is new, has a request already (the details are held until
  // confirmed from the email), or was sent by a bot: the form must not tell who has asked.
  function renderThankYou(res: Response, email: string) {
    res.render('intake/thank-you', {
      title: 'Thank you',
      email,
      requireVerification: config.intake.requireEmailVerification,
      ttlText: durationText(config.intake.verificationTtlMs),
    });
  }

  router.get('/', async (req, res) => {
    // Nothing on the page needs the database, but sending it will: when the database is down,
    // better to say so now than after the parent has filled in the whole form.
    await intake.checkAvailable();
    renderForm(req, res, emptyForm(), []);
  });

  router.post('/', async (req, res) => {
    const { values, action, tooManyChildren } = readForm(req.body, maxChildren);
    // "Add another child" and "Remove" without JavaScript: the same form again, nothing checked.
    if (action.kind === 'add-child') {
      if (values.children.length < maxChildren) values.children.push(emptyChild());
      return renderForm(req, res, values, [], `children-${values.children.length - 1}-firstName`);
    }
    if (action.kind === 'remove-child') {
      values.children.splice(action.index, 1);
      if (values.children.length === 0) values.children.push(emptyChild());
      return renderForm(req, res, values, []);
    }
    if (values.website.trim() !== '') {
      // The honeypot was filled in: a bot. It sees the usual page; nothing is stored or counted.
      req.log.info({ honeypot: true }, 'form submission dropped');
      return renderThankYou(res, values.email.trim());
    }
    const result = validateForm(values, maxChildren, tooManyChildren);
    if (!result.ok) return renderForm(req, res, values, result.problems);
    try {
      await intake.submit(result.data, {
        source: 'form',
        actor: { type: 'parent' },
        ip: req.ip ?? null,
        agent: req.get('user-agent') ?? null,
      });
    } catch (error) {
      if (error instanceof ValidationError) return renderForm(req, res, values, error.fields);
      // A rate limit: the form again with everything typed, and when it can be sent.
      if (error instanceof RateLimitedError) {
        res.setHeader('Retry-After', String(error.retryAfterSeconds));
        return renderForm(req, res, values, [], undefined, limitedNotice(error, Date.now()));
      }
      throw error;
    }
    renderThankYou(res, result.data.email);
  });

  /** The pages of a confirmation link that cannot (or need not) be used. */
  function renderLinkState(req: Request, res: Response, state: Exclude<ConfirmationLinkState, { kind: 'ready' }>) {
    switch (state.kind) {
      case 'already-confirmed':
        return res.render('intake/already-confirmed', {
          title: 'Your email address is already confirmed',
          statusPath: `/request/status/${state.publicId}`,
          requestNumber: state.requestNumber,
        });
      case 'expired':
        return res.status(410).render('intake/problem', {
          title: 'This link has expired',
          message: 'This confirmation link has expired, so your email address is not confirmed yet.',
          help: 'We can send you a new link. It replaces the old one.',
          resendPath: `/request/status/${state.publicId}/resend`,
          csrfToken: csrf.token(req, res),
        });
      case 'closed':
        return res.status(409).render('intake/problem', {
          title: 'This link no longer works',
          message: 'The school has already closed this request, so there is nothing to confirm.',
          help: 'If you still need an account, send a new request or contact the school office.',
          backPath: '/request',
          backText: 'Send a new request',
        });
      default:
        return res.status(404).render('intake/problem', {
          title: 'This link does not work',
          message: 'This confirmation link is not valid. It may have been replaced by a newer link.',
          help: 'If you have already confirmed your email address, there is nothing more to do. Otherwise use the link in the most recent email we sent you, or send the form again and use the link in the new email.',
          backPath: '/request',
          backText: 'Go to the request form',
        });
    }
  }

  // Opening the link (GET or HEAD) only shows a button: mail scanners and link previews fetch
  // links in emails, and must not confirm an address nobody has looked at.
  router.get('/verify/:token', async (req, res) => {
    privatePage(res);
    const state = await intake.checkConfirmationLink(req.params.token);
    if (state.kind !== 'ready') return renderLinkState(req, res, state);
    res.render('intake/confirm-email', {
      title: 'Confirm your email address',
      confirmPath: `/request/verify/${req.params.token}`,
      csrfToken: csrf.token(req, res),
    });
  });

  router.post('/verify/:token', async (req, res) => {
    privatePage(res);
    const result = await intake.verifyEmail(req.params.token);
    if (result.kind !== 'verified') return renderLinkState(req, res, result);
    res.render('intake/verified', {
      title: 'Email address confirmed',
      statusPath: `/request/status/${result.request.publicId}`,
      requestNumber: result.request.id,
    });
  });

  router.get('/status/:publicId', async (req, res) => {
    privatePage(res);
    const view = await intake.statusView(req.params.publicId);
    if (view.kind === 'erased') {
      // Gone for good, but the parent is told when and what to do, not shown a dead end.
      return res.status(410).render('intake/erased', { title: 'This request was closed', erasedOn: dayOnlyFormat.format(new Date(view.erasedAt)) });
    }
    const notice =
      req.query.resent === '1'
        ? 'We have sent you a new confirmation link. It replaces any earlier one.'
        : req.query.confirmed === '1'
          ? 'Your email address is already confirmed; there is nothing more to do.'
          : null;
    res.render('intake/status', {
      title: 'Your request',
      view,
      notice,
      formatDate: (ms: number) => dateFormat.format(new Date(ms)),
      csrfToken: view.request.status === 'unverified' ? csrf.token(req, res) : '',
    });
  });

  router.post('/status/:publicId/resend', async (req, res) => {
    privatePage(res);
    const publicId = req.params.publicId;
    const result = await intake.resendVerification(publicId);
    res.redirect(303, `/request/status/${encodeURIComponent(publicId)}?${result === 'sent' ? 'resent=1' : 'confirmed=1'}`);
  });

  addHeldDetailsRoutes(router, services, privatePage);

  // Any other address under /request (a link cut short in an email, an old bookmark): the way
  // to the form and to the school office, rather than the site's bare "page not found".
  router.use((_req, _res, next) => {
    next(new NotFoundError('There is no page at this address.'));
  });

  // Refusals that parents can meet on these pages, in plain words; anything else goes on to
  // the app's error handler.
  router.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
    if (isCsrfError(error)) {
      // The confirmation button sends the parent back to its own page, not to the request form.
      const confirming = /^\/verify\/[A-Za-z0-9_-]{43}$/.test(req.path);
      return res.status(403).render('intake/problem', {
        title: 'Please try again',
        message: confirming ? 'The page had expired or could not be checked, so your email address is not confirmed yet.' : 'The form had expired or could not be checked, so nothing was sent.',
        help: confirming
          ? 'Go back, reload the page, and press the button again. If this keeps happening, check that your browser accepts cookies from this site.'
          : 'Go back to the form, reload the page, and send it again. If this keeps happening, check that your browser accepts cookies from this site.',
        backPath: confirming ? `/request${req.path}` : '/request',
        backText: confirming ? 'Back to the confirmation page' : 'Back to the form',
      });
    }
    if (error instanceof RateLimitedError) {
      res.setHeader('Retry-After', String(error.retryAfterSeconds));
      // Only "send me a new link" is limited here (the form shows its own limits): back to the request's page.
      const status = /^\/status\/([A-Za-z0-9_-]{22})\/resend$/.exec(req.path);
      return res.status(429).render('intake/problem', {
        title: 'Too many requests',
        message: error.message,
        help: error.help,
        backPath: status ? `/request/status/${status[1]}` : '/request',
        backText: status ? 'Back to your request' : 'Back to the form',
      });
    }
    if (error instanceof NotFoundError) {
      // A link cut short or mistyped: what to do next, not a bare "not found".
      const statusLink = req.path.startsWith('/status/');
      return res.status(404).render('intake/problem', {
        title: statusLink ? 'This link does not work' : 'Page not found',
        message: error.message,
        help: statusLink
          ? 'Check that you copied the whole link from our email. If you cannot find the email, send the form again: we email you a link to your request.'
          : 'To ask for a Moodle parent account, use the request form. To see a request you have made, use the link in our email.',
        backPath: '/request',
        backText: 'Go to the request form',
      });
    }
    const type = (error as { type?: string } | undefined)?.type;
    if (type === 'entity.too.large' || type === 'parameters.too.many') {
      return res.status(413).render('intake/problem', {
        title: 'Too much was sent',
        message: 'What you sent is larger than this form accepts, so nothing was saved.',
        help: 'Shorten the comment and try again.',
        backPath: '/request',
        backText: 'Back to the form',
      });
    }
    next(error);
  });

  return router;
}
