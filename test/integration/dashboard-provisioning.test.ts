// The dashboard's provisioning pages against real databases and the Moodle test double: "Run now"
// starts a cycle whose page shows its progress while it runs (reloading itself) and its report
// after; a second "Run now" is refused with a link to the running cycle; the history pages.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { htmlText } from '../support/http';
import { CONTRACT_DIR } from '../support/moodle-contract';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, StaffSession } from '../support/staff';

const SECRET = 'dashboard-provisioning-secret-0123456789abcdef';
const PARENT_ROLE = 9;

/**
 * MOODLE_SYNC_COMMAND for the double: a small HTTP endpoint in this process runs auth_db's sync
 * against the auth table, and the command (a real child process, as in production) fetches it
 * and prints what Moodle's CLI would.
 */
async function startSyncEndpoint(moodle: MoodleDouble, t: TestDatabase) {
  const server = http.createServer((_req, res) => {
    moodle.sync(t.db, TEST_AUTH_TABLE).then(
      (output) => res.end(output),
      (error: unknown) => {
        res.statusCode = 500;
        res.end(String(error));
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/sync`;
  return {
    command: `'${process.execPath}' -e 'fetch(process.argv[1]).then((r) => r.text()).then((t) => process.stdout.write(t))' '${url}'`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The page's words without tags, as a reader sees them. */
const textOf = (html: string) => htmlText(html.replace(/<[^>]+>/g, ' ')).replace(/\s+/g, ' ');

const cycleLinks = (html: string) => [...html.matchAll(/href="\/admin\/cycles\/(\d+)">Cycle \d+/g)].map((m) => Number(m[1]));

for (const dialect of DIALECTS) {
  describe(`dashboard provisioning pages on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let sync: Awaited<ReturnType<typeof startSyncEndpoint>>;
    let services: Services;
    let app: Express;
    let username: string;
    let env: Record<string, string>;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      sync = await startSyncEndpoint(moodle, t);
      env = {
        NODE_ENV: 'test',
        AUTH_TABLE: TEST_AUTH_TABLE,
        SESSION_SECRET: SECRET,
        MOODLE_URL: moodle.url,
        MOODLE_TOKEN: moodle.tokens.ws,
        MOODLE_PARENT_ROLE_ID: String(PARENT_ROLE),
        MOODLE_RETRIES: '0',
        MOODLE_TIMEOUT_MS: '15000',
        MOODLE_SYNC_COMMAND: sync.command,
        CYCLE_SCHEDULE: 'off',
      };
      services = createServices(parseConfig(env), { db: t.db });
      app = createApp(services);
      username = await createStaffUser(services, { displayName: 'Robin Office' });
    });
    after(async () => {
      if (skip) return;
      await services.cycle.requestStop();
      await services.close();
      await sync.close();
      await moodle.close();
      await t.destroy();
    });

    async function approve(email: string, pupils: number[]) {
      const children = [
        { firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: null },
        { firstName: 'Bob', lastName: 'Pupil', tutorGroup: '9C', pupilIdentifier: null },
      ].slice(0, pupils.length);
      const { request: submitted, children: kids } = await services.lifecycle.submitRequest(submission({ email, children }), { type: 'parent' });
      const approved = await services.lifecycle.approveRequest(
        submitted.id,
        { expectedVersion: submitted.version, children: kids.map((c, i) => ({ childId: c.id, moodleUserId: pupils[i] ?? null })) },
        { type: 'staff', id: 'office' },
      );
      return approved.id;
    }

    const cycleCount = async () => Number(((await t.db('provisioning_cycles').count({ n: '*' }).first()) as { n: number | string }).n);
    const progressOf = async (browser: StaffSession, id: number) => (await browser.get(`/admin/cycles/${id}/progress`).set('Accept', 'application/json').expect(200)).body as Record<string, unknown>;

    it('refuses the pages without a session and "Run now" without the CSRF token', { skip }, async () => {
      for (const path of ['/admin/provisioning', '/admin/cycles/1']) {
        const res = await request(app).get(path);
        assert.equal(res.status, 303, path);
        assert.match(res.headers.location ?? '', /^\/admin\/sign-in\?next=/);
      }
      const json = await request(app).get('/admin/cycles/1/progress').set('Accept', 'application/json');
      assert.equal(json.status, 401);
      assert.equal(json.body.error.code, 'not_signed_in');

      const before = await cycleCount();
      assert.equal((await request(app).post('/admin/provisioning/run').type('form').send('')).status, 403);
      const browser = await StaffSession.signIn(app, username);
      await browser.open('/admin/provisioning');
      assert.equal((await browser.post('/admin/provisioning/run', {}, { csrf: false })).status, 403);
      assert.equal(await cycleCount(), before, 'no cycle was started');
    });

    it('"Run now" starts a cycle: its page shows the progress while it runs, refuses a second one, then shows the report', { skip }, async () => {
      const ready = await approve('ready.parent@example.org', [3, 4]);
      const partly = await approve('partly.parent@example.org', [4, 998]);
      // A teacher's manual account already has this username: Moodle's sync cannot create the parent.
      moodle.state.addUser({ username: 'taken.parent@example.org', firstname: 'Tom', lastname: 'Teacher', auth: 'manual' });
      const taken = await approve('taken.parent@example.org', [3]);

      // Role assignments wait until the test has looked at the running cycle.
      const held = moodle.holdCalls('core_role_assign_roles');
      try {
        const browser = await StaffSession.signIn(app, username);
        const page = await browser.open('/admin/provisioning');
        assert.match(page.text, /No cycle is running/);
        assert.match(page.text, /Run provisioning now/);
        assert.doesNotMatch(page.text, /http-equiv="refresh"/);

        const run = await browser.post('/admin/provisioning/run');
        assert.equal(run.status, 303);
        const match = /^\/admin\/cycles\/(\d+)$/.exec(run.headers.location ?? '');
        assert.ok(match, `redirected to the cycle's page, got ${run.headers.location}`);
        const id = Number(match[1]);
        await held.reached;

        const running = await browser.open(`/admin/cycles/${id}`);
        // The progress box is kept up to date by a script polling the progress address; nothing
        // reloads the page on a timer (WCAG 2.2.1), and without JavaScript there is a refresh link.
        assert.doesNotMatch(running.text, /http-equiv="refresh"/);
        assert.match(running.text, /<script src="\/assets\/cycle-progress\.js" defer><\/script>/);
        assert.match(running.text, new RegExp(`data-progress-url="/admin/cycles/${id}/progress" data-interval-ms="3000"`));
        assert.match(running.text, /<a href="">Refresh this page<\/a>/);
        assert.match(running.text, /Linking parents to their children in Moodle/);
        assert.match(running.text, /<progress max="\d+" value="0"/);
        assert.match(running.text, /Started .* by .*staff\d/);
        assert.match(running.text, /outcome is listed here as soon as the cycle has recorded it/);
        const progress = await progressOf(browser, id);
        assert.equal(progress.running, true);
        assert.equal(progress.state, 'running');
        assert.equal(progress.step, 'assigning');

        const overview = await browser.open('/admin/provisioning');
        assert.doesNotMatch(overview.text, /http-equiv="refresh"/);
        assert.match(overview.text, new RegExp(`data-progress-url="/admin/cycles/${id}/progress"`));
        assert.match(overview.text, new RegExp(`Cycle <a href="/admin/cycles/${id}">${id}</a> is running`));

        const cyclesBefore = await cycleCount();
        const second = await browser.post('/admin/provisioning/run');
        assert.equal(second.status, 409);
        assert.match(second.text, /already running, so a new one was not started/);
        assert.match(second.text, new RegExp(`<a href="/admin/cycles/${id}">See the running cycle`));
        assert.equal(await cycleCount(), cyclesBefore, 'no second cycle');

        held.release();
        await waitFor('the cycle to finish', async () => (await progressOf(browser, id)).finished === true);

        const report = await browser.open(`/admin/cycles/${id}`);
        assert.doesNotMatch(report.text, /cycle-progress\.js|data-progress-url/, 'a finished cycle is not polled');
        assert.doesNotMatch(report.text, /<progress/);
        assert.match(report.text, /Finished with problems/);
        assert.match(report.text, /“Run now” button \(staff\d/);
        // Every request's outcome, linked to its page, problems first.
        const takenAt = report.text.indexOf(`href="/admin/requests/${taken}"`);
        const partlyAt = report.text.indexOf(`href="/admin/requests/${partly}"`);
        const readyAt = report.text.indexOf(`href="/admin/requests/${ready}"`);
        assert.ok(takenAt > 0 && partlyAt > 0 && readyAt > 0, 'each request is listed with a link');
        assert.ok(takenAt < partlyAt && partlyAt < readyAt, 'failed, then partly linked, then ready');
        const text = textOf(report.text);
        assert.match(text, /3 requests, 2 with problems \(listed first\)/);
        assert.match(text, /Moodle already has an account named taken\.parent@example\.org that this service does not manage/);
        assert.match(text, /Ann Pupil \(7B\): Linked/);
        // 998 is no Moodle account: the pupil look-up before assigning tells, so Moodle is not asked.
        assert.match(text, /Bob Pupil \(9C\): Not linked – The pupil's Moodle account was deleted/);
        const requestPage = textOf((await browser.open(`/admin/requests/${partly}`)).text);
        assert.match(requestPage, /Problem The pupil's Moodle account was deleted \(Moodle has no active account with id 998\)/);
        assert.match(text, /Some children linked .* 1 of 2 children linked; the others are tried again in a later cycle\./);
        assert.match(text, /Account ready/);
        // The sync command's own output, escaped.
        assert.match(report.text, /<pre class="command-output">[^<]*Inserted user ready\.parent@example\.org id \d+/);
        assert.match(report.text, /already created through &#39;manual&#39; plugin/);
        assert.match(report.text, /Scheduled task complete/);

        const done = await progressOf(browser, id);
        assert.equal(done.running, false);
        assert.equal(done.state, 'problems');

        const history = await browser.open('/admin/provisioning');
        assert.match(history.text, /No cycle is running/);
        assert.deepEqual(cycleLinks(history.text).slice(0, 1), [id]);
        assert.match(textOf(history.text), /“Run now” button staff\d/);
        assert.match(history.text, /1 account ready · 3 children linked/);
        assert.match(history.text, /Off: cycles run only from this page or the command line/);
      } finally {
        held.release();
      }
    });

    it('a cycle that fails shows the reason and what to do', { skip }, async () => {
      await approve('down.parent@example.org', [3]);
      moodle.setFaults({ webServicesEnabled: false });
      try {
        const browser = await StaffSession.signIn(app, username);
        await browser.open('/admin/provisioning');
        const run = await browser.post('/admin/provisioning/run');
        const id = Number(/(\d+)$/.exec(run.headers.location ?? '')?.[1]);
        await waitFor('the cycle to finish', async () => (await progressOf(browser, id)).finished === true);
        const page = textOf((await browser.open(`/admin/cycles/${id}`)).text);
        assert.match(page, /Failed/);
        assert.match(page, /web services .*switched off/i);
        assert.match(page, /What to do: .*Enable web services/);
        assert.match(page, /did not run in this cycle/);
      } finally {
        moodle.setFaults({ webServicesEnabled: true });
      }
    });

    it('the history is paginated, newest first; a cycle left "running" by a stopped service is shown as such', { skip }, async () => {
      for (let i = 0; i < 22; i++) await services.cycle.run('schedule', null);
      const total = await cycleCount();
      const browser = await StaffSession.signIn(app, username);
      const first = await browser.open('/admin/provisioning');
      const firstIds = cycleLinks(first.text);
      assert.equal(firstIds.length, 20);
      assert.deepEqual(firstIds, [...firstIds].sort((a, b) => b - a), 'newest first');
      assert.match(first.text, new RegExp(`Page 1 of 2 \\(${total} cycles\\)`));
      assert.match(first.text, /href="\/admin\/provisioning\?page=2#history" rel="next"/);
      const second = await browser.open('/admin/provisioning?page=2');
      const secondIds = cycleLinks(second.text);
      assert.equal(secondIds.length, total - 20);
      assert.ok(Math.max(...secondIds) < Math.min(...firstIds));
      assert.match(second.text, /<td>Schedule<\/td>/);

      const [stale] = await t.db('provisioning_cycles').insert({ trigger: 'schedule', state: 'running', step: 'looking_up', started_at: Date.now() - 60_000 });
      const stalePage = await browser.open(`/admin/cycles/${Number(stale)}`);
      assert.match(stalePage.text, /stopped answering/);
      assert.doesNotMatch(stalePage.text, /http-equiv="refresh"/);
      await t.db('provisioning_cycles').where({ id: Number(stale) }).update({ state: 'interrupted', finished_at: Date.now() });

      assert.equal((await browser.get('/admin/cycles/999999')).status, 404);
      assert.equal((await browser.get('/admin/cycles/abc')).status, 404);
    });

    it('a long report is read a page at a time from the database, problems first, with the counts of the whole cycle', { skip }, async () => {
      const [cycleId] = await t.db('provisioning_cycles').insert({ trigger: 'schedule', state: 'problems', step: 'done', started_at: Date.now() - 1000, finished_at: Date.now() });
      const id = Number(cycleId);
      // 150 requests: every 10th failed, every 7th waiting, the rest provisioned; ids from 900,001 (no such request).
      const entries = Array.from({ length: 150 }, (_, i) => ({
        requestId: 900_001 + i,
        outcome: i % 10 === 0 ? ('failed' as const) : i % 7 === 0 ? ('waiting' as const) : ('provisioned' as const),
        message: i % 10 === 0 ? `Problem number ${i}` : null,
        children: [],
      }));
      await services.cycle.repository.addOutcomes(id, entries.slice(0, 60));
      await services.cycle.repository.addOutcomes(id, entries.slice(60));
      const browser = await StaffSession.signIn(app, username);
      const requestIds = (html: string) => [...html.matchAll(/href="\/admin\/requests\/(\d+)"/g)].map((m) => Number(m[1]));
      const first = await browser.open(`/admin/cycles/${id}`);
      const failed = entries.filter((e) => e.outcome === 'failed').map((e) => e.requestId);
      const waiting = entries.filter((e) => e.outcome === 'waiting').map((e) => e.requestId);
      const provisioned = entries.filter((e) => e.outcome === 'provisioned').map((e) => e.requestId);
      const expected = [...failed, ...waiting, ...provisioned];
      assert.deepEqual(requestIds(first.text), expected.slice(0, 100), 'failed first, then waiting, then ready, each by request');
      assert.match(textOf(first.text), new RegExp(`150 requests, ${failed.length} with problems \\(listed first\\)`));
      assert.match(textOf(first.text), /Problem number 0/);
      assert.match(first.text, new RegExp(`href="/admin/cycles/${id}\\?page=2#requests" rel="next"`));
      const second = await browser.open(`/admin/cycles/${id}?page=2`);
      assert.deepEqual(requestIds(second.text), expected.slice(100));
      assert.match(textOf(second.text), /Page 2 of 2 \(150 requests\)/);
    });

    async function runCycleFromDashboard(browser: StaffSession) {
      await browser.open('/admin/provisioning');
      const run = await browser.post('/admin/provisioning/run');
      const id = Number(/(\d+)$/.exec(run.headers.location ?? '')?.[1]);
      assert.ok(id > 0, `a cycle was started: ${run.status} ${run.headers.location}`);
      await waitFor('the cycle to finish', async () => (await progressOf(browser, id)).finished === true);
      return { id, html: (await browser.open(`/admin/cycles/${id}`)).text };
    }

    it('a parent whose username Moodle has as a manual account: the sync’s skip is said as such and names the request, with a link to it', { skip }, async () => {
      // A teacher who is also a parent: Moodle has the username as a manual account already.
      moodle.state.addUser({ username: 'clash.rec@example.org', firstname: 'Casey', lastname: 'Teacher', email: 'clash.rec@example.org', auth: 'manual' });
      const requestId = await approve('clash.rec@example.org', [3]);
      const browser = await StaffSession.signIn(app, username);
      const { id, html } = await runCycleFromDashboard(browser);
      const page = textOf(html);

      assert.match(page, /Finished with problems/);
      const summary = page.slice(page.indexOf('Took'), page.indexOf('In numbers'));
      assert.match(summary, /Moodle's user sync did not create (one parent's account|\d+ parents' accounts)\./);
      assert.match(summary, new RegExp(`Request ${requestId} \\(clash\\.rec@example\\.org\\): Moodle's user sync did not create this parent's account, because Moodle already has a manual account`));
      assert.doesNotMatch(page, /lower-case/, 'not told as a username in capitals');
      const refusals = html.slice(html.indexOf('class="notice warning sync-refusals"'));
      assert.ok(html.includes('class="notice warning sync-refusals"'), 'the sync section lists the accounts not created');
      assert.match(htmlText(refusals), new RegExp(`<li><a href="/admin/requests/${requestId}">Request ${requestId}</a> \\(clash\\.rec@example\\.org\\): Moodle's user sync did not create this parent's account, because Moodle already has a manual account`));
      // The raw output stays in the report for IT.
      assert.match(htmlText(html), /Error inserting user clash\.rec@example\.org - user with this username was already created through 'manual' plugin\./);
      // The request's own row in the report says what to do about it.
      const row = html.slice(html.indexOf(`<a href="/admin/requests/${requestId}">Request ${requestId}</a><br>`));
      assert.match(textOf(row.slice(0, row.indexOf('</tr>'))), /Failed, tried again later .*(manual|this service does not manage)/);
      assert.equal((await services.cycle.repository.get(id))?.state, 'problems');
    });

    it('a sync that fails because Moodle cannot reach the auth table’s database is said in words, the raw output kept in the report', { skip }, async () => {
      const recorded = fs.readFileSync(path.join(CONTRACT_DIR, 'cli', 'sync-users.external-db-down.txt'), 'utf8').replace(/^(# .*\n)+/, '');
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-sync-'));
      fs.writeFileSync(path.join(dir, 'out.txt'), recorded);
      const downConfig = parseConfig({ ...env, MOODLE_SYNC_COMMAND: `cat '${path.join(dir, 'out.txt')}'` });
      const down = createServices(downConfig, { db: t.db });
      try {
        await approve('down.sync@example.org', [4]);
        const browser = await StaffSession.signIn(createApp(down), username);
        const { html } = await runCycleFromDashboard(browser);
        const page = textOf(html);
        assert.match(page, /Moodle's user sync did not work: Moodle could not connect to the database of the auth table: check the External database settings/);
        assert.match(htmlText(html), /mysqli_query\(\): Argument #1 \(\$mysql\) must be of type mysqli, bool given\nBacktrace:/, 'the raw output is kept');
      } finally {
        await down.cycle.requestStop();
        await down.close();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
