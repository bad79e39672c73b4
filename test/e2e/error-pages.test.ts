// What a person or an API client sees when something breaks: with no configuration at all (no
// NODE_ENV, as `npm start` runs) a database error gives a plain page or JSON answer with a
// reference to quote, and never the stack, the SQL or the driver's message; those go to the log,
// under the same reference. SHOW_ERROR_DETAILS=true is the one way to show them.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createApiKey } from '../../src/intake/api-keys';
import { createLogger } from '../../src/logger';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, StaffSession } from '../support/staff';

/** The insides of the service: a stack frame, SQL, a driver's or engine's words. */
const INTERNALS = /node_modules|\.ts:\d+|\bat [\w.<>]+ \(|select\s|from\s+[`"]?requests|no such table|ER_NO_SUCH_TABLE|doesn't exist|SqliteError|Knex|mysql|Technical detail|Error:/i;
const PUBLIC_ID = 'AbCdEfGhIjKlMnOpQrStUv';

function assertPlainPage(res: request.Response, where: string): string {
  assert.equal(res.status, 500, `${where}: ${res.status} ${res.text.slice(0, 300)}`);
  assert.match(String(res.headers['content-type']), /^text\/html/, where);
  assert.match(res.text, /Something went wrong on our side/, where);
  assert.doesNotMatch(res.text, INTERNALS, `${where}: shows internals`);
  const reference = /quote this reference: <code>([^<]+)<\/code>/.exec(res.text)?.[1];
  assert.ok(reference, `${where}: a reference to quote`);
  assert.equal(reference, res.headers['x-request-id'], `${where}: the reference is the request id`);
  return reference;
}

function assertPlainJson(res: request.Response, where: string): string {
  assert.equal(res.status, 500, `${where}: ${res.status} ${res.text.slice(0, 300)}`);
  assert.match(String(res.headers['content-type']), /application\/json/, where);
  assert.equal(res.body.error.code, 'internal', where);
  assert.doesNotMatch(res.text, INTERNALS, `${where}: shows internals`);
  assert.equal(res.body.error.detail, undefined, where);
  assert.equal(res.body.error.requestId, res.headers['x-request-id'], `${where}: the reference is the request id`);
  return res.body.error.requestId as string;
}

for (const dialect of DIALECTS) {
  describe(`error pages with no configuration, on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let dir: string;
    const logLines: string[] = [];
    let apiKey: string;

    function build(env: Record<string, string>): { services: Services; app: ReturnType<typeof createApp> } {
      // Only what `npm start` would have from an empty .env: no NODE_ENV, no SHOW_ERROR_DETAILS.
      const config = parseConfig({ AUTH_TABLE: TEST_AUTH_TABLE, CYCLE_SCHEDULE: 'off', ...env }, { cwd: dir });
      assert.equal(config.env, 'development');
      const logger = createLogger(
        config,
        new Writable({
          write(chunk, _encoding, done) {
            logLines.push(String(chunk));
            done();
          },
        }),
      );
      const services = createServices(config, { db: t.db, moodle: null, logger });
      return { services, app: createApp(services) };
    }

    let plain: ReturnType<typeof build>;
    let detailed: ReturnType<typeof build>;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-errors-'));
      apiKey = (await createApiKey(t.db, 'errors')).key;
      plain = build({});
      detailed = build({ SHOW_ERROR_DETAILS: 'true' });
      // The induced fault: the requests table is gone, so every query on it fails with its SQL.
      await t.db.schema.renameTable('requests', 'requests_moved_away');
    });
    after(async () => {
      if (skip) return;
      await t.db.schema.renameTable('requests_moved_away', 'requests');
      await plain.services.close();
      await detailed.services.close();
      await t.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('a database error on a page: a plain page with a reference, no SQL or stack; the log has both under that reference', { skip }, async () => {
      const res = await request(plain.app).get(`/request/status/${PUBLIC_ID}`);
      const reference = assertPlainPage(res, 'status page');
      const logged = logLines.filter((line) => line.includes(reference) && line.includes('"request failed"'));
      assert.equal(logged.length, 1, `one log line for ${reference}`);
      assert.match(logged[0] as string, /requests/, 'the log names what failed');
      assert.match(logged[0] as string, /"stack"/, 'the log has the stack');
    });

    it('a database error in the API: plain JSON with a reference, no SQL or stack', { skip }, async () => {
      const res = await request(plain.app)
        .post('/api/v1/requests')
        .set('Authorization', `Bearer ${apiKey}`)
        .send({ firstName: 'Pat', lastName: 'Broken', email: `broken.${process.pid}@example.org`, requestType: 'new_account', children: [{ firstName: 'Ann', lastName: 'Broken', tutorGroup: '7B' }], privacyAccepted: true });
      const reference = assertPlainJson(res, 'intake API');
      assert.ok(logLines.some((line) => line.includes(reference) && line.includes('"request failed"')), 'logged under its reference');
    });

    it('a page asked for as JSON answers plain JSON too', { skip }, async () => {
      assertPlainJson(await request(plain.app).get(`/request/status/${PUBLIC_ID}`).set('Accept', 'application/json'), 'status page as JSON');
    });

    it('SHOW_ERROR_DETAILS=true, and only that, shows the detail', { skip }, async () => {
      const page = await request(detailed.app).get(`/request/status/${PUBLIC_ID}`);
      assert.equal(page.status, 500);
      assert.match(page.text, /Technical detail/);
      assert.match(page.text, /requests/);
      const json = await request(detailed.app).get(`/request/status/${PUBLIC_ID}`).set('Accept', 'application/json');
      assert.match(String(json.body.error.detail), /requests/);
    });
  });
}

