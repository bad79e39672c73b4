// The dashboard's front door against real databases: first-run setup with the one-time code,
// sign-in with argon2 and throttling, database sessions (regenerated at sign-in, idle and
// absolute timeouts, shared by two app instances), cookies, CSRF, sign-out, and the CLI's
// staff commands.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { runCli } from '../../src/cli';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { FREE_FAILURES, LOCK_AFTER_FAILURES } from '../../src/staff-auth/staff-sign-in-throttle';
import { snapshot, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { csrfTokenOf, htmlText } from '../support/http';
import { createStaffUser, STAFF_PASSWORD, StaffSession } from '../support/staff';

const SECRET = 'a-test-session-secret-that-is-long-enough-0123456789';

function testConfig(extra: Record<string, string> = {}) {
  return parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SESSION_SECRET: SECRET, STAFF_SESSION_IDLE_MINUTES: '30', ...extra });
}

function cookieHeader(res: request.Response, name: string): string | undefined {
  const cookies = ([] as string[]).concat(res.headers['set-cookie'] ?? []);
  return cookies.find((c) => c.startsWith(`${name}=`));
}

function sidOf(res: request.Response, name = 'mpp.sid'): string | undefined {
  return cookieHeader(res, name)?.split(';')[0]?.slice(name.length + 1);
}

/** The session and CSRF cookies a browser holds, as a Cookie header for another instance. */
function cookiesOf(browser: StaffSession): string {
  return ['mpp.sid', 'mpp.csrf']
    .map((name) => {
      const cookie = browser.agent.jar.getCookie(name, { domain: '127.0.0.1', path: '/', secure: false, script: false });
      assert.ok(cookie, `the browser holds a ${name} cookie`);
      return `${name}=${cookie.value}`;
    })
    .join('; ');
}

/** The message in the sign-in page's error box, as one line of plain text. */
function errorOf(html: string): string {
  const box = /<div class="error-summary"[^]*?<li><a href="#[^"]*">([^]*?)<\/a><\/li>/.exec(html);
  return htmlText(box?.[1] ?? '(no error shown)').trim();
}

/** Signs in through the form as if from another address (the app must trust X-Forwarded-For). */
async function signInFromAddress(app: Express, address: string, username: string, password: string) {
  const browser = new StaffSession(app);
  await browser.open('/admin/sign-in');
  return browser.agent
    .post('/admin/sign-in')
    .set('X-Forwarded-For', address)
    .type('form')
    .send(new URLSearchParams({ _csrf: browser.csrfToken, username, password }).toString());
}

async function sessionRows(t: TestDatabase): Promise<number> {
  const row = (await t.db('sessions').count({ n: '*' }).first()) as { n: number | string };
  return Number(row.n);
}

