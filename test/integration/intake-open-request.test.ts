// One open request per email address, and what a second submission for that address may do:
// over HTTP against real databases. A submission never changes an existing request by itself
// (its details are held until the link mailed to the address is used), the parent's page is
// the same whether or not a request exists, and the database itself refuses a second open
// request, so parallel submissions from the form and the API end as one request.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { isUniqueViolation } from '../../src/db/database';
import { createApiKey } from '../../src/intake/api-keys';
import { hashToken, newPublicId } from '../../src/requests/request-lifecycle';
import { RequestRepository, type RequestRecord } from '../../src/requests/request-repository';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { FormSession, validFields, type FormFields } from '../support/http';

const HOUR = 3_600_000;
/** Names take letters only: 0 → "a", 1 → "b"… */
const letter = (n: number) => String.fromCharCode(97 + n);
const staffActor = { type: 'staff' as const, id: 'office.admin' };

function testConfig(extra: Record<string, string> = {}) {
  return parseConfig({
    NODE_ENV: 'test',
    AUTH_TABLE: TEST_AUTH_TABLE,
    SCHOOL_NAME: 'Hillside School',
    MAX_CHILDREN: '8',
    FORM_RATE_LIMIT_PER_IP: '10000',
    FORM_RATE_LIMIT_PER_EMAIL: '10000',
    ...extra,
  });
}

interface Snapshot {
  status: string;
  version: number;
  parentComment: string | null;
  updatedAt: number;
  children: string[];
}

