// Walks every route the app registers (read from Express's router, so a route added later is
// covered without touching this file) and checks the doors: staff routes refuse without a
// session, API routes without a key, and every state-changing browser route without a CSRF
// token — and that a refused request changes nothing in the database. Every dashboard route
// is also checked against the permission table for each staff role.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { can, PERMISSION_WORDS, type Permission } from '../../src/staff-auth/staff-permissions';
import type { StaffRole } from '../../src/staff-auth/staff-users.repository';
import { approvedRequest, snapshot, submission } from '../support/builders';
import { createTestDatabase, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { createStaffUser, StaffSession } from '../support/staff';

interface RouteInfo {
  method: string;
  path: string;
}

interface RouterLayer {
  rawPath?: unknown;
  route?: { path: string | string[]; methods: Record<string, boolean> };
  handle?: { stack?: RouterLayer[] };
}

/** Every method + path the app answers, from the router's own tables (nested routers included). */
export function listRoutes(app: Express): RouteInfo[] {
  const routes: RouteInfo[] = [];
  const walk = (stack: RouterLayer[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        const paths = Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path];
        for (const p of paths) {
          for (const [method, enabled] of Object.entries(layer.route.methods)) {
            if (enabled && method !== '_all') routes.push({ method: method.toUpperCase(), path: joinPath(prefix, p) });
          }
        }
      } else if (layer.handle?.stack) {
        const mount = typeof layer.rawPath === 'string' ? layer.rawPath : '';
        walk(layer.handle.stack, joinPath(prefix, mount));
      }
    }
  };
  walk((app as unknown as { router: { stack: RouterLayer[] } }).router.stack, '');
  return routes;
}

function joinPath(prefix: string, path: string): string {
  if (!path || path === '/') return prefix || '/';
  return `${prefix.replace(/\/$/, '')}${path.startsWith('/') ? '' : '/'}${path}`;
}

/** Everything a wrongly allowed action could change. */
async function state(t: TestDatabase) {
  return {
    ...(await snapshot(t.db)),
    outbox: await t.db('mail_outbox').count({ n: '*' }).first(),
    cycles: await t.db('provisioning_cycles').count({ n: '*' }).first(),
    staff: await t.db('staff_users').select('id', 'username', 'disabled', 'password_hash').orderBy('id'),
  };
}

/** A concrete address for a route pattern: every parameter becomes 1 (ids) or a harmless word. */
function concrete(path: string): string {
  return path.replace(/:(\w+)/g, (_m, name: string) => (/id$/i.test(name) ? '1' : 'x')).replace(/\*\w*/g, 'x');
}

/** A concrete address whose ids name nothing, so that an allowed action finds nothing to change. */
function concreteMissing(path: string): string {
  return path.replace(/:(\w+)/g, (_m, name: string) => (/id$/i.test(name) ? '999999' : 'x')).replace(/\*\w*/g, 'x');
}

/**
 * What each dashboard route needs, from the permission table (src/staff-auth/staff-permissions.ts,
 * README "Who may do what"). A route missing here fails the sweep: decide what it needs first.
 */
