// The request page (/admin/requests/:id) and its actions. Thin: read the form, call the page
// service (which goes through the request lifecycle), redirect back with a message.
import express, { type Request, type Response, type Router } from 'express';
import { AppError, ValidationError, type FieldProblem } from '../errors';
import type { Actor } from '../requests/request-lifecycle';
import type { RequestRecord } from '../requests/request-repository';
import type { Services } from '../services';
import { flash } from '../staff-auth/require-staff';
import { requirePermission } from '../staff-auth/staff-permissions';
import { carriedApprovalFields, choicesQuery, readChoices, RequestPageService, type ApprovalReview } from './request-page.service';
import type { StaffIdentity } from '../staff-auth/staff-accounts.service';
import { describeRecordsAge } from '../guardian-records/guardian-records.service';

export const REQUEST_TYPE_WORDS: Record<string, string> = {
  new_account: 'No parent account yet',
  cannot_log_in: 'Has an account but cannot log in',
  child_not_linked: 'Has an account, but a child is not linked to it',
};

export const SOURCE_WORDS: Record<string, string> = {
  form: 'The request form',
  api: 'The school website',
  import: 'CSV import',
  cli: 'Command line',
};

const dateFormat = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'Europe/London' });
export const formatDate = (ms: number | null): string => (ms === null ? '' : dateFormat.format(new Date(ms)));

/** A request id from the path, or undefined for anything else (left to other routes). */
export function requestIdParam(req: Request): number | undefined {
  const raw = req.params.id;
  return typeof raw === 'string' && /^\d{1,10}$/.test(raw) && Number(raw) > 0 ? Number(raw) : undefined;
}

export function staffActor(res: Response): Actor {
  return { type: 'staff', id: (res.locals.staff as StaffIdentity).username };
}

/** What staff are told when the lifecycle refuses: its message, and what to do when it says. */
export function refusalText(error: AppError): string {
  return error.help && error.help !== error.message ? `${error.message} ${error.help}` : error.message;
}

/** A decision form sent back to be put right: its problems and what was typed, by box id. */
interface FormOutcome {
  problems: FieldProblem[];
  values: Record<string, string>;
}

