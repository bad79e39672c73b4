// createApp(services): the Express application with its middleware in explicit order and
// every feature's routes mounted. It starts nothing; server.ts does.
import path from 'node:path';
import cookieParser from 'cookie-parser';
import express from 'express';
import { intakeApiRoutes } from './intake/intake-api.routes';
import { guardianRecordsApiRoutes } from './guardian-records/guardian-records.routes';
import { intakeRoutes } from './intake/intake.routes';
import { privacyNoticeRoutes } from './intake/privacy-notice.routes';
import { adminRoutes } from './admin.routes';
import type { Services } from './services';
import { errorHandler, notFoundHandler } from './web/error-handler';
import { healthRoutes } from './web/health.routes';
import { requestLogging } from './web/request-logging';
import { securityHeaders } from './web/security-headers';

export const VIEWS_DIR = path.resolve(__dirname, '..', __filename.endsWith('.ts') ? '' : '..', 'views');

export function createApp(services: Services) {
  const { config } = services;
  const app = express();
  app.disable('x-powered-by');
  app.set('views', VIEWS_DIR);
  app.set('view engine', 'ejs');
  app.locals.schoolName = config.schoolName;
  // The parents' pages name the school office's address and number where they are set.
  app.locals.schoolContact = config.schoolContact;
  // Behind the school's reverse proxy, req.ip (used for rate limits) must be the parent's address.
  app.set('trust proxy', config.trustProxy);

  app.use(requestLogging(services.logger));
  // Only the parents' pages may be framed by the school's site (FORM_EMBED_ORIGINS); the rest,
  // the staff dashboard above all, may not.
  const pageHeaders = securityHeaders(config);
  const embeddableHeaders = securityHeaders(config, config.intake.embedOrigins);
  app.use((req, res, next) => {
    const embeddable = req.path === '/request' || req.path.startsWith('/request/');
    (embeddable ? embeddableHeaders : pageHeaders)(req, res, next);
  });
  app.use(cookieParser());
  app.use('/assets', express.static(path.join(VIEWS_DIR, 'assets'), { maxAge: '1h', index: false }));

  app.use(healthRoutes(services));
  // Browsers ask every site for an icon; there is none, which is not an error worth a 404 page.
  app.get('/favicon.ico', (_req, res) => {
    res.status(204).end();
  });

  app.get('/', (_req, res) => {
    res.render('home', { title: config.schoolName });
  });

  app.use(privacyNoticeRoutes(config));
  app.use('/request', intakeRoutes(services));
  app.use('/api/v1', intakeApiRoutes(services), guardianRecordsApiRoutes(services));
  app.use('/admin', adminRoutes(services));

  app.use(notFoundHandler);
  app.use(errorHandler(config.showErrorDetails));
  return app;
}
