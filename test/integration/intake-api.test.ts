// The intake API (POST /api/v1/requests) and its keys, against real databases: key checks,
// content type, field errors, size limit, idempotent retries, per-email limits, the CLI.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { runApiKeyCommand } from '../../src/intake/api-key-commands';
import { createApiKey, listApiKeys, revokeApiKey, verifyApiKey } from '../../src/intake/api-keys';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';

let sequence = 0;
function body(overrides: Record<string, unknown> = {}) {
  sequence += 1;
  return {
    title: 'Mr',
    firstName: 'Kwame',
    lastName: 'Mensah',
    email: `api.parent${sequence}.${process.pid}@example.org`,
    requestType: 'child_not_linked',
    comment: 'Sent from the school website',
    children: [{ firstName: 'Ama', lastName: 'Mensah', tutorGroup: '10R', pupilIdentifier: 'ADM2002' }],
    privacyAccepted: true,
    ...overrides,
  };
}

for (const dialect of DIALECTS) {
  describe(`intake API on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: Express;
    let key: string;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(
        parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, BASE_URL: 'https://parents.example-school.org', FORM_RATE_LIMIT_PER_EMAIL: '3', MAX_CHILDREN: '2' }),
        { db: t.db },
      );
      app = createApp(services);
      key = (await createApiKey(t.db, 'wordpress')).key;
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await t.destroy();
    });

    const post = (payload: unknown, headers: Record<string, string> = {}) => {
      let req = request(app).post('/api/v1/requests');
      for (const [name, value] of Object.entries({ Authorization: `Bearer ${key}`, ...headers })) req = req.set(name, value);
      return req.send(payload as object);
    };
    const count = async () => Number(((await t.db('requests').count({ n: '*' }).first()) as { n: number | string }).n);

    it('creates a request: 201 with the public id, status and status link', { skip }, async () => {
      const payload = body();
      const res = await post(payload).expect(201).expect('content-type', /json/);
      assert.match(res.body.id, /^[A-Za-z0-9_-]{22}$/);
      assert.equal(res.body.status, 'unverified');
      assert.equal(res.body.statusUrl, `https://parents.example-school.org/request/status/${res.body.id}`);
      const row = await t.db('requests').where({ public_id: res.body.id }).first();
      assert.equal(row.source, 'api');
      assert.equal(row.email, payload.email);
      assert.equal(row.request_type, 'child_not_linked');
      const audit = await t.db('audit_events').where({ request_id: row.id, action: 'submitted' }).first();
      assert.equal(audit.actor_type, 'api');
      assert.equal(audit.actor_id, 'wordpress');
    });

    it('accepts the key in X-Api-Key too', { skip }, async () => {
      await request(app).post('/api/v1/requests').set('X-Api-Key', key).send(body()).expect(201);
    });

    it('refuses without a key, with a wrong key and with a revoked key: 401, nothing stored', { skip }, async () => {
      const before = await count();
      const none = await request(app).post('/api/v1/requests').send(body()).expect(401);
      assert.equal(none.body.error.code, 'unauthorized');
      assert.equal(none.headers['www-authenticate'], 'Bearer');
      const wrong = `${key.slice(0, -3)}${key.endsWith('AAA') ? 'BBB' : 'AAA'}`;
      await post(body(), { Authorization: `Bearer ${wrong}` }).expect(401);
      await post(body(), { Authorization: 'Bearer not-a-key' }).expect(401);
      const revoked = await createApiKey(t.db, 'old site');
      await post(body(), { Authorization: `Bearer ${revoked.key}` }).expect(201);
      assert.equal(await revokeApiKey(t.db, revoked.apiKey.id), true);
      await post(body(), { Authorization: `Bearer ${revoked.key}` }).expect(401);
      assert.equal(await count(), before + 1);
    });

    it('refuses anything but JSON with 415', { skip }, async () => {
      const res = await request(app).post('/api/v1/requests').set('Authorization', `Bearer ${key}`).type('form').send('firstName=A').expect(415);
      assert.equal(res.body.error.code, 'unsupported_media_type');
    });

    it('answers 400 with every field problem, and stores nothing', { skip }, async () => {
      const before = await count();
      const res = await post(
        body({
          firstName: '',
          email: 'not-an-email',
          requestType: 'other',
          privacyAccepted: false,
          children: [{ firstName: 'Ama', lastName: 'Mensah<', tutorGroup: '' }],
        }),
      ).expect(400);
      assert.equal(res.body.error.code, 'invalid');
      assert.deepEqual(
        Object.fromEntries(res.body.error.fields.map((f: { field: string; message: string }) => [f.field, f.message])),
        {
          firstName: 'Enter your first name',
          email: 'Enter an email address in the correct format, like name@example.com',
          requestType: 'Choose what you need help with',
          privacyAccepted: 'Confirm that you have read the privacy notice',
          'children[0].lastName': 'The last name of child 1 can only contain letters, spaces, hyphens, apostrophes and full stops',
          'children[0].tutorGroup': 'Enter the tutor group of child 1, for example 7B',
        },
      );
      const tooMany = await post(body({ children: [1, 2, 3].map(() => ({ firstName: 'A', lastName: 'B', tutorGroup: '7' })) })).expect(400);
      assert.equal(tooMany.body.error.fields[0].field, 'children');
      await post(body({ children: [] })).expect(400);
      await request(app).post('/api/v1/requests').set('Authorization', `Bearer ${key}`).type('json').send('{"broken":').expect(400);
      assert.equal(await count(), before);
    });

    it('refuses a body over 20 kB with 413', { skip }, async () => {
      const res = await post(body({ comment: 'x'.repeat(25_000) })).expect(413);
      assert.equal(res.body.error.code, 'too_large');
    });

    it('replays a retry with the same Idempotency-Key: 201 then 200, one request', { skip }, async () => {
      const payload = body();
      const first = await post(payload, { 'Idempotency-Key': 'wpforms-entry-4711' }).expect(201);
      const again = await post(payload, { 'Idempotency-Key': 'wpforms-entry-4711' }).expect(200);
      assert.equal(again.body.id, first.body.id);
      assert.equal(again.body.outcome, 'replayed');
      const rows = await t.db('requests').where({ email: payload.email });
      assert.equal(rows.length, 1);
      assert.equal((await t.db('request_children').where({ request_id: rows[0].id })).length, 1, 'no children added twice');
      await post(body(), { 'Idempotency-Key': 'x'.repeat(101) }).expect(400);
    });

    it('an Idempotency-Key belongs to the API key that sent it: from another key it is a new request', { skip }, async () => {
      const otherKey = (await createApiKey(t.db, 'other-website')).key;
      const mine = body();
      const first = await post(mine, { 'Idempotency-Key': 'entry-1' }).expect(201);
      const theirs = body();
      const second = await post(theirs, { 'Idempotency-Key': 'entry-1', Authorization: `Bearer ${otherKey}` }).expect(201);
      assert.equal(second.body.outcome, 'created');
      assert.notEqual(second.body.id, first.body.id);
      assert.equal(JSON.stringify(second.body).includes(first.body.id), false, "nothing of the other key's request");
      assert.equal((await t.db('requests').where({ email: theirs.email })).length, 1, 'stored');
      // Each key still replays its own call.
      assert.equal((await post(theirs, { 'Idempotency-Key': 'entry-1', Authorization: `Bearer ${otherKey}` }).expect(200)).body.id, second.body.id);
      assert.equal((await post(mine, { 'Idempotency-Key': 'entry-1' }).expect(200)).body.id, first.body.id);
    });

    it('refuses the same Idempotency-Key with a different body: 409, a plain message, nothing of the other request', { skip }, async () => {
      const original = body();
      const first = await post(original, { 'Idempotency-Key': 'wpforms-entry-9001' }).expect(201);
      const before = await count();
      const changed = body();
      const refused = await post(changed, { 'Idempotency-Key': 'wpforms-entry-9001' }).expect(409);
      assert.equal(refused.body.error.code, 'idempotency_key_reused');
      assert.match(refused.body.error.message, /already used with different details, so nothing was stored/);
      assert.equal(JSON.stringify(refused.body).includes(first.body.id), false, 'no id of the earlier request');
      assert.equal(/status|\/request\//.test(JSON.stringify(refused.body).replace(/"status":\d+/, '')), false, 'no status or link of the earlier request');
      assert.equal(await count(), before, 'nothing stored');
      assert.equal((await t.db('requests').where({ email: changed.email })).length, 0);
      // Key order does not make a body different; the original still replays.
      const reordered = Object.fromEntries(Object.entries(original).reverse());
      const again = await post(reordered, { 'Idempotency-Key': 'wpforms-entry-9001' }).expect(200);
      assert.equal(again.body.id, first.body.id);
    });

    it('joins an open request for the same email (200, extended) and limits per email (429)', { skip }, async () => {
      const payload = body();
      const first = await post(payload).expect(201);
      const second = await post({ ...payload, children: [{ firstName: 'Kofi', lastName: 'Mensah', tutorGroup: '7A' }] }).expect(200);
      assert.equal(second.body.outcome, 'extended');
      assert.equal(second.body.id, first.body.id);
      await post(payload).expect(200);
      const limited = await post(payload).expect(429);
      assert.equal(limited.body.error.code, 'rate_limited');
      assert.ok(Number(limited.headers['retry-after']) > 0);
      assert.equal((await t.db('requests').where({ email: payload.email })).length, 1);
    });

    it('keeps only a hash of each key; lists and revokes them', { skip }, async () => {
      const created = await createApiKey(t.db, 'listing test');
      assert.match(created.key, /^mpp_[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]{43}$/);
      const row = await t.db('api_keys').where({ id: created.apiKey.id }).first();
      assert.equal(row.key_prefix, created.key.split('.')[0]);
      assert.notEqual(row.key_hash, created.key);
      assert.equal(JSON.stringify(row).includes(created.key.split('.')[1]!), false, 'the secret part is not stored');
      const listed = (await listApiKeys(t.db)).find((k) => k.id === created.apiKey.id);
      assert.ok(listed && !('keyHash' in listed));
      assert.ok(await verifyApiKey(t.db, created.key));
      assert.equal((await listApiKeys(t.db)).find((k) => k.id === created.apiKey.id)?.lastUsedAt !== null, true);
      assert.equal(await revokeApiKey(t.db, created.apiKey.id), true);
      assert.equal(await revokeApiKey(t.db, created.apiKey.id), false, 'already revoked');
      assert.equal(await verifyApiKey(t.db, created.key), undefined);
    });

    it('api-keys commands: create prints the key once, list hides it, revoke stops it', { skip }, async () => {
      const out: string[] = [];
      const err: string[] = [];
      const io = { out: (s: string) => out.push(s), err: (s: string) => err.push(s) };
      assert.equal(await runApiKeyCommand(services, ['create', 'school', 'website'], io), 0);
      const raw = /(mpp_\S+)/.exec(out.join('\n'))?.[1];
      assert.ok(raw && (await verifyApiKey(t.db, raw)));
      const id = /Created API key (\d+) "school website"/.exec(out.join('\n'))?.[1];
      assert.ok(id);
      out.length = 0;
      assert.equal(await runApiKeyCommand(services, ['list'], io), 0);
      assert.match(out.join('\n'), /school website/);
      assert.equal(out.join('\n').includes(raw), false, 'list never shows a key');
      assert.equal(await runApiKeyCommand(services, ['revoke', id], io), 0);
      assert.equal(await verifyApiKey(t.db, raw), undefined);
      assert.equal(await runApiKeyCommand(services, ['revoke', id], io), 1);
      assert.equal(await runApiKeyCommand(services, ['revoke', 'abc'], io), 2);
      assert.equal(await runApiKeyCommand(services, ['create'], io), 2);
      assert.equal(await runApiKeyCommand(services, ['frobnicate'], io), 2);
    });
  });
}
