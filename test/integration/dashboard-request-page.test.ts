// The dashboard's request page against real databases and the Moodle test double over HTTP: what
// the parent sent, the pupil candidates (exact preselected, ambiguous to choose, a search that
// keeps the other choices), and every staff action through the lifecycle, each changing exactly
// what it should and refusing without a session, without CSRF or on a stale version.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { NotFoundError } from '../../src/errors';
import { MoodleClient } from '../../src/moodle/moodle-client';
import { hashToken } from '../../src/requests/request-lifecycle';
import { createServices, type Services } from '../../src/services';
import { approvedRequest, assertAuthInvariant, cycleActor, snapshot, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { htmlText } from '../support/http';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, StaffSession } from '../support/staff';

const SECRET = 'request-page-test-secret-request-page-test-secret';
const parent = { type: 'parent' as const };

function testConfig(extra: Record<string, string> = {}) {
  return parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SESSION_SECRET: SECRET, LOG_LEVEL: 'silent', ...extra });
}

function clientFor(url: string, token: string): MoodleClient {
  return new MoodleClient({ url, token, timeoutMs: 2000, retries: 0, retryDelayMs: 1, batchSize: 50 });
}

/** The version the page's forms carry. */
function versionOn(html: string): string {
  const m = /name="version" value="(\d+)"/.exec(html);
  assert.ok(m, 'the page has a version field');
  return m[1] as string;
}

/** Whether the radio button with this id is checked. */
function checked(html: string, id: string): boolean {
  const m = new RegExp(`<input type="radio" id="${id}"[^>]*>`).exec(html);
  assert.ok(m, `the page has the choice ${id}`);
  return / checked>$/.test(m[0]);
}

/** The one-line message shown after an action (the flash). */
function flashOn(html: string): string {
  const m = /<div class="notice (?:warning|success)" role="status">([^<]*)<\/div>/.exec(html);
  return m ? htmlText(m[1] as string) : '';
}

