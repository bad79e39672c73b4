// Email confirmation against real databases: opening the emailed link (as mail scanners and
// link previews do) never confirms; the parent presses one button, protected by a CSRF token;
// a link already used says so and leads to the status page.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { FormSession, validFields } from '../support/http';

for (const dialect of DIALECTS) {
  describe(`email confirmation on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: Express;
    const tokens = new Map<string, string>();

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(
        parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SCHOOL_NAME: 'Hillside School', FORM_RATE_LIMIT_PER_IP: '1000', FORM_RATE_LIMIT_PER_EMAIL: '1000' }),
        { db: t.db },
      );
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

    /** Sends the form; answers the stored request's public id and its confirmation token. */
    async function newRequest(): Promise<{ publicId: string; token: string; status: () => Promise<string> }> {
      const fields = validFields();
      const session = new FormSession(app);
      await session.open();
      await session.post('/request', fields).expect(200);
      const row = (await t.db('requests').where({ email: fields.email }).first()) as { id: number; public_id: string };
      return {
        publicId: row.public_id,
        token: tokens.get(row.public_id)!,
        status: async () => String(((await t.db('requests').where({ id: row.id }).first()) as { status: string }).status),
      };
    }

    it('opening the link (GET or HEAD) never confirms: it shows one "Confirm my email address" button that POSTs', { skip }, async () => {
      const r = await newRequest();
      const page = await request(app).get(`/request/verify/${r.token}`).expect(200);
      await request(app).get(`/request/verify/${r.token}`).expect(200);
      await request(app).head(`/request/verify/${r.token}`).expect(200);
      assert.equal(await r.status(), 'unverified', 'a scanner fetching the link confirmed nothing');

      assert.equal(page.text.match(/<h1\b/g)?.length, 1, 'one h1');
      assert.match(page.text, /<h1>Confirm your email address<\/h1>/);
      const forms = [...page.text.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/g)];
      assert.equal(forms.length, 1, 'one form');
      const [, attributes, inner] = forms[0]!;
      assert.match(attributes!, /method="post"/);
      assert.match(attributes!, new RegExp(`action="/request/verify/${r.token}"`));
      assert.match(inner!, /<input type="hidden" name="_csrf" value="[^"]+">/);
      const buttons = [...inner!.matchAll(/<button\b[^>]*>([^<]*)<\/button>/g)].map((m) => m[1]);
      assert.deepEqual(buttons, ['Confirm my email address']);
      assert.equal(/<script\b[^>]*>[^<]/.test(page.text), false, 'works without JavaScript: no inline script');
      assert.equal(page.headers['cache-control'], 'no-store');
      assert.equal(page.headers['referrer-policy'], 'no-referrer');
    });

    it('the button confirms; the link used again shows "already confirmed" with the status page, not a 404', { skip }, async () => {
      const r = await newRequest();
      const session = new FormSession(app);
      await session.open(`/request/verify/${r.token}`);
      const confirmed = await session.post(`/request/verify/${r.token}`, {}).expect(200);
      assert.match(confirmed.text, /Thank you, your email address is confirmed/);
      assert.equal(await r.status(), 'pending');

      for (const again of [await request(app).get(`/request/verify/${r.token}`), await session.post(`/request/verify/${r.token}`, {})]) {
        assert.equal(again.status, 200);
        assert.equal(again.text.match(/<h1\b/g)?.length, 1, 'one h1');
        assert.match(again.text, /<h1>Your email address is already confirmed<\/h1>/);
        assert.ok(again.text.includes(`href="/request/status/${r.publicId}"`), 'the way to the status page');
        assert.equal(again.headers['cache-control'], 'no-store');
      }
      assert.equal(await r.status(), 'pending');
    });

    it('the button needs its CSRF token: without it nothing is confirmed, and the page leads back', { skip }, async () => {
      const r = await newRequest();
      const session = new FormSession(app);
      await session.open(`/request/verify/${r.token}`);
      const refused = await session.post(`/request/verify/${r.token}`, {}, { csrf: false }).expect(403);
      assert.match(refused.text, /your email address is not confirmed yet/);
      assert.ok(refused.text.includes(`href="/request/verify/${r.token}"`), 'back to the confirmation page');
      // A token from another browser (say, a page an attacker opened) does not work either.
      const other = new FormSession(app);
      other.csrfToken = session.csrfToken;
      await other.post(`/request/verify/${r.token}`, {}).expect(403);
      assert.equal(await r.status(), 'unverified');
    });

    it('an unknown link and a closed request get their own pages from the button too', { skip }, async () => {
      const session = new FormSession(app);
      await session.open();
      const unknown = await session.post(`/request/verify/${'x'.repeat(43)}`, {}).expect(404);
      assert.match(unknown.text, /This confirmation link is not valid/);

      const r = await newRequest();
      const page = new FormSession(app);
      await page.open(`/request/verify/${r.token}`);
      // The school closes the request while the page is open.
      const row = (await t.db('requests').where({ public_id: r.publicId }).first()) as { id: number };
      await services.lifecycle.markBogus(row.id, {}, { type: 'staff', id: 'office' });
      const closed = await page.post(`/request/verify/${r.token}`, {}).expect(409);
      assert.match(closed.text, /already closed this request/);
      assert.equal(await r.status(), 'bogus');
      await request(app).get(`/request/verify/${r.token}`).expect(409);
    });
  });
}
