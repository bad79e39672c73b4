// The diagnostics page: runs every check live (GET), or with the sync command too (POST, since it
// makes Moodle change accounts), and shows the configuration in force.
import express, { type Request, type Response, type Router } from 'express';
import type { Services } from '../services';
import { DiagnosticsPage } from './diagnostics.service';
import type { StaffIdentity } from '../staff-auth/staff-accounts.service';
import { can, permissionTable, requirePermission, ROLE_LABELS } from '../staff-auth/staff-permissions';

export function diagnosticsRoutes(services: Services): Router {
  const router = express.Router();
  const page = new DiagnosticsPage({ config: services.config, doctor: services.doctor, staffAccounts: services.staffAccounts });

  async function render(req: Request, res: Response, runSync: boolean) {
    const staff = res.locals.staff as StaffIdentity;
    if (runSync) req.log.info({ staff: staff.username }, 'diagnostics run with the sync command from the dashboard');
    const result = await page.checks(runSync);
    res.render('diagnostics/index', {
      title: 'Diagnostics',
      ...result,
      staffAccounts: can(staff.role, 'manage_staff') ? await page.staffList() : null,
      permissions: permissionTable(),
      roleLabels: ROLE_LABELS,
    });
  }

  router.get('/diagnostics', (req, res) => render(req, res, false));
  router.post('/diagnostics/run-sync', requirePermission('run_sync'), (req, res) => render(req, res, true));

  return router;
}