const ROUTE_PERMISSIONS: Record<string, Permission> = {
  'GET /admin': 'review',
  'GET /admin/requests': 'review',
  'POST /admin/requests/bulk': 'decide',
  'GET /admin/requests.csv': 'export',
  'GET /admin/import': 'review',
  'POST /admin/import/preview': 'import',
  'GET /admin/import/:batchId': 'import',
  'POST /admin/import/:batchId/commit': 'import',
  'GET /admin/guardian-records': 'review',
  'POST /admin/guardian-records/preview': 'import',
  'GET /admin/guardian-records/:importId': 'import',
  'POST /admin/guardian-records/:importId/commit': 'import',
  'GET /admin/requests/:id': 'review',
  'POST /admin/requests/:id/approve': 'decide',
  'POST /admin/requests/:id/deny': 'decide',
  'POST /admin/requests/:id/duplicate': 'decide',
  'POST /admin/requests/:id/bogus': 'decide',
  'POST /admin/requests/:id/revoke': 'decide',
  'POST /admin/requests/:id/revoke-child': 'decide',
  'POST /admin/requests/:id/pick-pupil': 'decide',
  'POST /admin/requests/:id/resend-verification': 'decide',
  'POST /admin/requests/:id/comment': 'comment',
  'GET /admin/requests/:id/erase': 'erase',
  'POST /admin/requests/:id/erase': 'erase',
  'GET /admin/privacy': 'erase',
  'GET /admin/pupils/:moodleUserId': 'review',
  'GET /admin/pupils/:moodleUserId/history.csv': 'review',
  'GET /admin/provisioning': 'review',
  'POST /admin/provisioning/run': 'provision',
  'GET /admin/cycles/:id': 'review',
  'GET /admin/cycles/:id/progress': 'review',
  'GET /admin/moodle-check': 'review',
  'POST /admin/moodle-check/run': 'provision',
  'GET /admin/accounts': 'review',
  'GET /admin/diagnostics': 'review',
  'POST /admin/diagnostics/run-sync': 'run_sync',
};

const PUBLIC_ADMIN = new Set(['/admin/setup', '/admin/sign-in']);
const isStaffRoute = (path: string) => path === '/admin' || path.startsWith('/admin/');
const isApiRoute = (path: string) => path.startsWith('/api/');
const isStateChanging = (method: string) => !['GET', 'HEAD', 'OPTIONS'].includes(method);