for (const dialect of DIALECTS) {
  describe(`request page on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let services: Services;
    let app: Express;
    let staff: StaffSession;
    let username: string;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      const site = seedRecordedSite();
      // A pupil only a search finds (the parent gave another first name), and a member of staff
      // whose Moodle account has a parent's email address.
      site.addUser({ id: 30, username: 'cath.nobody', firstname: 'Catherine', lastname: 'Nobody', email: 'cath@example.com', department: '8A', idnumber: 'ADM2001' });
      site.addUser({ id: 40, username: 'sam.teacher', firstname: 'Sam', lastname: 'Teacher', email: 'sam.parent@example.org', maildisplay: 1, auth: 'manual' });
      moodle = await startMoodleDouble({ state: site });
      services = createServices(testConfig({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws }), { db: t.db, moodle: clientFor(moodle.url, moodle.tokens.ws) });
      app = createApp(services);
      username = await createStaffUser(services, { role: 'admin', displayName: 'Robin Office' });
      staff = await StaffSession.signIn(app, username);
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await moodle.close();
      await t.destroy();
    });
    afterEach(async () => {
      if (!skip) await assertAuthInvariant(t.db);
    });

    /** A pending request naming Bob (exact by pupil id), Ann (two Moodle Anns) and Cat (not in Moodle). */
    async function pendingRequest(overrides: Parameters<typeof submission>[0] = {}) {
      const { request: r, children } = await services.lifecycle.submitRequest(
        submission({
          parentFirstName: 'Morgan',
          parentLastName: 'Example',
          comment: 'Bob is in Year 9',
          children: [
            { firstName: 'Bob', lastName: 'Pupil', tutorGroup: '9C', pupilIdentifier: 'ADM1002' },
            { firstName: 'Ann', lastName: 'Pupil', tutorGroup: '', pupilIdentifier: null },
            { firstName: 'Cat', lastName: 'Nobody', tutorGroup: '8A', pupilIdentifier: null },
          ],
          ...overrides,
        }),
        parent,
      );
      const [bob, ann, cat] = children.map((c) => c.id) as [number, number, number];
      return { id: r.id, email: r.email, bob, ann, cat };
    }

    async function statusOf(id: number) {
      return (await services.lifecycle.get(id)).request;
    }

    async function auditActions(id: number) {
      return (await services.requestRepository.auditFor(t.db, id)).map((e) => e.action);
    }

    /** The request's mail, less the "we have received your request" every pending request gets. */
    async function mails(id: number) {
      return (await t.db('mail_outbox').where({ request_id: id }).whereNot({ kind: 'request_received' }).orderBy('id')) as Array<{ kind: string; recipient: string; payload: string }>;
    }

    /** POSTs an action, checks it redirects to the page (303), and returns that page and its message. */
    async function act(path: string, fields: Record<string, string>, expectedLocation?: RegExp) {
      const res = await staff.post(path, fields);
      assert.equal(res.status, 303, `POST ${path}: ${res.status} ${res.text.slice(0, 200)}`);
      const location = res.headers.location ?? '';
      if (expectedLocation) assert.match(location, expectedLocation);
      const page = await staff.open(location);
      return { location, page: page.text, message: flashOn(page.text) };
    }

    /** POSTs an approval that is refused on the form itself: a 400, the page with its error summary and the errors beside the fields. */
    async function refusedOnForm(path: string, fields: Record<string, string>) {
      const res = await staff.post(path, fields);
      assert.equal(res.status, 400, `POST ${path}: ${res.status} ${res.text.slice(0, 200)}`);
      assert.match(res.text, /<title>Error: /);
      const summary = /<div class="error-summary" id="error-summary"[\s\S]*?<\/div>/.exec(res.text)?.[0] ?? '';
      return { page: res.text, summary: htmlText(summary), besideField: (id: string) => htmlText(new RegExp(`<span class="field-error" id="${id}-error">([\\s\\S]*?)</span>\\s*<`).exec(res.text)?.[1] ?? '') };
    }

    it('refuses without a session and without the CSRF token, changing nothing', { skip }, async () => {
      const { id, bob, ann, cat } = await pendingRequest();
      const page = await request(app).get(`/admin/requests/${id}`);
      assert.equal(page.status, 303);
      assert.match(page.headers.location ?? '', /^\/admin\/sign-in/);
      const fields = { version: '1', [`match_${bob}`]: '4', [`match_${ann}`]: '3', [`match_${cat}`]: 'none', reason: 'x', comment: 'x' };
      const before = await snapshot(t.db);
      for (const action of ['approve', 'deny', 'duplicate', 'bogus', 'revoke', 'comment', 'resend-verification']) {
        const anonymous = await request(app).post(`/admin/requests/${id}/${action}`).type('form').send(new URLSearchParams(fields).toString());
        assert.ok([401, 403].includes(anonymous.status), `${action} without a session: ${anonymous.status}`);
        await staff.open(`/admin/requests/${id}`);
        const noToken = await staff.post(`/admin/requests/${id}/${action}`, fields, { csrf: false });
        assert.equal(noToken.status, 403, `${action} without the CSRF token`);
      }
      assert.deepEqual(await snapshot(t.db), before);
    });

    it('shows what the parent sent, with the exact match preselected, the ambiguous ones to choose and a search for the one not found', { skip }, async () => {
      const { id, email, bob, ann, cat } = await pendingRequest();
      const res = await staff.open(`/admin/requests/${id}`);
      const text = htmlText(res.text);
      assert.match(text, /Ms Morgan Example/);
      assert.ok(text.includes(email));
      assert.match(text, /Bob is in Year 9/);
      assert.match(text, /No parent account yet/);
      assert.match(text, /Sent through<\/dt><dd>The request form/);
      assert.match(text, /Waiting for review/);
      // Bob: one account by pupil identifier, chosen for staff to check.
      assert.equal(checked(res.text, `match_${bob}_4`), true);
      assert.match(text, /One Moodle pupil account matches by pupil identifier/);
      // Ann: two Moodle accounts of that name, neither chosen; each with what tells them apart.
      assert.equal(checked(res.text, `match_${ann}_3`), false);
      assert.equal(checked(res.text, `match_${ann}_9`), false);
      assert.match(text, /2 Moodle pupil accounts could be this child/);
      assert.match(text, /Ann Pupil: tutor group 10A, pupil identifier ADM1003, username pupil\.a2/);
      assert.ok(res.text.includes(`href="${moodle.url}/user/profile.php?id=9"`), 'each candidate links to its Moodle profile');
      // Cat: nothing found; a search box, "another account" and "no account" are offered.
      assert.match(text, /No Moodle pupil account was found for this child/);
      assert.match(res.text, new RegExp(`<input type="search" id="search_${cat}" name="search_${cat}"`));
      assert.equal(checked(res.text, `match_${cat}_typed`), false);
      assert.equal(checked(res.text, `match_${cat}_none`), false);
      assert.match(res.text, new RegExp(`<label for="search_${cat}">Search Moodle by name or username</label>`));
      assert.match(text, /Request received through the request form naming 3 children/);
    });

    it('a search finds a pupil to choose and keeps the other children’s choices; the CSRF token never stays in the address', { skip }, async () => {
      const { id, bob, ann, cat } = await pendingRequest();
      await staff.open(`/admin/requests/${id}`);
      // What the search button sends: the whole form by GET, CSRF token and version included.
      const sent = new URLSearchParams({ _csrf: staff.csrfToken, version: '1', [`match_${bob}`]: '4', [`match_${ann}`]: '9', [`search_${cat}`]: 'Catherine Nobody' });
      const redirect = await staff.get(`/admin/requests/${id}?${sent}`);
      assert.equal(redirect.status, 303);
      assert.doesNotMatch(redirect.headers.location ?? '', /_csrf|version/);
      const res = await staff.open(redirect.headers.location ?? '');
      const text = htmlText(res.text);
      assert.equal(checked(res.text, `match_${ann}_9`), true, 'Ann’s choice is kept');
      assert.equal(checked(res.text, `match_${bob}_4`), true);
      assert.equal(checked(res.text, `match_${cat}_30`), false, 'the search result is offered, not chosen');
      assert.match(text, /Catherine Nobody: tutor group 8A, pupil identifier ADM2001, username cath\.nobody <span class="muted">\(Moodle user 30, search result\)/);
      assert.match(text, /1 found for “Catherine Nobody”/);
      // By username too; and a search that finds nothing says so.
      const byUsername = await staff.open(`/admin/requests/${id}?search_${cat}=cath.nobody`);
      assert.match(htmlText(byUsername.text), /cath\.nobody <span class="muted">\(Moodle user 30, search result\)/);
      const none = await staff.open(`/admin/requests/${id}?search_${cat}=Nobody+Atall`);
      assert.match(htmlText(none.text), /No Moodle account matches “Nobody Atall”/);
      // A pupil chosen from an earlier search stays chosen after the search box is cleared.
      const kept = await staff.open(`/admin/requests/${id}?match_${cat}=30`);
      assert.equal(checked(kept.text, `match_${cat}_typed`), true);
      assert.match(kept.text, new RegExp(`id="typed_${cat}" name="typed_${cat}" value="30"`));
    });

    it('approves with the chosen pupils: the auth row appears only then, with the audit event; a refusal keeps the choices', { skip }, async () => {
      const { id, email, bob, ann, cat } = await pendingRequest();
      const page = await staff.open(`/admin/requests/${id}`);
      const version = versionOn(page.text);
      // Cat left without a choice: refused, nothing written, the page comes back with the other choices.
      const refused = await refusedOnForm(`/admin/requests/${id}/approve`, { version, [`match_${bob}`]: '4', [`match_${ann}`]: '9' });
      assert.match(refused.summary, /Choose a Moodle pupil account for Cat Nobody, or “No Moodle account for this child”/);
      assert.match(refused.besideField(`child-${cat}`), /Choose a Moodle pupil account for Cat Nobody/);
      assert.ok(refused.page.includes(`href="#child-${cat}"`), 'the summary links to the child');
      assert.equal(checked(refused.page, `match_${ann}_9`), true);
      assert.equal((await statusOf(id)).status, 'pending');
      assert.equal(await t.db(TEST_AUTH_TABLE).where({ request_id: id }).first(), undefined);
      // "Another account" without an id: refused in plain words, beside the box and in the summary.
      const noId = await refusedOnForm(`/admin/requests/${id}/approve`, { version, [`match_${bob}`]: '4', [`match_${ann}`]: '9', [`match_${cat}`]: 'typed', [`typed_${cat}`]: '' });
      assert.match(noId.summary, /Type the Moodle user id of Cat Nobody’s account/);
      assert.match(noId.besideField(`typed_${cat}`), /Type the Moodle user id of Cat Nobody’s account/);
      assert.ok(noId.page.includes(`href="#typed_${cat}"`), 'the summary links to the box');

      // A typed id is shown by name to confirm; nothing is approved until staff confirm it.
      const typed = { version, [`match_${bob}`]: '4', [`match_${ann}`]: '9', [`match_${cat}`]: 'typed', [`typed_${cat}`]: '30' };
      const toConfirm = await staff.post(`/admin/requests/${id}/approve`, typed);
      assert.equal(toConfirm.status, 200);
      assert.match(htmlText(toConfirm.text.replace(/<[^>]+>/g, '')), /Cat Nobody: Catherine Nobody, 8A \(cath\.nobody\), Moodle user 30/);
      assert.ok(toConfirm.text.includes(`name="confirmed_${cat}" value="30"`));
      assert.equal((await statusOf(id)).status, 'pending');
      // A confirmation of another id than the one typed confirms nothing.
      assert.equal((await staff.post(`/admin/requests/${id}/approve`, { ...typed, [`confirmed_${cat}`]: '31' })).status, 200);
      assert.equal((await statusOf(id)).status, 'pending');

      const done = await act(`/admin/requests/${id}/approve`, { ...typed, [`confirmed_${cat}`]: '30' }, new RegExp(`^/admin/requests/${id}$`));
      assert.match(done.message, new RegExp(`Request ${id} is approved`));
      const after = await statusOf(id);
      assert.equal(after.status, 'approved');
      assert.equal(after.decidedBy, `staff:${username}`);
      const auth = await t.db(TEST_AUTH_TABLE).where({ request_id: id }).first();
      assert.equal(auth?.username, email);
      const children = await services.requestRepository.children(t.db, id);
      assert.deepEqual(children.map((c) => [c.moodleUserId, c.linkState]), [[4, 'matched'], [9, 'matched'], [30, 'matched']]);
      const approved = (await services.requestRepository.auditFor(t.db, id)).find((e) => e.action === 'approved');
      assert.equal(approved?.actorId, username);
      assert.deepEqual(await auditActions(id), ['submitted', 'approved']);
      // The page now shows the links, with the pupils' profiles and access histories, and no approve form.
      assert.doesNotMatch(done.page, /action="[^"]*\/approve"/);
      assert.ok(done.page.includes(`href="${moodle.url}/user/profile.php?id=30"`));
      assert.ok(done.page.includes('href="/admin/pupils/30"'));
      assert.match(htmlText(done.page), /Approved\.[\s\S]*Bob Pupil: Moodle pupil account 4/);
      assert.match(htmlText(done.page), /Robin Office \(/);
    });

    it('refuses an action on a stale version with a plain message, and changes nothing', { skip }, async () => {
      const { id, bob, ann, cat } = await pendingRequest();
      const page = await staff.open(`/admin/requests/${id}`);
      const version = versionOn(page.text);
      // Someone else acts meanwhile.
      await services.lifecycle.addStaffComment(id, 'Checked with the office', { type: 'staff', id: 'someone.else' });
      const before = await snapshot(t.db);
      const fields = { version, [`match_${bob}`]: '4', [`match_${ann}`]: '3', [`match_${cat}`]: 'none', reason: 'No such parent' };
      for (const action of ['approve', 'deny', 'bogus', 'duplicate']) {
        const { message } = await act(`/admin/requests/${id}/${action}`, fields);
        assert.match(message, /changed by someone else .* since it was loaded\. Reload it and try again\./, action);
      }
      assert.deepEqual(await snapshot(t.db), before);
      assert.equal((await mails(id)).length, 0);
    });

    it('deny needs a reason; the parent’s mail with it is queued; nothing is written to the auth table', { skip }, async () => {
      const { id, email } = await pendingRequest();
      const version = versionOn((await staff.open(`/admin/requests/${id}`)).text);
      const empty = await staff.post(`/admin/requests/${id}/deny`, { version, reason: '   ' });
      assert.equal(empty.status, 400, 'the form comes back with its error summary');
      assert.match(htmlText(empty.text), /Give a reason/);
      assert.equal((await statusOf(id)).status, 'pending');
      const done = await act(`/admin/requests/${id}/deny`, { version, reason: 'We have no pupil of that name.' });
      assert.match(done.message, /was denied\. The parent will be emailed the reason/);
      const after = await statusOf(id);
      assert.equal(after.status, 'denied');
      assert.equal(after.decisionReason, 'We have no pupil of that name.');
      const [mail] = (await mails(id)).filter((m) => m.kind === 'denied');
      assert.equal(mail?.recipient, email);
      assert.match(mail?.payload ?? '', /We have no pupil of that name\./);
      assert.deepEqual(await auditActions(id), ['submitted', 'denied']);
      assert.match(htmlText(done.page), /Denied\. The parent was emailed the reason\.[\s\S]*Reason: We have no pupil of that name\./);
      // Closed: no more decision forms, but comments and erasure are offered.
      assert.doesNotMatch(done.page, /action="[^"]*\/(approve|deny|bogus|duplicate)"/);
      assert.match(done.page, /action="[^"]*\/comment"/);
      assert.match(done.page, new RegExp(`href="/admin/requests/${id}/erase"`));
    });

    it('marks a duplicate of another request, or not genuine, without mail', { skip }, async () => {
      const first = await pendingRequest();
      const second = await pendingRequest();
      let version = versionOn((await staff.open(`/admin/requests/${second.id}`)).text);
      const bad = await staff.post(`/admin/requests/${second.id}/duplicate`, { version, duplicateOf: 'the other one' });
      assert.equal(bad.status, 400, 'the form comes back with its error summary');
      assert.match(htmlText(bad.text), /must be a whole number/);
      const dup = await act(`/admin/requests/${second.id}/duplicate`, { version, duplicateOf: `#${first.id}` });
      assert.match(dup.message, new RegExp(`marked as a duplicate of request ${first.id}`));
      assert.equal((await statusOf(second.id)).status, 'duplicate');
      const event = (await services.requestRepository.auditFor(t.db, second.id)).at(-1);
      assert.equal(event?.action, 'marked_duplicate');
      assert.equal(event?.details.duplicateOf, first.id);
      assert.match(htmlText(dup.page), new RegExp(`Marked as a duplicate of request ${first.id}\\.`));

      version = versionOn((await staff.open(`/admin/requests/${first.id}`)).text);
      const bogus = await act(`/admin/requests/${first.id}/bogus`, { version });
      assert.match(bogus.message, /rejected as not genuine/);
      assert.equal((await statusOf(first.id)).status, 'bogus');
      assert.deepEqual((await mails(first.id)).concat(await mails(second.id)), []);
    });

    it('revokes one child, then all: the auth row goes only with the last link, the parent is told', { skip }, async () => {
      const { request: r, children } = await approvedRequest(services.lifecycle);
      const [first, second] = children;
      assert.ok(first && second);
      const page = await staff.open(`/admin/requests/${r.id}`);
      assert.match(page.text, /Remove this link/);
      const version = versionOn(page.text);
      const one = await act(`/admin/requests/${r.id}/revoke-child`, { version, childId: String(first.id) });
      assert.match(one.message, /link to that child was removed/);
      const afterOne = await services.requestRepository.children(t.db, r.id);
      assert.deepEqual(afterOne.map((c) => c.linkState), ['revoked', 'matched']);
      assert.equal((await statusOf(r.id)).status, 'approved');
      assert.ok(await t.db(TEST_AUTH_TABLE).where({ request_id: r.id }).first(), 'one link is left, so the parent keeps the account');

      const all = await act(`/admin/requests/${r.id}/revoke`, { version: versionOn(one.page), reason: 'Left the school' });
      assert.match(all.message, /Access through request .* was removed/);
      const after = await statusOf(r.id);
      assert.equal(after.status, 'revoked');
      assert.equal(await t.db(TEST_AUTH_TABLE).where({ request_id: r.id }).first(), undefined);
      assert.deepEqual((await mails(r.id)).map((m) => m.kind), ['revoked']);
      assert.deepEqual(await auditActions(r.id), ['submitted', 'approved', 'child_revoked', 'revoked']);
      assert.match(htmlText(all.page), /Access removed for the whole request\.\s*<\/span>\s*<span class="timeline-detail">Reason: Left the school/);
      // Nothing left to revoke: the action is refused with the lifecycle's words.
      assert.doesNotMatch(all.page, /Remove this link|action="[^"]*\/revoke"/);
      const again = await act(`/admin/requests/${r.id}/revoke`, { version: String(after.version) });
      assert.match(again.message, /Cannot revoke a request that is "access removed"/);
    });

    it('adds a staff comment, shown on the page and in the history', { skip }, async () => {
      const { id } = await pendingRequest();
      await staff.open(`/admin/requests/${id}`);
      const empty = await staff.post(`/admin/requests/${id}/comment`, { comment: ' ' });
      assert.equal(empty.status, 400, 'the form comes back with its error summary');
      assert.match(htmlText(empty.text), /Write a comment/);
      const done = await act(`/admin/requests/${id}/comment`, { comment: 'Phoned the parent <b>today</b>' });
      assert.equal(done.message, 'Your comment was added.');
      assert.equal((await statusOf(id)).staffComment, 'Phoned the parent <b>today</b>');
      assert.ok(done.page.includes('Phoned the parent &lt;b&gt;today&lt;/b&gt;'), 'the comment is shown escaped');
      assert.match(htmlText(done.page), /Staff comment added\./);
    });

    it('warns of an existing Moodle account with the parent’s email; approving with it writes no auth row', { skip }, async () => {
      const { id, bob, ann, cat } = await pendingRequest({ email: 'sam.parent@example.org' });
      const page = await staff.open(`/admin/requests/${id}`);
      const text = htmlText(page.text);
      assert.match(text, /An account with this email address already exists in Moodle/);
      assert.match(text, /Use the existing account of Sam Teacher: username sam\.teacher, email sam\.parent@example\.org \(Moodle user 40, signs in with “manual”\)/);
      assert.equal(checked(page.text, 'account_40'), false);
      assert.equal(checked(page.text, 'account_new'), false);
      const version = versionOn(page.text);
      const matches = { [`match_${bob}`]: '4', [`match_${ann}`]: '3', [`match_${cat}`]: 'none' };
      const unchosen = await refusedOnForm(`/admin/requests/${id}/approve`, { version, ...matches, accountChoiceRequired: '1', accountUsername_40: 'sam.teacher' });
      assert.match(unchosen.summary, /Choose whether the parent gets a new Moodle account or uses the account that already exists/);
      assert.match(unchosen.besideField('existing-account'), /Choose whether the parent gets a new Moodle account/);
      assert.equal(checked(unchosen.page, `match_${bob}_4`), true, 'the choices are kept');
      assert.equal((await statusOf(id)).status, 'pending');

      const done = await act(`/admin/requests/${id}/approve`, { version, ...matches, accountChoiceRequired: '1', account: '40', accountUsername_40: 'sam.teacher' });
      assert.match(done.message, /links the children to the parent’s existing Moodle account/);
      const after = await statusOf(id);
      assert.equal(after.status, 'approved');
      assert.equal(after.linkExistingAccount, true);
      assert.equal(after.moodleUserId, 40);
      assert.equal(after.moodleUsername, 'sam.teacher');
      assert.equal(await t.db(TEST_AUTH_TABLE).where({ request_id: id }).first(), undefined, 'no auth row for an existing account');
      assert.ok(done.page.includes(`href="${moodle.url}/user/profile.php?id=40"`), 'the parent’s profile is linked');
    });

    it('sends a new confirmation link for an unverified request; the old link stops working', { skip }, async () => {
      const oldToken = 'a'.repeat(43);
      const { request: r } = await services.lifecycle.submitRequest(
        submission({ requireVerification: true, verificationTokenHash: hashToken(oldToken), verificationExpiresAt: Date.now() + 3_600_000, verificationToken: oldToken }),
        parent,
      );
      assert.equal((await mails(r.id)).filter((m) => m.kind === 'verification').length, 1);
      const page = await staff.open(`/admin/requests/${r.id}`);
      assert.match(page.text, /Send a new confirmation link/);
      assert.doesNotMatch(page.text, /action="[^"]*\/approve"/, 'an unverified request cannot be approved yet');
      const done = await act(`/admin/requests/${r.id}/resend-verification`, {});
      assert.match(done.message, /A new confirmation link was emailed to the parent/);
      const verification = (await mails(r.id)).filter((m) => m.kind === 'verification');
      assert.equal(verification.length, 2);
      const link = (JSON.parse(verification[1]?.payload ?? '{}') as { verificationLink?: string }).verificationLink ?? '';
      const newToken = decodeURIComponent(link.split('/').pop() ?? '');
      assert.notEqual(newToken, oldToken);
      await assert.rejects(services.lifecycle.verifyEmail(hashToken(oldToken)), NotFoundError);
      assert.equal((await services.lifecycle.verifyEmail(hashToken(newToken))).status, 'pending');
      const event = (await services.requestRepository.auditFor(t.db, r.id)).find((e) => e.action === 'verification_resent');
      assert.equal(event?.actorId, username);
      // Once confirmed there is nothing to resend: refused with the lifecycle's message.
      const again = await act(`/admin/requests/${r.id}/resend-verification`, {});
      assert.match(again.message, /Cannot resend the confirmation email for a request that is "waiting for review"/);
    });

    it('still works when Moodle is unreachable or not set up: a plain notice, and approval by typed ids', { skip }, async () => {
      for (const moodleClient of [clientFor('http://127.0.0.1:9', moodle.tokens.ws), null]) {
        const other = createServices(testConfig(), { db: t.db, moodle: moodleClient });
        const otherApp = createApp(other);
        try {
          const browser = await StaffSession.signIn(otherApp, username);
          const { id, bob, ann, cat } = await pendingRequest();
          const page = await browser.open(`/admin/requests/${id}`);
          const text = htmlText(page.text);
          if (moodleClient) assert.match(text, /Moodle could not be asked about accounts/);
          else assert.match(text, /not connected to Moodle/);
          assert.match(text, /You can still approve/);
          assert.equal(checked(page.text, `match_${bob}_typed`), false);
          const fields = { version: versionOn(page.text), [`match_${bob}`]: 'typed', [`typed_${bob}`]: '4', [`match_${ann}`]: 'none', [`match_${cat}`]: 'none' };
          let res = await browser.post(`/admin/requests/${id}/approve`, fields);
          if (moodleClient) {
            // Moodle could not check the typed id: staff are told so, and confirm it as it is.
            assert.equal(res.status, 200);
            assert.match(htmlText(res.text), /Moodle could not be asked just now, so the typed ids could not be checked/);
            assert.match(htmlText(res.text.replace(/<[^>]+>/g, '')), /Bob Pupil: Moodle user 4 \(not checked\)/);
            assert.equal((await statusOf(id)).status, 'pending');
            res = await browser.post(`/admin/requests/${id}/approve`, { ...fields, [`confirmed_${bob}`]: '4' });
          }
          assert.equal(res.status, 303);
          if (!moodleClient) {
            const approved = await browser.open(res.headers.location ?? '');
            assert.match(flashOn(approved.text), /is approved, but nothing can be set up yet: this service is not connected to Moodle/);
          }
          const children = await other.requestRepository.children(t.db, id);
          assert.deepEqual(children.map((c) => [c.moodleUserId, c.linkState]), [[4, 'matched'], [null, 'not_found'], [null, 'not_found']]);
          assert.equal((await statusOf(id)).status, 'approved');
        } finally {
          await other.close();
        }
      }
    });

    it('shows a provisioned request’s Moodle links and the whole history in plain words', { skip }, async () => {
      const { request: r, children } = await approvedRequest(services.lifecycle);
      await services.lifecycle.recordProvisioningOutcomes(
        [{ requestId: r.id, expectedVersion: r.version, parentMoodleUserId: 6, linkedChildIds: children.map((c) => c.id) }],
        cycleActor,
      );
      const page = await staff.open(`/admin/requests/${r.id}`);
      const text = htmlText(page.text);
      assert.match(text, /Account ready/);
      assert.ok(page.text.includes(`href="${moodle.url}/user/profile.php?id=6"`), 'the parent’s Moodle profile');
      assert.ok(page.text.includes(`href="${moodle.url}/user/profile.php?id=3"`), 'a child’s Moodle profile');
      assert.match(text, /Provisioning cycle 1:<\/span> <span class="timeline-text">Linked in Moodle: Ann Pupil, Bob Pupil\./);
      assert.match(text, /Account ready; the parent was emailed\./);
      assert.match(text, /Staff member office:<\/span> <span class="timeline-text">Approved\./);
      assert.match(page.text, /Remove all access/);
      assert.match(text, /This request still gives access to Moodle/);
    });

    it('answers 404 for a request that does not exist, and leaves other addresses to other pages', { skip }, async () => {
      assert.equal((await staff.get('/admin/requests/999999')).status, 404);
      assert.equal((await staff.get('/admin/requests/not-a-number')).status, 404);
    });
  });
}
