// The dashboard's request list and bulk actions against real databases and the Moodle test
// double: the sign-in wall and CSRF, status tabs and their counts, search, sort and keyset pages,
// and bulk approve / deny / not genuine through the lifecycle, one request at a time, with stale
// rows refused and children Moodle cannot pin down left for staff to match.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { MoodleClient } from '../../src/moodle/moodle-client';
import type { SubmitInput } from '../../src/requests/request-lifecycle';
import { REQUEST_STATUSES, STATUS_LABELS, type RequestStatus } from '../../src/requests/request-states';
import { createServices, type Services } from '../../src/services';
import { SEARCH_COUNT_LIMIT } from '../../src/review/request-search.repository';
import { assertAuthInvariant, insertApprovedRequests, staff as officeActor, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { csrfTokenOf, htmlText } from '../support/http';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, StaffSession } from '../support/staff';

const SECRET = 'a-test-session-secret-that-is-long-enough-0123456789';
const testConfig = () => parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SESSION_SECRET: SECRET });

/** The request ids in the list's table, in page order. */
function listedIds(html: string): number[] {
  const body = html.slice(html.indexOf('<tbody>'), html.indexOf('</tbody>'));
  return [...body.matchAll(/<a href="\/admin\/requests\/(\d+)">Request \d+<\/a>/g)].map((m) => Number(m[1]));
}

function versionsOn(html: string): Map<number, string> {
  return new Map([...html.matchAll(/name="version-(\d+)" value="(\d+)"/g)].map((m) => [Number(m[1]), m[2] as string]));
}

function tabCount(html: string, label: string): number {
  const match = new RegExp(`>${label} <span class="count">\\((\\d+)\\)</span>`).exec(html);
  assert.ok(match, `the page has a "${label}" tab with a count`);
  return Number(match[1]);
}

function linkTo(html: string, rel: 'next' | 'prev'): string | undefined {
  const match = new RegExp(`<a href="([^"]+)" rel="${rel}">`).exec(html);
  return match ? htmlText(match[1] as string) : undefined;
}

const TAB_LABELS: Record<RequestStatus, string> = {
  pending: 'Waiting for review',
  unverified: 'Email not confirmed',
  approved: 'Approved',
  provisioned: 'Account ready',
  denied: 'Not approved',
  duplicate: 'Duplicate',
  bogus: 'Not genuine',
  revoked: 'Access removed',
};

