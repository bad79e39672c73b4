// /healthz, /readyz and /metrics over HTTP against real databases and the Moodle test double:
// readiness follows the database and its migrations, /metrics is hidden or token-protected, and
// its numbers follow what the service did (requests, Moodle calls, cycles, mail).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createDatabase, type Database } from '../../src/db/database';
import { MailSendError, type MailTransport } from '../../src/mail/mail-transport';
import { createServices, type Services } from '../../src/services';
import { staff, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';

const METRICS_TOKEN = 'metrics-token-for-the-tests-0123456789';

function testConfig(extra: Record<string, string> = {}) {
  return parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, CYCLE_SCHEDULE: 'off', ...extra });
}

/** A mail server that is there but refuses every message for now: each send is retried later. */
function refusingTransport(): MailTransport {
  return {
    mode: 'smtp',
    target: 'smtp://mail.test:587',
    async send() {
      throw new MailSendError('The mail server refused the message for now (451).', false, false);
    },
    async verify() {
      return { ok: true, message: 'ok' };
    },
    close() {},
  };
}

/** Samples of a Prometheus text exposition, keyed name{label="value",…} with labels sorted. */
function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    assert.ok(match, `a well-formed sample line: ${line}`);
    const labels = [...(match[2] ?? '').matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => `${m[1]}="${m[2]}"`).sort();
    samples.set(labels.length > 0 ? `${match[1]}{${labels.join(',')}}` : (match[1] as string), Number(match[3]));
  }
  return samples;
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

