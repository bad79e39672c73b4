// The public request form over HTTP against real databases: validation and its messages,
// keeping what was typed, add/remove child without JavaScript, CSRF, the honeypot, rate
// limits, joining an open request, size limits, email confirmation and the status page.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import type { Actor } from '../../src/requests/request-lifecycle';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { confirmEmail, FormSession, htmlText, validFields, without, type FormFields } from '../support/http';

const HOUR = 3_600_000;
const staffActor: Actor = { type: 'staff', id: 'office.admin.jones' };

function testConfig(extra: Record<string, string> = {}) {
  return parseConfig({
    NODE_ENV: 'test',
    AUTH_TABLE: TEST_AUTH_TABLE,
    SCHOOL_NAME: 'Hillside School',
    MAX_CHILDREN: '3',
    FORM_RATE_LIMIT_PER_IP: '1000',
    FORM_RATE_LIMIT_PER_EMAIL: '1000',
    PRIVACY_NOTICE_URL: 'https://www.example-school.org/privacy',
    FORM_EMBED_ORIGINS: 'https://www.example-school.org',
    ...extra,
  });
}

async function countRequests(t: TestDatabase): Promise<number> {
  const row = (await t.db('requests').count({ n: '*' }).first()) as { n: number | string };
  return Number(row.n);
}

