// The mail module against a real SMTP server (in process) and real databases: delivery, retry
// with backoff, giving up, two senders at once, the development outbox folder, the lifecycle
// listener queuing mail in the transition's own transaction, and the live SMTP check.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { createDatabase, type Database } from '../../src/db/database';
import { ConflictError } from '../../src/errors';
import { MailMessages } from '../../src/mail/mail-messages';
import { registerMailNotifications } from '../../src/mail/mail-notifications';
import { MailOutbox, type MailOutboxOptions } from '../../src/mail/mail-outbox';
import { createMailTransport, type MailLogger, type MailTransport } from '../../src/mail/mail-transport';
import { hashToken, type LifecycleListener, type RequestLifecycle } from '../../src/requests/request-lifecycle';
import type { RequestRecord } from '../../src/requests/request-repository';
import { createLifecycle, cycleActor, staff, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, type TestDatabase } from '../support/databases';
import { parseMessage, TestSmtpServer } from '../support/smtp-server';

const parent = { type: 'parent' as const };
const SCHOOL = 'Greenfield Academy';
const BASE_URL = 'https://parents.greenfield.example';
const FROM_ADDRESS = 'office@greenfield.example';
const STAFF = ['office@greenfield.example', 'head@greenfield.example'];
const MOODLE_LOGIN = 'https://moodle.greenfield.example/login/index.php';
const HOUR = 3_600_000;

interface LogLine {
  level: string;
  details: Record<string, unknown>;
  message: string;
}

