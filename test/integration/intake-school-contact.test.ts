// The school can be reached: SCHOOL_CONTACT_EMAIL and SCHOOL_CONTACT_PHONE on the parents'
// pages when set (and not when not), and the request number to quote on the pages shown once the
// address is confirmed, on the status page and in every email to a parent. The thank-you page
// stays the same for a new and an existing request: it shows neither number nor link.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import type { MailKind, MailMessage } from '../../src/mail/mail-messages';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { confirmEmail, FormSession, validFields } from '../support/http';

const CONTACT_EMAIL = 'office@hillside.example.org';
const CONTACT_PHONE = '+44 1632 960123';
const staffActor = { type: 'staff' as const, id: 'office.admin' };

function testConfig(extra: Record<string, string> = {}) {
  return parseConfig({
    NODE_ENV: 'test',
    AUTH_TABLE: TEST_AUTH_TABLE,
    SCHOOL_NAME: 'Hillside School',
    FORM_RATE_LIMIT_PER_IP: '10000',
    FORM_RATE_LIMIT_PER_EMAIL: '10000',
    ...extra,
  });
}

const WITH_CONTACT = { SCHOOL_CONTACT_EMAIL: CONTACT_EMAIL, SCHOOL_CONTACT_PHONE: CONTACT_PHONE };

/** A site on the test database, keeping the raw links the mailer gets with each event. */
function site(db: TestDatabase['db'], env: Record<string, string>) {
  const services = createServices(testConfig(env), { db });
  const verificationTokens = new Map<string, string>();
  const heldTokens = new Map<string, string>();
  services.lifecycle.addListener(async (_trx, event) => {
    const token = event.details.verificationToken;
    if (typeof token === 'string') verificationTokens.set(event.request.email, token);
    const held = event.details.heldDetailsToken;
    if (typeof held === 'string') heldTokens.set(event.request.email, held);
  });
  return { services, app: createApp(services), verificationTokens, heldTokens };
}

function assertContactShown(html: string, where: string) {
  assert.ok(html.includes(`href="mailto:${CONTACT_EMAIL}"`), `${where}: the office's email address, as a link`);
  assert.ok(html.includes('href="tel:+441632960123"'), `${where}: the office's telephone number, as a link`);
  assert.ok(html.includes(CONTACT_PHONE), `${where}: the number as the school wrote it`);
}

function assertNoContact(html: string, where: string) {
  assert.equal(html.includes('mailto:'), false, `${where}: no email address when none is set`);
  assert.equal(html.includes('tel:'), false, `${where}: no telephone number when none is set`);
  assert.match(html, /Contact the school office\./, `${where}: still says whom to contact`);
}

