// The form's rate limits against real databases, from a parent's side: the per-email limit
// counts only submissions not confirmed yet, the default per-address limit lets a parents'
// evening on one school network through, and the limited page keeps what was typed and says
// when to send it again.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { RATE_LIMITS_TABLE, storedKey } from '../../src/web/rate-limit';
import { confirmEmail, FormSession, htmlText, validFields } from '../support/http';

function config(extra: Record<string, string> = {}) {
  return parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, TRUST_PROXY: 'true', ...extra });
}

for (const dialect of DIALECTS) {
  describe(`form rate limits on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    const opened: Services[] = [];
    const tokens = new Map<string, string>();
    let network = 0;

    before(async () => {
      if (!skip) t = await createTestDatabase(dialect);
    });
    after(async () => {
      if (skip) return;
      for (const services of opened) await services.close();
      await t.destroy();
    });

    function app(extra: Record<string, string> = {}) {
      const services = createServices(config(extra), { db: t.db });
      services.lifecycle.addListener(async (_trx, event) => {
        const token = event.details.verificationToken;
        if (typeof token === 'string') tokens.set(event.request.email, token);
      });
      opened.push(services);
      return createApp(services);
    }

    /** A client address of its own for each test, so the tests' counts do not mix. */
    function newNetwork(): string {
      network += 1;
      return `203.0.113.${network}`;
    }

    it('the per-email limit counts unconfirmed submissions only: a confirmed parent may send the form again', { skip }, async () => {
      const limited = app({ FORM_RATE_LIMIT_PER_EMAIL: '1' });
      const fields = validFields();
      const first = new FormSession(limited, { forwardedFor: newNetwork() });
      await first.open();
      await first.post('/request', fields).expect(200);
      await confirmEmail(limited, tokens.get(fields.email!)!);

      // Back the next week for a child who has just joined the school.
      const again = new FormSession(limited, { forwardedFor: newNetwork() });
      await again.open();
      await again.post('/request', { ...fields, 'children[0][firstName]': 'Cara', 'children[0][tutorGroup]': '7C' }).expect(200);

      // An address nobody confirmed is still limited.
      const unconfirmed = validFields();
      const session = new FormSession(limited, { forwardedFor: newNetwork() });
      await session.open();
      await session.post('/request', unconfirmed).expect(200);
      const refused = await session.post('/request', unconfirmed).expect(429);
      assert.match(htmlText(refused.text), /not been confirmed yet/);
      assert.match(htmlText(refused.text), /confirm your address with the link in it/);
    });

    it("the default per-address limit lets a parents' evening on one school network through", { skip }, async () => {
      const evening = app();
      const schoolWifi = newNetwork();
      const parents = 40;
      for (let i = 0; i < parents; i++) {
        const session = new FormSession(evening, { forwardedFor: schoolWifi });
        await session.open();
        const res = await session.post('/request', validFields());
        assert.equal(res.status, 200, `parent ${i + 1} of ${parents} on the school Wi-Fi was not refused`);
      }
    });

    it('the limited page keeps everything the parent typed and says when to send it again', { skip }, async () => {
      const limited = app({ FORM_RATE_LIMIT_PER_IP: '1' });
      const shared = newNetwork();
      const someoneElse = new FormSession(limited, { forwardedFor: shared });
      await someoneElse.open();
      await someoneElse.post('/request', validFields()).expect(200);

      const session = new FormSession(limited, { forwardedFor: shared });
      await session.open();
      const fields = validFields({ firstName: 'Gráinne', lastName: 'Ní Bhriain', comment: 'Twins, both in year 7', 'children[0][firstName]': 'Aoife', 'children[1][firstName]': 'Órla' });
      const res = await session.post('/request', fields).expect(429);
      const retryAfter = Number(res.headers['retry-after']);
      assert.ok(retryAfter > 0);
      const text = htmlText(res.text);
      assert.equal(text.match(/<h1\b/g)?.length, 1, 'one h1');
      assert.match(text, /Your request has not been sent yet/);
      assert.match(text, /sent many times from your network/);
      // When: a clock time and the wait, both from the same Retry-After the browser gets.
      const minutes = Math.ceil(retryAfter / 60);
      const wait = minutes === 1 ? 'about a minute' : minutes < 60 ? `about ${minutes} minutes` : `about ${Math.round(minutes / 60) === 1 ? 'an hour' : `${Math.round(minutes / 60)} hours`}`;
      assert.match(text, new RegExp(`send the form again <strong>after \\d{2}:\\d{2}( on [^<]+)? \\(in ${wait}\\)</strong>`));
      // What was typed is all there, ready to send again.
      for (const [name, value] of Object.entries(fields)) {
        if (['privacyAccepted', 'website', 'action', 'requestType'].includes(name) || value === '') continue;
        if (name === 'comment') assert.ok(text.includes(`>${value}</textarea>`), 'the comment is kept');
        else assert.ok(text.includes(`name="${name}" value="${value}"`), `${name} is kept`);
      }
      assert.match(res.text, /id="privacyAccepted" name="privacyAccepted" value="yes" checked/);
      assert.match(res.text, /name="requestType" value="new_account"[^>]* checked>/);
      assert.match(res.text, /name="_csrf" value="[^"]+"/);
      assert.equal((await t.db('requests').where({ email: fields.email })).length, 0, 'nothing stored');
    });

    it('a submission is one transaction: both counters commit with the request, and a submission that is not stored counts nothing', { skip }, async () => {
      const services = createServices(config(), { db: t.db });
      opened.push(services);
      const failFor = new Set<string>();
      services.lifecycle.addListener(async (_trx, event) => {
        if (event.type === 'submitted' && failFor.has(event.request.email)) throw new Error('the outbox could not be written');
      });
      const form = createApp(services);
      const address = newNetwork();
      const counter = async (prefix: string, key: string) =>
        (await t.db(RATE_LIMITS_TABLE).where({ key: `${prefix}:${storedKey(key)}` }).first()) as { points: number | string } | undefined;

      const session = new FormSession(form, { forwardedFor: address });
      await session.open();
      const statements: Array<{ sql: string; tx: string | undefined }> = [];
      const record = (q: { sql: string; __knexTxId?: string }) => statements.push({ sql: q.sql, tx: q.__knexTxId });
      t.db.on('query', record);
      const fields = validFields();
      try {
        await session.post('/request', fields).expect(200);
      } finally {
        t.db.off('query', record);
      }
      const transactions = new Set(statements.map((q) => q.tx));
      assert.equal(transactions.size, 1, `every statement of the submission in one transaction: ${statements.map((q) => `${q.tx ?? 'none'} ${q.sql.slice(0, 40)}`).join('; ')}`);
      assert.notEqual([...transactions][0], undefined);
      assert.ok(statements.some((q) => /rate_limits/.test(q.sql)), 'the counters are counted in it');
      assert.ok(statements.some((q) => /insert into [`"]requests[`"]/i.test(q.sql)), 'the request is stored in it');
      assert.equal(Number((await counter('form_ip', address))?.points), 1);
      assert.equal(Number((await counter('form_email', fields.email!))?.points), 1);

      // Storing fails after the counts were made: they roll back with it.
      const failing = validFields();
      failFor.add(failing.email!);
      const broken = await session.post('/request', failing);
      assert.equal(broken.status, 500);
      assert.equal((await t.db('requests').where({ email: failing.email })).length, 0, 'nothing stored');
      assert.equal(await counter('form_email', failing.email!), undefined, 'the address was not counted');
      assert.equal(Number((await counter('form_ip', address))?.points), 1, 'the network was not counted again');
    });
  });
}
