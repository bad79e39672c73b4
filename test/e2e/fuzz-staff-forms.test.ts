// Random and hostile values in every staff form that takes input, sent by a signed-in member of
// staff with the form's CSRF token, as the dashboard would: the request page's actions, erasing,
// bulk actions, the CSV import, sign-in and setup, and the searches. Whatever arrives, the answer
// is never a 5xx. MariaDB in strict mode is where a value too long or too large for its column
// used to become a 500; SQLite stores anything, so both run. The staff account has the longest
// username and display name allowed. FUZZ_SEED replays a run; STAFF_FUZZ_RUNS changes its size.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import request from 'supertest';
import { createApp } from '../../src/app';
import { runCli } from '../../src/cli';
import { parseConfig } from '../../src/config';
import { MAX_INT_ID, MAX_STAFF_TEXT } from '../../src/db/columns';
import { createLogger } from '../../src/logger';
import { createServices, type Services } from '../../src/services';
import { submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { StaffSession, STAFF_PASSWORD } from '../support/staff';

const RUNS = Number(process.env.STAFF_FUZZ_RUNS ?? 250);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const SEEDED_REQUESTS = 30;

/** Errors the service logs, so that a failing run says what broke and not only that it did. */
const loggedErrors: string[] = [];
const errorLogger = () =>
  createLogger(
    { env: 'development', logLevel: 'error' },
    new Writable({
      write(chunk, _encoding, done) {
        loggedErrors.push(String(chunk).slice(0, 2000));
        done();
      },
    }),
  );

function fuzzConfig() {
  return parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, CYCLE_SCHEDULE: 'off', FORM_RATE_LIMIT_PER_IP: '100000', FORM_RATE_LIMIT_PER_EMAIL: '100000' });
}

// ------------------------------------------------------------------ values

/** Ids around the edges of an INT column and of what a parser accepts. */
const ID_TEXTS = ['1', '3', String(MAX_INT_ID), String(MAX_INT_ID + 1), '4294967296', '9999999999', '99999999999', '9'.repeat(25), '-1', '0', '00000000001', '1e3', '1.5', ' 42 ', '#42', '0x10', ''];
/** Texts around the limits of a reason or comment and of a TEXT column (65,535 bytes on MariaDB). */
const LONG_TEXTS = [
  'x'.repeat(MAX_STAFF_TEXT),
  'x'.repeat(MAX_STAFF_TEXT + 1),
  '😀'.repeat(MAX_STAFF_TEXT / 2),
  '😀'.repeat(16_400),
  'é'.repeat(40_000),
  'x'.repeat(70_000),
  '\u0000'.repeat(5_000),
  'A '.repeat(3_000),
];
const SHORT_TEXTS = ['', ' ', 'Not known at this school', 'none', 'typed', 'new', 'erase', 'deny', 'bogus', 'duplicate', 'revoke', 'approve', "'; DROP TABLE requests; --", '<script>alert(1)</script>', '\ud800', '👨‍👩‍👧‍👦', 'İ'.repeat(60), '%', '__proto__', 'a'.repeat(101), 'a'.repeat(256)];

const value: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...ID_TEXTS) },
  { weight: 2, arbitrary: fc.constantFrom(...LONG_TEXTS) },
  { weight: 3, arbitrary: fc.constantFrom(...SHORT_TEXTS) },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 60 }) },
);

/** A reason or comment: mostly ordinary, often at or past the limits. */
const freeText: fc.Arbitrary<string> = fc.oneof(fc.constantFrom('Not a parent at this school', 'Spoke to the parent on the phone'), fc.constantFrom(...LONG_TEXTS), value);

/** Stand-ins replaced at send time by the chosen request's current values. */
const VERSION = '{version}';
const CHILD_A = '{childA}';
const CHILD_B = '{childB}';
const OTHER_REQUEST = '{otherRequest}';
const version = fc.oneof({ weight: 5, arbitrary: fc.constant(VERSION) }, { weight: 1, arbitrary: value });
const moodleId = fc.oneof(fc.constantFrom(...ID_TEXTS), fc.integer({ min: 1, max: 10_000 }).map(String), fc.constantFrom('none', 'typed'), value);

type Field = [string, string];
const extra = fc.array(fc.tuple(fc.oneof(fc.constantFrom('reason', 'comment', 'version', 'childId', 'confirm', 'duplicateOf', 'account', `match_${CHILD_A}`, `typed_${CHILD_B}`, 'request', 'status', 'q', 'after', 'before', 'sort'), fc.string({ maxLength: 12 })), value), { maxLength: 3 });

