// The service's own short privacy notice at /privacy, for a school that has not set
// PRIVACY_NOTICE_URL: the form asks parents to confirm they have read a notice, so there must
// always be one to read. When the school's own notice is set, /privacy sends people there.
import express, { type Router } from 'express';
import type { Config } from '../config';

export const PRIVACY_NOTICE_PATH = '/privacy';

/** Where the form's privacy link goes: the school's notice when set, else this service's own. */
export function privacyNoticeHref(config: Pick<Config, 'intake'>): string {
  return config.intake.privacyNoticeUrl ?? PRIVACY_NOTICE_PATH;
}

export function privacyNoticeRoutes(config: Readonly<Config>): Router {
  const router = express.Router();
  router.get(PRIVACY_NOTICE_PATH, (_req, res) => {
    if (config.intake.privacyNoticeUrl) return res.redirect(302, config.intake.privacyNoticeUrl);
    res.render('intake/privacy-notice', {
      title: 'Privacy notice',
      retentionDays: config.privacy.retentionDays,
      submitterDetailsDays: config.privacy.submitterDetailsDays,
    });
  });
  return router;
}
