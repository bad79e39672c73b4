// createApp(services): the Express application with its middleware in explicit order and
// every feature's routes mounted. It starts nothing; server.ts does.
import path from 'node:path';
import express from 'express';
import type { Services } from './services';
import { errorHandler, notFoundHandler } from './web/error-handler';
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

  app.use(requestLogging(services.logger));
  app.use(securityHeaders(config));
  app.use('/assets', express.static(path.join(VIEWS_DIR, 'assets'), { maxAge: '1h', index: false }));

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/', (_req, res) => {
    res.render('home', { title: config.schoolName });
  });

  app.use(notFoundHandler);
  app.use(errorHandler(config.env !== 'production'));
  return app;
}