for (const dialect of DIALECTS) {
  describe(`request form on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: Express;
    let clock = Date.UTC(2026, 10, 23, 9, 0, 0);
    /** Raw confirmation tokens handed to lifecycle listeners, by public id (as the mailer gets them). */
    const tokens = new Map<string, string>();

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(testConfig(), { db: t.db, now: () => clock });
      services.lifecycle.addListener(async (_trx, event) => {
        const token = event.details.verificationToken;
        if (typeof token === 'string') tokens.set(event.request.publicId, token);
      });
      app = createApp(services);
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await t.destroy();
    });

    /** Opens the form in a new browser session and sends it, expecting the given status. */
    async function submit(fields: FormFields, status: number) {
      const session = new FormSession(app);
      await session.open();
      return session.post('/request', fields).expect(status);
    }

    async function stored(email: string) {
      const row = await t.db('requests').where({ email: email.toLowerCase() }).first();
      return row as { id: number; public_id: string; status: string } | undefined;
    }

    describe('the form page', () => {
      it('labels every input, links the privacy notice, has a honeypot and a CSRF token', { skip }, async () => {
        const session = new FormSession(app);
        const res = await session.open();
        const ids = [...res.text.matchAll(/<(?:input|textarea|select)\b[^>]*\bid="([^"]+)"/g)].map((m) => m[1] as string);
        assert.ok(ids.includes('firstName') && ids.includes('children-0-tutorGroup') && ids.includes('privacyAccepted'));
        for (const id of ids) assert.match(res.text, new RegExp(`<label for="${id}"`), `input ${id} has a label`);
        assert.match(res.text, /href="https:\/\/www\.example-school\.org\/privacy"/);
        assert.match(res.text, /<label for="website">Leave this empty<\/label>/);
        assert.match(res.text, /id="website" name="website" value="" autocomplete="off" tabindex="-1"/);
        assert.match(res.text, /<script src="\/assets\/request-form\.js" defer><\/script>/);
        assert.equal(/<script>/.test(res.text), false, 'no inline script');
        assert.match(String(res.headers['set-cookie']), /mpp\.csrf=.*HttpOnly.*SameSite=Strict/i);
      });

      it('may be framed by the configured school site, other pages may not', { skip }, async () => {
        const form = await request(app).get('/request').expect(200);
        assert.match(String(form.headers['content-security-policy']), /frame-ancestors 'self' https:\/\/www\.example-school\.org/);
        const home = await request(app).get('/').expect(200);
        assert.match(String(home.headers['content-security-policy']), /frame-ancestors 'none'(;|$)/);
        await request(app).get('/assets/request-form.js').expect(200).expect('content-type', /javascript/);
      });

      it('home page links to the form', { skip }, async () => {
        const res = await request(app).get('/').expect(200);
        assert.match(res.text, /href="\/request"/);
      });
    });

    describe('validation', () => {
      const cases: Array<{ name: string; fields: (f: FormFields) => FormFields; field: string; message: string }> = [
        { name: 'first name missing', fields: (f) => ({ ...f, firstName: '   ' }), field: 'firstName', message: 'Enter your first name' },
        { name: 'last name missing', fields: (f) => ({ ...f, lastName: '' }), field: 'lastName', message: 'Enter your last name' },
        { name: 'first name too long', fields: (f) => ({ ...f, firstName: 'A'.repeat(101) }), field: 'firstName', message: 'Your first name must be 100 characters or fewer' },
        { name: 'markup in a name', fields: (f) => ({ ...f, lastName: 'Smith<script>' }), field: 'lastName', message: 'Your last name can only contain letters, spaces, hyphens, apostrophes and full stops' },
        { name: 'emoji in a name', fields: (f) => ({ ...f, firstName: 'Ann😀' }), field: 'firstName', message: 'Your first name can only contain letters, spaces, hyphens, apostrophes and full stops' },
        { name: 'control character in a name', fields: (f) => ({ ...f, firstName: 'Ann\u0007' }), field: 'firstName', message: 'Your first name can only contain letters, spaces, hyphens, apostrophes and full stops' },
        { name: 'title too long', fields: (f) => ({ ...f, title: 'Professor Emeritus Sir' }), field: 'title', message: 'Your title must be 20 characters or fewer' },
        { name: 'email missing', fields: (f) => ({ ...f, email: '', emailConfirm: '' }), field: 'email', message: 'Enter your email address' },
        { name: 'email malformed', fields: (f) => ({ ...f, email: 'parent.example.org', emailConfirm: 'parent.example.org' }), field: 'email', message: 'Enter an email address in the correct format, like name@example.com' },
        { name: 'email too long', fields: (f) => ({ ...f, email: `${'a'.repeat(250)}@example.org`, emailConfirm: `${'a'.repeat(250)}@example.org` }), field: 'email', message: 'Your email address must be 254 characters or fewer' },
        { name: 'emails differ', fields: (f) => ({ ...f, emailConfirm: 'someone.else@example.org' }), field: 'emailConfirm', message: 'The two email addresses do not match' },
        { name: 'email again missing', fields: (f) => ({ ...f, emailConfirm: '' }), field: 'emailConfirm', message: 'Enter your email address again' },
        { name: 'request type missing', fields: (f) => without(f, 'requestType'), field: 'requestType', message: 'Choose what you need help with' },
        { name: 'request type unknown', fields: (f) => ({ ...f, requestType: 'admin_access' }), field: 'requestType', message: 'Choose what you need help with' },
        { name: 'child first name missing', fields: (f) => ({ ...f, 'children[1][firstName]': '' }), field: 'children-1-firstName', message: 'Enter the first name of child 2' },
        { name: 'child last name missing', fields: (f) => ({ ...f, 'children[0][lastName]': '' }), field: 'children-0-lastName', message: 'Enter the last name of child 1' },
        { name: 'child name with markup', fields: (f) => ({ ...f, 'children[0][firstName]': '<b>Ann</b>' }), field: 'children-0-firstName', message: 'The first name of child 1 can only contain letters, spaces, hyphens, apostrophes and full stops' },
        { name: 'tutor group missing', fields: (f) => ({ ...f, 'children[0][tutorGroup]': '' }), field: 'children-0-tutorGroup', message: 'Enter the tutor group of child 1, for example 7B' },
        { name: 'tutor group too long', fields: (f) => ({ ...f, 'children[0][tutorGroup]': '7'.repeat(21) }), field: 'children-0-tutorGroup', message: 'The tutor group of child 1 must be 20 characters or fewer' },
        { name: 'pupil number too long', fields: (f) => ({ ...f, 'children[1][pupilIdentifier]': 'X'.repeat(51) }), field: 'children-1-pupilIdentifier', message: 'The pupil number of child 2 must be 50 characters or fewer' },
        {
          name: 'no children',
          fields: (f) => without(f, 'children[0][firstName]', 'children[0][lastName]', 'children[0][tutorGroup]', 'children[0][pupilIdentifier]', 'children[1][firstName]', 'children[1][lastName]', 'children[1][tutorGroup]', 'children[1][pupilIdentifier]'),
          field: 'children',
          message: 'Add at least one child',
        },
        {
          name: 'more children than allowed',
          fields: (f) => ({ ...f, 'children[2][firstName]': 'Cat', 'children[2][lastName]': 'Smith', 'children[2][tutorGroup]': '8A', 'children[3][firstName]': 'Dan', 'children[3][lastName]': 'Smith', 'children[3][tutorGroup]': '8A' }),
          field: 'children',
          message: 'You can add up to 3 children on one request. Tell us about any others in the comment box.',
        },
        { name: 'comment too long', fields: (f) => ({ ...f, comment: 'x'.repeat(2001) }), field: 'comment', message: 'Your comment must be 2000 characters or fewer' },
        { name: 'privacy notice not confirmed', fields: (f) => without(f, 'privacyAccepted'), field: 'privacyAccepted', message: 'Confirm that you have read the privacy notice' },
      ];
      for (const c of cases) {
        it(`${c.name}: says so, marks the field, stores nothing`, { skip }, async () => {
          const before = await countRequests(t);
          const res = await submit(c.fields(validFields()), 400);
          const page = htmlText(res.text);
          assert.match(page, /There is a problem/);
          assert.ok(page.includes(`<a href="#${c.field}">${c.message}</a>`), `summary links to #${c.field} with "${c.message}"`);
          assert.ok(page.includes(`id="${c.field}-error"><span class="visually-hidden">Error: </span>${c.message}`), 'message beside the field');
          if (c.field !== 'children' && c.field !== 'requestType') {
            assert.match(res.text, new RegExp(`id="${c.field}"[^>]*aria-describedby="[^"]*${c.field}-error"[^>]*aria-invalid="true"`), 'the field is marked invalid');
          }
          assert.match(res.text, /<title>Error: /);
          assert.equal(await countRequests(t), before, 'nothing stored');
        });
      }

      it('keeps everything typed after an error, escaped', { skip }, async () => {
        const fields = validFields({ firstName: '', comment: 'Line one\n<b>bold</b> & "quoted"', 'children[1][pupilIdentifier]': 'P-77' });
        const res = await submit(fields, 400);
        assert.ok(res.text.includes(`value="${fields.email}"`));
        assert.ok(res.text.includes('value="O’Brien-Smith"'));
        assert.ok(res.text.includes('value="José"'));
        assert.ok(res.text.includes('value="P-77"'));
        assert.ok(res.text.includes('value="Mrs"'));
        assert.match(res.text, /value="new_account" aria-describedby="[^"]+" checked/);
        assert.match(res.text, /id="privacyAccepted" name="privacyAccepted" value="yes" checked/);
        assert.ok(res.text.includes('Line one\n&lt;b&gt;bold&lt;/b&gt; &amp; &#34;quoted&#34;</textarea>'));
        assert.equal(res.text.includes('<b>bold</b>'), false);
      });

      it('accepts names from other scripts and stores the trimmed values', { skip }, async () => {
        const fields = validFields({ firstName: '  Łucja ', lastName: 'Nguyễn', 'children[0][firstName]': 'Αλέξανδρος', 'children[0][lastName]': 'Ó Briain' });
        fields.email = `  ${fields.email!.toUpperCase()} `;
        await submit(fields, 200);
        const row = await stored(fields.emailConfirm!);
        assert.ok(row, 'stored under the lower-cased email');
        const full = await t.db('requests').where({ id: row.id }).first();
        assert.equal(full.parent_first_name, 'Łucja');
        const children = await t.db('request_children').where({ request_id: row.id }).orderBy('position');
        assert.deepEqual(children.map((c: { first_name: string }) => c.first_name), ['Αλέξανδρος', 'José']);
        assert.equal(children[1].pupil_identifier, null, 'an empty pupil number is stored as nothing');
      });
    });

    describe('add and remove a child without JavaScript', () => {
      it('adds an empty child block, keeps the input, shows no errors and stores nothing', { skip }, async () => {
        const before = await countRequests(t);
        const session = new FormSession(app);
        await session.open();
        const fields = validFields({ firstName: '', action: 'add-child' });
        const res = await session.post('/request', fields).expect(200);
        assert.equal(res.text.includes('There is a problem'), false);
        assert.match(res.text, /<legend>Child 3<\/legend>/);
        assert.match(res.text, /id="children-2-firstName" name="children\[2\]\[firstName\]" value=""[^>]* autofocus/);
        assert.ok(res.text.includes('value="José"'));
        assert.ok(res.text.includes(`value="${fields.email}"`));
        // At the maximum (3) there is no "Add another child" button any more.
        assert.equal(res.text.includes('value="add-child"'), false);
        assert.equal(await countRequests(t), before);
      });

      it('removes the chosen child and renumbers the rest', { skip }, async () => {
        const session = new FormSession(app);
        await session.open();
        const res = await session.post('/request', validFields({ action: 'remove-child-0' })).expect(200);
        assert.equal(res.text.includes('<legend>Child 2</legend>'), false);
        assert.match(res.text, /id="children-0-firstName" name="children\[0\]\[firstName\]" value="José"/);
        assert.equal(res.text.includes('value="Ann"'), false);
        assert.equal(res.text.includes('remove-child-0'), false, 'the last child cannot be removed');
      });
    });

    describe('abuse', () => {
      it('refuses a post without a CSRF token, in plain words, storing nothing', { skip }, async () => {
        const before = await countRequests(t);
        const session = new FormSession(app);
        await session.open();
        const res = await session.post('/request', validFields(), { csrf: false }).expect(403);
        assert.match(res.text, /The form had expired or could not be checked, so nothing was sent/);
        assert.equal(await countRequests(t), before);
      });

      it('refuses a wrong token, and a token without its cookie', { skip }, async () => {
        const session = new FormSession(app);
        await session.open();
        await session.post('/request', { ...validFields(), _csrf: `${session.csrfToken.slice(0, -4)}abcd` }).expect(403);
        // The right token from another browser: no cookie here.
        const other = new FormSession(app);
        other.csrfToken = session.csrfToken;
        await other.post('/request', validFields()).expect(403);
        await session.post('/request', validFields()).expect(200);
      });

      it('a filled honeypot gets the thank-you page and stores nothing', { skip }, async () => {
        const before = await countRequests(t);
        const fields = validFields({ website: 'http://spam.example' });
        const res = await submit(fields, 200);
        assert.match(res.text, /We have received your request/);
        assert.equal(await countRequests(t), before);
        assert.equal(await stored(fields.email!), undefined);
      });

      it('limits stored submissions per address: 429 with Retry-After once the limit is used', { skip }, async () => {
        const limited = createApp(createServices(testConfig({ FORM_RATE_LIMIT_PER_IP: '2', TRUST_PROXY: 'true' }), { db: t.db, now: () => clock }));
        const session = new FormSession(limited, { forwardedFor: '203.0.113.10' });
        await session.open();
        // Validation errors do not count: only posts that would store something.
        await session.post('/request', validFields({ firstName: '' })).expect(400);
        await session.post('/request', validFields()).expect(200);
        await session.post('/request', validFields()).expect(200);
        const before = await countRequests(t);
        const refused = await session.post('/request', validFields()).expect(429);
        assert.match(refused.text, /This form has been sent many times from your network/);
        assert.ok(Number(refused.headers['retry-after']) > 0);
        assert.equal(await countRequests(t), before);
        // Another address is not affected.
        const other = new FormSession(limited, { forwardedFor: '203.0.113.11' });
        await other.open();
        await other.post('/request', validFields()).expect(200);
      });

      it('limits submissions per email address across addresses', { skip }, async () => {
        const limited = createApp(createServices(testConfig({ FORM_RATE_LIMIT_PER_EMAIL: '2', TRUST_PROXY: 'true' }), { db: t.db, now: () => clock }));
        const fields = validFields();
        for (const [i, expected] of [[1, 200], [2, 200], [3, 429]] as const) {
          const session = new FormSession(limited, { forwardedFor: `198.51.100.${i}` });
          await session.open();
          const res = await session.post('/request', fields).expect(expected);
          if (expected === 429) assert.ok(Number(res.headers['retry-after']) > 0);
        }
      });

      it('holds a second submission for the same email for the open request, without revealing it', { skip }, async () => {
        const fields = validFields();
        const firstPage = await submit(fields, 200);
        const first = await stored(fields.email!);
        assert.ok(first);
        const second = await submit({
          ...fields,
          firstName: 'Different',
          'children[0][firstName]': 'Cat',
          'children[0][tutorGroup]': '8A',
          comment: 'Also Cat',
        }, 200);
        assert.equal(second.text, firstPage.text, 'the same page as for a new request');
        assert.equal(second.text.includes(first.public_id), false, 'no link to the other request');
        const rows = await t.db('requests').where({ email: fields.email });
        assert.equal(rows.length, 1, 'no second request');
        const children = await t.db('request_children').where({ request_id: first.id });
        assert.deepEqual(children.map((c: { first_name: string }) => c.first_name).sort(), ['Ann', 'José'], 'nothing added until the emailed link is used');
        assert.equal((await t.db('request_held_details').where({ request_id: first.id })).length, 1);
      });

      it('refuses a body over 20 kB with a plain 413 page', { skip }, async () => {
        const before = await countRequests(t);
        const session = new FormSession(app);
        await session.open();
        const res = await session.post('/request', validFields({ comment: 'x'.repeat(25_000) })).expect(413);
        assert.match(res.text, /What you sent is larger than this form accepts/);
        assert.equal(await countRequests(t), before);
      });
    });

    describe('email confirmation', () => {
      it('stores the request unverified with only a hash of the token; the link works once', { skip }, async () => {
        const fields = validFields();
        const thanks = await submit(fields, 200);
        assert.ok(thanks.text.includes(fields.email!));
        const row = await stored(fields.email!);
        assert.ok(row);
        assert.equal(row.status, 'unverified');
        const token = tokens.get(row.public_id);
        assert.ok(token && token.length === 43, 'a 32-byte base64url token went to the listeners');
        const full = await t.db('requests').where({ id: row.id }).first();
        assert.notEqual(full.verification_token_hash, token);
        assert.equal(JSON.stringify(await t.db('audit_events').where({ request_id: row.id })).includes(token), false, 'the raw token is not in the audit trail');
        assert.equal(full.verification_expires_at, clock + 48 * HOUR);

        const ok = await confirmEmail(app, token);
        assert.match(ok.text, /Thank you, your email address is confirmed/);
        assert.ok(ok.text.includes(`href="/request/status/${row.public_id}"`));
        assert.equal(ok.headers['referrer-policy'], 'no-referrer');
        assert.equal((await stored(fields.email!))?.status, 'pending');

        const again = await request(app).get(`/request/verify/${token}`).expect(200);
        assert.match(again.text, /Your email address is already confirmed/);
        await request(app).get('/request/verify/not-a-token').expect(404);
      });

      it('refuses an expired link and offers a new one, which works', { skip }, async () => {
        const fields = validFields();
        await submit(fields, 200);
        const row = (await stored(fields.email!))!;
        const oldToken = tokens.get(row.public_id)!;
        clock += 49 * HOUR;
        const expired = await request(app).get(`/request/verify/${oldToken}`).expect(410);
        assert.match(expired.text, /This confirmation link has expired/);
        assert.equal((await stored(fields.email!))?.status, 'unverified');

        const session = new FormSession(app);
        const statusPage = await session.open(`/request/status/${row.public_id}`);
        assert.match(statusPage.text, /Send me a new confirmation link/);
        const resent = await session.post(`/request/status/${row.public_id}/resend`, {}).expect(303);
        assert.equal(resent.headers.location, `/request/status/${row.public_id}?resent=1`);
        const newToken = tokens.get(row.public_id)!;
        assert.notEqual(newToken, oldToken);
        await request(app).get(`/request/verify/${oldToken}`).expect(404);
        await confirmEmail(app, newToken);
        assert.equal((await stored(fields.email!))?.status, 'pending');
        // Once confirmed, a resend is not needed.
        const later = await session.post(`/request/status/${row.public_id}/resend`, {}).expect(303);
        assert.match(String(later.headers.location), /confirmed=1/);
      });

      it('refuses a resend without a CSRF token, and limits resends per request', { skip }, async () => {
        const fields = validFields();
        await submit(fields, 200);
        const row = (await stored(fields.email!))!;
        const session = new FormSession(app);
        await session.open(`/request/status/${row.public_id}`);
        await session.post(`/request/status/${row.public_id}/resend`, {}, { csrf: false }).expect(403);
        for (let i = 0; i < 3; i++) await session.post(`/request/status/${row.public_id}/resend`, {}).expect(303);
        const refused = await session.post(`/request/status/${row.public_id}/resend`, {}).expect(429);
        assert.ok(Number(refused.headers['retry-after']) > 0);
      });

      it('starts requests pending when REQUIRE_EMAIL_VERIFICATION=false', { skip }, async () => {
        const noVerify = createApp(createServices(testConfig({ REQUIRE_EMAIL_VERIFICATION: 'false' }), { db: t.db, now: () => clock }));
        const fields = validFields();
        const session = new FormSession(noVerify);
        await session.open();
        const res = await session.post('/request', fields).expect(200);
        assert.equal(res.text.includes('Confirm my email address'), false);
        const row = (await stored(fields.email!))!;
        assert.equal(row.status, 'pending');
        assert.equal(tokens.has(row.public_id), false, 'no confirmation token made');
      });
    });

    describe('status page', () => {
      async function newRequest(options: { verify?: boolean } = {}) {
        const fields = validFields();
        await submit(fields, 200);
        const row = (await stored(fields.email!))!;
        if (options.verify) await confirmEmail(app, tokens.get(row.public_id)!);
        const children = await services.requestRepository.children(t.db, row.id);
        return { id: row.id, publicId: row.public_id, children };
      }
      const page = (publicId: string) => request(app).get(`/request/status/${publicId}`).expect(200);

      it('unverified: what to do next, private-page headers, no staff names', { skip }, async () => {
        const r = await newRequest();
        const res = await page(r.publicId);
        assert.match(res.text, /<meta name="robots" content="noindex">/);
        assert.equal(res.headers['cache-control'], 'no-store');
        assert.equal(res.headers['referrer-policy'], 'no-referrer');
        assert.match(res.text, /Waiting for you to confirm your email address/);
        assert.match(res.text, /We received your request\./);
        assert.match(res.text, /follow the link in it and press “Confirm my email address”/);
      });

      it('pending, approved, provisioned: the timeline grows; staff names and ids stay out', { skip }, async () => {
        const r = await newRequest({ verify: true });
        let res = await page(r.publicId);
        assert.match(res.text, /Waiting for the school to check/);
        assert.match(res.text, /You confirmed your email address\./);

        const approved = await services.lifecycle.approveRequest(r.id, { children: r.children.map((c, i) => ({ childId: c.id, moodleUserId: 500 + i })) }, staffActor);
        res = await page(r.publicId);
        // This service has no Moodle configured, so no time is promised.
        assert.match(res.text, /Approved: your account will be set up later/);
        assert.match(res.text, /The school approved your request\./);

        await services.lifecycle.recordProvisioningOutcomes(
          [{ requestId: r.id, expectedVersion: approved.version, parentMoodleUserId: 900, linkedChildIds: r.children.map((c) => c.id) }],
          { type: 'cycle', id: '17' },
        );
        res = await page(r.publicId);
        assert.match(res.text, /Your account is ready/);
        assert.match(res.text, /Your account was linked to Ann and José in Moodle\./);
        assert.match(res.text, /Your Moodle account is ready\./);
        assert.equal(res.text.includes('office.admin.jones'), false, 'no staff names');
        assert.equal(/\b(500|501|900)\b/.test(res.text), false, 'no Moodle ids');
        const timeline = res.text.slice(res.text.indexOf('What has happened so far'));
        const order = ['We received your request.', 'You confirmed your email address.', 'The school approved your request.', 'Your account was linked', 'Your Moodle account is ready.'].map((s) => timeline.indexOf(s));
        assert.ok(order.every((i) => i >= 0), 'every step is in the timeline');
        assert.deepEqual([...order].sort((a, b) => a - b), order, 'in time order');

        await services.lifecycle.revokeChild(r.id, r.children[0]!.id, { reason: 'Ann has left the school' }, staffActor);
        res = await page(r.publicId);
        assert.match(res.text, /The link to Ann was removed\./);
        assert.match(res.text, /Ann has left the school/);
      });

      it('denied: says so with the reason', { skip }, async () => {
        const r = await newRequest({ verify: true });
        await services.lifecycle.denyRequest(r.id, { reason: 'We could not find these children in our records' }, staffActor);
        const res = await page(r.publicId);
        assert.match(res.text, /Not approved/);
        assert.match(res.text, /The school did not approve your request\./);
        assert.match(res.text, /We could not find these children in our records/);
        assert.equal(res.text.includes('office.admin.jones'), false);
      });

      it('an unknown or malformed link is a 404', { skip }, async () => {
        const res = await request(app).get('/request/status/AAAAAAAAAAAAAAAAAAAAAA').set('accept', 'text/html').expect(404);
        assert.match(res.text, /There is no request at this address/);
        await request(app).get('/request/status/short').set('accept', 'text/html').expect(404);
      });
    });
  });
}