for (const dialect of DIALECTS) {
  describe(`a provisioning cycle that fails on a database error, on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let services: Services;
    let app: ReturnType<typeof createApp>;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      const config = parseConfig({
        NODE_ENV: 'test',
        AUTH_TABLE: TEST_AUTH_TABLE,
        MOODLE_URL: moodle.url,
        MOODLE_TOKEN: moodle.tokens.ws,
        MOODLE_PARENT_ROLE_ID: '9',
        MOODLE_RETRIES: '0',
        CYCLE_SCHEDULE: 'off',
      });
      services = createServices(config, { db: t.db });
      app = createApp(services);
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await moodle.close();
      await t.destroy();
    });

    it('its report and progress say it failed, in words, without the SQL', { skip }, async () => {
      const session = await StaffSession.signIn(app, await createStaffUser(services));
      await t.db.schema.renameTable('requests', 'requests_moved_away');
      let summary;
      try {
        summary = await services.cycle.run('manual', 'office');
      } finally {
        await t.db.schema.renameTable('requests_moved_away', 'requests');
      }
      assert.equal(summary.state, 'failed');
      assert.match(String(summary.error), /unexpected error/);
      const stored = (await t.db('provisioning_cycles').where({ id: summary.cycleId }).first()) as { error: string };
      for (const text of [String(summary.error), stored.error, (await session.get(`/admin/cycles/${summary.cycleId}`)).text]) {
        assert.match(text, /unexpected error/);
        assert.doesNotMatch(text, INTERNALS);
      }
      assert.doesNotMatch((await session.get(`/admin/cycles/${summary.cycleId}/progress`)).text, INTERNALS);
    });
  });
}

describe('error pages that cannot be rendered, and refusals from the body parsers', () => {
  let t: TestDatabase;
  let dir: string;
  let services: Services;
  let app: ReturnType<typeof createApp>;
  let apiKey: string;

  before(async () => {
    t = await createTestDatabase('sqlite');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-errors-'));
    const config = parseConfig({ AUTH_TABLE: TEST_AUTH_TABLE, CYCLE_SCHEDULE: 'off' }, { cwd: dir });
    services = createServices(config, { db: t.db, moodle: null, logger: createLogger({ env: 'test', logLevel: 'silent' }) });
    app = createApp(services);
    apiKey = (await createApiKey(t.db, 'parsers')).key;
  });
  after(async () => {
    await services.close();
    await t.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('when the error page itself fails to render, a bare page with the reference, not the template error', async () => {
    const broken = createApp(services);
    // Every view now fails to load: what ejs or Express would say about it must not reach the page.
    broken.set('views', path.join(dir, 'no-views-here'));
    const res = await request(broken).get('/no-such-page');
    assert.equal(res.status, 404);
    assert.match(res.text, /There is no page at this address/);
    assert.doesNotMatch(res.text, /Failed to lookup view|no-views-here|node_modules|\s+at \S+ \(/);
    assert.match(res.text, new RegExp(`<code>${res.headers['x-request-id']}</code>`));
  });

  it('a broken JSON body and an unexpected upload are refused in plain words, with no parser message', async () => {
    const json = await request(app).post('/api/v1/requests').set('Authorization', `Bearer ${apiKey}`).set('Content-Type', 'application/json').send('{"firstName": ');
    assert.equal(json.status, 400, json.text);
    assert.equal(json.body.error.message, 'What was sent could not be read.');
    assert.doesNotMatch(json.text, /SyntaxError|Unexpected|JSON at position|node_modules/);
    const upload = await request(app).post('/admin/import/preview').attach('other', Buffer.from('a,b\n'), 'x.csv');
    assert.equal(upload.status, 400, upload.text.slice(0, 300));
    assert.match(upload.text, /send one CSV file with the form/);
    assert.doesNotMatch(upload.text, /MulterError|Unexpected field|LIMIT_|node_modules|\s+at \S+ \(/);
    // A part header longer than the parser takes (a file name of 40,000 characters) used to be a 500.
    const broken = await request(app)
      .post('/admin/import/preview')
      .set('Content-Type', 'multipart/form-data; boundary=x')
      .send(`--x\r\nContent-Disposition: form-data; name="file"; filename="${'é'.repeat(40_000)}"\r\nContent-Type: text/csv\r\n\r\na,b\r\n--x--\r\n`);
    assert.equal(broken.status, 400, broken.text.slice(0, 300));
    assert.match(broken.text, /send one CSV file with the form/);
    assert.doesNotMatch(broken.text, /Malformed|busboy|node_modules|\s+at \S+ \(/);
  });
});