for (const dialect of DIALECTS) {
  describe(`the school office's contact details and the request number on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let contact: ReturnType<typeof site>;
    let plain: ReturnType<typeof site>;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      contact = site(t.db, WITH_CONTACT);
      plain = site(t.db, {});
    });
    after(async () => {
      if (skip) return;
      await contact.services.close();
      await plain.services.close();
      await t.destroy();
    });

    async function requestRow(email: string) {
      const row = (await t.db('requests').where({ email }).first()) as { id: number; public_id: string } | undefined;
      assert.ok(row, `a request for ${email}`);
      return { id: Number(row.id), publicId: String(row.public_id) };
    }

    /** Sends the form; answers the thank-you page. */
    async function send(app: Express, fields: Record<string, string>) {
      const session = new FormSession(app);
      await session.open();
      return session.post('/request', fields).expect(200);
    }

    it('shown when set: thank-you, confirmation, used link, status page and a link that does not work', { skip }, async () => {
      const fields = validFields();
      const thanks = await send(contact.app, fields);
      assertContactShown(thanks.text, 'thank-you page');
      const { id, publicId } = await requestRow(fields.email as string);
      const token = contact.verificationTokens.get(fields.email as string) as string;

      const verified = await confirmEmail(contact.app, token);
      assertContactShown(verified.text, 'confirmed page');
      assert.match(verified.text, new RegExp(`Your request number is <strong class="request-number">${id}</strong>`));
      assert.ok(verified.text.includes(`href="/request/status/${publicId}"`), 'the confirmed page links to the status page');

      const used = await request(contact.app).get(`/request/verify/${token}`).expect(200);
      assertContactShown(used.text, 'used link page');
      assert.match(used.text, new RegExp(`Your request number is <strong class="request-number">${id}</strong>`));

      const status = await request(contact.app).get(`/request/status/${publicId}`).expect(200);
      assertContactShown(status.text, 'status page');
      assert.match(status.text, new RegExp(`Request number <strong class="request-number">${id}</strong>`));
      assert.match(status.text, new RegExp(`Please quote your request number: <strong class="request-number">${id}</strong>`));

      const broken = await request(contact.app).get(`/request/verify/${'x'.repeat(43)}`).expect(404);
      assertContactShown(broken.text, 'a link that does not work');
    });

    it('absent when not set, while the pages still say to contact the school office', { skip }, async () => {
      const fields = validFields();
      const thanks = await send(plain.app, fields);
      assertNoContact(thanks.text, 'thank-you page');
      const { publicId } = await requestRow(fields.email as string);
      const verified = await confirmEmail(plain.app, plain.verificationTokens.get(fields.email as string) as string);
      assertNoContact(verified.text, 'confirmed page');
      assertNoContact((await request(plain.app).get(`/request/status/${publicId}`).expect(200)).text, 'status page');
      assertNoContact((await request(plain.app).get('/request/no-such-page').expect(404)).text, 'page not found');
    });

    it('the thank-you page shows no request number or status link, and is the same for a new and an existing request', { skip }, async () => {
      const first = validFields();
      const newRequest = await send(contact.app, first);
      const { id, publicId } = await requestRow(first.email as string);
      const again = await send(contact.app, { ...validFields(), email: first.email as string, emailConfirm: first.email as string });
      const strip = (html: string) => html.replace(/name="_csrf" value="[^"]*"/g, '');
      assert.equal(strip(again.text), strip(newRequest.text), 'the same page either way');
      assert.equal(newRequest.text.includes(publicId), false, 'no link to the request');
      assert.doesNotMatch(newRequest.text, new RegExp(`request-number|number is <strong>${id}<`), 'no request number');
    });

    it('every email to a parent carries the request number and, when set, the office’s contact details', { skip }, async () => {
      // Through the real site: the mails the form, a second form, its link and a refusal queue.
      const fields = validFields();
      await send(contact.app, fields);
      const email = fields.email as string;
      const { id } = await requestRow(email);
      await send(contact.app, { ...validFields(), email, emailConfirm: email });
      const held = contact.heldTokens.get(email) as string;
      const session = new FormSession(contact.app);
      await session.open(`/request/details/${held}`);
      await session.post(`/request/details/${held}`, {}).expect(200);
      await contact.services.lifecycle.denyRequest(id, { reason: 'We could not find these children' }, staffActor);
      const queued = (await t.db('mail_outbox').where({ request_id: id }).orderBy('id').select('kind', 'payload')) as Array<{ kind: string; payload: string }>;
      assert.deepEqual(
        queued.map((row) => row.kind),
        ['verification', 'held_details', 'request_extended', 'denied'],
      );
      for (const row of queued) {
        const payload = JSON.parse(row.payload) as { text: string; html: string };
        assert.ok(payload.text.includes(`Your request number is ${id}.`), `${row.kind}: the number in the text`);
        assert.ok(payload.html.includes(`Your request number is <strong>${id}</strong>`), `${row.kind}: the number in the HTML`);
        assert.ok(payload.text.includes(`email ${CONTACT_EMAIL} or telephone ${CONTACT_PHONE}`), `${row.kind}: the contact in the text`);
        assert.ok(payload.html.includes(`href="mailto:${CONTACT_EMAIL}"`), `${row.kind}: the contact in the HTML`);
      }

      // And every kind of parent mail from the builder, with and without contact details: the
      // Record makes a new kind of parent mail fail to compile until it is listed here.
      const stored = await contact.services.lifecycle.get(id);
      const record = stored.request;
      const builders = (messages: Services['mailMessages']): Record<Exclude<MailKind, 'staff_new_request' | 'staff_cycle_summary' | 'staff_reconcile_summary'>, MailMessage> => ({
        verification: messages.verificationMessage(record, 'a'.repeat(43)),
        request_received: messages.requestReceivedMessage(record, stored.children),
        request_extended: messages.requestExtendedMessage(record, 1),
        held_details: messages.heldDetailsMessage(record, 'b'.repeat(43), Date.now() + 3_600_000, { children: 1, commentAdded: false }),
        denied: messages.deniedMessage(record),
        provisioned: messages.provisionedMessage(record, stored.children),
        revoked: messages.revokedMessage(record),
      });
      for (const [kind, message] of Object.entries(builders(contact.services.mailMessages))) {
        assert.ok(message.text.includes(`Your request number is ${id}. If you have a question, contact the school office: email ${CONTACT_EMAIL} or telephone ${CONTACT_PHONE}, and quote this number.`), `${kind} (text):\n${message.text}`);
        assert.ok(message.html.includes(`Your request number is <strong>${id}</strong>`), `${kind} (HTML)`);
      }
      for (const [kind, message] of Object.entries(builders(plain.services.mailMessages))) {
        assert.ok(message.text.includes(`Your request number is ${id}. If you have a question, contact the school office, and quote this number.`), `${kind} without contact (text):\n${message.text}`);
        assert.equal(message.html.includes('mailto:'), false, `${kind}: no address when none is set`);
      }
    });
  });
}

describe('SCHOOL_CONTACT_EMAIL and SCHOOL_CONTACT_PHONE', () => {
  it('are optional, and refused by name when they are not an address or a number', () => {
    const config = testConfig({ SCHOOL_CONTACT_EMAIL: ' office@example.org ', SCHOOL_CONTACT_PHONE: '01632 960123' });
    assert.deepEqual(config.schoolContact, { email: 'office@example.org', phone: '01632 960123' });
    assert.deepEqual(testConfig().schoolContact, { email: undefined, phone: undefined });
    assert.throws(() => testConfig({ SCHOOL_CONTACT_EMAIL: 'the office' }), /SCHOOL_CONTACT_EMAIL must be an email address/);
    assert.throws(() => testConfig({ SCHOOL_CONTACT_PHONE: 'call us' }), /SCHOOL_CONTACT_PHONE must be a telephone number/);
  });
});