export function requestPageRoutes(services: Services): Router {
  const page = new RequestPageService({
    db: services.db,
    lifecycle: services.lifecycle,
    repository: services.requestRepository,
    moodle: services.moodle,
    staffAccounts: services.staffAccounts,
    config: services.config,
    schoolRecords: services.guardianRecords,
  });
  const router = express.Router();

  router.get('/requests/:id', async (req, res, next) => {
    const id = requestIdParam(req);
    if (id === undefined) return next();
    const query = new URLSearchParams(req.originalUrl.split('?')[1] ?? '');
    // The search buttons submit the whole approval form by GET, so that every child's choice is
    // kept; what is not a choice (the CSRF token above all) is dropped from the address.
    const kept = new URLSearchParams([...query].filter(([name]) => name === 'account' || /^(match|typed|search)_\d{1,10}$/.test(name)));
    if (kept.toString() !== query.toString()) {
      const text = kept.toString();
      return res.redirect(303, `/admin/requests/${id}${text === '' ? '' : `?${text}`}`);
    }
    await renderPage(res, id, readChoices(query));
  });

  /** The request page; after a refused form or an unconfirmed approval, with its problems or the step to confirm. */
  async function renderPage(
    res: Response,
    id: number,
    choices: ReturnType<typeof readChoices>,
    form: FormOutcome & { confirm?: Extract<ApprovalReview, { kind: 'confirm' }>; carried?: Array<[string, string]> } = { problems: [], values: {} },
  ) {
    const problems = form.problems;
    const view = await page.load(id, choices);
    res.status(problems.length > 0 ? 400 : 200).render('review/request-page', {
      title: `Request ${id}`,
      view,
      confirmation: form.confirm ? { ...form.confirm, carried: form.carried ?? [] } : undefined,
      formatDate,
      requestTypeWords: REQUEST_TYPE_WORDS,
      sourceWords: SOURCE_WORDS,
      recordsAge: (importedAt: number | null) => describeRecordsAge(importedAt, Date.now()),
      guardianSettings: services.config.guardianRecords,
      problems: form.problems,
      values: form.values,
    });
  }

  /**
   * One action: run it, then back to the page with what happened, or the lifecycle's refusal.
   * A form with fields (`fields`: the body's names and the ids of their boxes on the page) that
   * was filled in wrongly comes back as it was typed, with its error summary and the message
   * beside the box; other refusals (a stale page, a refused transition) are a message at the top.
   */
  function action(
    name: string,
    run: (id: number, body: Record<string, unknown>, actor: Actor) => Promise<RequestRecord>,
    success: (after: RequestRecord, body: Record<string, unknown>) => string,
    backAfterRefusal: (id: number, body: Record<string, unknown>) => string = (id) => `/admin/requests/${id}`,
    fields: Record<string, string> = {},
  ) {
    router.post(`/requests/:id/${name}`, requirePermission(name === 'comment' ? 'comment' : 'decide'), async (req, res, next) => {
      const id = requestIdParam(req);
      if (id === undefined) return next();
      const body = (req.body ?? {}) as Record<string, unknown>;
      try {
        const after = await run(id, body, staffActor(res));
        flash(req, 'success', success(after, body));
        res.redirect(303, `/admin/requests/${id}`);
      } catch (error) {
        if (!(error instanceof AppError) || error.status >= 500) throw error;
        const problems = error instanceof ValidationError ? error.fields.filter((p) => fields[p.field] !== undefined) : [];
        if (problems.length > 0) {
          const values = Object.fromEntries(Object.values(fields).map((box) => [box, '']));
          for (const [bodyName, box] of Object.entries(fields)) values[box] = typeof body[bodyName] === 'string' ? body[bodyName] : '';
          const onPage = problems.map((p) => ({ field: fields[p.field] as string, message: p.message }));
          return renderPage(res, id, readChoices([]), { problems: onPage, values });
        }
        flash(req, 'error', refusalText(error));
        res.redirect(303, backAfterRefusal(id, body));
      }
    });
  }

  // Approving checks the typed Moodle ids first: problems are shown beside their fields, and a
  // typed pupil account is shown by name to confirm; only then does the lifecycle approve.
  router.post('/requests/:id/approve', requirePermission('decide'), async (req, res, next) => {
    const id = requestIdParam(req);
    if (id === undefined) return next();
    const body = (req.body ?? {}) as Record<string, unknown>;
    const choices = readChoices(Object.entries(body));
    try {
      const review = await page.reviewApproval(id, body);
      if (review.kind === 'problems') return await renderPage(res, id, choices, { problems: review.problems, values: {} });
      if (review.kind === 'confirm') return await renderPage(res, id, choices, { problems: [], values: {}, confirm: review, carried: carriedApprovalFields(body) });
      const r = await page.approve(id, body, staffActor(res));
      flash(
        req,
        'success',
        services.moodle
          ? `Request ${r.id} is approved. The next provisioning cycle ${r.linkExistingAccount ? 'links the children to the parent’s existing Moodle account' : 'sets up the parent’s Moodle account and links the children'}.`
          : `Request ${r.id} is approved, but nothing can be set up yet: this service is not connected to Moodle (MOODLE_URL and MOODLE_TOKEN are not set). ` +
              'The parent gets no Moodle account and no child is linked until Moodle is connected; the provisioning cycle does it then.',
      );
      res.redirect(303, `/admin/requests/${id}`);
    } catch (error) {
      if (!(error instanceof AppError) || error.status >= 500) throw error;
      flash(req, 'error', refusalText(error));
      // Back to the page with the choices made, so a refused approval does not lose them.
      res.redirect(303, `/admin/requests/${id}${choicesQuery(choices)}`);
    }
  });
  action('deny', (id, body, actor) => page.deny(id, body, actor), (r) => `Request ${r.id} was denied. The parent will be emailed the reason.`, undefined, {
    reason: 'deny-reason',
  });
  action(
    'duplicate',
    (id, body, actor) => page.markDuplicate(id, body, actor),
    (r, body) => `Request ${r.id} was marked as a duplicate${typeof body.duplicateOf === 'string' && body.duplicateOf.trim() !== '' ? ` of request ${body.duplicateOf.trim().replace(/^#/, '')}` : ''}.`,
    undefined,
    { duplicateOf: 'duplicate-of' },
  );
  action('bogus', (id, body, actor) => page.markBogus(id, body, actor), (r) => `Request ${r.id} was rejected as not genuine.`);
  action(
    'revoke',
    (id, body, actor) => page.revoke(id, body, actor),
    (r) => `Access through request ${r.id} was removed. The next provisioning cycle takes the Parent role away in Moodle.`,
    undefined,
    { reason: 'revoke-reason' },
  );
  action('revoke-child', (id, body, actor) => page.revokeChild(id, body, actor), (r) =>
    r.status === 'revoked'
      ? `The link was removed. It was the last one, so access through request ${r.id} has ended.`
      : 'The link to that child was removed. The next provisioning cycle takes the Parent role away in Moodle.',
  );
  action('comment', (id, body, actor) => page.comment(id, body, actor), () => 'Your comment was added.', undefined, { comment: 'staff-comment' });
  action(
    'resend-verification',
    (id, _body, actor) => page.resendVerification(id, actor),
    () => 'A new confirmation link was emailed to the parent. Earlier links no longer work.',
  );

  return router;
}