function captureLogger(): { logger: MailLogger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: string) => (details: Record<string, unknown>, message: string) => {
    lines.push({ level, details, message });
  };
  return { lines, logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

/** A port on 127.0.0.1 that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface OutboxRow {
  id: number;
  kind: string;
  request_id: number | null;
  recipient: string;
  payload: string;
  state: string;
  attempts: number;
  next_attempt_at: number;
  last_error: string | null;
  sent_at: number | null;
}

async function outboxRows(db: Database): Promise<OutboxRow[]> {
  const rows = (await db('mail_outbox').orderBy('id')) as OutboxRow[];
  return rows.map((r) => ({ ...r, id: Number(r.id), attempts: Number(r.attempts), next_attempt_at: Number(r.next_attempt_at), sent_at: r.sent_at === null ? null : Number(r.sent_at), request_id: r.request_id === null ? null : Number(r.request_id) }));
}

for (const dialect of DIALECTS) {
  describe(`mail on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let smtp: TestSmtpServer;
    let transport: MailTransport;
    let log: ReturnType<typeof captureLogger>;
    let outboxDir: string;
    let clock = Date.UTC(2026, 10, 23, 8, 30, 0);
    const now = () => clock;
    let messages: MailMessages;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      smtp = await new TestSmtpServer().start();
      outboxDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-outbox-'));
      log = captureLogger();
      transport = createMailTransport({ smtpUrl: smtp.url, from: `${SCHOOL} <${FROM_ADDRESS}>`, staffNotify: STAFF, outboxDir }, log.logger);
      messages = new MailMessages({ schoolName: SCHOOL, baseUrl: BASE_URL }, { now });
    });
    after(async () => {
      transport?.close();
      await smtp?.close();
      await t?.destroy();
      if (outboxDir) fs.rmSync(outboxDir, { recursive: true, force: true });
    });
    beforeEach(async () => {
      if (skip) return;
      await t.db('mail_outbox').delete();
      smtp.reset();
      log.lines.length = 0;
    });

    function outbox(options: MailOutboxOptions = {}, db: Database = t.db, via: MailTransport = transport): MailOutbox {
      return new MailOutbox(db, via, log.logger, { now, ...options });
    }

    /** A real request, stored through the lifecycle (no listener attached). */
    async function storedRequest(overrides: Parameters<typeof submission>[0] = {}): Promise<RequestRecord> {
      return (await createLifecycle(t.db, now).submitRequest(submission(overrides), parent)).request;
    }

    describe('delivery', () => {
      it('delivers a queued message with the exact subject, recipient, links and escaped HTML', { skip }, async () => {
        const request = await storedRequest({
          parentLastName: '<script>alert(1)</script>',
          requireVerification: true,
          verificationTokenHash: hashToken('raw-token-abc'),
          verificationExpiresAt: clock + 48 * HOUR,
        });
        const box = outbox();
        const built = messages.verificationMessage(request, 'raw-token-abc');
        await t.db.transaction((trx) => box.enqueue(trx, built, { kind: 'verification', requestId: request.id }));

        const result = await box.sendDue({ limit: 10 });
        assert.deepEqual(result, { sent: 1, retrying: 0, failed: 0 });
        const mail = await smtp.waitFor((m) => m.to.includes(request.email));
        assert.deepEqual(mail.to, [request.email]);
        assert.equal(mail.from, FROM_ADDRESS);
        assert.equal(mail.subject, `${SCHOOL}: Please confirm your email address`);
        assert.equal(mail.text, built.text, 'the text arrives exactly as built');
        assert.equal(mail.html, built.html, 'the HTML arrives exactly as built');
        assert.match(mail.text, /^Dear Ms <script>alert\(1\)<\/script>,\n/, 'plain text shows the name as typed');
        assert.ok(mail.text.includes(`\n${BASE_URL}/request/verify/raw-token-abc\n`), 'verification link in the text');
        assert.ok(mail.text.includes(`${BASE_URL}/request/status/${request.publicId}`), 'status page link in the text');
        assert.ok(mail.text.includes('48 hours'), 'says how long the link works');
        assert.ok(mail.text.includes(SCHOOL));
        assert.ok(mail.html.includes(`href="${BASE_URL}/request/verify/raw-token-abc"`));
        assert.ok(mail.html.includes('Dear Ms &lt;script&gt;alert(1)&lt;/script&gt;,'), 'the name is escaped in the HTML');
        assert.ok(!mail.html.includes('<script'), 'no script tag in the HTML');
        assert.ok(!/<img|<link|@import|url\(/i.test(mail.html), 'no external images, stylesheets or fonts');

        const [row] = await outboxRows(t.db);
        assert.equal(row?.state, 'sent');
        assert.equal(row?.attempts, 1);
        assert.equal(row?.sent_at, clock);
        assert.equal(row?.recipient, request.email);
        assert.equal(row?.kind, 'verification');
        assert.deepEqual(JSON.parse(row?.payload ?? ''), { subject: `${SCHOOL}: Please confirm your email address` }, 'body and link cleared after sending');
        assert.ok(!JSON.stringify(log.lines).includes('raw-token-abc'), 'the token is never logged when mail goes by SMTP');
        assert.ok(!JSON.stringify(log.lines).includes('Dear'), 'bodies are never logged');
      });

      it('sends a staff message to each staff address separately', { skip }, async () => {
        const request = await storedRequest();
        const box = outbox();
        const ids = await box.enqueue(t.db, messages.staffNewRequestMessage(request, [], STAFF), { kind: 'staff_new_request', requestId: request.id });
        assert.equal(ids.length, 2);
        assert.deepEqual(await box.sendDue(), { sent: 2, retrying: 0, failed: 0 });
        assert.deepEqual(smtp.messages.map((m) => m.to).sort(), STAFF.map((s) => [s]).sort());
      });

      it('keeps a message refused with 451 queued with one attempt and a later time, and delivers it on a later round', { skip }, async () => {
        const request = await storedRequest();
        const box = outbox();
        await box.enqueue(t.db, messages.deniedMessage({ ...request, decisionReason: 'We have no child of that name' }), { kind: 'denied', requestId: request.id });
        smtp.failNext(1);

        assert.deepEqual(await box.sendDue(), { sent: 0, retrying: 1, failed: 0 });
        let [row] = await outboxRows(t.db);
        assert.equal(row?.state, 'pending');
        assert.equal(row?.attempts, 1);
        assert.equal(row?.next_attempt_at, clock + 60_000, 'first retry a minute later');
        assert.match(row?.last_error ?? '', /did not accept the message \(451\)/);
        assert.equal(smtp.messages.length, 0);
        assert.equal(box.counters.retrying, 1);

        assert.deepEqual(await box.sendDue(), { sent: 0, retrying: 0, failed: 0 }, 'not tried again before its time');

        clock += 60_000;
        assert.deepEqual(await box.sendDue(), { sent: 1, retrying: 0, failed: 0 });
        [row] = await outboxRows(t.db);
        assert.equal(row?.state, 'sent');
        assert.equal(row?.attempts, 2);
        assert.equal(row?.last_error, null);
        const mail = await smtp.waitFor((m) => m.to.includes(request.email));
        assert.ok(mail.text.includes('We have no child of that name'), 'the reason reaches the parent');
      });

      it('backs off exponentially and marks the message failed after the last attempt', { skip }, async () => {
        const request = await storedRequest();
        const failures: Array<{ attempts: number; willRetry: boolean }> = [];
        const box = outbox({ maxAttempts: 4, onFailed: (e) => failures.push({ attempts: e.attempts, willRetry: e.willRetry }) });
        await box.enqueue(t.db, messages.revokedMessage(request), { kind: 'revoked', requestId: request.id });
        smtp.failNext(10);

        const delays: number[] = [];
        for (let attempt = 1; attempt <= 4; attempt++) {
          const before = clock;
          await box.sendDue();
          const [row] = await outboxRows(t.db);
          if (row?.state === 'pending') {
            delays.push(row.next_attempt_at - before);
            clock = row.next_attempt_at;
          }
        }
        assert.deepEqual(delays, [60_000, 120_000, 240_000]);
        const [row] = await outboxRows(t.db);
        assert.equal(row?.state, 'failed');
        assert.equal(row?.attempts, 4);
        assert.ok(!(row?.payload ?? '').includes('Dear'), 'the body of a failed message is cleared too');
        assert.deepEqual(failures.map((f) => f.willRetry), [true, true, true, false]);

        clock += 24 * HOUR;
        assert.deepEqual(await box.sendDue(), { sent: 0, retrying: 0, failed: 0 }, 'a failed message is not tried again');
        assert.equal((await box.status()).failed, 1);
      });

      it('gives up at once on a recipient the server refuses for good', { skip }, async () => {
        const request = await storedRequest();
        smtp.rejectRecipient(request.email);
        const box = outbox();
        await box.enqueue(t.db, messages.revokedMessage(request), { kind: 'revoked', requestId: request.id });
        assert.deepEqual(await box.sendDue(), { sent: 0, retrying: 0, failed: 1 });
        const [row] = await outboxRows(t.db);
        assert.equal(row?.state, 'failed');
        assert.equal(row?.attempts, 1);
        assert.match(row?.last_error ?? '', /refused the recipient \(550\)/);
      });

      it('when the server is down, spends one attempt per round, not one per message', { skip }, async () => {
        const down = createMailTransport({ smtpUrl: `smtp://127.0.0.1:${await closedPort()}`, from: FROM_ADDRESS, staffNotify: [], outboxDir }, log.logger);
        try {
          const box = outbox({}, t.db, down);
          for (let i = 0; i < 3; i++) {
            const request = await storedRequest();
            await box.enqueue(t.db, messages.revokedMessage(request), { kind: 'revoked', requestId: request.id });
          }
          assert.deepEqual(await box.sendDue(), { sent: 0, retrying: 1, failed: 0 });
          const rows = await outboxRows(t.db);
          assert.deepEqual(rows.map((r) => r.attempts), [1, 0, 0]);
          assert.match(rows[0]?.last_error ?? '', /refused the connection/);

          // The server is back: the untouched two go at once, the first after its backoff.
          const box2 = outbox();
          assert.deepEqual(await box2.sendDue(), { sent: 2, retrying: 0, failed: 0 });
          clock += 60_000;
          assert.deepEqual(await box2.sendDue(), { sent: 1, retrying: 0, failed: 0 });
          assert.equal(smtp.messages.length, 3);
        } finally {
          down.close();
        }
      });

      it('two senders working at the same moment send each message exactly once', { skip }, async () => {
        // A second connection pool, as a second app instance would have.
        const secondDb = createDatabase(t.config);
        const secondTransport = createMailTransport({ smtpUrl: smtp.url, from: FROM_ADDRESS, staffNotify: [], outboxDir }, log.logger);
        try {
          const recipients: string[] = [];
          const first = outbox();
          for (let i = 0; i < 12; i++) {
            const request = await storedRequest();
            recipients.push(request.email);
            await first.enqueue(t.db, messages.revokedMessage(request), { kind: 'revoked', requestId: request.id });
          }
          const second = outbox({}, secondDb, secondTransport);
          const [a, b] = await Promise.all([first.sendDue(), second.sendDue()]);
          assert.equal((a?.sent ?? 0) + (b?.sent ?? 0), 12, 'every message sent once between them');
          const delivered = smtp.messages.flatMap((m) => m.to).sort();
          assert.deepEqual(delivered, [...recipients].sort(), 'each recipient got exactly one mail');
          const rows = await outboxRows(t.db);
          assert.ok(rows.every((r) => r.state === 'sent' && r.attempts === 1));
        } finally {
          secondTransport.close();
          await secondDb.destroy();
        }
      });

      it('the sender loop delivers queued mail and stops cleanly', { skip }, async () => {
        const request = await storedRequest();
        const box = outbox();
        await box.enqueue(t.db, messages.revokedMessage(request), { kind: 'revoked', requestId: request.id });
        box.startSender(60_000);
        try {
          const mail = await smtp.waitFor((m) => m.to.includes(request.email));
          assert.equal(mail.subject, `${SCHOOL}: Your Moodle parent access has been removed`);
        } finally {
          await box.stop();
        }
        assert.equal(box.counters.sent, 1);
      });

      it('purges every mail of a request, for erasure', { skip }, async () => {
        const request = await storedRequest();
        const other = await storedRequest();
        const box = outbox();
        await box.enqueue(t.db, messages.revokedMessage(request), { kind: 'revoked', requestId: request.id });
        await box.enqueue(t.db, messages.staffNewRequestMessage(request, [], STAFF), { kind: 'staff_new_request', requestId: request.id });
        await box.enqueue(t.db, messages.revokedMessage(other), { kind: 'revoked', requestId: other.id });
        const removed = await t.db.transaction((trx) => box.purgeForRequest(trx, request.id));
        assert.equal(removed, 3);
        assert.deepEqual((await outboxRows(t.db)).map((r) => r.request_id), [other.id]);
      });
    });

    describe('development outbox (no SMTP_URL)', () => {
      it('writes each message to a file and logs where it went, with the confirmation link', { skip }, async () => {
        const dir = path.join(outboxDir, `dev-${dialect}`);
        const dev = createMailTransport({ smtpUrl: undefined, from: FROM_ADDRESS, staffNotify: [], outboxDir: dir }, log.logger);
        const request = await storedRequest({ requireVerification: true, verificationTokenHash: hashToken('dev-token-123'), verificationExpiresAt: clock + HOUR });
        const box = outbox({}, t.db, dev);
        await box.enqueue(t.db, messages.verificationMessage(request, 'dev-token-123'), { kind: 'verification', requestId: request.id });
        assert.deepEqual(await box.sendDue(), { sent: 1, retrying: 0, failed: 0 });

        const files = fs.readdirSync(dir);
        assert.equal(files.length, 1);
        const file = path.join(dir, files[0] as string);
        const parsed = parseMessage(fs.readFileSync(file, 'utf8'));
        assert.equal(parsed.subject, `${SCHOOL}: Please confirm your email address`);
        assert.ok(parsed.text.includes(`${BASE_URL}/request/verify/dev-token-123`));

        const line = log.lines.find((l) => l.message.includes(file));
        assert.ok(line, 'a log line names the file');
        assert.equal(line.level, 'info');
        assert.ok(line.message.includes(`${BASE_URL}/request/verify/dev-token-123`), 'the log line carries the link');
        const check = await dev.verify();
        assert.equal(check.ok, false, 'diagnostics say that no real mail is sent');
        assert.match(check.message, /SMTP_URL is not set/);
        dev.close();
      });
    });

    describe('lifecycle notifications', () => {
      let lifecycle: RequestLifecycle;
      let listener: LifecycleListener;

      before(() => {
        if (skip) return;
        lifecycle = createLifecycle(t.db, now);
        listener = registerMailNotifications(lifecycle, outbox(), messages, {
          requireEmailVerification: true,
          moodleLoginUrl: MOODLE_LOGIN,
          staffNotify: STAFF,
          logger: log.logger,
        });
      });

      async function queued() {
        return (await outboxRows(t.db)).map((r) => ({ kind: r.kind, to: r.recipient, requestId: r.request_id }));
      }

      it('a new pending request: "received" to the parent, a notification to each staff address', { skip }, async () => {
        const { request } = await lifecycle.submitRequest(submission({ parentFirstName: 'Jo', parentLastName: 'Bloggs' }), parent);
        assert.deepEqual(await queued(), [
          { kind: 'request_received', to: request.email, requestId: request.id },
          { kind: 'staff_new_request', to: STAFF[0], requestId: request.id },
          { kind: 'staff_new_request', to: STAFF[1], requestId: request.id },
        ]);
        await outbox().sendDue();
        const staffMail = await smtp.waitFor((m) => m.to.includes(STAFF[0] as string));
        assert.equal(staffMail.subject, `${SCHOOL}: New parent account request to review (number ${request.id})`);
        assert.ok(staffMail.text.includes('Ms Jo Bloggs'));
        assert.match(staffMail.text, /Children: +2\n/);
        assert.ok(staffMail.text.includes(`${BASE_URL}/admin/requests/${request.id}`));
        assert.ok(!staffMail.text.includes(request.email) && !staffMail.html.includes(request.email), 'no parent email address in the staff mail');
        assert.ok(!staffMail.text.includes('Ann') && !staffMail.text.includes('7B'), 'no child names or tutor groups in the staff mail');
        const parentMail = await smtp.waitFor((m) => m.to.includes(request.email));
        assert.equal(parentMail.subject, `${SCHOOL}: We have received your request`);
        assert.ok(parentMail.text.includes(`${BASE_URL}/request/status/${request.publicId}`));
      });

      it('no staff notification when no staff address is configured, and none for a bulk import', { skip }, async () => {
        const quiet = createLifecycle(t.db, now);
        registerMailNotifications(quiet, outbox(), messages, { requireEmailVerification: false, staffNotify: [] });
        const { request } = await quiet.submitRequest(submission(), parent);
        await lifecycle.submitRequest(submission({ source: 'import' }), { type: 'import' });
        assert.deepEqual(await queued(), [{ kind: 'request_received', to: request.email, requestId: request.id }]);
      });

      it('an unverified request gets the confirmation mail when the event carries the raw token, and none without it', { skip }, async () => {
        const { request } = await lifecycle.submitRequest(
          submission({ requireVerification: true, verificationTokenHash: hashToken('tok-777'), verificationExpiresAt: clock + 24 * HOUR }),
          parent,
        );
        assert.deepEqual(await queued(), [], 'the lifecycle does not pass the token yet: nothing queued');
        assert.ok(log.lines.some((l) => l.level === 'warn' && l.details.requestId === request.id), 'a warning says why');
        assert.ok(!JSON.stringify(log.lines).includes('tok-777'));

        await t.db.transaction((trx) =>
          listener(trx, { type: 'submitted', request, children: [], actor: parent, details: { status: 'unverified', verificationToken: 'tok-777' } }),
        );
        await t.db.transaction((trx) =>
          listener(trx, { type: 'verification_resent', request, children: [], actor: parent, details: { verificationToken: 'tok-778' } }),
        );
        assert.deepEqual(await queued(), [
          { kind: 'verification', to: request.email, requestId: request.id },
          { kind: 'verification', to: request.email, requestId: request.id },
        ]);
        await outbox().sendDue();
        const links = smtp.messages.map((m) => /\/request\/verify\/(\S+)/.exec(m.text)?.[1]).sort();
        assert.deepEqual(links, ['tok-777', 'tok-778']);
        assert.ok(smtp.messages.every((m) => m.text.includes('24 hours')));
      });

      it('confirming the email address notifies staff', { skip }, async () => {
        const { request } = await lifecycle.submitRequest(
          submission({ requireVerification: true, verificationTokenHash: hashToken('tok-verify'), verificationExpiresAt: clock + HOUR }),
          parent,
        );
        await lifecycle.verifyEmail(hashToken('tok-verify'));
        assert.deepEqual(await queued(), STAFF.map((to) => ({ kind: 'staff_new_request', to, requestId: request.id })));
        await outbox().sendDue();
        assert.ok((await smtp.waitFor((m) => m.to.includes(STAFF[1] as string))).text.includes('confirmed by the parent'));
      });

      it('a second form for an open request mails a link to add its details; using it tells the parent they were added', { skip }, async () => {
        const first = await lifecycle.submitRequest(submission({ email: `extend.${dialect}@example.org` }), parent);
        await t.db('mail_outbox').delete();
        const heldToken = 'held-token-for-the-mail-test-0123456789abcd';
        await lifecycle.submitRequest(
          submission({
            email: `extend.${dialect}@example.org`,
            comment: 'Cat too',
            children: [{ firstName: 'Cat', lastName: 'Pupil', tutorGroup: '8A', pupilIdentifier: null }],
            heldDetails: { token: heldToken, expiresAt: clock + 48 * HOUR },
          }),
          parent,
        );
        assert.deepEqual(await queued(), [{ kind: 'held_details', to: first.request.email, requestId: first.request.id }]);
        await outbox().sendDue();
        const held = await smtp.waitFor((m) => m.to.includes(first.request.email));
        assert.ok(held.text.includes(`${BASE_URL}/request/details/${heldToken}`), held.text);
        assert.ok(held.text.includes('1 child and a comment'), held.text);
        assert.equal(held.text.includes('Cat'), false, 'the held children are not named: whoever sent them is not proven');

        await t.db('mail_outbox').delete();
        await lifecycle.confirmHeldDetails(hashToken(heldToken), { maxChildren: 6, maxCommentLength: 2000 });
        assert.deepEqual(await queued(), [{ kind: 'request_extended', to: first.request.email, requestId: first.request.id }]);
        await outbox().sendDue();
        assert.ok((await smtp.waitFor((m) => m.to.includes(first.request.email) && m.text.includes('1 more child added'))).text);
      });

      it('denied, provisioned and revoked each send the parent their mail; duplicate and bogus send nothing', { skip }, async () => {
        const denied = (await lifecycle.submitRequest(submission(), parent)).request;
        const toProvision = await lifecycle.submitRequest(submission(), parent);
        const duplicate = (await lifecycle.submitRequest(submission(), parent)).request;
        const bogus = (await lifecycle.submitRequest(submission(), parent)).request;
        await t.db('mail_outbox').delete();

        await lifecycle.denyRequest(denied.id, { reason: 'We could not find a child of that name at the school' }, staff);
        await lifecycle.markDuplicate(duplicate.id, {}, staff);
        await lifecycle.markBogus(bogus.id, {}, staff);
        const approved = await lifecycle.approveRequest(
          toProvision.request.id,
          { children: toProvision.children.map((c, i) => ({ childId: c.id, moodleUserId: 100 + i })) },
          staff,
        );
        assert.deepEqual(await queued(), [{ kind: 'denied', to: denied.email, requestId: denied.id }], 'approval itself sends nothing');

        await lifecycle.recordProvisioningOutcomes(
          [{ requestId: approved.id, expectedVersion: approved.version, parentMoodleUserId: 55, linkedChildIds: toProvision.children.map((c) => c.id) }],
          cycleActor,
        );
        await lifecycle.revokeRequest(approved.id, { reason: 'Internal note: safeguarding' }, staff);
        assert.deepEqual((await queued()).map((q) => q.kind), ['denied', 'provisioned', 'revoked']);

        await outbox().sendDue();
        const deniedMail = await smtp.waitFor((m) => m.to.includes(denied.email));
        assert.ok(deniedMail.text.includes('We could not find a child of that name at the school'));
        const forParent = smtp.messages.filter((m) => m.to.includes(approved.email));
        const ready = forParent.find((m) => m.subject === `${SCHOOL}: Your Moodle parent account is ready`);
        assert.ok(ready, 'the account-ready mail arrived');
        assert.ok(ready.text.includes(MOODLE_LOGIN));
        assert.ok(ready.text.includes(`Your username is: ${approved.moodleUsername}`));
        assert.ok(ready.text.includes('Moodle sends your password in a separate email'));
        assert.ok(ready.text.includes(`${BASE_URL}/request/status/${approved.publicId}`));
        const removed = forParent.find((m) => m.subject === `${SCHOOL}: Your Moodle parent access has been removed`);
        assert.ok(removed, 'the access-removed mail arrived');
        assert.ok(!removed.text.includes('safeguarding'), 'the internal revocation reason is not sent');
      });

      it('a refused transition queues nothing', { skip }, async () => {
        const request = (await lifecycle.submitRequest(submission(), parent)).request;
        await lifecycle.denyRequest(request.id, { reason: 'Not known to the school' }, staff);
        const before = await queued();
        await assert.rejects(lifecycle.denyRequest(request.id, { reason: 'Again' }, staff), ConflictError);
        await assert.rejects(lifecycle.revokeRequest(request.id, {}, staff), ConflictError);
        assert.deepEqual(await queued(), before);
      });

      it('a transition that fails after the mail was queued rolls the mail back with it', { skip }, async () => {
        const failing = createLifecycle(t.db, now);
        registerMailNotifications(failing, outbox(), messages, { requireEmailVerification: false, staffNotify: STAFF });
        failing.addListener(async (_trx, event) => {
          if (event.type === 'denied') throw new Error('a later step failed');
        });
        const request = (await failing.submitRequest(submission(), parent)).request;
        const before = await queued();
        assert.equal(before.length, 3, 'the submission itself queued its mail');
        await assert.rejects(failing.denyRequest(request.id, { reason: 'No such pupil' }, staff), /a later step failed/);
        assert.deepEqual(await queued(), before, 'the denied mail went with the rolled-back transition');
        assert.equal((await failing.get(request.id)).request.status, 'pending');
      });
    });

    describe('verify()', () => {
      it('reports the test server reachable', { skip }, async () => {
        const check = await transport.verify();
        assert.equal(check.ok, true);
        assert.match(check.message, /accepted a connection/);
      });

      it('reports a closed port in plain words', { skip }, async () => {
        const port = await closedPort();
        const closed = createMailTransport({ smtpUrl: `smtp://mailer:S3cret-Pass@127.0.0.1:${port}`, from: FROM_ADDRESS, staffNotify: [], outboxDir }, log.logger);
        const check = await closed.verify();
        closed.close();
        assert.equal(check.ok, false);
        assert.equal(check.message, `The mail server at smtp://127.0.0.1:${port} refused the connection (nothing is listening on that port).`);
        assert.ok(!check.ok && check.help.includes('SMTP_URL'));
        assert.ok(!JSON.stringify(check).includes('S3cret'), 'the password is never shown');
      });
    });
  });
}

