// The "Moodle check" page: the last reconcile run's counts and findings, the recent runs, and
// "Run the Moodle check now" (office staff may, like running provisioning).
import express, { type Request, type Response, type Router } from 'express';
import { ConflictError } from '../errors';
import { CycleAlreadyRunningError } from '../provisioning/provisioning-cycle';
import type { Services } from '../services';
import type { StaffIdentity } from '../staff-auth/staff-accounts.service';
import { requirePermission } from '../staff-auth/staff-permissions';
import { MoodleCheckPage } from './moodle-check.service';
import { ReconcileAlreadyRunningError } from './reconciliation';

function runNumber(value: unknown): number | undefined {
  return typeof value === 'string' && /^\d{1,9}$/.test(value) ? Number(value) : undefined;
}

export function moodleCheckRoutes(services: Services): Router {
  const router = express.Router();
  const page = new MoodleCheckPage({ db: services.db, reconcile: services.reconcile, config: services.config, logger: services.logger });

  async function render(req: Request, res: Response, notice?: { refused: boolean; message: string; help: string | null }) {
    const view = await page.page(notice?.refused ? undefined : runNumber(req.query.run));
    res.status(notice?.refused ? 409 : 200).render('reconcile/index', { title: 'Moodle check', ...view, notice, started: req.query.started === '1' });
  }

  router.get('/moodle-check', async (req, res) => {
    await render(req, res);
  });

  router.post('/moodle-check/run', requirePermission('provision'), async (req, res) => {
    const staff = res.locals.staff as StaffIdentity;
    try {
      const runId = await page.runNow(staff.username);
      res.redirect(303, `/admin/moodle-check?run=${runId}&started=1`);
    } catch (error) {
      if (error instanceof ReconcileAlreadyRunningError) return render(req, res, { refused: true, message: error.message, help: error.help ?? null });
      if (error instanceof CycleAlreadyRunningError) {
        return render(req, res, {
          refused: true,
          message: 'A provisioning cycle is running, so the Moodle check was not started.',
          help: 'The two never run at once. Try again when the cycle has finished (the provisioning page shows its progress).',
        });
      }
      if (error instanceof ConflictError) return render(req, res, { refused: true, message: error.message, help: error.help ?? null });
      throw error;
    }
  });

  return router;
}