interface Step {
  method: 'GET' | 'POST';
  /** The path, with {id} for the chosen request. */
  path: string;
  fields: Field[];
  requestIndex: number;
  file?: { name: string; content: string };
}

const onRequest = (path: string, fields: fc.Arbitrary<Field[]>, method: 'GET' | 'POST' = 'POST'): fc.Arbitrary<Step> =>
  fc.record({ requestIndex: fc.nat(SEEDED_REQUESTS - 1), fields, pathId: fc.oneof({ weight: 8, arbitrary: fc.constant('{id}') }, { weight: 1, arbitrary: fc.constantFrom(...ID_TEXTS.filter((i) => /^\d+$/.test(i))) }) }).map(
    ({ requestIndex, fields: f, pathId }) => ({ method, path: path.replace('{id}', pathId), fields: f, requestIndex }),
  );

const join = (...parts: Array<fc.Arbitrary<Field[]>>) => fc.tuple(...parts).map((lists) => lists.flat());
const field = (name: string, arb: fc.Arbitrary<string>): fc.Arbitrary<Field[]> => arb.map((v) => [[name, v]]);
const maybe = (name: string, arb: fc.Arbitrary<string>): fc.Arbitrary<Field[]> => fc.option(arb, { nil: undefined }).map((v) => (v === undefined ? [] : [[name, v]]));

const CSV_HEADER = 'parent_email,parent_first_name,parent_last_name,child_first_name,child_last_name,tutor_group,moodle_user_id';
const csvCell = fc.oneof(fc.constantFrom('a@example.org', 'Pat', 'Ann', '7B', '3', String(MAX_INT_ID + 1), '9999999999'), fc.constantFrom(...SHORT_TEXTS), fc.string({ maxLength: 20 }), fc.constantFrom('x'.repeat(300), 'é'.repeat(120)));
const csvFile = fc
  .tuple(fc.constantFrom(CSV_HEADER, 'email,first,last', ''), fc.array(fc.array(csvCell, { minLength: 1, maxLength: 8 }), { maxLength: 4 }))
  .map(([header, rows]) => [header, ...rows.map((r) => r.map((c) => `"${c.replace(/"/g, '""')}"`).join(','))].join('\n'));

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: onRequest(
      '/admin/requests/{id}/approve',
      join(field('version', version), field(`match_${CHILD_A}`, moodleId), field(`match_${CHILD_B}`, moodleId), maybe(`typed_${CHILD_A}`, moodleId), maybe(`typed_${CHILD_B}`, moodleId), maybe('account', fc.oneof(fc.constant('new'), moodleId)), maybe('accountUsername_3', value), maybe('comment', freeText), extra),
    ),
  },
  { weight: 3, arbitrary: onRequest('/admin/requests/{id}/deny', join(field('version', version), field('reason', freeText), extra)) },
  { weight: 2, arbitrary: onRequest('/admin/requests/{id}/duplicate', join(field('version', version), maybe('duplicateOf', fc.oneof(fc.constant(OTHER_REQUEST), value)), maybe('reason', freeText), extra)) },
  { weight: 2, arbitrary: onRequest('/admin/requests/{id}/bogus', join(field('version', version), maybe('reason', freeText), extra)) },
  { weight: 2, arbitrary: onRequest('/admin/requests/{id}/revoke', join(field('version', version), maybe('reason', freeText), extra)) },
  { weight: 2, arbitrary: onRequest('/admin/requests/{id}/revoke-child', join(field('version', version), field('childId', fc.oneof(fc.constant(CHILD_A), value)), maybe('reason', freeText), extra)) },
  { weight: 3, arbitrary: onRequest('/admin/requests/{id}/comment', join(field('comment', freeText), extra)) },
  { weight: 1, arbitrary: onRequest('/admin/requests/{id}/erase', join(field('confirm', fc.oneof(fc.constant('erase'), value)), field('version', version), extra)) },
  {
    weight: 2,
    arbitrary: onRequest(
      '/admin/requests/bulk',
      join(field('action', fc.oneof(fc.constantFrom('approve', 'deny', 'bogus'), value)), field('request', fc.constant('{id}')), maybe('request', fc.oneof(fc.constant(OTHER_REQUEST), value)), field('version-{id}', version), maybe('reason', freeText), maybe('confirm', fc.constant('yes')), extra),
    ),
  },
  { weight: 2, arbitrary: onRequest('/admin/requests/{id}', join(maybe(`search_${CHILD_A}`, value), maybe(`match_${CHILD_A}`, moodleId), maybe(`typed_${CHILD_A}`, moodleId), maybe('account', moodleId)), 'GET') },
  { weight: 1, arbitrary: onRequest('/admin/requests', join(maybe('q', value), maybe('status', value), maybe('sort', value), maybe('after', value), maybe('before', value)), 'GET') },
  { weight: 1, arbitrary: onRequest('/admin/requests.csv', join(maybe('q', value), maybe('status', value)), 'GET') },
  { weight: 1, arbitrary: onRequest('/admin/accounts', join(maybe('q', value), maybe('page', value)), 'GET') },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...ID_TEXTS.filter((i) => /^\d+$/.test(i)))).map(([id]) => ({ method: 'GET' as const, path: `/admin/pupils/${id}`, fields: [], requestIndex: 0 })) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...ID_TEXTS.filter((i) => /^\d+$/.test(i))), fc.oneof(fc.constant(undefined), value)).map(([id, page]) => ({ method: 'GET' as const, path: `/admin/cycles/${id}`, fields: page === undefined ? [] : [['page', page] as Field], requestIndex: 0 })) },
  { weight: 1, arbitrary: fc.record({ content: csvFile, name: fc.oneof(fc.constant('parents.csv'), value) }).map((file) => ({ method: 'POST' as const, path: '/admin/import/preview', fields: [], requestIndex: 0, file })) },
  { weight: 1, arbitrary: fc.oneof(fc.constantFrom(...SHORT_TEXTS), fc.string({ maxLength: 40 })).map((id) => ({ method: 'POST' as const, path: `/admin/import/${pathSegment(id)}/commit`, fields: [], requestIndex: 0 })) },
);

