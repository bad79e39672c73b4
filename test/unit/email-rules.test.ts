// The email rules of the request form and the intake API: an address that can never become a
// Moodle username is refused with a plain message (the rule approval applies), only A to Z are
// lower-cased (İ and the Kelvin sign are refused, not rewritten), and every address the form
// can store is masked in log lines.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, EMAIL_MASK, maskEmailAddresses } from '../../src/logger';
import { apiFieldName, validateRequest } from '../../src/intake/request-form';
import { usernameFromEmail } from '../../src/requests/username';

const base = {
  firstName: 'Ann',
  lastName: 'Smith',
  requestType: 'new_account',
  children: [{ firstName: 'Bea', lastName: 'Smith', tutorGroup: '7B' }],
  privacyAccepted: true,
};

function checkEmail(email: string) {
  return validateRequest({ ...base, email }, 3, apiFieldName);
}

function emailProblem(email: string): string | undefined {
  const result = checkEmail(email);
  return result.ok ? undefined : result.problems.find((p) => p.field === 'email')?.message;
}

/** A small deterministic generator, so the sample is the same on every run. */
function* pseudoRandom(seed: number): Generator<number> {
  let x = seed;
  for (;;) {
    x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
    yield x;
  }
}

describe('email addresses on the form and the API', () => {
  it('refuses an address that can never be a Moodle username, naming the characters in plain words', () => {
    for (const [email, character] of [
      ['jane+school@example.org', '+'],
      ["o'brien@example.org", "'"],
      ['josé@example.org', 'é'],
      ['ann!x@example.org', '!'],
    ] as const) {
      const message = emailProblem(email);
      assert.ok(message, `${email} is refused`);
      assert.match(message, /cannot be used as a Moodle username/);
      assert.ok(message.includes(`“${character}”`), `${email}: the message names ${character}`);
      // The same rule as approval: what the form refuses, approval would have refused.
      assert.equal(usernameFromEmail(email).ok, false);
    }
  });

  it('refuses an address longer than a Moodle username may be, though it is a valid email address', () => {
    const email = `${'a'.repeat(95)}@example.org`;
    assert.equal(usernameFromEmail(email).ok, false);
    assert.match(emailProblem(email) ?? '', /must be 100 characters or fewer, because it will also be your Moodle username/);
  });

  it('lower-cases A to Z without changing the address; İ and other non-ASCII case folds are refused, not rewritten', () => {
    const ok = checkEmail('  Jane.Doe@Example.ORG ');
    assert.ok(ok.ok);
    assert.equal(ok.data.email, 'jane.doe@example.org');
    for (const [email, character] of [
      ['İnci@example.org', 'İ'],
      ['\u212Aate@example.org', '\u212A'], // the Kelvin sign, which toLowerCase turns into an ASCII k
      ['ÄNNE@example.org', 'Ä'],
    ] as const) {
      const result = checkEmail(email);
      assert.equal(result.ok, false, `${email} is refused`);
      assert.ok(emailProblem(email)?.includes(`“${character}”`), `${email}: the message names the character as typed`);
      assert.equal(usernameFromEmail(email).ok, false, `${email}: approval refuses it too`);
    }
  });

  it('masks in log lines every address the form can store', () => {
    const candidates = [
      'jo@ex_ample.com',
      'first_last@school_mail.example.org',
      'a@.example.org',
      'a..b@example..org',
      '-x-@-y-.example.org',
      '_@_._',
      'a@b.co',
      '123@456.78',
    ];
    const random = pseudoRandom(12_345);
    const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789_.-';
    const pick = (n: number) => Array.from({ length: n }, () => alphabet[(random.next().value as number) % alphabet.length]).join('');
    for (let i = 0; i < 300; i++) candidates.push(`${pick(1 + (i % 12))}@${pick(1 + (i % 9))}.${pick(2 + (i % 5))}`);
    const storable = candidates.filter((email) => checkEmail(email).ok);
    assert.ok(storable.includes('jo@ex_ample.com') && storable.includes('a@.example.org'), 'the sample has the awkward addresses the form accepts');
    assert.ok(storable.length > 100, `a broad sample: ${storable.length}`);

    for (const email of storable) {
      for (const line of [`sent to ${email}`, `sent to ${email}.`, `'${email}'`, `(${email})`, `<${email}>`, `email=${email}&x=1`, `{"to":"${email}"}`]) {
        const masked = maskEmailAddresses(line);
        assert.ok(masked.includes(EMAIL_MASK), `${line} is masked`);
        const [local, domain] = email.split('@') as [string, string];
        const rest = masked.replace(EMAIL_MASK, '');
        assert.equal(rest.includes(`${local}@`) || rest.includes(`@${domain}`) || rest.includes('@'), false, `${line} → ${masked}`);
        // Nothing of the address is left beside the mask.
        const around = masked.split(EMAIL_MASK);
        assert.equal(around.length, 2, `${line} → ${masked}`);
        assert.equal(line.startsWith(around[0]!) && line.endsWith(around[1]!), true);
        // (A dot at the very end reads as the end of a sentence and may stay: it says nothing.)
        const core = email.replace(/\.+$/, '');
        assert.equal(around[0]!.length + core.length + around[1]!.length <= line.length, true, `${line} → ${masked}: part of the address left`);
      }
    }
  });

  it('the logger masks them on the way out, and leaves other @ alone', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const logger = createLogger({ logLevel: 'info', env: 'development' }, sink);
    logger.info({ detail: 'could not send to first_last@school_mail.example.org' }, 'mail to jo@ex_ample.com failed');
    logger.info('path node_modules/@types/node/index.d.ts, user root@localhost');
    const output = lines.join('');
    assert.equal(output.includes('school_mail') || output.includes('first_last') || output.includes('ex_ample') || output.includes('jo@'), false, output);
    assert.ok(output.includes('node_modules/@types/node/index.d.ts') && output.includes('root@localhost'), output);
  });
});
