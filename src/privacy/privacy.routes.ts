// Privacy pages of the dashboard: erasing a request's personal data (with a confirmation step)
// and the access history of one pupil, on a page and as a CSV file.
import express, { type Response, type Router } from 'express';
import { AppError, type FieldProblem } from '../errors';
import { MoodleError } from '../moodle/moodle-error';
import { isAllowed, STATUS_LABELS } from '../requests/request-states';
import type { Services } from '../services';
import { linkWords, pupilHistoryCsv } from './pupil-history';
import { flash } from '../staff-auth/require-staff';
import { requirePermission } from '../staff-auth/staff-permissions';
import { expectedVersion } from '../review/request-page.service';
import { formatDate, refusalText, requestIdParam, staffActor } from '../review/request-page.routes';

function moodleUserIdParam(raw: unknown): number | undefined {
  return typeof raw === 'string' && /^\d{1,10}$/.test(raw) && Number(raw) > 0 ? Number(raw) : undefined;
}

export function privacyRoutes(services: Services): Router {
  const { privacy, lifecycle, config } = services;
  const router = express.Router();
  const moodleBase = config.moodle.url?.replace(/\/+$/, '');

  async function renderErasePage(res: Response, id: number, problems: FieldProblem[] = [], status = 200) {
    const { request, children } = await lifecycle.get(id);
    res.status(status).render('privacy/erase', {
      title: `Erase request ${id}`,
      request,
      children,
      statusLabel: STATUS_LABELS[request.status],
      allowed: isAllowed('erase', request.status),
      unlinkDue: children.some((c) => c.unassignPending),
      retentionDays: config.privacy.retentionDays,
      problems,
    });
  }

  /** The privacy page, reached from the menu: a pupil's access history and erasing a request, by number. */
  function renderPrivacyPage(res: Response, values: Record<string, string> = {}, problems: FieldProblem[] = [], status = 200) {
    res.status(status).render('privacy/index', {
      title: 'Privacy',
      values,
      problems,
      retentionDays: config.privacy.retentionDays,
    });
  }

  router.use('/privacy', requirePermission('erase'));
  router.get('/privacy', (req, res) => {
    const query = req.query as Record<string, unknown>;
    const form = typeof query.find === 'string' ? query.find : undefined;
    const typed = (name: string) => (typeof query[name] === 'string' ? (query[name] as string).trim().replace(/^#/, '') : '');
    if (form === 'pupil') {
      const moodleUserId = moodleUserIdParam(typed('pupil'));
      if (moodleUserId !== undefined) return res.redirect(303, `/admin/pupils/${moodleUserId}`);
      const message = typed('pupil') === '' ? 'Type the pupil’s Moodle user id.' : 'The Moodle user id is a whole number, such as 1234: the number after id= in the address of the pupil’s Moodle profile.';
      return renderPrivacyPage(res, { pupil: typed('pupil') }, [{ field: 'pupil', message }], 400);
    }
    if (form === 'request') {
      const id = moodleUserIdParam(typed('request')); // a request number has the same shape
      if (id !== undefined) return res.redirect(303, `/admin/requests/${id}/erase`);
      const message = typed('request') === '' ? 'Type the number of the request.' : 'The request number is a whole number, such as 42.';
      return renderPrivacyPage(res, { request: typed('request') }, [{ field: 'request', message }], 400);
    }
    renderPrivacyPage(res);
  });

  router.use('/requests/:id/erase', requirePermission('erase'));
  router.get('/requests/:id/erase', async (req, res, next) => {
    const id = requestIdParam(req);
    if (id === undefined) return next();
    await renderErasePage(res, id);
  });

  router.post('/requests/:id/erase', async (req, res, next) => {
    const id = requestIdParam(req);
    if (id === undefined) return next();
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (body.confirm !== 'erase') {
      const message = 'Nothing was erased: tick the box to confirm that the personal data of this request is to be erased for good.';
      return renderErasePage(res, id, [{ field: 'confirm', message }], 400);
    }
    try {
      await privacy.eraseRequest(id, { expectedVersion: expectedVersion(body) }, staffActor(res));
    } catch (error) {
      if (!(error instanceof AppError) || error.status >= 500) throw error;
      flash(req, 'error', refusalText(error));
      return res.redirect(303, `/admin/requests/${id}`);
    }
    flash(req, 'success', `The personal data of request ${id} was erased. What happened to the request is kept, without names.`);
    res.redirect(303, `/admin/requests/${id}`);
  });

  /** The pupil's name and profile from Moodle, when Moodle answers; the history does not depend on it. */
  async function pupilFromMoodle(moodleUserId: number) {
    if (!services.moodle) return { user: undefined, problem: undefined };
    try {
      const [user] = await services.moodle.getUsersByField('id', [moodleUserId]);
      return { user, problem: undefined };
    } catch (error) {
      if (error instanceof MoodleError) return { user: undefined, problem: error.message };
      throw error;
    }
  }

  router.get('/pupils/:moodleUserId', async (req, res, next) => {
    const moodleUserId = moodleUserIdParam(req.params.moodleUserId);
    if (moodleUserId === undefined) return next();
    const entries = await privacy.pupilHistory(moodleUserId);
    const { user, problem } = await pupilFromMoodle(moodleUserId);
    res.render('privacy/pupil-history', {
      title: `Access history of pupil ${moodleUserId}`,
      moodleUserId,
      pupil: user,
      moodleProblem: problem,
      profileUrl: moodleBase ? `${moodleBase}/user/profile.php?id=${moodleUserId}` : undefined,
      entries,
      formatDate,
      linkWords,
      statusLabels: STATUS_LABELS,
    });
  });

  router.get('/pupils/:moodleUserId/history.csv', async (req, res, next) => {
    const moodleUserId = moodleUserIdParam(req.params.moodleUserId);
    if (moodleUserId === undefined) return next();
    const csv = pupilHistoryCsv(await privacy.pupilHistory(moodleUserId));
    res.setHeader('Content-Type', 'text/csv; charset=utf-8');
    res.setHeader('Content-Disposition', `attachment; filename="pupil-${moodleUserId}-access-history.csv"`);
    // The byte order mark makes spreadsheet programs read the names' accents as UTF-8.
    res.send(`\ufeff${csv}`);
  });

  return router;
}
