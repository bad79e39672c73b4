// The email builders and the retry arithmetic, without a database or a mail server: what each
// message says, to whom, what it must never contain, and that HTML is escaped while text is not.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/errors';
import { durationInWords, MailMessages } from '../../src/mail/mail-messages';
import { retryDelay } from '../../src/mail/mail-outbox';
import { createMailTransport, type MailLogger } from '../../src/mail/mail-transport';
import type { ChildRecord, RequestRecord } from '../../src/requests/request-repository';

const NOW = Date.UTC(2026, 10, 23, 9, 0, 0);
const SCHOOL = "St Anne's & St Joseph's";
const messages = new MailMessages({ schoolName: SCHOOL, baseUrl: 'https://parents.example.org/' }, { now: () => NOW });

function request(overrides: Partial<RequestRecord> = {}): RequestRecord {
  return {
    id: 42,
    publicId: 'PuBlIc-Id_123',
    status: 'pending',
    requestType: 'new_account',
    source: 'form',
    parentTitle: 'Mr',
    parentFirstName: 'Sam',
    parentLastName: 'Evans',
    email: 'sam.evans@example.org',
    parentComment: null,
    staffComment: null,
    moodleUsername: 'sam.evans',
    moodleUserId: null,
    linkExistingAccount: false,
    verificationTokenHash: null,
    verificationExpiresAt: null,
    verifiedAt: null,
    decidedAt: null,
    decidedBy: null,
    decisionReason: null,
    provisionedAt: null,
    attempts: 0,
    lastError: null,
    nextAttemptAt: null,
    waitingSince: null,
    version: 1,
    submitterIp: null,
    submitterAgent: null,
    idempotencyKey: null,
    importBatchId: null,
    erasedAt: null,
    createdAt: NOW,
    updatedAt: NOW,
    ...overrides,
  };
}

function child(id: number, firstName: string, linkState: ChildRecord['linkState']): ChildRecord {
  return {
    id,
    requestId: 42,
    position: id,
    firstName,
    lastName: 'Evans',
    tutorGroup: '10R',
    pupilIdentifier: null,
    moodleUserId: linkState === 'linked' ? 900 + id : null,
    linkState,
    linkedAt: null,
    revokedAt: null,
    unassignPending: false,
    attempts: 0,
    lastError: null,
    nextAttemptAt: null,
    updatedAt: NOW,
  };
}

const children = [child(1, 'Ava', 'linked'), child(2, 'Leo', 'not_found')];
const statusUrl = 'https://parents.example.org/request/status/PuBlIc-Id_123';