/** A path segment for any string; a lone surrogate, which cannot be encoded, goes as the bytes a browser would send. */
function pathSegment(text: string): string {
  return encodeURIComponent(text.replace(/\p{Cs}/gu, '\ufffd'));
}

/** Sign-in and setup are tried from a second, signed-out browser. */
const signedOutStep = fc.oneof(
  join(field('username', value), field('password', value)).map((fields) => ({ path: '/admin/sign-in', fields })),
  join(field('setupCode', value), field('username', value), field('displayName', value), field('email', value), field('password', value), field('passwordConfirm', value)).map((fields) => ({ path: '/admin/setup', fields })),
);

// ------------------------------------------------------------------ the runs

for (const dialect of DIALECTS) {
  describe(`fuzzed staff forms on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: ReturnType<typeof createApp>;
    let staff: StaffSession;
    let requestIds: number[] = [];
    // The longest username and display name a staff account may have.
    const username = `${'s'.repeat(100 - String(process.pid).length - 1)}.${process.pid}`.slice(0, 100);
    const displayName = `Zoë ${'Ō'.repeat(196)}`;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(fuzzConfig(), { db: t.db, moodle: null, logger: errorLogger() });
      app = createApp(services);
      assert.equal(username.length, 100);
      await services.staffAccounts.addStaff({ username, displayName, password: STAFF_PASSWORD, role: 'admin' });
      staff = await StaffSession.signIn(app, username);
      for (let i = 0; i < SEEDED_REQUESTS; i += 1) {
        const { request: r } = await services.lifecycle.submitRequest(submission({ requireVerification: i % 5 === 0 }), { type: 'parent' });
        requestIds.push(r.id);
      }
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await t.destroy();
    });

    /** Fills in the stand-ins from the request as it is now. */
    async function resolve(step: Step): Promise<{ path: string; fields: Field[] }> {
      const id = requestIds[step.requestIndex] as number;
      const row = (await t.db('requests').where({ id }).first()) as { version: number } | undefined;
      const children = (await t.db('request_children').where({ request_id: id }).orderBy('position')) as Array<{ id: number }>;
      const swap = (text: string) =>
        text
          .replaceAll('{id}', String(id))
          .replaceAll(VERSION, String(row?.version ?? 1))
          .replaceAll(CHILD_A, String(children[0]?.id ?? 1))
          .replaceAll(CHILD_B, String(children[1]?.id ?? 2))
          .replaceAll(OTHER_REQUEST, String(requestIds[(step.requestIndex + 1) % requestIds.length]));
      return { path: swap(step.path), fields: step.fields.map(([k, v]) => [swap(k), swap(v)]) };
    }

    it(`${RUNS} fuzzed submissions by a signed-in member of staff: no 5xx`, { skip }, async (context) => {
      const statuses = new Map<number, number>();
      await fc.assert(
        fc.asyncProperty(step, async (s) => {
          const { path, fields } = await resolve(s);
          let res: request.Response;
          if (s.method === 'GET') {
            res = await staff.get(`${path}${fields.length ? `?${new URLSearchParams(fields).toString()}` : ''}`);
          } else if (s.file) {
            res = await staff.agent.post(path).field('_csrf', staff.csrfToken).attach('file', Buffer.from(s.file.content), s.file.name || 'x.csv');
          } else {
            res = await staff.post(path, fields);
          }
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          assert.ok(res.status < 500, `${s.method} ${path} ${JSON.stringify(fields.map(([k, v]) => [k, v.length > 60 ? `${v.slice(0, 60)}… (${v.length})` : v]))}${s.file ? ` file ${JSON.stringify(s.file)}` : ''}: ${res.status} ${loggedErrors.at(-1) ?? res.text.slice(0, 300)}`);
          // A refused CSRF check would mean the fuzzer tests nothing behind it.
          assert.notEqual(res.status, 403, `${path}: refused as forbidden: ${res.text.slice(0, 200)}`);
        }),
        { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }) },
      );
      context.diagnostic(`statuses: ${JSON.stringify([...statuses].sort())}`);
      const decided = (await t.db('requests').whereNotNull('decided_by').count({ n: '*' }).first()) as { n: number | string };
      if (RUNS >= 100) assert.ok(Number(decided.n) > 0, 'the fuzzer never got a decision through: it is hardly testing what gets stored');
    });

    it(`${Math.round(RUNS / 10)} fuzzed sign-in and setup forms from a signed-out browser: no 5xx`, { skip }, async () => {
      await fc.assert(
        fc.asyncProperty(signedOutStep, async ({ path, fields }) => {
          const visitor = new StaffSession(app);
          await visitor.open('/admin/sign-in');
          const res = await visitor.post(path, fields);
          assert.ok(res.status < 500, `${path} ${JSON.stringify(fields.map(([k, v]) => [k, v.slice(0, 60)]))}: ${res.status} ${loggedErrors.at(-1) ?? res.text.slice(0, 300)}`);
        }),
        { numRuns: Math.round(RUNS / 10), ...(SEED === undefined ? {} : { seed: SEED }) },
      );
    });
  });

  // ------------------------------------------------------------------ what it found, one by one

  describe(`staff values that must fit their columns, on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: ReturnType<typeof createApp>;
    let staff: StaffSession;
    const username = `${'l'.repeat(100 - String(process.pid).length - 1)}.${process.pid}`;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(fuzzConfig(), { db: t.db, moodle: null });
      app = createApp(services);
      await services.staffAccounts.addStaff({ username, displayName: `Pat ${'Ō'.repeat(196)}`, password: STAFF_PASSWORD, role: 'admin' });
      staff = await StaffSession.signIn(app, username);
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await t.destroy();
    });

    async function pending() {
      const { request: r, children } = await services.lifecycle.submitRequest(submission(), { type: 'parent' });
      return { request: r, children };
    }

    /** Posts a request-page action and returns the message shown after the redirect. */
    async function act(id: number, action: string, fields: Record<string, string>) {
      const res = await staff.post(`/admin/requests/${id}/${action}`, fields);
      assert.equal(res.status, 303, `${action}: ${res.status} ${res.text.slice(0, 300)}`);
      const page = await staff.get(String(res.headers.location));
      assert.equal(page.status, 200);
      return page.text;
    }

    /** Posts a request-page form that is refused: it comes back (400) with what was typed and its summary. */
    async function sentBack(id: number, action: string, fields: Record<string, string>) {
      const res = await staff.post(`/admin/requests/${id}/${action}`, fields);
      assert.equal(res.status, 400, `${action}: ${res.status} ${res.text.slice(0, 300)}`);
      assert.match(res.text, /<div class="error-summary" id="error-summary" role="alert"/);
      return res.text;
    }

    it('a member of staff with a 100-character username can approve, deny and revoke (decided_by holds "staff:" and the name)', { skip }, async () => {
      const a = await pending();
      const approved = await act(a.request.id, 'approve', { version: String(a.request.version), [`match_${a.children[0]!.id}`]: '3', [`match_${a.children[1]!.id}`]: 'none' });
      assert.match(approved, /is approved/);
      const b = await pending();
      assert.match(await act(b.request.id, 'deny', { version: String(b.request.version), reason: 'Not known at this school' }), /was denied/);
      const after = await services.lifecycle.get(a.request.id);
      assert.match(await act(a.request.id, 'revoke', { version: String(after.request.version) }), /was removed/);
      const rows = (await t.db('requests').whereIn('id', [a.request.id, b.request.id]).select('decided_by')) as Array<{ decided_by: string }>;
      for (const row of rows) assert.equal(row.decided_by, `staff:${username}`);
    });

    it(`a Moodle id past ${MAX_INT_ID} is refused in words, from the page and from the command line, and nothing changes`, { skip }, async () => {
      const { request: r, children } = await pending();
      const choices: Array<Record<string, string>> = [
        { [`match_${children[0]!.id}`]: String(MAX_INT_ID + 1), [`match_${children[1]!.id}`]: 'none' },
        { [`match_${children[0]!.id}`]: 'typed', [`typed_${children[0]!.id}`]: '9999999999', [`match_${children[1]!.id}`]: 'none' },
        { [`match_${children[0]!.id}`]: '3', [`match_${children[1]!.id}`]: 'none', account: String(MAX_INT_ID + 1) },
      ];
      for (const fields of choices) {
        const page = await act(r.id, 'approve', { version: String(r.version), ...fields });
        assert.match(page, /must be a whole number from 1 to 2,147,483,647/);
      }
      const out: string[] = [];
      const err: string[] = [];
      const code = await runCli(['requests', 'approve', String(r.id), '--child', `${children[0]!.id}=${MAX_INT_ID + 1}`, '--child', `${children[1]!.id}=none`], { out: (x) => out.push(x), err: (x) => err.push(x) }, { services });
      assert.equal(code, 1, out.join('\n'));
      assert.match(err.join('\n'), /must be a whole number from 1 to 2,147,483,647/);
      const existing = await runCli(['requests', 'approve', String(r.id), '--child', `${children[0]!.id}=3`, '--child', `${children[1]!.id}=none`, '--existing-account', '9999999999'], { out: (x) => out.push(x), err: (x) => err.push(x) }, { services });
      assert.equal(existing, 2, err.join('\n'));
      assert.equal((await services.lifecycle.get(r.id)).request.status, 'pending');
    });

    it('command-line ids, versions and counts past an INT column are wrong usage (exit 2), not a database failure', { skip }, async () => {
      const { request: r } = await pending();
      for (const argv of [
        ['requests', 'list', '--limit', '9'.repeat(25)],
        ['requests', 'show', String(MAX_INT_ID + 1)],
        ['requests', 'deny', String(r.id), '--reason', 'Not known', '--version', '9999999999'],
        ['requests', 'duplicate', String(r.id), '--of', '4294967296'],
      ]) {
        const err: string[] = [];
        const code = await runCli(argv, { out: () => {}, err: (x) => err.push(x) }, { services });
        assert.equal(code, 2, `${argv.join(' ')}: ${err.join('\n')}`);
        assert.match(err.join('\n'), /must be a whole number from 1 to 2147483647/);
      }
      assert.equal((await services.lifecycle.get(r.id)).request.status, 'pending');
    });

    it(`a reason or comment longer than ${MAX_STAFF_TEXT} characters is refused in words, from the page and the command line`, { skip }, async () => {
      const { request: r } = await pending();
      const long = '😀'.repeat(MAX_STAFF_TEXT);
      const denied = await sentBack(r.id, 'deny', { version: String(r.version), reason: long });
      assert.match(denied, /The reason must be 4,000 characters or fewer/);
      assert.ok(denied.includes(`>${long}</textarea>`), 'the reason is kept');
      assert.match(await act(r.id, 'bogus', { version: String(r.version), reason: 'x'.repeat(70_000) }), /The reason must be 4,000 characters or fewer/);
      assert.match(await sentBack(r.id, 'comment', { comment: 'é'.repeat(MAX_STAFF_TEXT + 1) }), /The comment must be 4,000 characters or fewer/);
      const err: string[] = [];
      const code = await runCli(['requests', 'deny', String(r.id), '--reason', 'x'.repeat(MAX_STAFF_TEXT + 1)], { out: () => {}, err: (x) => err.push(x) }, { services });
      assert.equal(code, 1);
      assert.match(err.join('\n'), /The reason must be 4,000 characters or fewer/);
      const row = await services.lifecycle.get(r.id);
      assert.equal(row.request.status, 'pending');
      assert.equal(row.request.staffComment, null);
    });

    it('staff comments that would overflow their column are refused, and the ones before are kept', { skip }, async () => {
      const { request: r } = await pending();
      // 2,000 emoji are 4,000 characters and 8,000 bytes: eight fit in 65,535 bytes, the ninth does not.
      const comment = '😀'.repeat(MAX_STAFF_TEXT / 2);
      for (let i = 0; i < 8; i += 1) assert.match(await act(r.id, 'comment', { comment }), /Your comment was added/);
      assert.match(await sentBack(r.id, 'comment', { comment }), /There is no room for more comments on this request/);
      const row = await services.lifecycle.get(r.id);
      assert.equal(row.request.staffComment, Array(8).fill(comment).join('\n\n'));
    });
  });
}
