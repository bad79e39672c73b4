// The staff dashboard under /admin: sessions, CSRF and the sign-in wall, then each area's routes.
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import multer from 'multer';
import { AppError } from './errors';
import { STATUS_LABELS, REQUEST_STATUSES } from './requests/request-states';
import type { Services } from './services';
import { requireStaff } from './staff-auth/require-staff';
import { staffAuthRoutes } from './staff-auth/staff-auth.routes';
import { privacyRoutes } from './privacy/privacy.routes';
import { requestPageRoutes } from './review/request-page.routes';
import { accountsRoutes } from './login-accounts/login-accounts.routes';
import { diagnosticsRoutes } from './diagnostics/diagnostics.routes';
import { provisioningRoutes } from './provisioning/provisioning-pages.routes';
import { requestsListRoutes } from './review/request-list.routes';
import { importRoutes } from './import/import.routes';
import { moodleCheckRoutes } from './reconcile/moodle-check.routes';
import { guardianRecordsRoutes } from './guardian-records/guardian-records.routes';

/** Largest CSV file staff may upload for an import. */
export const MAX_UPLOAD_BYTES = 2 * 1024 * 1024;
/** Largest guardian records export: a whole school's pupil contacts. */
export const MAX_GUARDIAN_UPLOAD_BYTES = 32 * 1024 * 1024;

export function adminRoutes(services: Services): Router {
  const router = express.Router();
  // Dashboard pages hold personal data: never cached by a shared browser or proxy, never indexed.
  router.use((_req, res, next) => {
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Robots-Tag', 'noindex');
    next();
  });
  router.use(express.urlencoded({ extended: true, limit: '200kb', parameterLimit: 5000 }));
  // File uploads (CSV import) are read into memory, small, before the CSRF check needs the form fields.
  const upload = multer({ storage: multer.memoryStorage(), limits: { fileSize: MAX_UPLOAD_BYTES, files: 1, fields: 50 } });
  const guardianUpload = multer({ storage: multer.memoryStorage(), limits: { fileSize: MAX_GUARDIAN_UPLOAD_BYTES, files: 1, fields: 50 } });
  // A body the multipart parser cannot read (a broken part header, a cut-off upload) is the
  // sender's fault: a 400 in words, not a 500. multer's own limit errors go on as they are.
  const readUpload = (req: Request, res: Response, next: NextFunction) =>
    (req.path === '/guardian-records/preview' ? guardianUpload : upload).single('file')(req, res, (error?: unknown) =>
      next(error == null || error instanceof multer.MulterError ? error : new AppError('The upload could not be read: send one CSV file with the form.', 400, 'bad_upload', { cause: error })),
    );
  router.use((req, res, next) => (req.is('multipart/form-data') ? readUpload(req, res, next) : next()));
  router.use(services.staffSession);
  router.use(services.csrf.protect);

  router.use(staffAuthRoutes(services));
  router.use(requireStaff(services));

  router.get('/', async (_req, res) => {
    const counts = await services.statusCounts.get();
    const needingPupil = await services.tvsMigration.importedNeedingPupil();
    res.render('overview', { title: 'Overview', counts, statuses: REQUEST_STATUSES, labels: STATUS_LABELS, needingPupil });
  });

  // Each area of the dashboard, all behind requireStaff above.
  // (areas: requests list and bulk actions, CSV import/export, the school's guardian records)
  router.use(requestsListRoutes(services), importRoutes(services), guardianRecordsRoutes(services));
  // (areas: request page, privacy)
  router.use(requestPageRoutes(services), privacyRoutes(services));
  // (areas: provisioning, who can log in, diagnostics)
  router.use(provisioningRoutes(services), accountsRoutes(services), diagnosticsRoutes(services));
  // (areas: the Moodle check)
  router.use(moodleCheckRoutes(services));

  return router;
}
