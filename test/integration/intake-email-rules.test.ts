// The email rules over HTTP against real databases: the form and the intake API refuse, at
// submission, an address that could never become a Moodle username, in plain words, keeping
// what was typed and storing nothing; A to Z are lower-cased, nothing else is rewritten.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createApiKey } from '../../src/intake/api-keys';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { FormSession, htmlText, validFields } from '../support/http';

for (const dialect of DIALECTS) {
  describe(`email rules at submission on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: Express;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(
        parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, FORM_RATE_LIMIT_PER_IP: '1000', FORM_RATE_LIMIT_PER_EMAIL: '1000' }),
        { db: t.db },
      );
      app = createApp(services);
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await t.destroy();
    });

    const count = async () => Number(((await t.db('requests').count({ n: '*' }).first()) as { n: number | string }).n);

    it('the form refuses an address Moodle cannot use as a username, says why, keeps it, stores nothing', { skip }, async () => {
      for (const email of [`jane+school.${process.pid}@example.org`, `İnci.${process.pid}@example.org`]) {
        const before = await count();
        const session = new FormSession(app);
        await session.open();
        const res = await session.post('/request', validFields({ email, emailConfirm: email })).expect(400);
        const text = htmlText(res.text);
        assert.match(text, /Your email address cannot be used as a Moodle username because it contains/);
        assert.ok(text.includes(`value="${email}"`), 'what the parent typed is kept as typed');
        assert.equal(await count(), before, 'nothing stored');
      }
    });

    it('the form stores an address with capitals lower-cased, and nothing else changed', { skip }, async () => {
      const email = `Jane.DOE_${process.pid}@Example.ORG`;
      const session = new FormSession(app);
      await session.open();
      await session.post('/request', validFields({ email, emailConfirm: email.toLowerCase() })).expect(200);
      const row = await t.db('requests').where({ email: email.toLowerCase() }).first();
      assert.ok(row, 'stored lower-cased');
    });

    it('the API refuses the same addresses with 400 on the email field', { skip }, async () => {
      const { key } = await createApiKey(t.db, `email-rules-${dialect}`);
      const before = await count();
      for (const email of [`\u212Aate.${process.pid}@example.org`, `${'a'.repeat(95)}@example.org`]) {
        const res = await request(app)
          .post('/api/v1/requests')
          .set('Authorization', `Bearer ${key}`)
          .send({ firstName: 'Ann', lastName: 'Smith', email, requestType: 'new_account', children: [{ firstName: 'Bea', lastName: 'Smith', tutorGroup: '7B' }], privacyAccepted: true })
          .expect(400);
        const field = (res.body.error.fields as Array<{ field: string; message: string }>).find((f) => f.field === 'email');
        assert.match(field?.message ?? '', /Moodle username/);
      }
      assert.equal(await count(), before);
    });
  });
}