describe('parent messages', () => {
  it('verification: link, how long it works, what happens next, and no child names', () => {
    const m = messages.verificationMessage(request({ status: 'unverified', verificationExpiresAt: NOW + 7 * 86_400_000 }), 'tok/with+odd=chars');
    assert.equal(m.to, 'sam.evans@example.org');
    assert.equal(m.subject, `${SCHOOL}: Please confirm your email address`);
    const link = 'https://parents.example.org/request/verify/tok%2Fwith%2Bodd%3Dchars';
    assert.equal(m.verificationLink, link);
    assert.ok(m.text.includes(`\n${link}\n`));
    assert.ok(m.text.includes('for 7 days'));
    assert.ok(m.text.includes('What happens next'));
    assert.ok(m.text.includes(statusUrl));
    assert.ok(m.text.startsWith('Dear Mr Evans,\n'));
    assert.ok(m.html.includes(`href="${link}"`));
    for (const body of [m.text, m.html]) assert.ok(!body.includes('Ava') && !body.includes('10R'), 'an unproven address learns nothing about the children');
  });

  it('request received and request extended: status link, counts only', () => {
    const received = messages.requestReceivedMessage(request(), children);
    assert.equal(received.subject, `${SCHOOL}: We have received your request`);
    assert.ok(received.text.includes('for 2 children'));
    assert.ok(received.text.includes(statusUrl));
    assert.ok(!received.text.includes('Ava'));

    const extended = messages.requestExtendedMessage(request({ status: 'unverified' }), 1);
    assert.ok(extended.text.includes('(1 more child added)'));
    assert.ok(extended.text.includes('You still need to confirm your email address'));
    const extendedPending = messages.requestExtendedMessage(request(), 0);
    assert.ok(!extendedPending.text.includes('more child'));
    assert.ok(!extendedPending.text.includes('still need to confirm'));
  });

  it('denied carries the reason; text as typed, HTML escaped', () => {
    const m = messages.deniedMessage(request({ status: 'denied', decisionReason: 'No pupil called "Ava <Evans>" & co' }));
    assert.ok(m.text.includes('No pupil called "Ava <Evans>" & co'));
    assert.ok(m.html.includes('No pupil called &#34;Ava &lt;Evans&gt;&#34; &amp; co'));
    assert.ok(!m.html.includes('<Evans>'));
  });

  it('provisioned: login link, username, password by separate mail, linked children only', () => {
    const m = messages.provisionedMessage(request({ status: 'provisioned' }), children, 'https://moodle.example.org/login/index.php');
    assert.equal(m.subject, `${SCHOOL}: Your Moodle parent account is ready`);
    assert.ok(m.text.includes('Your username is: sam.evans'));
    assert.ok(m.text.includes('https://moodle.example.org/login/index.php'));
    assert.ok(m.text.includes('Moodle sends your password in a separate email'));
    assert.ok(m.text.includes('It is linked to: Ava Evans.'));
    assert.ok(!m.text.includes('Leo'), 'a child that was not linked is not listed');
  });

  it('provisioned onto an existing account promises no password mail', () => {
    const m = messages.provisionedMessage(request({ status: 'provisioned', linkExistingAccount: true, moodleUsername: null }), children);
    assert.ok(m.text.includes('the Moodle account you already had'));
    assert.ok(!m.text.includes('password in a separate email'));
  });

  it('revoked does not pass on the staff reason', () => {
    const m = messages.revokedMessage(request({ status: 'revoked', decisionReason: 'Court order' }));
    assert.equal(m.subject, `${SCHOOL}: Your Moodle parent access has been removed`);
    assert.ok(!m.text.includes('Court order') && !m.html.includes('Court order'));
  });

  it('plain text never contains HTML entities or tags, and keeps blank lines tidy', () => {
    const all = [
      messages.verificationMessage(request({ verificationExpiresAt: NOW + 3_600_000 }), 't'),
      messages.requestReceivedMessage(request(), children),
      messages.requestExtendedMessage(request(), 2),
      messages.deniedMessage(request({ decisionReason: 'x' })),
      messages.provisionedMessage(request(), children, 'https://m.example.org'),
      messages.revokedMessage(request()),
      messages.staffNewRequestMessage(request(), children, ['office@example.org']),
      messages.staffCycleSummaryMessage({ cycleId: 3, provisioned: 1, waiting: 0, failed: 0 }, ['office@example.org']),
    ];
    for (const m of all) {
      assert.ok(m.text.includes(SCHOOL), `${m.subject}: school name as typed`);
      assert.ok(!/&amp;|&#39;|<\/?[a-z]+[ >]/i.test(m.text), `${m.subject}: no HTML in the text body`);
      assert.ok(!m.text.includes('\n\n\n'), `${m.subject}: no runs of blank lines`);
      assert.ok(m.html.includes("St Anne&#39;s &amp; St Joseph&#39;s"), `${m.subject}: school name escaped in HTML`);
      assert.ok(!/[\r\n]/.test(m.subject));
    }
  });
});

describe('staff messages', () => {
  it('a new request: name, number of children, link; no email address or child details', () => {
    const m = messages.staffNewRequestMessage(request({ verifiedAt: NOW }), children, ['office@example.org', 'head@example.org']);
    assert.deepEqual(m.to, ['office@example.org', 'head@example.org']);
    assert.equal(m.subject, `${SCHOOL}: New parent account request to review (number 42)`);
    assert.ok(m.text.includes('Mr Sam Evans'));
    assert.match(m.text, /Children: +2\n/);
    assert.ok(m.text.includes('https://parents.example.org/admin/requests/42'));
    assert.ok(m.text.includes('confirmed by the parent'));
    for (const body of [m.text, m.html]) {
      assert.ok(!body.includes('sam.evans@example.org') && !body.includes('Ava') && !body.includes('10R'));
    }
  });

  it('a cycle summary: counts and the report link', () => {
    const m = messages.staffCycleSummaryMessage({ cycleId: 17, provisioned: 5, waiting: 2, failed: 1 }, ['office@example.org']);
    assert.equal(m.subject, `${SCHOOL}: Provisioning cycle 17: 1 failed, 2 waiting`);
    assert.match(m.text, /Accounts made ready: +5\n/);
    assert.match(m.text, /Failed \(will be tried again\): +1\n/);
    assert.match(m.text, /Waiting for Moodle's user sync: +2\n/);
    assert.ok(m.text.includes('https://parents.example.org/admin/cycles/17'));
  });

  it('a cycle that stopped says why and what to do, in the subject and the body', () => {
    const problem = { message: 'Moodle did not accept the web service token (MOODLE_TOKEN): it is wrong, has expired or was deleted.', help: 'Create a new token & set MOODLE_TOKEN.' };
    const m = messages.staffCycleSummaryMessage({ cycleId: 18, provisioned: 0, waiting: 0, failed: 1, problem }, ['office@example.org']);
    assert.equal(m.subject, `${SCHOOL}: Provisioning cycle 18 stopped: ${problem.message}`);
    assert.ok(m.text.includes(problem.message));
    assert.ok(m.text.includes('What to do: Create a new token & set MOODLE_TOKEN.'), 'plain text is not HTML-escaped');
    assert.ok(m.html.includes('Create a new token &amp; set MOODLE_TOKEN.'));
    assert.doesNotMatch(m.text, /Accounts made ready/);
  });
});

describe('durationInWords', () => {
  it('rounds for people', () => {
    assert.equal(durationInWords(30 * 60_000), '30 minutes');
    assert.equal(durationInWords(60 * 60_000), '1 hour');
    assert.equal(durationInWords(100 * 60_000), '2 hours');
    assert.equal(durationInWords(3_600_000 * 24), '24 hours');
    assert.equal(durationInWords(3_600_000 * 24 - 5_000), '24 hours');
    assert.equal(durationInWords(3_600_000 * 48), '48 hours');
    assert.equal(durationInWords(86_400_000 * 7), '7 days');
    assert.equal(durationInWords(0), null);
    assert.equal(durationInWords(-5), null);
  });
});

describe('retryDelay', () => {
  it('doubles from the first delay and stops at the cap', () => {
    const minute = 60_000;
    const cap = 6 * 3_600_000;
    assert.deepEqual(
      [1, 2, 3, 4, 9, 10, 11, 50].map((n) => retryDelay(n, minute, cap)),
      [minute, 2 * minute, 4 * minute, 8 * minute, 256 * minute, cap, cap, cap],
    );
  });
});

describe('createMailTransport', () => {
  const logger: MailLogger = { debug() {}, info() {}, warn() {}, error() {} };
  it('refuses an SMTP_URL that is not smtp:// or smtps://, naming the variable', () => {
    assert.throws(
      () => createMailTransport({ smtpUrl: 'http://mail.example.org', from: 'a@b.c', staffNotify: [], outboxDir: '/tmp' }, logger),
      (error: unknown) => error instanceof ConfigError && /^SMTP_URL must start with smtp:\/\//.test(error.problems[0] ?? ''),
    );
  });
  it('shows where mail goes without the password', () => {
    const t = createMailTransport({ smtpUrl: 'smtps://user:hunter2@mail.example.org', from: 'a@b.c', staffNotify: [], outboxDir: '/tmp' }, logger);
    assert.equal(t.mode, 'smtp');
    assert.equal(t.target, 'smtps://mail.example.org:465');
    t.close();
  });
});