for (const dialect of DIALECTS) {
  describe(`dashboard requests list and bulk actions on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let services: Services;
    let app: Express;
    let browser: StaffSession;
    let username: string;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      const client = new MoodleClient({ url: moodle.url, token: moodle.tokens.ws, timeoutMs: 2000, retries: 1, retryDelayMs: 1, batchSize: 100 });
      services = createServices(testConfig(), { db: t.db, moodle: client });
      app = createApp(services);
      username = await createStaffUser(services, { displayName: 'Office Person' });
      browser = await StaffSession.signIn(app, username);
    });
    after(async () => {
      if (skip) return;
      await assertAuthInvariant(t.db);
      await services.close();
      await moodle.close();
      await t.destroy();
    });

    async function submit(overrides: Partial<SubmitInput> = {}, createdAt?: number) {
      const { request: made, children } = await services.lifecycle.submitRequest(submission(overrides), { type: 'parent' });
      // Test data only: spread requests over time so the date order is known.
      if (createdAt !== undefined) await t.db('requests').where({ id: made.id }).update({ created_at: createdAt });
      return { ...made, children };
    }

    async function statusOf(id: number): Promise<string> {
      const row = (await t.db('requests').where({ id }).first('status')) as { status: string };
      return row.status;
    }

    it('every page and action refuses without a signed-in session', { skip }, async () => {
      for (const path of ['/admin/requests', '/admin/requests?status=all&q=x', '/admin/requests.csv', '/admin/import']) {
        const res = await request(app).get(path);
        assert.equal(res.status, 303, path);
        assert.match(res.headers.location ?? '', /^\/admin\/sign-in\?next=/, path);
      }
      const target = await submit();
      const stranger = new StaffSession(app);
      await stranger.open('/admin/sign-in');
      // Without a CSRF token: refused before anything else.
      assert.equal((await request(app).post('/admin/requests/bulk').type('form').send(`action=bogus&request=${target.id}`)).status, 403);
      // With a token from the sign-in page but no session: refused as not signed in.
      const res = await stranger.post('/admin/requests/bulk', [
        ['action', 'bogus'],
        ['request', String(target.id)],
        [`version-${target.id}`, String(target.version)],
      ]);
      assert.equal(res.status, 401);
      assert.equal(await statusOf(target.id), 'pending');
    });

    it('refuses a bulk action without the CSRF token, changing nothing', { skip }, async () => {
      const target = await submit();
      await browser.open('/admin/requests');
      const res = await browser.post(
        '/admin/requests/bulk',
        [
          ['action', 'bogus'],
          ['request', String(target.id)],
          [`version-${target.id}`, String(target.version)],
        ],
        { csrf: false },
      );
      assert.equal(res.status, 403);
      assert.equal(await statusOf(target.id), 'pending');
    });

    it('shows a tab for every status with the right count, pending first and by default', { skip }, async () => {
      const approve = await submit();
      await services.lifecycle.approveRequest(approve.id, { children: approve.children.map((c, i) => ({ childId: c.id, moodleUserId: 3 + i })) }, officeActor);
      const deny = await submit();
      await services.lifecycle.denyRequest(deny.id, { reason: 'Not a parent at the school' }, officeActor);
      await submit({ requireVerification: true });
      const res = await browser.open('/admin/requests');
      const counts = (await t.db('requests').select('status').count({ n: '*' }).groupBy('status')) as Array<{ status: string; n: number | string }>;
      const expected = Object.fromEntries(REQUEST_STATUSES.map((s) => [s, 0])) as Record<RequestStatus, number>;
      for (const c of counts) expected[c.status as RequestStatus] = Number(c.n);
      for (const status of REQUEST_STATUSES) assert.equal(tabCount(res.text, TAB_LABELS[status]), expected[status], status);
      const total = Object.values(expected).reduce((a, b) => a + b, 0);
      assert.equal(tabCount(res.text, 'All'), total);
      assert.ok(expected.approved >= 1 && expected.denied >= 1 && expected.unverified >= 1);
      // The default tab is "waiting for review", and only pending requests are listed on it.
      assert.match(res.text, /aria-current="page">Waiting for review/);
      const ids = listedIds(res.text);
      assert.equal(ids.length, Math.min(50, expected.pending));
      for (const id of ids) assert.equal(await statusOf(id), 'pending');
      assert.ok(!ids.includes(approve.id) && !ids.includes(deny.id));
      // An accessible table: a caption, column and row headers, a labelled checkbox per row.
      assert.match(res.text, /<caption>\s*Waiting for review: \d+ requests?/);
      assert.match(res.text, /<th scope="col">Children<\/th>/);
      assert.match(res.text, /<th scope="row"><a href="\/admin\/requests\/\d+">/);
      assert.match(res.text, /<label for="select-\d+" class="visually-hidden">Select request \d+/);
      assert.match(res.text, /<form method="get" action="\/admin\/requests"/);

      const denied = await browser.open('/admin/requests?status=denied');
      assert.ok(listedIds(denied.text).includes(deny.id));
      assert.match(denied.text, new RegExp(`<span class="tag denied">${STATUS_LABELS.denied}</span>`));
    });

    it('searches by child name, tutor group, email, parent name and request number, and finds nothing else', { skip }, async () => {
      const wanted = await submit({
        parentFirstName: 'Quentin',
        parentLastName: 'Zebedee',
        email: 'q.zebedee@example.org',
        children: [{ firstName: 'Xanthe', lastName: 'Zebedee', tutorGroup: '11Q', pupilIdentifier: null }],
      });
      const other = await submit({
        parentLastName: 'Otherfamily',
        children: [{ firstName: 'Yolanda', lastName: 'Otherfamily', tutorGroup: '11R', pupilIdentifier: null }],
      });
      for (const q of ['Xanthe', 'xanthe', '11Q', 'q.zebedee@', 'Q.ZEBEDEE@EXAMPLE.ORG', 'Quentin Zebedee', 'Zebe', String(wanted.id), `#${wanted.id}`]) {
        const res = await browser.open(`/admin/requests?status=all&q=${encodeURIComponent(q)}`);
        const ids = listedIds(res.text);
        assert.ok(ids.includes(wanted.id), `"${q}" finds the request`);
        assert.ok(!ids.includes(other.id), `"${q}" does not find another family`);
        if (!/^#?\d+$/.test(q)) assert.deepEqual(ids, [wanted.id], `"${q}" finds only that request`);
        assert.equal(tabCount(res.text, 'All'), ids.length, 'the counts are of the search');
        assert.match(res.text, new RegExp(`value="${q.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`), 'the search box keeps what was typed');
      }
      // The start of a word only, every word must match, and wildcards typed by staff are plain characters.
      for (const q of ['anthe', '%', '_', 'Zebedee Otherfamily']) {
        const ids = listedIds((await browser.open(`/admin/requests?status=all&q=${encodeURIComponent(q)}`)).text);
        assert.ok(!ids.includes(wanted.id) && !ids.includes(other.id), `"${q}" finds neither`);
      }
      const both = listedIds((await browser.open('/admin/requests?status=all&q=11')).text);
      assert.ok(both.includes(wanted.id) && both.includes(other.id), 'the start of both tutor groups');
      const nothing = await browser.open('/admin/requests?status=all&q=Nonexistentname');
      assert.match(nothing.text, /No request in this tab matches that search/);
      // Another tab with the same search: the pending request is not in "denied".
      assert.deepEqual(listedIds((await browser.open('/admin/requests?status=denied&q=Xanthe')).text), []);
    });

    it('sorts and pages through the list: each page continues where the last stopped, with no overlap', { skip }, async () => {
      const base = Date.UTC(2026, 0, 1);
      const made: Array<{ id: number; createdAt: number; lastName: string }> = [];
      // 120 requests, created an hour apart, with last names in a shuffled order.
      for (let i = 0; i < 120; i += 1) {
        const lastName = `Sorter${String((i * 37) % 120).padStart(3, '0')}`;
        const r = await submit({ parentLastName: lastName, children: [{ firstName: 'Pagina', lastName, tutorGroup: '8P', pupilIdentifier: null }] }, base + i * 3_600_000);
        made.push({ id: r.id, createdAt: base + i * 3_600_000, lastName });
      }
      const walk = async (first: string) => {
        const pages: number[][] = [];
        let res = await browser.open(first);
        pages.push(listedIds(res.text));
        for (let next = linkTo(res.text, 'next'); next; next = linkTo(res.text, 'next')) {
          res = await browser.open(next);
          pages.push(listedIds(res.text));
          assert.ok(pages.length < 10);
        }
        return { pages, last: res };
      };
      const newest = await walk('/admin/requests?status=pending&q=Pagina');
      assert.deepEqual(
        newest.pages.map((p) => p.length),
        [50, 50, 20],
      );
      const byDate = [...made].sort((a, b) => b.createdAt - a.createdAt).map((m) => m.id);
      assert.deepEqual(newest.pages.flat(), byDate, 'newest first, page after page, nothing twice or missed');
      assert.equal(new Set(newest.pages.flat()).size, 120);
      // Back from the last page: the page before it again.
      const previous = linkTo(newest.last.text, 'prev');
      assert.ok(previous);
      assert.deepEqual(listedIds((await browser.open(previous)).text), newest.pages[1]);

      const oldest = await walk('/admin/requests?status=pending&q=Pagina&sort=oldest');
      assert.deepEqual(oldest.pages.flat(), [...byDate].reverse());

      const byName = await walk('/admin/requests?status=pending&q=Pagina&sort=name');
      assert.deepEqual(
        byName.pages.flat(),
        [...made].sort((a, b) => a.lastName.localeCompare(b.lastName)).map((m) => m.id),
      );

      // Unsearched, over every status, sorted by status: statuses in order, newest first in each.
      const statusPages = await walk('/admin/requests?status=all&sort=status');
      const ids = statusPages.pages.flat();
      assert.equal(ids.length, new Set(ids).size, 'no request twice');
      const total = (await t.db('requests').count({ n: '*' }).first()) as { n: number | string };
      assert.equal(ids.length, Number(total.n), 'every request once');
      const rows = (await t.db('requests').whereIn('id', ids).select('id', 'status', 'created_at')) as Array<{ id: number; status: RequestStatus; created_at: number }>;
      const byId = new Map(rows.map((r) => [Number(r.id), r]));
      for (let i = 1; i < ids.length; i += 1) {
        const a = byId.get(ids[i - 1] as number)!;
        const b = byId.get(ids[i] as number)!;
        const rank = REQUEST_STATUSES.indexOf(a.status) - REQUEST_STATUSES.indexOf(b.status);
        assert.ok(rank < 0 || (rank === 0 && (Number(a.created_at) > Number(b.created_at) || (Number(a.created_at) === Number(b.created_at) && Number(a.id) > Number(b.id)))), `row ${i} in order`);
      }
      // A cursor that was tampered with shows the first page rather than failing.
      const tampered = await browser.open('/admin/requests?status=pending&q=Pagina&after=bm90LWpzb24');
      assert.deepEqual(listedIds(tampered.text), newest.pages[0]);
    });

    it('bulk approve approves only requests whose every child is one exact Moodle pupil; the rest stay pending with the reason', { skip }, async () => {
      const tag = 'Bulkapprove';
      const one = await submit({ parentLastName: tag, children: [{ firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: 'ADM1001' }] });
      const two = await submit({
        parentLastName: tag,
        children: [
          { firstName: 'Bob', lastName: 'Pupil', tutorGroup: '9C', pupilIdentifier: 'ADM1002' },
          { firstName: 'Ann', lastName: 'Pupil', tutorGroup: '10A', pupilIdentifier: null },
        ],
      });
      const ambiguous = await submit({ parentLastName: tag, children: [{ firstName: 'Ann', lastName: 'Pupil', tutorGroup: '8Z', pupilIdentifier: null }] });
      const unknown = await submit({ parentLastName: tag, children: [{ firstName: 'Nobody', lastName: 'Known', tutorGroup: '7B', pupilIdentifier: null }] });
      const stale = await submit({ parentLastName: tag, children: [{ firstName: 'Bob', lastName: 'Pupil', tutorGroup: '9C', pupilIdentifier: 'ADM1002' }] });
      const page = await browser.open(`/admin/requests?status=pending&q=${tag}`);
      const versions = versionsOn(page.text);
      const targets = [one, two, ambiguous, unknown, stale];
      for (const r of targets) assert.equal(versions.get(r.id), String(r.version));
      // Someone else changes one request after the list was shown.
      await services.lifecycle.addStaffComment(stale.id, 'Phoned the parent', officeActor);
      const auditBefore = await t.db('audit_events').where({ action: 'approved' }).count({ n: '*' }).first();

      const res = await browser.post('/admin/requests/bulk', [
        ['action', 'approve'],
        ['status', 'pending'],
        ['q', tag],
        ...targets.flatMap((r): Array<[string, string]> => [
          ['request', String(r.id)],
          [`version-${r.id}`, versions.get(r.id) as string],
        ]),
      ]);
      assert.equal(res.status, 200);
      const text = htmlText(res.text);
      assert.match(text, /<strong>2<\/strong> requests approved/);
      assert.match(text, /<strong>2<\/strong> need matching on their own page/);
      assert.match(text, /<strong>1<\/strong> not changed/);
      const rowOf = (id: number) => {
        const start = text.indexOf(`<a href="/admin/requests/${id}">`);
        return text.slice(start, text.indexOf('</tr>', start));
      };
      assert.match(rowOf(one.id), /Approved, with its child matched/);
      assert.match(rowOf(two.id), /Approved, with all 2 children matched/);
      assert.match(rowOf(ambiguous.id), /Needs matching on its own page: Ann Pupil \(8Z\) could be any of 2 pupils in Moodle/);
      assert.match(rowOf(unknown.id), /Needs matching on its own page: Nobody Known \(7B\) was not found in Moodle/);
      assert.match(rowOf(stale.id), /Not changed: someone else changed this request after the list was shown/);
      assert.match(text, /href="\/admin\/requests\?status=pending&q=Bulkapprove"[^>]*>Back to the list/);

      for (const r of [one, two]) assert.equal(await statusOf(r.id), 'approved');
      for (const r of [ambiguous, unknown, stale]) assert.equal(await statusOf(r.id), 'pending');
      const children = (await t.db('request_children').whereIn('request_id', [one.id, two.id]).orderBy('id')) as Array<{ request_id: number; moodle_user_id: number; link_state: string }>;
      assert.deepEqual(
        children.map((c) => [Number(c.request_id), Number(c.moodle_user_id), c.link_state]),
        [
          [one.id, 3, 'matched'],
          [two.id, 4, 'matched'],
          [two.id, 9, 'matched'],
        ],
      );
      const auth = (await t.db(TEST_AUTH_TABLE).whereIn('request_id', targets.map((r) => r.id)).select('request_id')) as Array<{ request_id: number }>;
      assert.deepEqual(auth.map((a) => Number(a.request_id)).sort((a, b) => a - b), [one.id, two.id].sort((a, b) => a - b), 'auth rows for the approved only');
      const audits = (await t.db('audit_events').where({ action: 'approved' }).whereIn('request_id', targets.map((r) => r.id))) as Array<{ request_id: number; actor_type: string; actor_id: string }>;
      assert.deepEqual(audits.map((a) => Number(a.request_id)).sort((a, b) => a - b), [one.id, two.id].sort((a, b) => a - b));
      for (const a of audits) assert.deepEqual([a.actor_type, a.actor_id], ['staff', username]);
      const auditAfter = await t.db('audit_events').where({ action: 'approved' }).count({ n: '*' }).first();
      assert.equal(Number(auditAfter?.n) - Number(auditBefore?.n), 2);
      // Submitting the same page again changes nothing more: every row has moved on since.
      const again = await browser.post('/admin/requests/bulk', [
        ['action', 'approve'],
        ['request', String(one.id)],
        [`version-${one.id}`, versions.get(one.id) as string],
      ]);
      assert.match(htmlText(again.text), /Not changed: someone else changed this request/);
      assert.equal((await t.db(TEST_AUTH_TABLE).where({ request_id: one.id })).length, 1);
    });

    it('bulk approve leaves every request pending when Moodle is not set up', { skip }, async () => {
      const noMoodle = createServices(testConfig(), { db: t.db, moodle: null });
      try {
        const other = await StaffSession.signIn(createApp(noMoodle), username);
        const r = await submit({ parentLastName: 'Nomoodle', children: [{ firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: 'ADM1001' }] });
        const page = await other.open('/admin/requests?status=pending&q=Nomoodle');
        assert.match(page.text, /Moodle is not set up here/);
        const res = await other.post('/admin/requests/bulk', [
          ['action', 'approve'],
          ['request', String(r.id)],
          [`version-${r.id}`, String(r.version)],
        ]);
        assert.equal(res.status, 200);
        assert.match(htmlText(res.text), /Needs matching on its own page: Moodle is not set up for this service/);
        assert.equal(await statusOf(r.id), 'pending');
        assert.equal((await t.db(TEST_AUTH_TABLE).where({ request_id: r.id })).length, 0);
      } finally {
        await noMoodle.close();
      }
    });

    it('bulk deny needs one reason for all, then denies each (an approved one loses its auth row) and tells each parent', { skip }, async () => {
      const tag = 'Bulkdeny';
      const pending = await submit({ parentLastName: tag });
      const approved = await submit({ parentLastName: tag });
      const after = await services.lifecycle.approveRequest(approved.id, { children: approved.children.map((c, i) => ({ childId: c.id, moodleUserId: 3 + i })) }, officeActor);
      assert.equal((await t.db(TEST_AUTH_TABLE).where({ request_id: approved.id })).length, 1);
      await browser.open(`/admin/requests?status=all&q=${tag}`);
      const fields = (reason: string): Array<[string, string]> => [
        ['action', 'deny'],
        ['status', 'all'],
        ['q', tag],
        ['reason', reason],
        ['request', String(pending.id)],
        [`version-${pending.id}`, String(pending.version)],
        ['request', String(approved.id)],
        [`version-${approved.id}`, String(after.version)],
      ];
      const missing = await browser.post('/admin/requests/bulk', fields('   '));
      assert.equal(missing.status, 400);
      assert.match(missing.text, /Give a reason for denying/);
      assert.match(missing.text, new RegExp(`id="select-${pending.id}" name="request" value="${pending.id}" checked`), 'the selection is kept');
      assert.equal(await statusOf(pending.id), 'pending');
      assert.equal(await statusOf(approved.id), 'approved');

      const reason = 'We could not find your children in our records.';
      const asked = await browser.post('/admin/requests/bulk', fields(reason));
      assert.equal(asked.status, 200);
      assert.match(asked.text, /<h1>Deny these 2 requests\?<\/h1>/, 'a confirmation page, not the result');
      assert.match(asked.text, /Nothing has been changed yet/);
      assert.match(asked.text, new RegExp(`<blockquote class="bulk-reason">${reason}</blockquote>`), 'the reason is shown');
      for (const r of [pending, approved]) assert.match(asked.text, new RegExp(`>Request ${r.id}</a>`), `request ${r.id} is listed`);
      assert.equal(await statusOf(pending.id), 'pending', 'nothing is denied before confirming');
      assert.equal(await statusOf(approved.id), 'approved');
      assert.equal((await t.db('mail_outbox').whereIn('request_id', [pending.id, approved.id]).where({ kind: 'denied' })).length, 0, 'nobody is mailed before confirming');
      assert.equal((await t.db('audit_events').whereIn('request_id', [pending.id, approved.id]).where({ action: 'denied' })).length, 0);

      const res = await browser.post('/admin/requests/bulk', [...fields(reason), ['confirm', 'yes']]);
      assert.equal(res.status, 200);
      assert.match(htmlText(res.text), /<strong>2<\/strong> requests denied/);
      for (const r of [pending, approved]) {
        const row = (await t.db('requests').where({ id: r.id }).first()) as { status: string; decision_reason: string; decided_by: string };
        assert.deepEqual([row.status, row.decision_reason, row.decided_by], ['denied', 'We could not find your children in our records.', `staff:${username}`]);
        assert.equal((await t.db('audit_events').where({ request_id: r.id, action: 'denied' })).length, 1);
        assert.equal((await t.db('mail_outbox').where({ request_id: r.id, kind: 'denied' })).length, 1, 'the parent is told');
      }
      assert.equal((await t.db(TEST_AUTH_TABLE).where({ request_id: approved.id })).length, 0, 'denied: no auth row');

      const nothing = await browser.post('/admin/requests/bulk', [['action', 'deny'], ['reason', 'x']]);
      assert.equal(nothing.status, 400);
      assert.match(nothing.text, /Select at least one request/);
    });

    it('bulk "not genuine" marks exactly the selected rows, refusing a row that changed since the list was shown', { skip }, async () => {
      const tag = 'Bulkbogus';
      const a = await submit({ parentLastName: tag });
      const b = await submit({ parentLastName: tag });
      const untouched = await submit({ parentLastName: tag });
      await browser.open(`/admin/requests?status=pending&q=${tag}`);
      const fields: Array<[string, string]> = [
        ['action', 'bogus'],
        ['request', String(a.id)],
        [`version-${a.id}`, String(a.version)],
        ['request', String(b.id)],
        [`version-${b.id}`, String(b.version + 5)],
      ];
      const asked = await browser.post('/admin/requests/bulk', fields);
      assert.equal(asked.status, 200);
      assert.match(asked.text, /<h1>Mark these 2 requests as not genuine\?<\/h1>/, 'a confirmation page first');
      assert.match(asked.text, /Changed since the list was shown: it will be left alone/, 'the stale row is pointed out');
      assert.equal(await statusOf(a.id), 'pending', 'nothing is marked before confirming');
      // Cancel goes back to the list with the same rows ticked, changing nothing.
      const cancelled = await browser.post('/admin/requests/bulk', [...fields, ['select', 'cancel']]);
      assert.equal(cancelled.status, 200);
      assert.match(cancelled.text, /Cancelled: nothing was changed/);
      assert.match(cancelled.text, new RegExp(`id="select-${a.id}" name="request" value="${a.id}" checked`));
      assert.equal(await statusOf(a.id), 'pending', 'cancel changes nothing');

      const res = await browser.post('/admin/requests/bulk', [...fields, ['confirm', 'yes']]);
      assert.equal(res.status, 200);
      assert.match(htmlText(res.text), /<strong>1<\/strong> request marked as not genuine/);
      assert.equal(await statusOf(a.id), 'bogus');
      assert.equal(await statusOf(b.id), 'pending', 'a stale version is refused, not overwritten');
      assert.equal(await statusOf(untouched.id), 'pending', 'an unselected row is left alone');
      assert.equal((await t.db('audit_events').where({ request_id: a.id, action: 'marked_bogus' })).length, 1);
      assert.equal((await t.db('audit_events').where({ request_id: b.id, action: 'marked_bogus' })).length, 0);
    });

    it('the search form and pages work with the CSRF token of the page', { skip }, async () => {
      const res = await browser.open('/admin/requests?status=pending');
      assert.equal(csrfTokenOf(res.text), browser.csrfToken);
      // Enter on a checkbox presses the form's first enabled submit button: it must be a harmless one.
      const form = res.text.slice(res.text.indexOf('<form method="post" action="/admin/requests/bulk"'));
      const firstButton = /<button type="submit"([^>]*)>/.exec(form)?.[1] ?? '';
      assert.match(firstButton, /name="select" value="keep"/, 'the first button only keeps the selection');
      assert.doesNotMatch(firstButton, /disabled/, 'Chromium skips a disabled default button and presses the next one');
    });

    it('the first button (what Enter presses) and "select all" change nothing; a request without an action button changes nothing', { skip }, async () => {
      const tag = 'Bulkenter';
      const a = await submit({ parentLastName: tag });
      const b = await submit({ parentLastName: tag });
      const page = await browser.open(`/admin/requests?status=pending&q=${tag}`);
      const versions = versionsOn(page.text);
      const rows = (...ids: number[]): Array<[string, string]> => ids.flatMap((id): Array<[string, string]> => [
        ['request', String(id)],
        [`version-${id}`, versions.get(id) as string],
      ]);
      const base: Array<[string, string]> = [['status', 'pending'], ['q', tag], ['reason', 'Kept reason']];

      const kept = await browser.post('/admin/requests/bulk', [...base, ...rows(a.id), ['select', 'keep']]);
      assert.equal(kept.status, 200);
      assert.match(kept.text, /Nothing was changed/);
      assert.match(kept.text, new RegExp(`id="select-${a.id}" name="request" value="${a.id}" checked`), 'the ticked row stays ticked');
      assert.doesNotMatch(kept.text, new RegExp(`id="select-${b.id}" name="request" value="${b.id}" checked`));
      assert.match(kept.text, />Kept reason<\/textarea>/, 'the reason typed is kept');

      const all = await browser.post('/admin/requests/bulk', [...base, ['select', 'all']]);
      assert.equal(all.status, 200);
      for (const id of listedIds(all.text)) assert.match(all.text, new RegExp(`id="select-${id}" name="request" value="${id}" checked`), `request ${id} is ticked`);
      assert.deepEqual(listedIds(all.text).sort(), [a.id, b.id].sort());

      const none = await browser.post('/admin/requests/bulk', [...base, ...rows(a.id, b.id), ['select', 'none']]);
      assert.doesNotMatch(none.text, /name="request" value="\d+" checked/, 'nothing is ticked');

      const markup = await browser.post('/admin/requests/bulk', [['action', 'deny'], ['reason', '<b>Not</b> "known" & gone'], ...rows(a.id)]);
      assert.equal(markup.status, 200);
      assert.ok(!markup.text.includes('<b>Not</b>'), 'the reason is escaped on the confirmation page');
      assert.match(markup.text, /&lt;b&gt;Not&lt;\/b&gt; &#34;known&#34; &amp; gone/);

      const noAction = await browser.post('/admin/requests/bulk', [...base, ...rows(a.id, b.id)]);
      assert.equal(noAction.status, 400);
      assert.match(noAction.text, /Choose what to do with the selected requests/);
      for (const id of [a.id, b.id]) assert.equal(await statusOf(id), 'pending');
      assert.equal((await t.db('audit_events').whereIn('request_id', [a.id, b.id]).whereNot({ action: 'submitted' })).length, 0, 'no decision recorded');
    });
    it('a search matching more than 1,000 requests says so instead of counting, and still lists and pages exactly', { skip }, async () => {
      // Written in bulk: 1,000 approved requests whose addresses start "broad.", and one "broadly.".
      const made = [
        ...(await insertApprovedRequests(t.db, SEARCH_COUNT_LIMIT, { emailPrefix: 'broad', childrenEach: 1 })),
        ...(await insertApprovedRequests(t.db, 1, { emailPrefix: 'broadly', childrenEach: 1 })),
      ].map((r) => r.id);
      // Test data only: a tenth of them denied, and the order by date not the order of the ids.
      const deniedIds = made.filter((_, i) => i % 10 === 0);
      await t.db('requests').whereIn('id', deniedIds).update({ status: 'denied' });
      await t.db(TEST_AUTH_TABLE).whereIn('request_id', deniedIds).delete();
      for (const [i, id] of made.entries()) if (i % 40 === 0) await t.db('requests').where({ id }).update({ created_at: Date.UTC(2025, 5, 1) + i });
      const newestFirst = ((await t.db('requests').whereIn('id', made).orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }]).select('id')) as Array<{ id: number }>).map((r) => Number(r.id));

      const broad = await browser.open('/admin/requests?status=all&q=broad');
      assert.equal(broad.status, 200);
      assert.match(broad.text, />All <span class="count">\(more than 1,000\)<\/span>/);
      for (const label of Object.values(TAB_LABELS)) assert.match(broad.text, new RegExp(`>${label}</a>`), `the "${label}" tab has no count`);
      assert.match(broad.text, /More than 1,000 requests match “broad”, too many to count in each tab\. Add a word to narrow the search, such as a surname or a tutor group\./);
      assert.match(broad.text, /aria-describedby="q-hint search-too-broad"/, 'the search box is described by the sentence');
      assert.match(broad.text, /All: more than 1,000 requests matching “broad”, newest first\./);
      assert.deepEqual(listedIds(broad.text), newestFirst.slice(0, 50));
      const second = await browser.open(linkTo(broad.text, 'next')!);
      assert.deepEqual(listedIds(second.text), newestFirst.slice(50, 100));
      assert.deepEqual(listedIds((await browser.open(linkTo(second.text, 'prev')!)).text), newestFirst.slice(0, 50));

      // A tab of the broad search: its requests, no count in the caption.
      const denied = await browser.open('/admin/requests?status=denied&q=broad');
      assert.match(denied.text, /Not approved: requests matching “broad”, newest first\./);
      assert.deepEqual(listedIds(denied.text), newestFirst.filter((id) => deniedIds.includes(id)).slice(0, 50));

      // Exactly 1,000 matches are still counted, in every tab.
      const atLimit = await browser.open('/admin/requests?status=all&q=broad.');
      assert.equal(tabCount(atLimit.text, 'All'), SEARCH_COUNT_LIMIT);
      assert.equal(tabCount(atLimit.text, 'Not approved'), 100);
      assert.equal(tabCount(atLimit.text, 'Approved'), 900);
      assert.doesNotMatch(atLimit.text, /too many to count/);
      assert.match(atLimit.text, /All: 1000 requests matching “broad\.”/);

      // The spreadsheet of the broad search has every one of its requests.
      const csv = await browser.open('/admin/requests.csv?status=all&q=broad');
      assert.equal(csv.status, 200);
      assert.equal(csv.text.trim().split('\n').length - 1, SEARCH_COUNT_LIMIT + 1);
    });
  });
}
