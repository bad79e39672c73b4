// The address and browser a request was sent from, against real databases: kept only to deal
// with misuse of the form, so shown to administrators and not to office staff (on the request
// page; the CSV export has no such column), and blanked by the daily retention run once
// SUBMITTER_DETAILS_DAYS (default 30) have passed since the request was sent, whatever its
// status, with one audit event per run that counts them and names no one.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import { createApp } from '../../src/app';
import { runCli } from '../../src/cli';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { approvedRequest, staff as officeActor, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { createStaffUser, StaffSession } from '../support/staff';

const SECRET = 'submitter-details-secret-submitter-details-0123';
const DAY = 86_400_000;
const parent = { type: 'parent' as const };

for (const dialect of DIALECTS) {
  describe(`submitter address and browser on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: Express;
    let admin: StaffSession;
    let office: StaffSession;
    // Well in the past, so the CLI (which goes by the real date) finds everything older than 30 days.
    const T0 = Date.UTC(2025, 2, 3, 9, 0, 0);
    let clock = T0;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(
        parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SESSION_SECRET: SECRET, LOG_LEVEL: 'silent', CYCLE_SCHEDULE: 'off', RETENTION_DAYS: '90' }),
        { db: t.db, moodle: null, now: () => clock },
      );
      app = createApp(services);
      admin = await StaffSession.signIn(app, await createStaffUser(services, { role: 'admin' }));
      office = await StaffSession.signIn(app, await createStaffUser(services, { role: 'staff' }));
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await t.destroy();
    });

    const sentFrom = (ip: string, agent: string) => ({ submitterIp: ip, submitterAgent: agent });
    const detailsOf = async (id: number) =>
      (await t.db('requests').where({ id }).first('submitter_ip', 'submitter_agent', 'email', 'version', 'status')) as {
        submitter_ip: string | null;
        submitter_agent: string | null;
        email: string;
        version: number | string;
        status: string;
      };
    const blankingEvents = async () =>
      (await t.db('audit_events').where({ action: 'submitter_details_erased' }).orderBy('id')) as Array<{ request_id: unknown; actor_type: string; actor_id: string; details: string }>;

    it('administrators see the address and browser on the request page; office staff do not, and the CSV export has neither', { skip }, async () => {
      clock = T0;
      const { request: r } = await services.lifecycle.submitRequest(submission(sentFrom('198.51.100.23', 'QuokkaBrowser/7.1 (Quokka OS)')), parent);

      const asAdmin = await admin.open(`/admin/requests/${r.id}`);
      assert.match(asAdmin.text, /<dt>Sent from<\/dt><dd>198\.51\.100\.23 <span class="muted">\(QuokkaBrowser\/7\.1 \(Quokka OS\)\)<\/span><\/dd>/);

      const asOffice = await office.open(`/admin/requests/${r.id}`);
      assert.match(asOffice.text, new RegExp(r.email.replace(/\./g, '\\.')), 'office staff see the request itself');
      assert.doesNotMatch(asOffice.text, /Sent from/);
      assert.equal(asOffice.text.includes('198.51.100.23'), false, 'office staff do not see the address');
      assert.equal(asOffice.text.includes('QuokkaBrowser'), false, 'office staff do not see the browser');

      for (const session of [office, admin]) {
        const csv = await session.get('/admin/requests.csv?status=all');
        assert.equal(csv.status, 200);
        assert.match(csv.text, new RegExp(r.email.replace(/\./g, '\\.')), 'the export has the request');
        assert.equal(csv.text.includes('198.51.100.23') || csv.text.includes('QuokkaBrowser'), false, 'the export has no address or browser');
      }
    });

    it('the retention run blanks them SUBMITTER_DETAILS_DAYS after sending, whatever the status, and not a day before', { skip }, async () => {
      clock = T0;
      const pending = (await services.lifecycle.submitRequest(submission(sentFrom('192.0.2.11', 'PendingBrowser/1')), parent)).request;
      const approved = (await approvedRequest(services.lifecycle, sentFrom('192.0.2.12', 'ApprovedBrowser/1'))).request;
      const denied = (await services.lifecycle.submitRequest(submission(sentFrom('192.0.2.13', 'DeniedBrowser/1')), parent)).request;
      await services.lifecycle.denyRequest(denied.id, { reason: 'Not a parent at the school' }, officeActor);
      const unconfirmed = (await services.lifecycle.submitRequest(submission({ ...sentFrom('192.0.2.14', 'UnconfirmedBrowser/1'), requireVerification: true, verificationTokenHash: 'h'.repeat(64), verificationExpiresAt: T0 + 2 * DAY }), parent)).request;
      clock = T0 + 10 * DAY;
      const later = (await services.lifecycle.submitRequest(submission(sentFrom('192.0.2.15', 'LaterBrowser/1')), parent)).request;
      const oldOnes = [pending, approved, denied, unconfirmed];
      const versions = new Map<number, string>();
      for (const r of [...oldOnes, later]) versions.set(r.id, String((await detailsOf(r.id)).version));
      const eventsBefore = (await blankingEvents()).length;

      // 30 days to the millisecond after sending: still kept.
      assert.equal(services.config.privacy.submitterDetailsDays, 30, 'the default is 30 days');
      clock = T0 + 30 * DAY;
      const early = await services.privacy.eraseExpired(clock);
      assert.equal(early.submitterDetailsErased, 0);
      for (const r of [...oldOnes, later]) assert.notEqual((await detailsOf(r.id)).submitter_ip, null, `request ${r.id} keeps its address until the 30 days are over`);
      assert.equal((await blankingEvents()).length, eventsBefore, 'nothing blanked, nothing audited');

      clock = T0 + 30 * DAY + 1;
      const due = await services.privacy.eraseExpired(clock);
      assert.ok(due.submitterDetailsErased >= oldOnes.length, `blanked ${due.submitterDetailsErased}`);
      for (const r of oldOnes) {
        const row = await detailsOf(r.id);
        assert.deepEqual([row.submitter_ip, row.submitter_agent], [null, null], `request ${r.id} (${row.status}) no longer holds its address and browser`);
        assert.equal(row.email, r.email, 'nothing else of the request is erased');
        assert.equal(String(row.version), versions.get(r.id), 'the version stays, so no staff decision in progress is refused');
      }
      const statuses = [];
      for (const r of oldOnes) statuses.push((await detailsOf(r.id)).status);
      assert.deepEqual(statuses, ['pending', 'approved', 'denied', 'unverified'], 'open, approved, denied and unconfirmed requests alike');
      const kept = await detailsOf(later.id);
      assert.deepEqual([kept.submitter_ip, kept.submitter_agent], ['192.0.2.15', 'LaterBrowser/1'], 'a request sent 20 days ago keeps them');

      const events = (await blankingEvents()).slice(eventsBefore);
      assert.equal(events.length, 1, 'one audit event for the run');
      const event = events[0]!;
      assert.equal(event.request_id, null, 'the event names no request');
      assert.deepEqual([event.actor_type, event.actor_id], ['system', 'retention']);
      assert.deepEqual(JSON.parse(event.details), { requests: due.submitterDetailsErased, olderThanDays: 30 });

      const again = await services.privacy.eraseExpired(clock);
      assert.equal(again.submitterDetailsErased, 0, 'nothing is blanked twice');
      assert.equal((await blankingEvents()).length, eventsBefore + 1);
    });

    it('details held for an open request are blanked after the same time', { skip }, async () => {
      clock = T0;
      const open = (await services.lifecycle.submitRequest(submission(), parent)).request;
      const heldId = await services.requestRepository.insertHeldDetails(t.db, {
        requestId: open.id,
        tokenHash: 'held'.repeat(16),
        expiresAt: T0 + 365 * DAY,
        children: [],
        comment: null,
        source: 'form',
        actorType: 'parent',
        actorId: null,
        submitterIp: '192.0.2.44',
        submitterAgent: 'HeldBrowser/1',
        idempotencyKey: null,
        createdAt: T0,
      });
      const held = () => t.db('request_held_details').where({ id: heldId }).first('submitter_ip', 'submitter_agent');
      await services.privacy.eraseExpired(T0 + 30 * DAY);
      assert.deepEqual(await held(), { submitter_ip: '192.0.2.44', submitter_agent: 'HeldBrowser/1' });
      await services.privacy.eraseExpired(T0 + 31 * DAY);
      assert.deepEqual(await held(), { submitter_ip: null, submitter_agent: null });
    });

    it('privacy erase-expired from the command line blanks them too and says how many', { skip }, async () => {
      clock = T0 + 40 * DAY;
      const recent = (await services.lifecycle.submitRequest(submission(sentFrom('192.0.2.61', 'CliBrowser/1')), parent)).request;
      const out: string[] = [];
      const code = await runCli(['privacy', 'erase-expired'], { out: (s) => out.push(s), err: (s) => out.push(s) }, { services });
      assert.equal(code, 0, out.join('\n'));
      assert.match(out.join('\n'), /Erased the address and browser of \d+ request\(s\) sent more than 30 days ago\./);
      const row = await detailsOf(recent.id);
      assert.deepEqual([row.submitter_ip, row.submitter_agent], [null, null]);
    });
  });
}