for (const dialect of DIALECTS) {
  describe(`staff sign-in on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: Express;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(testConfig(), { db: t.db, moodle: null });
      app = createApp(services);
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await t.destroy();
    });

    it('on a fresh install every dashboard page leads to setup, which needs the one-time code from the log', { skip }, async () => {
      for (const path of ['/admin', '/admin/requests', '/admin/diagnostics']) {
        const res = await request(app).get(path);
        assert.equal(res.status, 303);
        assert.equal(res.headers.location, '/admin/setup');
      }
      const lines: string[] = [];
      const logger = { warn: (fields: Record<string, unknown>, message: string) => lines.push(JSON.stringify({ ...fields, message })) };
      await services.staffAccounts.announceSetup(logger as never, services.config.baseUrl);
      assert.equal(lines.length, 1);
      const code = services.staffAccounts.setupCode();
      assert.match(code, /^[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}$/);
      assert.ok(lines[0]?.includes(code), 'the log line carries the setup code');

      const browser = new StaffSession(app);
      await browser.open('/admin/setup');
      const fields = { username: 'Head.Office', displayName: 'Pat Head', email: '', password: STAFF_PASSWORD, passwordConfirm: STAFF_PASSWORD };
      // No code, then a wrong one: refused, nothing created.
      for (const setupCode of ['', 'AAAA-BBBB-CCCC']) {
        const res = await browser.post('/admin/setup', { ...fields, setupCode });
        assert.equal(res.status, 400);
        assert.match(res.text, /setup code/i);
        assert.equal(await services.staffAccounts.needsSetup(), true);
      }
      // Without the CSRF token: refused.
      assert.equal((await browser.post('/admin/setup', { ...fields, setupCode: code }, { csrf: false })).status, 403);
      // Passwords that differ: refused with the reason, values kept (but not the password).
      const mismatch = await browser.post('/admin/setup', { ...fields, setupCode: code, passwordConfirm: 'something else entirely' });
      assert.equal(mismatch.status, 400);
      assert.match(mismatch.text, /not the same/);
      assert.match(mismatch.text, /value="Pat Head"/);
      assert.doesNotMatch(mismatch.text, new RegExp(STAFF_PASSWORD));
      // The right code (lower case and without dashes is fine): the admin exists and is signed in.
      const created = await browser.post('/admin/setup', { ...fields, setupCode: code.toLowerCase().replace(/-/g, ' ') });
      assert.equal(created.status, 303);
      assert.equal(created.headers.location, '/admin');
      const overview = await browser.open('/admin');
      assert.match(overview.text, /Signed in as Pat Head/);
      const [admin] = await services.staffAccounts.list();
      assert.equal(admin?.username, 'head.office');
      assert.equal(admin?.role, 'admin');
      assert.match(admin?.passwordHash ?? '', /^\$argon2id\$/);

      // Setup is closed now, to everyone, even with the code.
      const stranger = new StaffSession(app);
      const again = await stranger.get('/admin/setup');
      assert.equal(again.status, 303);
      assert.equal(again.headers.location, '/admin/sign-in');
      await stranger.open('/admin/sign-in');
      const late = await stranger.post('/admin/setup', { ...fields, username: 'intruder', setupCode: code });
      assert.equal(late.status, 303);
      assert.equal((await services.staffAccounts.list()).length, 1);
    });

    it('signs in with the right password only, through a new session id kept in the database', { skip }, async () => {
      const username = await createStaffUser(services, { displayName: 'Sam Office' });
      const browser = new StaffSession(app);
      const wrong = await browser.signIn(username, 'not the password at all');
      assert.equal(wrong.status, 401);
      assert.match(wrong.text, /do not match an active staff account/);
      assert.equal(sidOf(wrong), undefined, 'no session is stored for a failed sign-in');

      const before = await sessionRows(t);
      const ok = await browser.signIn(username.toUpperCase(), STAFF_PASSWORD);
      assert.equal(ok.status, 303);
      const sid = sidOf(ok);
      assert.ok(sid, 'a session cookie is set');
      const cookie = cookieHeader(ok, 'mpp.sid') ?? '';
      assert.match(cookie, /HttpOnly/);
      assert.match(cookie, /SameSite=Lax/);
      const expires = Date.parse(/Expires=([^;]+)/.exec(cookie)?.[1] ?? '');
      assert.ok(Math.abs(expires - (Date.now() + 30 * 60_000)) < 60_000, 'the cookie lasts as long as the idle timeout');
      assert.doesNotMatch(cookie, /Secure/, 'over plain http the cookie cannot be Secure');
      assert.equal(await sessionRows(t), before + 1);
      assert.match((await browser.open('/admin')).text, /Signed in as Sam Office/);

      // Signing in again (say, on a shared computer) never keeps the old session id.
      const second = await browser.post('/admin/sign-in', { username, password: STAFF_PASSWORD });
      const sid2 = sidOf(second);
      assert.ok(sid2);
      assert.notEqual(sid2, sid);
      const stale = await request(app).get('/admin').set('Cookie', `mpp.sid=${sid}`);
      assert.equal(stale.status, 303, 'the session id from before is worthless');
      assert.match(stale.headers.location ?? '', /^\/admin\/sign-in/);
    });

    it('a session works on another app instance sharing the database', { skip }, async () => {
      const username = await createStaffUser(services, { displayName: 'Alex Shared' });
      const browser = await StaffSession.signIn(app, username);
      const otherServices = createServices(testConfig(), { db: t.db, moodle: null });
      try {
        const other = createApp(otherServices);
        const jar = browser.agent.jar.getCookie('mpp.sid', { domain: '127.0.0.1', path: '/', secure: false, script: false });
        assert.ok(jar, 'the browser holds a session cookie');
        const res = await request(other).get('/admin').set('Cookie', `mpp.sid=${jar.value}`);
        assert.equal(res.status, 200);
        assert.match(res.text, /Signed in as Alex Shared/);
      } finally {
        await otherServices.close();
      }
    });

    it('keeps the CSRF token bound to the session and refuses POSTs without it', { skip }, async () => {
      const username = await createStaffUser(services);
      const browser = await StaffSession.signIn(app, username);
      assert.equal((await browser.post('/admin/sign-out', {}, { csrf: false })).status, 403);
      // A token taken from the sign-in page before signing in (bound to no session) no longer works.
      const anonymous = new StaffSession(app);
      const page = await anonymous.open('/admin/sign-in');
      const anonymousToken = csrfTokenOf(page.text);
      const res = await browser.agent.post('/admin/sign-out').type('form').send(`_csrf=${encodeURIComponent(anonymousToken)}`);
      assert.equal(res.status, 403);
      assert.equal((await browser.get('/admin')).status, 200, 'still signed in');
    });

    it('sign-out ends the session everywhere', { skip }, async () => {
      const username = await createStaffUser(services);
      const browser = await StaffSession.signIn(app, username);
      const jar = browser.agent.jar.getCookie('mpp.sid', { domain: '127.0.0.1', path: '/', secure: false, script: false });
      const out = await browser.post('/admin/sign-out');
      assert.equal(out.status, 303);
      assert.equal(out.headers.location, '/admin/sign-in');
      const replay = await request(app).get('/admin').set('Cookie', `mpp.sid=${jar?.value}`);
      assert.equal(replay.status, 303);
    });

    it('ends a session after the idle timeout and after the maximum age', { skip }, async () => {
      const username = await createStaffUser(services);
      const idle = await StaffSession.signIn(app, username);
      // The store's expiry is the idle timeout: make this session's expiry pass.
      await t.db('sessions').update({ expired: dialect === 'sqlite' ? new Date(Date.now() - 1000).toISOString() : '2000-01-01 00:00:00' });
      const res = await idle.get('/admin/requests');
      assert.equal(res.status, 303);
      assert.match(res.headers.location ?? '', /^\/admin\/sign-in\?next=%2Fadmin%2Frequests/);

      const old = await StaffSession.signIn(app, username);
      const rows = (await t.db('sessions').select('sid', 'sess')) as { sid: string; sess: string }[];
      for (const row of rows) {
        const sess = JSON.parse(row.sess) as { signedInAt?: number };
        if (sess.signedInAt) sess.signedInAt -= services.config.staff.sessionMaxMs + 1000;
        await t.db('sessions').where({ sid: row.sid }).update({ sess: JSON.stringify(sess) });
      }
      const expired = await old.get('/admin');
      assert.equal(expired.status, 303);
      assert.match(expired.headers.location ?? '', /ended=1/);
      const post = await old.post('/admin/sign-out');
      assert.notEqual(post.status, 303, 'an ended session changes nothing');
    });

    it('throttles failures per username and address: slowed, then locked, from that address only, the same for unknown usernames', { skip }, async () => {
      const throttled = createServices(testConfig(), { db: t.db, moodle: null });
      try {
        const throttledApp = createApp(throttled);
        throttledApp.set('trust proxy', true);
        const username = await createStaffUser(services);
        const attacker = '198.51.100.7';
        const office = '192.0.2.10';
        const signInFrom = (address: string, name: string, password: string) => signInFromAddress(throttledApp, address, name, password);
        // The waits are minutes long; a test cannot sit through them, so it ends them in the table.
        const passTheWait = () => t.db('rate_limits').where('key', 'like', 'signin_wait:%').update({ expire: Date.now() - 1000 });

        /** Guesses from the attacker's address until the lock; every answer, in words. */
        const guess = async (name: string, rightPassword: string) => {
          const answers: string[] = [];
          for (let failure = 1; failure <= LOCK_AFTER_FAILURES; failure += 1) {
            const res = await signInFrom(attacker, name, `wrong guess ${failure}`);
            answers.push(`${res.status} ${errorOf(res.text)}`);
            if (failure === FREE_FAILURES + 1) {
              // Slowed: straight after, even the right password is refused, with the wait in words.
              const early = await signInFrom(attacker, name, rightPassword);
              assert.equal(early.status, 429);
              assert.ok(Number(early.headers['retry-after']) > 0);
              assert.match(errorOf(early.text), /^Too many failed sign-ins for this username\. Try again in \d+ seconds?\.$/);
              answers.push(`${early.status} ${errorOf(early.text).replace(/\d+ seconds?/, 'N seconds')}`);
            }
            if (failure === FREE_FAILURES + 5) {
              // Slower still: a wait of minutes, said in minutes.
              const early = await signInFrom(attacker, name, rightPassword);
              answers.push(`${early.status} ${errorOf(early.text)}`);
            }
            await passTheWait();
          }
          // Locked: the wait has passed, the right password is still refused from this address.
          const locked = await signInFrom(attacker, name, rightPassword);
          answers.push(`${locked.status} ${errorOf(locked.text)}`);
          return answers;
        };

        const known = await guess(username, STAFF_PASSWORD);
        const failed = 'That username and password do not match an active staff account.';
        const lockText = 'Too many failed sign-ins for this username from this address. Try again in 15 minutes, or ask an administrator to reset the password.';
        assert.deepEqual(known, [
          `401 ${failed}`,
          `401 ${failed}`,
          `401 ${failed} Wait 15 seconds before you try again.`,
          '429 Too many failed sign-ins for this username. Try again in N seconds.',
          `401 ${failed} Wait 30 seconds before you try again.`,
          `401 ${failed} Wait 1 minute before you try again.`,
          `401 ${failed} Wait 2 minutes before you try again.`,
          `401 ${failed} Wait 4 minutes before you try again.`,
          '429 Too many failed sign-ins for this username. Try again in 4 minutes.',
          `401 ${failed} Wait 5 minutes before you try again.`,
          `401 ${failed} Wait 5 minutes before you try again.`,
          `429 ${lockText}`,
          `429 ${lockText}`,
        ]);

        // The lock holds only for the attacker's address: the member of staff signs in from the office.
        assert.equal((await signInFrom(office, username, STAFF_PASSWORD)).status, 303);
        assert.equal((await signInFrom(attacker, username, STAFF_PASSWORD)).status, 429, 'still locked for the attacker');

        // A username no account has gets exactly the same answers, so nothing tells which exist.
        assert.deepEqual(await guess('nobody.here', 'any password at all'), known);

        // A password reset lifts the lock.
        const io = { out: () => undefined, err: () => undefined, readPassword: async () => 'a brand new password 42' };
        assert.equal(await runCli(['staff', 'reset-password', username], io, { services }), 0);
        assert.equal((await signInFrom(attacker, username, 'a brand new password 42')).status, 303);
      } finally {
        await throttled.close();
      }
    });

    it('throttles sign-in attempts per address', { skip }, async () => {
      const throttled = createServices(testConfig(), { db: t.db, moodle: null });
      try {
        const throttledApp = createApp(throttled);
        throttledApp.set('trust proxy', true);
        let status = 0;
        let attempts = 0;
        const browser = new StaffSession(throttledApp);
        await browser.open('/admin/sign-in');
        while (attempts < 40) {
          attempts += 1;
          const res = await browser.agent
            .post('/admin/sign-in')
            .set('X-Forwarded-For', '203.0.113.77')
            .type('form')
            .send(new URLSearchParams({ _csrf: browser.csrfToken, username: `visitor${attempts}`, password: 'x' }).toString());
          status = res.status;
          if (status === 429) {
            assert.match(res.text, /from this address/);
            break;
          }
        }
        assert.equal(status, 429);
        assert.equal(attempts, 31, 'the 31st attempt within 15 minutes from one address is refused');
      } finally {
        await throttled.close();
      }
    });

    it('a disabled account cannot sign in and its open session stops working', { skip }, async () => {
      const username = await createStaffUser(services);
      const browser = await StaffSession.signIn(app, username);
      const out: string[] = [];
      const io = { out: (s: string) => out.push(s), err: (s: string) => out.push(s) };
      assert.equal(await runCli(['staff', 'disable', username], io, { services }), 0);
      assert.equal((await browser.get('/admin')).status, 303);
      assert.equal((await new StaffSession(app).signIn(username, STAFF_PASSWORD)).status, 401);
      assert.equal(await runCli(['staff', 'enable', username], io, { services }), 0);
      assert.equal((await new StaffSession(app).signIn(username, STAFF_PASSWORD)).status, 303);
    });

    it('a password reset, or a disable, ends every session of the account on every instance at once', { skip }, async () => {
      // Two instances share the database, as behind a load balancer; the CLI is a third.
      const secondServices = createServices(testConfig(), { db: t.db, moodle: null });
      const cliServices = createServices(testConfig(), { db: t.db, moodle: null });
      try {
        const second = createApp(secondServices);
        const { request: pending } = await services.lifecycle.submitRequest(submission(), { type: 'parent' });
        const username = await createStaffUser(services);
        const newPassword = 'a brand new password 42';
        const io = { out: () => undefined, err: () => undefined, readPassword: async () => newPassword };
        /** Replays a browser's cookies and form token on an instance: a comment, then the dashboard. */
        const replay = async (instance: Express, browser: StaffSession) => {
          const comment = await request(instance)
            .post(`/admin/requests/${pending.id}/comment`)
            .set('Cookie', cookiesOf(browser))
            .type('form')
            .send(new URLSearchParams({ _csrf: browser.csrfToken, comment: 'written with an old session' }).toString());
          const page = await request(instance).get('/admin').set('Cookie', cookiesOf(browser));
          return { comment: comment.status, page: page.status, location: page.headers.location ?? '' };
        };

        // One session begun on each instance, each to be replayed on the other.
        const fromFirst = await StaffSession.signIn(app, username);
        const fromSecond = await StaffSession.signIn(second, username);
        await fromFirst.open(`/admin/requests/${pending.id}`);
        await fromSecond.open(`/admin/requests/${pending.id}`);
        const before = await snapshot(t.db);

        assert.equal(await runCli(['staff', 'reset-password', username], io, { services: cliServices }), 0);
        for (const [instance, browser, name] of [[second, fromFirst, 'second'], [app, fromSecond, 'first']] as const) {
          const result = await replay(instance, browser);
          assert.equal(result.comment, 401, `after the reset an old session cannot comment on the ${name} instance`);
          assert.equal(result.page, 303, `after the reset an old session cannot open the dashboard on the ${name} instance`);
          assert.match(result.location, /^\/admin\/sign-in/);
        }
        assert.deepEqual(await snapshot(t.db), before, 'nothing was written with an old session');

        // Disable, reset, enable: a session from before all three stays ended.
        const kept = await StaffSession.signIn(app, username, newPassword);
        await kept.open(`/admin/requests/${pending.id}`);
        assert.equal(await runCli(['staff', 'disable', username], io, { services: cliServices }), 0);
        assert.equal(await runCli(['staff', 'reset-password', username], io, { services: cliServices }), 0);
        assert.equal(await runCli(['staff', 'enable', username], io, { services: cliServices }), 0);
        const result = await replay(second, kept);
        assert.equal(result.comment, 401, 'the session from before the disable cannot comment after enable');
        assert.equal(result.page, 303, 'the session from before the disable is not back after enable');
        assert.deepEqual(await snapshot(t.db), before);

        // The new password signs in, and that session works on both instances.
        const fresh = await StaffSession.signIn(second, username, newPassword);
        assert.equal((await request(app).get('/admin').set('Cookie', cookiesOf(fresh))).status, 200);
      } finally {
        await secondServices.close();
        await cliServices.close();
      }
    });

    it('never follows a sign-in "next" address off the dashboard', { skip }, async () => {
      const username = await createStaffUser(services);
      for (const next of ['https://evil.example/', '//evil.example/admin', '/request', '/admin/../request', 'javascript:alert(1)']) {
        const browser = new StaffSession(app);
        await browser.open('/admin/sign-in');
        const res = await browser.post('/admin/sign-in', { username, password: STAFF_PASSWORD, next });
        assert.equal(res.status, 303);
        assert.equal(res.headers.location, '/admin', `next=${next}`);
      }
      const browser = new StaffSession(app);
      await browser.open('/admin/sign-in?next=%2Fadmin%2Fdiagnostics');
      const res = await browser.post('/admin/sign-in', { username, password: STAFF_PASSWORD, next: '/admin/diagnostics' });
      assert.equal(res.headers.location, '/admin/diagnostics');
    });

    it('the CLI adds, lists, disables and refuses bad staff input', { skip }, async () => {
      const out: string[] = [];
      const err: string[] = [];
      const io = { out: (s: string) => out.push(s), err: (s: string) => err.push(s), readPassword: async () => 'long enough password' };
      assert.equal(await runCli(['staff', 'add', 'cli.person', '--name', 'Cli Person', '--email', 'Cli@Example.org', '--admin'], io, { services }), 0);
      assert.match(out.join('\n'), /Added administrator account "cli.person"/);
      const user = (await services.staffAccounts.list()).find((u) => u.username === 'cli.person');
      assert.equal(user?.email, 'cli@example.org');
      assert.equal(user?.role, 'admin');
      assert.equal(await runCli(['staff', 'add', 'cli.person', '--name', 'Again'], io, { services }), 1);
      assert.match(err.join('\n'), /username is taken/);
      const short = { ...io, readPassword: async () => 'short' };
      assert.equal(await runCli(['staff', 'add', 'other.person', '--name', 'Other'], short, { services }), 1);
      assert.match(err.join('\n'), /at least 12 characters/);
      assert.equal(await runCli(['staff', 'add', 'no.name'], io, { services }), 2);
      assert.equal(await runCli(['staff', 'disable', 'does.not.exist'], io, { services }), 1);
      assert.match(err.join('\n'), /no staff account "does.not.exist"/);
      out.length = 0;
      assert.equal(await runCli(['staff', 'list'], io, { services }), 0);
      assert.match(out.join('\n'), /cli\.person\s+admin\s+active/);
      assert.doesNotMatch(out.join('\n'), /argon2/);
    });
  });
}

describe('staff cookies over https', () => {
  it('are Secure and __Host- prefixed when BASE_URL is https', async () => {
    const t = await createTestDatabase('sqlite');
    const services = createServices(testConfig({ BASE_URL: 'https://parents.example-school.org' }), { db: t.db, moodle: null });
    try {
      const app = createApp(services);
      app.set('trust proxy', true);
      const username = await createStaffUser(services);
      const page = await request(app).get('/admin/sign-in').set('X-Forwarded-Proto', 'https');
      const csrfCookie = cookieHeader(page, '__Host-mpp.csrf');
      assert.ok(csrfCookie);
      const res = await request(app)
        .post('/admin/sign-in')
        .set('X-Forwarded-Proto', 'https')
        .set('Cookie', csrfCookie.split(';')[0] as string)
        .type('form')
        .send(new URLSearchParams({ _csrf: csrfTokenOf(page.text), username, password: STAFF_PASSWORD }).toString());
      assert.equal(res.status, 303);
      const session = cookieHeader(res, '__Host-mpp.sid');
      assert.ok(session, 'the session cookie has the __Host- prefix');
      assert.match(session, /Secure/);
      assert.match(session, /HttpOnly/);
      assert.match(session, /Path=\//);
      assert.doesNotMatch(session, /Domain=/);
    } finally {
      await services.close();
      await t.destroy();
    }
  });
});
