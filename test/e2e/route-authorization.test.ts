// Walks every route the app registers (read from Express's router, so a route added later is
// covered without touching this file) and checks the doors: staff routes refuse without a
// session, API routes without a key, and every state-changing browser route without a CSRF
// token — and that a refused request changes nothing in the database.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
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