describe('CSRF cookie for an embedded form over https', () => {
  it('is __Host-, Secure and SameSite=None so the school site can frame the form', async () => {
    const services = createServices(
      parseConfig({ NODE_ENV: 'test', DATABASE_URL: 'sqlite::memory:', BASE_URL: 'https://parents.example-school.org', FORM_EMBED_ORIGINS: 'https://www.example-school.org' }),
    );
    try {
      const res = await request(createApp(services)).get('/request').expect(200);
      const cookie = String(res.headers['set-cookie']);
      assert.match(cookie, /^__Host-mpp\.csrf=/);
      assert.match(cookie, /; Secure/);
      assert.match(cookie, /SameSite=None/);
      assert.match(String(res.headers['content-security-policy']), /frame-ancestors 'self' https:\/\/www\.example-school\.org/);
    } finally {
      await services.close();
    }
  });

  it('is SameSite=Strict over https when the form is not embedded', async () => {
    const services = createServices(parseConfig({ NODE_ENV: 'test', DATABASE_URL: 'sqlite::memory:', BASE_URL: 'https://parents.example-school.org' }));
    try {
      const res = await request(createApp(services)).get('/request').expect(200);
      assert.match(String(res.headers['set-cookie']), /^__Host-mpp\.csrf=.*; Secure.*SameSite=Strict/);
    } finally {
      await services.close();
    }
  });
});
