// What the logs hold after a parent's whole journey (form, confirmation mail over SMTP, the
// confirmation link, the status page) and a few hostile requests: one JSON line per event with
// a request id, and no email address, token, status-page id or secret anywhere.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createLogger, maskEmailAddresses } from '../../src/logger';
import { createServices, type Services } from '../../src/services';
import { loggablePath } from '../../src/web/request-logging';
import { createTestDatabase, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { FormSession, validFields } from '../support/http';
import { TestSmtpServer } from '../support/smtp-server';

const SESSION_SECRET = 'session-secret-that-must-never-be-logged-0123456789';
const METRICS_TOKEN = 'metrics-token-that-must-never-be-logged-42';
const SMTP_PASSWORD = 'smtp-password-never-logged-77';

// Logs do not depend on the database dialect; SQLite keeps this file quick.
describe('logs', () => {
  let t: TestDatabase;
  let smtp: TestSmtpServer;
  let services: Services;
  let app: Express;
  const lines: string[] = [];

  before(async () => {
    t = await createTestDatabase('sqlite');
    smtp = await new TestSmtpServer({ auth: { user: 'mailer', pass: SMTP_PASSWORD } }).start();
    const config = parseConfig({
      NODE_ENV: 'test',
      AUTH_TABLE: TEST_AUTH_TABLE,
      // http: over https the CSRF cookie is Secure, and the test client would not send it back.
      BASE_URL: 'http://parents.example-school.org',
      SESSION_SECRET,
      METRICS_TOKEN,
      SMTP_URL: `smtp://mailer:${SMTP_PASSWORD}@127.0.0.1:${smtp.port}`,
      FORM_RATE_LIMIT_PER_IP: '1000',
      CYCLE_SCHEDULE: 'off',
    });
    // The most talkative level, so debug lines are checked too.
    const logger = createLogger({ logLevel: 'trace', env: 'development' }, { write: (line: string) => void lines.push(line) });
    services = createServices(config, { db: t.db, logger, moodle: null });
    app = createApp(services);
  });
  after(async () => {
    await services?.close();
    await smtp?.close();
    await t?.destroy();
  });

  it('a form submission, its confirmation and the status page leave no address, token or secret in the log', async () => {
    const fields = validFields();
    const email = fields.email as string;
    const session = new FormSession(app);
    await session.open();
    await session.post('/request', fields).expect(200);

    assert.ok((await services.mailOutbox.sendDue()).sent >= 1);
    const mail = smtp.messages.find((m) => m.to.includes(email));
    assert.ok(mail, 'the confirmation mail went out');
    const token = /\/request\/verify\/([A-Za-z0-9_-]{43})/.exec(mail.text)?.[1];
    assert.ok(token, 'the mail carries the confirmation link');

    const confirming = new FormSession(app);
    await confirming.open(`/request/verify/${token}`);
    const verified = await confirming.post(`/request/verify/${token}`, {}).set('X-Request-Id', 'journey-verify').expect(200);
    await request(app).get(`/request/verify/${token}`).expect(200);
    const statusPath = /href="(\/request\/status\/[^"]+)"/.exec(verified.text)?.[1];
    assert.ok(statusPath);
    const publicId = statusPath.split('/').pop() as string;
    await request(app).get(`${statusPath}?token=${token}&email=${encodeURIComponent(email)}`).expect(200);
    await request(app).get(`/request/status/${publicId}/resend`).expect((res) => assert.ok(res.status >= 400));
    await request(app).get(`/request/${encodeURIComponent(email)}`).expect(404);
    await request(app).get('/metrics').set('Authorization', `Bearer ${METRICS_TOKEN}`).expect(200);
    await request(app).get('/metrics').set('Authorization', `Bearer ${SESSION_SECRET}`).expect(401);
    await request(app).get('/').set('Cookie', `mpp.sid=${SESSION_SECRET}`).set('Authorization', `Bearer ${token}`).expect(200);

    // Code that passes such values to the logger by mistake is caught by key, or by their shape.
    services.logger.info({ token, email, headers: { authorization: `Bearer ${token}` }, request: { parent: { email } } }, 'careless details');
    services.logger.error({ err: new Error(`Duplicate entry '${email}' for key 'requests_email_unique'`) }, 'careless error');

    const output = lines.join('');
    const forbidden: Record<string, string> = {
      'the email address': email,
      'the email address, URL-encoded': encodeURIComponent(email),
      'the confirmation token': token,
      'the status-page id': publicId,
      'the session secret': SESSION_SECRET,
      'the metrics token': METRICS_TOKEN,
      'the SMTP password': SMTP_PASSWORD,
    };
    for (const [what, value] of Object.entries(forbidden)) assert.equal(output.includes(value), false, `${what} is not in the log`);
    assert.doesNotMatch(output, /[A-Za-z0-9._%+-]+@example\.org/, 'no address of the test domain at all');

    // The log is still useful: JSON lines, each request with its id, the paths with their secrets masked.
    const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const requests = entries.filter((e) => e.msg === 'request');
    assert.ok(requests.length >= 9);
    for (const entry of requests) assert.match(String(entry.requestId), /^[A-Za-z0-9._-]+$/);
    const paths = requests.map((e) => e.path);
    assert.ok(paths.includes('/request/verify/:token'));
    assert.ok(paths.includes('/request/status/:publicId'));
    assert.ok(paths.includes('/request/status/:publicId/resend'));
    assert.ok(paths.includes('/request/:email'));
    assert.deepEqual(
      requests.filter((e) => e.requestId === 'journey-verify').map((e) => [e.method, e.path, e.status]),
      [['POST', '/request/verify/:token', 200]],
    );
    const careless = entries.find((e) => e.msg === 'careless details') as Record<string, any>;
    assert.equal(careless.token, '[hidden]');
    assert.equal(careless.headers.authorization, '[hidden]');
    assert.equal(careless.request.parent.email, '[hidden]');
    assert.ok(entries.some((e) => e.msg === 'Mail sent'), 'mail sending is logged, by id');
  });

  it('masks secrets in paths by shape as well as by route', () => {
    assert.equal(loggablePath('/request/verify/abc?x=1#y'), '/request/verify/:token');
    assert.equal(loggablePath('/admin/reset/Xk3mP9qLw2Zr8TnV5bYc7D/confirm'), '/admin/reset/:secret/confirm');
    assert.equal(loggablePath('/admin/requests/42?email=a@b.org'), '/admin/requests/42');
    assert.equal(loggablePath('/admin/provisioning-cycles/17'), '/admin/provisioning-cycles/17', 'ordinary words and ids stay');
    assert.equal(loggablePath('/x/someone%40school.org'), '/x/:email');
  });

  it('masks email addresses in free text, leaving other @ alone', () => {
    assert.equal(maskEmailAddresses('sent to ann.o\'brien+x@mail.example-school.org.'), 'sent to [email].');
    assert.equal(maskEmailAddresses('a@b.org,c@d.co.uk'), '[email],[email]');
    assert.equal(maskEmailAddresses('no-reply@localhost @ 10:00'), 'no-reply@localhost @ 10:00');
    const long = `${'a'.repeat(200_000)}@`;
    assert.equal(maskEmailAddresses(long), long);
  });
});