describe('verify() with a login', () => {
  let smtp: TestSmtpServer;
  before(async () => {
    smtp = await new TestSmtpServer({ auth: { user: 'mailer', pass: 'right p@ss' } }).start();
  });
  after(async () => smtp.close());

  it('accepts the right password and explains a wrong one without showing it', async () => {
    const { logger } = captureLogger();
    const good = createMailTransport({ smtpUrl: smtp.url, from: FROM_ADDRESS, staffNotify: [], outboxDir: os.tmpdir() }, logger);
    const ok = await good.verify();
    good.close();
    assert.deepEqual(ok, { ok: true, message: `The mail server at smtp://127.0.0.1:${smtp.port} accepted a connection and the login.` });

    const bad = createMailTransport({ smtpUrl: `smtp://mailer:Wr0ng-Secret@127.0.0.1:${smtp.port}`, from: FROM_ADDRESS, staffNotify: [], outboxDir: os.tmpdir() }, logger);
    const check = await bad.verify();
    await assert.rejects(bad.send({ to: 'x@example.org', subject: 's', text: 't', html: '<p>t</p>' }), (error: Error) => {
      assert.match(error.message, /did not accept the username and password/);
      assert.ok(!error.message.includes('Wr0ng-Secret'));
      return true;
    });
    bad.close();
    assert.equal(check.ok, false);
    assert.match(check.message, /did not accept the username and password in SMTP_URL/);
    assert.ok(!JSON.stringify(check).includes('Wr0ng-Secret'), 'the password is never shown');
  });
});
