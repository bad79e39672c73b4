// "Who can log in": the parents in the auth table, with what Moodle says about their accounts.
import express, { type Router } from 'express';
import type { Services } from '../services';
import { moodleStateLabel, WhoCanLogIn } from './login-accounts.service';
import { pageNumber } from '../provisioning/provisioning-format';

function searchTerm(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const term = value.trim().slice(0, 100);
  return term === '' ? undefined : term;
}

export function accountsRoutes(services: Services): Router {
  const router = express.Router();
  const accounts = new WhoCanLogIn({ db: services.db, authTable: services.config.authTable, moodle: services.moodle, logger: services.logger });

  router.get('/accounts', async (req, res) => {
    const search = searchTerm(req.query.q);
    const result = await accounts.page(pageNumber(req.query.page), search);
    res.render('login-accounts/index', {
      title: 'Who can log in',
      ...result,
      search: search ?? '',
      stateLabel: moodleStateLabel,
      authTable: services.config.authTable,
      pageLink: (n: number) => `/admin/accounts?${new URLSearchParams({ ...(search ? { q: search } : {}), page: String(n) }).toString()}`,
    });
  });

  return router;
}