for (const dialect of DIALECTS) {
  describe(`one open request per address on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: Express;
    let apiKey: string;
    let clock = Date.UTC(2026, 11, 1, 9, 0, 0);
    /** Raw confirmation tokens of new requests, by public id (as the mailer gets them). */
    const verificationTokens = new Map<string, string>();

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(testConfig(), { db: t.db, now: () => clock });
      services.lifecycle.addListener(async (_trx, event) => {
        const token = event.details.verificationToken;
        if (typeof token === 'string') verificationTokens.set(event.request.publicId, token);
      });
      app = createApp(services);
      apiKey = (await createApiKey(t.db, 'school-website')).key;
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await t.destroy();
    });

    async function submitForm(fields: FormFields, status?: number) {
      const session = new FormSession(app);
      await session.open();
      const res = session.post('/request', fields);
      return status === undefined ? res : res.expect(status);
    }

    async function requestFor(email: string): Promise<{ id: number; public_id: string; status: string }> {
      const row = await t.db('requests').where({ email: email.toLowerCase() }).first();
      assert.ok(row, `a request for ${email}`);
      return row as { id: number; public_id: string; status: string };
    }

    async function snapshot(id: number): Promise<Snapshot> {
      const { request: r, children } = await services.lifecycle.get(id);
      return { status: r.status, version: r.version, parentComment: r.parentComment, updatedAt: r.updatedAt, children: children.map((c) => `${c.firstName} ${c.lastName} ${c.tutorGroup}`) };
    }

    /** The link in the newest queued mail of this kind to this address. */
    async function mailedLink(email: string, kind: string): Promise<string> {
      const row = await t.db('mail_outbox').where({ recipient: email.toLowerCase(), kind }).orderBy('id', 'desc').first();
      assert.ok(row, `a ${kind} mail to ${email}`);
      const link = (JSON.parse(String(row.payload)) as { verificationLink?: string }).verificationLink;
      assert.ok(link, 'the mail has a link');
      return new URL(link).pathname;
    }

    /** The page with the one thing that must differ (the address typed) taken out. */
    const pageWithout = (html: string, email: string) => html.split(email).join('EMAIL');

    /** A request whose address the parent has confirmed, made through the form. */
    async function confirmedRequest(fields: FormFields): Promise<{ id: number; public_id: string }> {
      await submitForm(fields, 200);
      const row = await requestFor(fields.email!);
      const token = verificationTokens.get(row.public_id);
      assert.ok(token);
      await services.lifecycle.verifyEmail(hashToken(token), { type: 'parent' });
      assert.equal((await requestFor(fields.email!)).status, 'pending');
      return row;
    }

    describe('an unconfirmed submission never changes a confirmed request', () => {
      it('holds the details of a second submission; the emailed link shows a button, which adds them with an audit event, once', { skip }, async () => {
        const fields = validFields({ comment: 'Please link both' });
        const original = await confirmedRequest(fields);
        const before = await snapshot(original.id);

        // Anyone can type the parent's address into the form.
        clock += HOUR;
        const stranger = await submitForm({
          ...fields,
          firstName: 'Mallory',
          'children[0][firstName]': 'Eve',
          'children[0][lastName]': 'Intruder',
          'children[0][tutorGroup]': '11X',
          'children[1][firstName]': 'Ann',
          comment: 'Add Eve too',
        }, 200);
        assert.equal(stranger.text.includes('Eve'), false);
        assert.deepEqual(await snapshot(original.id), before, 'the confirmed request is exactly as it was');
        assert.equal(Number((await t.db('requests').where({ email: fields.email }).count({ n: '*' }).first())?.n), 1, 'no second request');
        const audit = await services.requestRepository.auditFor(t.db, original.id);
        assert.equal(audit.at(-1)?.action, 'details_held');
        assert.equal(JSON.stringify(audit).includes('Eve'), false, 'the held names are not in the audit trail');

        const linkPath = await mailedLink(fields.email!, 'held_details');
        assert.match(linkPath, /^\/request\/details\/[A-Za-z0-9_-]{43}$/);
        // Mail scanners open links: opening it shows a page and changes nothing.
        const session = new FormSession(app);
        const page = await session.open(linkPath);
        assert.match(page.text, /Add the new details to my request/);
        assert.equal(page.headers['referrer-policy'], 'no-referrer');
        assert.deepEqual(await snapshot(original.id), before, 'opening the link adds nothing');
        await session.post(linkPath, {}, { csrf: false }).expect(403);
        assert.deepEqual(await snapshot(original.id), before, 'a post without the CSRF token adds nothing');

        clock += HOUR;
        const added = await session.post(linkPath, {}).expect(200);
        assert.match(added.text, /The details you sent have been added to your request/);
        assert.ok(added.text.includes(`href="/request/status/${original.public_id}"`));
        const after = await snapshot(original.id);
        assert.equal(after.status, 'pending');
        assert.deepEqual(after.children, [...before.children, 'Eve Intruder 11X'], 'only the child not already named is added');
        assert.equal(after.parentComment, 'Please link both\n\nAdd Eve too');
        assert.equal(after.version, before.version + 1);
        const merged = (await services.requestRepository.auditFor(t.db, original.id)).at(-1);
        assert.equal(merged?.action, 'extended');
        assert.equal(merged?.actorType, 'parent');
        assert.deepEqual(merged?.details, { addedChildren: 1, commentAdded: true, source: 'form' });
        assert.equal(Number((await t.db('request_held_details').where({ request_id: original.id }).count({ n: '*' }).first())?.n), 0, 'nothing is held any more');

        const again = await session.post(linkPath, {}).expect(404);
        assert.match(again.text, /not valid, or it has already been used/);
        await request(app).get(linkPath).expect(404);
        assert.deepEqual((await snapshot(original.id)).children, after.children, 'the link works once');
      });

      it('shows the same page, with the same status, whether or not a request exists for the address', { skip }, async () => {
        const fresh = validFields();
        const confirmed = validFields();
        await confirmedRequest(confirmed);
        const unconfirmed = validFields();
        await submitForm(unconfirmed, 200);

        const pages = [];
        for (const fields of [fresh, confirmed, unconfirmed]) {
          const res = await submitForm({ ...fields, 'children[0][firstName]': 'Cara', comment: 'Another go' });
          pages.push({ status: res.status, body: pageWithout(res.text, fields.email!) });
        }
        assert.equal(pages[0]!.status, 200);
        assert.deepEqual(pages[1], pages[0], 'an address with a confirmed request gets the new-address page');
        assert.deepEqual(pages[2], pages[0], 'an address with an unconfirmed request gets the new-address page');
        assert.match(pages[0]!.body, /We have sent an email to <strong>EMAIL<\/strong>/);
      });

      it('a held link confirms an unconfirmed request too; details held for a request that closes are dropped', { skip }, async () => {
        const fields = validFields();
        await submitForm(fields, 200);
        const row = await requestFor(fields.email!);
        await submitForm({ ...fields, 'children[0][firstName]': 'Dan' }, 200);
        assert.equal((await requestFor(fields.email!)).status, 'unverified');
        const session = new FormSession(app);
        const linkPath = await mailedLink(fields.email!, 'held_details');
        await session.open(linkPath);
        await session.post(linkPath, {}).expect(200);
        const after = await snapshot(row.id);
        assert.equal(after.status, 'pending', 'the link came from the address, so the address is confirmed');
        assert.ok(after.children.some((c) => c.startsWith('Dan ')));

        // Held again, then the school closes the request before the link is used.
        await submitForm({ ...fields, 'children[0][firstName]': 'Fay' }, 200);
        const closedLink = await mailedLink(fields.email!, 'held_details');
        assert.notEqual(closedLink, linkPath);
        await services.lifecycle.denyRequest(row.id, { reason: 'Not known to the school' }, staffActor);
        assert.equal(Number((await t.db('request_held_details').where({ request_id: row.id }).count({ n: '*' }).first())?.n), 0, 'dropped with the decision');
        const gone = new FormSession(app);
        await gone.open('/request');
        await gone.post(closedLink, {}).expect(404);
        assert.equal((await snapshot(row.id)).children.some((c) => c.startsWith('Fay ')), false);
      });

      it('an expired held link adds nothing and says so', { skip }, async () => {
        const fields = validFields();
        const original = await confirmedRequest(fields);
        await submitForm({ ...fields, 'children[0][firstName]': 'Gus' }, 200);
        const linkPath = await mailedLink(fields.email!, 'held_details');
        const before = await snapshot(original.id);
        clock += 49 * HOUR;
        const session = new FormSession(app);
        await session.open('/request');
        const expired = await session.post(linkPath, {}).expect(410);
        assert.match(expired.text, /This link has expired/);
        assert.deepEqual(await snapshot(original.id), before);
        await request(app).get(linkPath).expect(410);
      });
    });

    describe('one open request per email address, enforced by the database', () => {
      function openRecord(email: string, status: RequestRecord['status']): Omit<RequestRecord, 'id'> {
        return {
          publicId: newPublicId(), status, requestType: 'new_account', source: 'form', parentTitle: '', parentFirstName: 'A', parentLastName: 'B',
          email, parentComment: null, staffComment: null, moodleUsername: null, moodleUserId: null, linkExistingAccount: false,
          verificationTokenHash: null, verificationExpiresAt: null, verifiedAt: null, decidedAt: null, decidedBy: null, decisionReason: null,
          provisionedAt: null, attempts: 0, lastError: null, nextAttemptAt: null, waitingSince: null, version: 1, submitterIp: null,
          submitterAgent: null, idempotencyKey: null, importBatchId: null, erasedAt: null, createdAt: clock, updatedAt: clock,
        };
      }

      it('refuses a second open request for one address, and allows a new one once the first has closed', { skip }, async () => {
        const repository = new RequestRepository(TEST_AUTH_TABLE);
        const email = `db.only.${dialect}@example.org`;
        const first = await repository.insertRequest(t.db, openRecord(email, 'pending'));
        await assert.rejects(repository.insertRequest(t.db, openRecord(email, 'unverified')), (error) => isUniqueViolation(error));
        await repository.insertRequest(t.db, openRecord(email, 'denied'));
        await services.lifecycle.markDuplicate(first, {}, staffActor);
        const second = await repository.insertRequest(t.db, openRecord(email, 'unverified'));
        assert.ok(second > first);
      });

      it('50 parallel submissions for 10 addresses from the form and the API end as one request each, never a 409', { skip }, async () => {
        const emails = Array.from({ length: 10 }, (_, i) => `burst${i}.${dialect}.${process.pid}@example.org`);
        // Each address: three forms and two API calls, one of them sent twice with one idempotency key.
        const sessions: Array<{ session: FormSession; fields: FormFields }> = [];
        for (const [i, email] of emails.entries()) {
          for (let n = 0; n < 3; n++) {
            const session = new FormSession(app);
            await session.open();
            sessions.push({ session, fields: validFields({ email, emailConfirm: email, 'children[0][firstName]': `Kid${letter(i)}${letter(n)}` }) });
          }
        }
        const api = (email: string, child: string, key: string) =>
          request(app)
            .post('/api/v1/requests')
            .set('Authorization', `Bearer ${apiKey}`)
            .set('Idempotency-Key', key)
            .send({
              title: 'Mr', firstName: 'Kwame', lastName: 'Mensah', email, requestType: 'new_account', privacyAccepted: true,
              children: [{ firstName: child, lastName: 'Mensah', tutorGroup: '10R' }],
            });
        const results = await Promise.all([
          ...sessions.map(({ session, fields }) => session.post('/request', fields).then((res) => ({ via: 'form', email: fields.email!, status: res.status, body: res.body as Record<string, unknown>, text: res.text }))),
          ...emails.flatMap((email, i) => [
            api(email, `Api${letter(i)}`, `burst-${dialect}-${i}`),
            api(email, `Api${letter(i)}`, `burst-${dialect}-${i}`),
          ].map((req) => req.then((res) => ({ via: 'api', email, status: res.status, body: res.body as Record<string, unknown>, text: res.text })))),
        ]);
        assert.equal(results.length, 50);
        const refused = results.filter((r) => (r.via === 'form' ? r.status !== 200 : r.status !== 200 && r.status !== 201));
        assert.deepEqual(refused.map((r) => `${r.via} ${r.status}`), [], 'every submission was answered as accepted');

        for (const email of emails) {
          const rows = (await t.db('requests').where({ email })) as Array<{ id: number; public_id: string; status: string; open_email: string | null }>;
          assert.equal(rows.length, 1, `one request for ${email}`);
          assert.equal(rows[0]!.status, 'unverified');
          assert.equal(rows[0]!.open_email, email);
          const apiAnswers = results.filter((r) => r.via === 'api' && r.email === email);
          assert.ok(apiAnswers.every((r) => r.body.id === rows[0]!.public_id), 'every API answer names that request');
          // One submission made the request; the other four (bar one replay) are held for it.
          const held = Number((await t.db('request_held_details').where({ request_id: rows[0]!.id }).count({ n: '*' }).first())?.n);
          assert.equal(held, 3, `held details for ${email}`);
        }
        for (const r of results) {
          if (r.via === 'form') {
            assert.equal(r.status, 200, `form for ${r.email}: ${r.text.slice(0, 300)}`);
            assert.match(r.text, /We have received your request/);
          } else {
            assert.ok(r.status === 200 || r.status === 201, `API for ${r.email}: ${r.status} ${r.text}`);
            assert.ok(['created', 'extended', 'replayed'].includes(String(r.body.outcome)), String(r.body.outcome));
          }
        }
      });
    });
  });
}

describe('the open_email migration keeps the newest open request per address and tells staff about the rest', async () => {
  for (const dialect of DIALECTS) {
    const skip = await skipReason(dialect);
    it(`on ${dialect}`, { skip }, async () => {
      const t = await createTestDatabase(dialect);
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const migration = require('../../migrations/20261201110000_add_requests_open_email') as { up(knex: unknown): Promise<void>; down(knex: unknown): Promise<void> };
        await migration.down(t.db);
        const now = Date.now();
        const base = { request_type: 'new_account', parent_first_name: 'A', parent_last_name: 'B', created_at: now, updated_at: now };
        const insert = async (email: string, status: string) => Number((await t.db('requests').insert({ ...base, public_id: newPublicId(), email, status }))[0]);
        const olderOpen = await insert('twice@example.org', 'pending');
        const closed = await insert('twice@example.org', 'denied');
        const newerOpen = await insert('twice@example.org', 'unverified');
        const single = await insert('once@example.org', 'pending');
        await migration.up(t.db);

        const byId = new Map(((await t.db('requests').select('id', 'open_email')) as Array<{ id: number; open_email: string | null }>).map((r) => [Number(r.id), r.open_email]));
        assert.equal(byId.get(newerOpen), 'twice@example.org');
        assert.equal(byId.get(olderOpen), null);
        assert.equal(byId.get(closed), null);
        assert.equal(byId.get(single), 'once@example.org');
        const notes = (await t.db('audit_events').where({ action: 'open_request_duplicate' })) as Array<{ request_id: number; details: string }>;
        assert.deepEqual(notes.map((n) => [Number(n.request_id), JSON.parse(n.details)]), [[olderOpen, { duplicateOf: newerOpen }]]);
        await assert.rejects(t.db('requests').insert({ ...base, public_id: newPublicId(), email: 'once@example.org', status: 'pending', open_email: 'once@example.org' }), (error) => isUniqueViolation(error));
      } finally {
        await t.destroy();
      }
    });
  }
});