describe('route authorization sweep', () => {
  let t: TestDatabase;
  let services: Services;
  let app: Express;
  let routes: RouteInfo[];

  before(async () => {
    t = await createTestDatabase('sqlite');
    services = createServices(
      parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SESSION_SECRET: 'route-sweep-secret-route-sweep-secret-0123' }),
      { db: t.db, moodle: null },
    );
    app = createApp(services);
    // With one staff account, the wall sends people to sign-in rather than to the first-run setup.
    await createStaffUser(services);
    // Something for every action to act on: request 1 approved (with an auth row), request 2 pending.
    await approvedRequest(services.lifecycle);
    await services.lifecycle.submitRequest(submission(), { type: 'parent' });
    routes = listRoutes(app);
  });
  after(async () => {
    await services.close();
    await t.destroy();
  });

  it('finds the routes the app is known to have (so the walk itself cannot come back empty)', () => {
    const keys = new Set(routes.map((r) => `${r.method} ${r.path}`));
    for (const known of ['GET /request', 'POST /request', 'POST /api/v1/requests', 'GET /admin', 'GET /admin/sign-in', 'POST /admin/sign-in', 'POST /admin/sign-out', 'GET /healthz']) {
      assert.ok(keys.has(known), `${known} is among the ${routes.length} routes found`);
    }
  });

  it('every staff route refuses without a session, and changes nothing', async () => {
    const staffRoutes = routes.filter((r) => isStaffRoute(r.path) && !PUBLIC_ADMIN.has(r.path) && r.path !== '/admin/sign-out');
    assert.ok(staffRoutes.length >= 1);
    const before = await state(t);
    for (const route of staffRoutes) {
      const path = concrete(route.path);
      const res = await request(app)[route.method.toLowerCase() as 'get'](path);
      if (route.method === 'GET') {
        assert.equal(res.status, 303, `${route.method} ${route.path} without a session`);
        assert.match(res.headers.location ?? '', /^\/admin\/sign-in/, `${route.method} ${route.path} leads to sign-in`);
      } else {
        assert.ok([401, 403].includes(res.status), `${route.method} ${route.path} without a session answered ${res.status}`);
      }
      assert.doesNotMatch(res.text ?? '', /Signed in as/);
    }
    assert.deepEqual(await state(t), before);
  });

  it('every dashboard route is in the permission table, and each role is refused exactly what the table withholds', async () => {
    const staffRoutes = routes.filter((r) => isStaffRoute(r.path) && !PUBLIC_ADMIN.has(r.path) && r.path !== '/admin/sign-out');
    const unlisted = staffRoutes.map((r) => `${r.method} ${r.path}`).filter((key) => !(key in ROUTE_PERMISSIONS));
    assert.deepEqual(unlisted, [], 'every dashboard route says which permission it needs');
    const roles: StaffRole[] = ['staff', 'admin'];
    const sessions = new Map<StaffRole, StaffSession>();
    for (const role of roles) sessions.set(role, await StaffSession.signIn(app, await createStaffUser(services, { role })));

    // Refused: 403, and nothing changes (the request named exists, so a wrongly allowed action would act).
    const before = await state(t);
    let refusals = 0;
    for (const role of roles) {
      const staff = sessions.get(role) as StaffSession;
      for (const route of staffRoutes) {
        const permission = ROUTE_PERMISSIONS[`${route.method} ${route.path}`] as Permission;
        if (can(role, permission)) continue;
        refusals += 1;
        const path = concrete(route.path);
        const res = route.method === 'GET' ? await staff.get(path) : await staff.post(path, { confirm: 'erase', reason: 'x', comment: 'x' });
        assert.equal(res.status, 403, `${route.method} ${route.path} as ${role} (needs ${permission}) answered ${res.status}`);
        assert.match(res.text, /Your account cannot/);
      }
    }
    assert.ok(refusals >= 6, 'office staff are refused the administrators’ routes');
    assert.deepEqual(await state(t), before);

    // Allowed: never refused for want of permission (ids that name nothing, so little changes).
    for (const role of roles) {
      const staff = sessions.get(role) as StaffSession;
      for (const route of staffRoutes) {
        const permission = ROUTE_PERMISSIONS[`${route.method} ${route.path}`] as Permission;
        if (!can(role, permission)) continue;
        const path = concreteMissing(route.path);
        const res = route.method === 'GET' ? await staff.get(path) : await staff.post(path, {});
        assert.ok(![401, 403].includes(res.status), `${route.method} ${route.path} as ${role} answered ${res.status}`);
      }
    }
    // "Run provisioning now" was allowed, so a cycle may be running: let it end before going on.
    while (services.cycle.current()) await new Promise((resolve) => setTimeout(resolve, 20));

    // The table is on the diagnostics page, for both roles to read.
    const page = await (sessions.get('staff') as StaffSession).get('/admin/diagnostics');
    for (const words of Object.values(PERMISSION_WORDS)) assert.ok(page.text.includes(words), `the diagnostics page lists "${words}"`);
  });

  it('every API route refuses without a key', async () => {
    const apiRoutes = routes.filter((r) => isApiRoute(r.path));
    assert.ok(apiRoutes.length >= 1);
    for (const route of apiRoutes) {
      const res = await request(app)[route.method.toLowerCase() as 'get'](concrete(route.path)).send({});
      assert.equal(res.status, 401, `${route.method} ${route.path} without a key`);
    }
  });

  it('every state-changing browser route refuses without a CSRF token, even with a valid session', async () => {
    const username = await createStaffUser(services);
    const staff = await StaffSession.signIn(app, username);
    const changing = routes.filter((r) => isStateChanging(r.method) && !isApiRoute(r.path));
    assert.ok(changing.length >= 3);
    const before = await state(t);
    for (const route of changing) {
      const res = await staff.agent[route.method.toLowerCase() as 'post'](concrete(route.path)).type('form').send('reason=x&comment=x');
      assert.equal(res.status, 403, `${route.method} ${route.path} without a CSRF token answered ${res.status}`);
    }
    assert.deepEqual(await state(t), before);
    assert.equal((await staff.get('/admin')).status, 200, 'the session itself is still good');
  });
});
