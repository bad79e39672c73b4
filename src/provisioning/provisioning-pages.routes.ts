// The provisioning pages: "Run now", the running cycle's progress, the cycle history, and each
// cycle's report. A running cycle's progress box is updated by a small script (a refresh link without it).
import express, { type Request, type Response, type Router } from 'express';
import { ConflictError, NotFoundError } from '../errors';
import { CycleAlreadyRunningError, MoodleCheckRunningError } from './provisioning-cycle';
import type { Services } from '../services';
import { pageNumber } from './provisioning-format';
import { ProvisioningPages } from './provisioning-pages.service';
import type { StaffIdentity } from '../staff-auth/staff-accounts.service';
import { requirePermission } from '../staff-auth/staff-permissions';

/** How often the progress box of a running cycle asks for the progress. */
export const REFRESH_SECONDS = 3;

function cycleId(req: Request): number {
  const raw = req.params.id;
  if (typeof raw !== 'string' || !/^\d{1,9}$/.test(raw)) throw new NotFoundError('There is no provisioning cycle at this address.');
  return Number(raw);
}

export function provisioningRoutes(services: Services): Router {
  const router = express.Router();
  const pages = new ProvisioningPages({ db: services.db, cycle: services.cycle, config: services.config, logger: services.logger });

  async function renderOverview(req: Request, res: Response, refusal?: { message: string; help: string | undefined; cycleId: number | null }) {
    const overview = await pages.overview(pageNumber(req.query.page));
    // The preview asks Moodle, so only when staff ask for it (a GET form: no change, no CSRF token).
    const preview = !refusal && req.query.preview === '1' ? await pages.preview(services.cyclePreview) : undefined;
    res.status(refusal ? 409 : 200).render('provisioning/index', {
      title: 'Provisioning',
      ...overview,
      preview,
      refusal,
      refreshSeconds: overview.running && !refusal ? REFRESH_SECONDS : undefined,
    });
  }

  router.get('/provisioning', async (req, res) => {
    await renderOverview(req, res);
  });

  router.post('/provisioning/run', requirePermission('provision'), async (req, res) => {
    const staff = res.locals.staff as StaffIdentity;
    try {
      const id = await pages.runNow(staff.username);
      res.redirect(303, `/admin/cycles/${id}`);
    } catch (error) {
      if (error instanceof MoodleCheckRunningError) {
        return renderOverview(req, res, { message: error.message, help: error.help, cycleId: null });
      }
      if (error instanceof CycleAlreadyRunningError) {
        return renderOverview(req, res, {
          message: 'A provisioning cycle is already running, so a new one was not started.',
          help: 'Wait for it to finish: its page shows its progress. Anything it does not do is picked up by the next cycle.',
          cycleId: error.cycleId,
        });
      }
      if (error instanceof ConflictError) return renderOverview(req, res, { message: error.message, help: error.help, cycleId: null });
      throw error;
    }
  });

  router.get('/cycles/:id', async (req, res) => {
    const report = await pages.report(cycleId(req), pageNumber(req.query.page));
    res.locals.currentPath = '/provisioning';
    res.render('provisioning/cycle', {
      title: `Provisioning cycle ${report.cycle.id}`,
      ...report,
      refreshSeconds: report.cycle.running ? REFRESH_SECONDS : undefined,
    });
  });

  /** For a page script or a monitoring tool: the cycle's state and progress. */
  router.get('/cycles/:id/progress', async (req, res) => {
    res.json(await pages.progress(cycleId(req)));
  });

  return router;
}