for (const dialect of DIALECTS) {
  describe(`health and metrics on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let services: Services;
    let app: Express;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      // No ready-made Moodle client: the services build their own, so the metrics hook is the real one.
      const config = testConfig({
        METRICS_TOKEN,
        MOODLE_URL: moodle.url,
        MOODLE_TOKEN: moodle.tokens.ws,
        MOODLE_PARENT_ROLE_ID: '9',
        MOODLE_RETRIES: '0',
        MOODLE_TIMEOUT_MS: '5000',
      });
      services = createServices(config, { db: t.db, mailTransport: refusingTransport() });
      app = createApp(services);
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await moodle.close();
      await t.destroy();
    });

    async function scrape(): Promise<Map<string, number>> {
      const res = await request(app).get('/metrics').set('Authorization', `Bearer ${METRICS_TOKEN}`).expect(200);
      assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
      assert.equal(res.headers['cache-control'], 'no-store');
      return parseMetrics(res.text);
    }

    it('/healthz answers while the process is up', { skip }, async () => {
      const res = await request(app).get('/healthz').expect(200);
      assert.deepEqual(res.body, { status: 'ok' });
    });

    it('/readyz is 200 with every migration applied, 503 with a plain reason while one is pending', { skip }, async () => {
      const ready = await request(app).get('/readyz').expect(200);
      assert.equal(ready.body.status, 'ready');
      assert.ok(ready.body.migrations > 0);

      const last = (await t.db('knex_migrations').orderBy('id', 'desc').first()) as Record<string, unknown>;
      await t.db('knex_migrations').where({ id: last.id }).delete();
      try {
        const pending = await request(app).get('/readyz').expect(503);
        assert.deepEqual(pending.body, { status: 'unavailable', reason: 'The database is reachable but 1 migration(s) have not been applied.' });
      } finally {
        await t.db('knex_migrations').insert(last);
      }
      await request(app).get('/readyz').expect(200);
    });

    it('/readyz is 503 on an instance left behind after a newer version migrated the database', { skip }, async () => {
      const newer = { name: '29991231000000_added_by_a_newer_version', batch: 99, migration_time: new Date() };
      await t.db('knex_migrations').insert(newer);
      try {
        const res = await request(app).get('/readyz').expect(503);
        assert.equal(res.body.reason, 'The database was upgraded by a newer version of this service; upgrade this instance too.');
      } finally {
        await t.db('knex_migrations').where({ name: newer.name }).delete();
      }
      await request(app).get('/readyz').expect(200);
    });

    it('/metrics refuses a missing, a wrong or a non-bearer token', { skip }, async () => {
      const none = await request(app).get('/metrics').expect(401);
      assert.equal(none.headers['www-authenticate'], 'Bearer realm="metrics"');
      assert.equal(none.text.includes('mpp_'), false);
      await request(app).get('/metrics').set('Authorization', 'Bearer wrong-token-wrong-token-0000').expect(401);
      await request(app).get('/metrics').set('Authorization', `Bearer ${METRICS_TOKEN}x`).expect(401);
      await request(app).get('/metrics').set('Authorization', `Basic ${Buffer.from(`metrics:${METRICS_TOKEN}`).toString('base64')}`).expect(401);
      await request(app).get(`/metrics?token=${METRICS_TOKEN}`).expect(401);
    });

    it('counts requests by status at scrape time', { skip }, async () => {
      const before = await scrape();
      assert.equal(before.get('mpp_database_up'), 1);
      for (const status of ['unverified', 'pending', 'approved', 'provisioned', 'denied']) {
        assert.equal(before.get(`mpp_requests{status="${status}"}`), 0, `${status} starts at 0`);
      }

      await services.lifecycle.submitRequest(submission(), { type: 'parent' });
      await services.lifecycle.submitRequest(submission(), { type: 'parent' });
      await services.lifecycle.submitRequest(submission({ requireVerification: true }), { type: 'parent' });
      const toApprove = await services.lifecycle.submitRequest(submission(), { type: 'parent' });
      await services.lifecycle.approveRequest(
        toApprove.request.id,
        { expectedVersion: toApprove.request.version, children: toApprove.children.map((c, i) => ({ childId: c.id, moodleUserId: 3 + i })) },
        staff,
      );

      const after = await scrape();
      assert.equal(after.get('mpp_requests{status="pending"}'), 2);
      assert.equal(after.get('mpp_requests{status="unverified"}'), 1);
      assert.equal(after.get('mpp_requests{status="approved"}'), 1);
      assert.equal(after.get('mpp_requests{status="provisioned"}'), 0);
    });

    it('counts Moodle calls by function and outcome, and errors by Moodle errorcode', { skip }, async () => {
      const moodleClient = services.moodle;
      assert.ok(moodleClient, 'the services built a Moodle client');
      const before = await scrape();
      const okKey = 'mpp_moodle_calls_total{outcome="ok",wsfunction="core_webservice_get_site_info"}';
      await moodleClient.getSiteInfo();
      await moodleClient.getSiteInfo();

      moodle.state.removeServiceFunction('core_user_get_users');
      await assert.rejects(moodleClient.getUsers([{ key: 'lastname', value: 'Pupil' }]), { errorcode: 'accessexception' });

      const after = await scrape();
      assert.equal((after.get(okKey) ?? 0) - (before.get(okKey) ?? 0), 2);
      assert.equal(after.get('mpp_moodle_calls_total{outcome="moodle_error",wsfunction="core_user_get_users"}'), 1);
      assert.equal(after.get('mpp_moodle_errors_total{errorcode="accessexception",wsfunction="core_user_get_users"}'), 1);
      assert.equal(after.get('mpp_moodle_errors_total{errorcode="accessexception",wsfunction="core_webservice_get_site_info"}'), undefined, 'a good call is no error');
    });

    it('counts cycles by state, their durations and what they did with each request', { skip }, async () => {
      // The approved request's parent is not in Moodle yet: the first cycle waits, the second links.
      const first = await services.cycle.run('manual', 'office');
      assert.equal(first.state, 'succeeded');
      let samples = await scrape();
      assert.equal(samples.get('mpp_cycles_total{state="succeeded"}'), 1);
      assert.equal(samples.get('mpp_cycle_request_outcomes_total{outcome="waiting"}'), 1);
      assert.equal(samples.get('mpp_cycle_duration_seconds_count{state="succeeded"}'), 1);

      await moodle.sync(t.db, TEST_AUTH_TABLE);
      const second = await services.cycle.run('manual', 'office');
      assert.equal(second.counts.provisioned, 1);
      samples = await scrape();
      assert.equal(samples.get('mpp_cycles_total{state="succeeded"}'), 2);
      assert.equal(samples.get('mpp_cycle_request_outcomes_total{outcome="provisioned"}'), 1);
      assert.equal(samples.get('mpp_cycle_duration_seconds_count{state="succeeded"}'), 2);
      assert.equal(samples.get('mpp_cycle_duration_seconds_bucket{le="+Inf",state="succeeded"}'), 2);
      assert.equal(samples.get('mpp_requests{status="provisioned"}'), 1);
      assert.ok((samples.get('mpp_moodle_calls_total{outcome="ok",wsfunction="core_role_assign_roles"}') ?? 0) >= 1);
    });

    it('mirrors the mail outbox: send failures and the messages still waiting', { skip }, async () => {
      const result = await services.mailOutbox.sendDue({ limit: 100 });
      assert.ok(result.retrying > 0, 'the requests above queued mail, and the server refused it');
      const waiting = (await t.db('mail_outbox').where({ state: 'pending' }).count({ n: '*' }).first()) as { n: number | string };
      const samples = await scrape();
      assert.equal(samples.get('mpp_mail_send_failures_total{outcome="retrying"}'), result.retrying);
      assert.equal(samples.get('mpp_mail_send_failures_total{outcome="failed"}'), 0);
      assert.equal(samples.get('mpp_mail_sent_total'), 0);
      assert.equal(samples.get('mpp_mail_outbox_messages{state="pending"}'), Number(waiting.n));
    });
  });
}

describe('health and metrics without a database or a metrics token', () => {
  let deadDb: Database;
  let services: Services;
  let app: Express;

  before(async () => {
    // A MariaDB address where nothing listens: the database is simply not there.
    deadDb = createDatabase({ client: 'mysql', url: `mysql://root@127.0.0.1:${await closedPort()}/nothing`, display: 'closed port' });
    services = createServices(testConfig({ METRICS_TOKEN }), { db: deadDb, moodle: null, mailTransport: refusingTransport() });
    app = createApp(services);
  });
  after(async () => {
    await services.close();
    await deadDb.destroy();
  });

  it('/healthz still answers, /readyz is 503 and says the database cannot be reached', async () => {
    await request(app).get('/healthz').expect(200);
    const res = await request(app).get('/readyz').expect(503);
    assert.deepEqual(res.body, { status: 'unavailable', reason: 'The database cannot be reached.' });
    assert.equal(JSON.stringify(res.body).includes('127.0.0.1'), false, 'no address on a public endpoint');
  });

  it('/metrics still answers, with the database marked down and no request counts', async () => {
    const res = await request(app).get('/metrics').set('Authorization', `Bearer ${METRICS_TOKEN}`).expect(200);
    const samples = parseMetrics(res.text);
    assert.equal(samples.get('mpp_database_up'), 0);
    assert.equal([...samples.keys()].some((k) => k.startsWith('mpp_requests{')), false);
    assert.ok(samples.has('mpp_process_cpu_seconds_total'), 'process metrics are there');
  });

  it('/metrics does not exist when METRICS_TOKEN is not set', async () => {
    const plain = createServices(testConfig(), { db: deadDb, moodle: null, mailTransport: refusingTransport() });
    try {
      const res = await request(createApp(plain)).get('/metrics').set('Authorization', `Bearer ${METRICS_TOKEN}`).expect(404);
      assert.equal(res.text.includes('mpp_'), false);
    } finally {
      await plain.close();
    }
  });

  it('METRICS_TOKEN must be long enough to be a secret', () => {
    assert.throws(() => testConfig({ METRICS_TOKEN: 'short' }), /METRICS_TOKEN must be at least 16 characters/);
  });
});
