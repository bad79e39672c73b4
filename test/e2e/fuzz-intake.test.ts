// Random and hostile bodies against the two ways into the service, POST /request (the form) and
// POST /api/v1/requests (the website's webhook): wrong types, huge and strange strings, missing
// and extra fields, arrays and objects where text belongs, wrong content types, broken encodings.
// Whatever arrives, the answer is never a 5xx, a refusal stores nothing, and every stored row is
// one the form's own schema accepts. FUZZ_SEED replays a run; FUZZ_RUNS changes its size.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import type { Database } from '../../src/db/database';
import { createApiKey } from '../../src/intake/api-keys';
import { MAX_COMMENT, requestSchema } from '../../src/intake/request-form';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { csrfTokenOf, FormSession, validFields } from '../support/http';

const MAX_CHILDREN = 4;
/** Bodies in all; the form's share is smaller since each refusal there renders a whole page. */
const RUNS = Number(process.env.FUZZ_RUNS ?? 10_000);
const FORM_RUNS = Math.round(RUNS * 0.4);
const API_RUNS = RUNS - FORM_RUNS;
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

function fuzzConfig(extra: Record<string, string> = {}) {
  return parseConfig({
    NODE_ENV: 'test',
    AUTH_TABLE: TEST_AUTH_TABLE,
    MAX_CHILDREN: String(MAX_CHILDREN),
    // Limits high enough never to answer for the fuzzer: it is after what validation lets through.
    FORM_RATE_LIMIT_PER_IP: '100000',
    FORM_RATE_LIMIT_PER_EMAIL: '100000',
    ...extra,
  });
}

// ------------------------------------------------------------------ what may be stored

interface RequestRow {
  id: number;
  status: string;
  request_type: string;
  parent_title: string;
  parent_first_name: string;
  parent_last_name: string;
  email: string;
  parent_comment: string | null;
}

interface ChildRow {
  position: number;
  first_name: string;
  last_name: string;
  tutor_group: string;
  pupil_identifier: string | null;
}

/**
 * A stored request must be one the schema accepts exactly as stored: every value already
 * trimmed and normalised (a fixed point of the schema), 1..MAX_CHILDREN children, the email
 * lower-cased, its submission audited and its confirmation mail queued in the same commit.
 */
async function assertStoredRequestValid(db: Database, row: RequestRow): Promise<void> {
  const children = (await db('request_children').where({ request_id: row.id }).orderBy('position')) as ChildRow[];
  const stored = {
    title: row.parent_title,
    firstName: row.parent_first_name,
    lastName: row.parent_last_name,
    email: row.email,
    requestType: row.request_type,
    children: children.map((c) => ({ firstName: c.first_name, lastName: c.last_name, tutorGroup: c.tutor_group, pupilIdentifier: c.pupil_identifier })),
    comment: row.parent_comment,
    privacyAccepted: true,
  };
  const where = `request ${row.id} ${JSON.stringify(stored)}`;
  const parsed = requestSchema(MAX_CHILDREN).safeParse(stored);
  assert.ok(parsed.success, `${where} is not valid: ${parsed.success ? '' : JSON.stringify(parsed.error.issues.map((i) => [i.path.join('.'), i.message]))}`);
  assert.deepEqual(parsed.data, stored, `${where} is stored exactly as the schema leaves it`);
  assert.equal(row.email, row.email.trim().toLowerCase(), `${where}: email trimmed and lower-cased`);
  // Independently of the schema: nothing invisible or unprintable in what staff, mail and Moodle see.
  const oneLine = [stored.title, stored.firstName, stored.lastName, stored.email, ...stored.children.flatMap((c) => [c.firstName, c.lastName, c.tutorGroup, c.pupilIdentifier ?? ''])];
  for (const value of oneLine) assert.doesNotMatch(value, /\p{C}/u, `${where}: control or invisible character in ${JSON.stringify(value)}`);
  assert.doesNotMatch(stored.comment ?? '', /[^\P{Cc}\t\n\r]|\p{Cs}/u, `${where}: control character in the comment`);
  assert.ok((stored.comment ?? '').length <= MAX_COMMENT, `${where}: comment of ${stored.comment?.length} characters`);
  assert.ok(children.length >= 1 && children.length <= MAX_CHILDREN, `${where}: ${children.length} children`);
  assert.equal(new Set(children.map((c) => Number(c.position))).size, children.length, `${where}: child positions unique`);
  assert.equal(row.status, 'unverified', `${where}: waits for its email confirmation`);
  const submitted = await db('audit_events').where({ request_id: row.id, action: 'submitted' }).count({ n: '*' }).first();
  assert.equal(Number((submitted as { n: number | string }).n), 1, `${where}: one "submitted" audit event`);
  const mail = await db('mail_outbox').where({ request_id: row.id, kind: 'verification' }).count({ n: '*' }).first();
  assert.ok(Number((mail as { n: number | string }).n) >= 1, `${where}: its confirmation email is queued`);
}

async function assertEveryStoredRequestValid(db: Database): Promise<number> {
  const rows = (await db('requests').orderBy('id')) as RequestRow[];
  for (const row of rows) await assertStoredRequestValid(db, row);
  const orphans = await db('request_children').whereNotIn('request_id', db('requests').select('id')).count({ n: '*' }).first();
  assert.equal(Number((orphans as { n: number | string }).n), 0, 'no child without its request');
  return rows.length;
}

/** Row counts of everything a submission writes; a refused body must leave them all alone. */
async function counts(db: Database) {
  // One plain statement: it runs after every one of the fuzzer's thousands of requests.
  const result = (await db.raw(
    'select (select count(*) from requests) as requests, (select count(*) from request_children) as children, ' +
      '(select count(*) from audit_events) as audit, (select count(*) from mail_outbox) as mail',
  )) as unknown;
  // better-sqlite3 answers with the rows; mysql2 with [rows, fields].
  const rows = (Array.isArray((result as unknown[])[0]) ? (result as unknown[][])[0] : result) as Array<Record<string, number | string>>;
  const row = rows[0] as Record<string, number | string>;
  return { requests: Number(row.requests), children: Number(row.children), audit: Number(row.audit), mail: Number(row.mail) };
}

// ------------------------------------------------------------------ building blocks

const LONE_SURROGATES = ['\ud800', '\udbff', '\udc00', '\udfff', 'Ann\ud83d', '\ude00Ann'];
const CONTROL = ['\u0000', 'Ann\u0000', '\u0000'.repeat(40), '\u0007', '\u001b[31m', '\u007f', '\u0085', '\u2028', '\r\n', '\t', '\u000b', '\u000c'];
const INVISIBLE = ['\u202eAnn', 'Ann\u202e', '\u2066Ann\u2069', '\u200f', '\u200b', 'A\u200dnn', '\ufeff', '\ufeffAnn', '\uffff', '\ufffe', '\u00a0Ann\u00a0', '\u3000'];
const GRAPHEMES = ['😀', 'Ann😀', '👨‍👩‍👧‍👦', '🇬🇧', 'Z\u0351\u0300\u0301\u0302a\u0303l\u0304g\u0305o\u0306', '\u0301Ann', 'e\u0301', '𝐀nn', '\u{10FFFF}', '﷽', 'ß', 'İ', 'ﬀ'];
const MARKUP = [
  '<script>alert(1)</script>',
  '"><img src=x onerror=alert(1)>',
  "'; DROP TABLE requests; --",
  '${7*7}',
  '{{7*7}}',
  '<%= process.exit() %>',
  '../../etc/passwd',
  '%00',
  '%',
  '&',
  '=',
  '[]',
  '__proto__',
  'constructor',
  'toString',
];
const WORDS = ['', ' ', '   ', 'null', 'undefined', 'true', 'false', '0', '-1', '1e309', 'NaN', 'yes', 'on', 'new_account', 'cannot_log_in', 'child_not_linked', 'admin'];
const NAMES = ['Ann', 'Zoë', 'José', 'O’Brien-Smith', "D'Arcy", 'St. John', 'Anne-Marie', 'Nguyễn', 'Łukasz', 'Ægir', 'محمد', 'שרה', '李', 'Ngā', 'Zoe\u0308', 'Jean‐Luc', 'Ō'];
const TUTOR_GROUPS = ['7B', '10R', '9/2', 'Year 7 - B', '٧ب', 'R', '13.1'];
const PUPIL_IDS = ['ADM1001', 'A-17/22', 'x_1', '2024.007', 'ÄB12'];
const HUGE = ['A'.repeat(101), 'A'.repeat(2001), 'İ'.repeat(200), 'ﬀ'.repeat(130), 'A '.repeat(3000), '9'.repeat(25_000)];

const hostileString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...LONE_SURROGATES, ...CONTROL, ...INVISIBLE, ...GRAPHEMES, ...MARKUP, ...WORDS, ...NAMES, ...HUGE),
  fc.string({ maxLength: 40 }),
  // Any code points, lone surrogates included (fc.string's 'binary' unit does this too, but is slow to generate).
  fc.array(fc.integer({ min: 0, max: 0x10ffff }), { maxLength: 30 }).map((points) => String.fromCodePoint(...points)),
  fc.string({ unit: 'grapheme', maxLength: 30 }),
  // A name or word with hostile characters stuck on.
  fc.tuple(fc.constantFrom(...NAMES), fc.constantFrom(...LONE_SURROGATES, ...CONTROL, ...INVISIBLE, ...GRAPHEMES)).map(([a, b]) => a + b),
);

/** Emails near the edges: unicode, case, padding, length after lower-casing, shared addresses. */
const emailArbitrary: fc.Arbitrary<string> = fc.oneof(
  fc.tuple(fc.stringMatching(/^[a-z0-9][a-z0-9._%+-]{0,20}$/), fc.constantFrom('example.org', 'Example.ORG', 'bücher.example', 'xn--bcher-kva.example', 'school.sch.uk')).map(([l, d]) => `${l}@${d}`),
  fc.constantFrom('shared.one@example.org', 'SHARED.ONE@example.org', ' shared.two@example.org ', 'shared.two@EXAMPLE.org', 'ÄNNE@example.org'),
  fc.integer({ min: 1, max: 260 }).map((n) => `${'İ'.repeat(n)}@example.org`),
  fc.integer({ min: 1, max: 260 }).map((n) => `${'a'.repeat(n)}@example.org`),
  fc.constantFrom('a@b', '@example.org', 'a@@example.org', 'a b@example.org', 'a@example.org\u0000', '<a@example.org>', 'a@example.org, b@example.org', 'a@example.o'),
  hostileString,
);

interface ValidChild {
  firstName: string;
  lastName: string;
  tutorGroup: string;
  pupilIdentifier: string | null;
}

const pad = (arb: fc.Arbitrary<string>) => fc.tuple(fc.constantFrom('', ' ', '  ', '\t'), arb, fc.constantFrom('', ' ', '\n')).map(([a, b, c]) => a + b + c);

const validChild: fc.Arbitrary<ValidChild> = fc.record({
  firstName: pad(fc.constantFrom(...NAMES)),
  lastName: pad(fc.constantFrom(...NAMES)),
  tutorGroup: pad(fc.constantFrom(...TUTOR_GROUPS)),
  pupilIdentifier: fc.option(fc.constantFrom(...PUPIL_IDS, ''), { nil: null }),
});

interface ValidRequest {
  title: string;
  firstName: string;
  lastName: string;
  email: string;
  requestType: string;
  children: ValidChild[];
  comment: string | null;
}

let uniqueEmail = 0;
/** A request every part of which is valid, for an address used by no other request. */
const validRequest: fc.Arbitrary<ValidRequest> = fc.record({
  title: fc.constantFrom('', 'Mrs', 'Dr', 'Mx', ' Ms '),
  firstName: pad(fc.constantFrom(...NAMES)),
  lastName: pad(fc.constantFrom(...NAMES)),
  emailCase: fc.constantFrom('lower', 'upper', 'padded'),
  requestType: fc.constantFrom('new_account', 'cannot_log_in', 'child_not_linked'),
  children: fc.uniqueArray(validChild, { minLength: 1, maxLength: MAX_CHILDREN, selector: (c) => `${c.firstName.trim().toLowerCase()}|${c.lastName.trim().toLowerCase()}` }),
  comment: fc.option(fc.string({ unit: 'grapheme', maxLength: 300 }).map((s) => s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g, '')), { nil: null }),
}).map((r) => {
  uniqueEmail += 1;
  const address = `fuzz.valid.${uniqueEmail}.${process.pid}@example.org`;
  const email = r.emailCase === 'upper' ? address.toUpperCase() : r.emailCase === 'padded' ? `  ${address} ` : address;
  const { emailCase: _case, ...rest } = r;
  return { ...rest, email };
});

// ------------------------------------------------------------------ the form

type Pair = { key: string; value: string; raw?: boolean };

/** Percent-encodes the UTF-8 bytes of a string (a lone surrogate goes as U+FFFD, as browsers send it). */
function percentEncode(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9*_.-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * A pair's value as the server reads it: in UTF-8, or byte by byte when the client declared
 * ISO-8859-1 (so UTF-8 sent under that label arrives garbled, as it should). A broken escape
 * stays as sent, as qs leaves it.
 */
function decodedAsSent(pair: Pair, latin1: boolean): string {
  const escaped = pair.raw ? pair.value.replace(/\+/g, ' ') : percentEncode(pair.value);
  if (latin1) return escaped.replace(/%([0-9A-Fa-f]{2})/g, (_all, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  try {
    return decodeURIComponent(escaped);
  } catch {
    return escaped;
  }
}

function encodePairs(pairs: Pair[]): string {
  return pairs.map((p) => `${p.raw ? p.key : percentEncode(p.key)}=${p.raw ? p.value : percentEncode(p.value)}`).join('&');
}

function formPairs(r: ValidRequest): Pair[] {
  const pairs: Pair[] = [
    { key: 'title', value: r.title },
    { key: 'firstName', value: r.firstName },
    { key: 'lastName', value: r.lastName },
    { key: 'email', value: r.email },
    { key: 'emailConfirm', value: r.email },
    { key: 'requestType', value: r.requestType },
  ];
  r.children.forEach((c, i) => {
    pairs.push({ key: `children[${i}][firstName]`, value: c.firstName });
    pairs.push({ key: `children[${i}][lastName]`, value: c.lastName });
    pairs.push({ key: `children[${i}][tutorGroup]`, value: c.tutorGroup });
    pairs.push({ key: `children[${i}][pupilIdentifier]`, value: c.pupilIdentifier ?? '' });
  });
  pairs.push({ key: 'comment', value: r.comment ?? '' }, { key: 'privacyAccepted', value: 'yes' }, { key: 'website', value: '' }, { key: 'action', value: 'submit' });
  return pairs;
}

const FORM_FIELDS = ['title', 'firstName', 'lastName', 'email', 'emailConfirm', 'requestType', 'comment', 'privacyAccepted', 'website', 'action', '_csrf'];
const CHILD_FIELDS = ['firstName', 'lastName', 'tutorGroup', 'pupilIdentifier'];
const CHILD_INDEXES = ['0', '1', '2', '3', '4', '5', '7', '20', '21', '100', '999999999', '-1', '01', 'x', '', '__proto__', '1e3'];

const formKey: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...FORM_FIELDS),
  fc.tuple(fc.constantFrom(...CHILD_INDEXES), fc.constantFrom(...CHILD_FIELDS, 'x', '')).map(([i, f]) => `children[${i}][${f}]`),
  fc.constantFrom(...FORM_FIELDS).map((f) => `${f}[]`),
  fc.constantFrom(...FORM_FIELDS).map((f) => `${f}[a][b]`),
  fc.constantFrom('children', 'children[]', 'children[0]', 'children[0][]', '__proto__[polluted]', 'constructor[prototype][polluted]', '__proto__', 'hasOwnProperty', `a${'[b]'.repeat(40)}`, 'children[0][firstName][0][x]'),
  fc.string({ maxLength: 20 }),
);

const rawFragment = fc.constantFrom('%', '%Z', '%ZZ', '%E0%A4', '%ED%A0%80', '%C0%80', '%FF%FE', '%00', '+', '%2B', '%F4%90%80%80', '%EF%BB%BF');

type FormMutation =
  | { kind: 'set'; key: string; value: string }
  | { kind: 'raw'; key: string; value: string }
  | { kind: 'delete'; key: string }
  | { kind: 'repeat'; key: string; value: string }
  | { kind: 'action'; value: string }
  | { kind: 'many'; n: number };

const formMutation: fc.Arbitrary<FormMutation> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('set' as const), key: formKey, value: fc.oneof(hostileString, emailArbitrary) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('raw' as const), key: formKey, value: fc.tuple(fc.constantFrom('', 'Ann', 'a@b.org'), rawFragment).map(([a, b]) => a + b) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), key: fc.constantFrom(...FORM_FIELDS, 'children[0][firstName]', 'children[0][tutorGroup]') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('repeat' as const), key: fc.constantFrom(...FORM_FIELDS, 'children[0][firstName]'), value: hostileString }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('action' as const), value: fc.constantFrom('add-child', 'remove-child-0', 'remove-child-1', 'remove-child-99', `remove-child-${'9'.repeat(400)}`, 'remove-child--1', 'remove-child-', 'ADD-CHILD', 'submit') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('many' as const), n: fc.constantFrom(150, 199, 201, 500) }) },
);

interface FormCase {
  valid: ValidRequest | undefined;
  email: string;
  mutations: FormMutation[];
  csrf: 'valid' | 'missing' | 'wrong' | 'array' | 'header' | 'no-cookie';
  contentType: string | undefined;
}

const formCase: fc.Arbitrary<FormCase> = fc.record({
  valid: fc.option(validRequest, { nil: undefined, freq: 6 }),
  email: emailArbitrary,
  mutations: fc.oneof({ weight: 1, arbitrary: fc.constant([] as FormMutation[]) }, { weight: 4, arbitrary: fc.array(formMutation, { minLength: 1, maxLength: 5 }) }),
  csrf: fc.oneof(
    { weight: 12, arbitrary: fc.constant('valid' as const) },
    { weight: 1, arbitrary: fc.constantFrom('missing' as const, 'wrong' as const, 'array' as const, 'header' as const, 'no-cookie' as const) },
  ),
  contentType: fc.oneof(
    { weight: 12, arbitrary: fc.constant('application/x-www-form-urlencoded') },
    { weight: 1, arbitrary: fc.constantFrom('application/x-www-form-urlencoded; charset=utf-8', 'application/x-www-form-urlencoded; charset=iso-8859-1', 'application/x-www-form-urlencoded; charset=utf-16', 'text/plain', 'multipart/form-data; boundary=XyZ', 'application/json', 'APPLICATION/X-WWW-FORM-URLENCODED', 'application/x-www-form-urlencoded;;;', undefined) },
  ),
});

/** The urlencoded body for a form case: a valid form, or a plain one around the generated email, then the mutations. */
function formBody(c: FormCase, csrfToken: string): { body: string; unchanged: boolean; email: string | undefined } {
  const latin1 = /charset=iso-8859-1/i.test(c.contentType ?? '');
  let pairs: Pair[] = c.valid
    ? formPairs(c.valid)
    : [
        { key: 'email', value: c.email },
        { key: 'emailConfirm', value: c.email },
        { key: 'firstName', value: 'Ann' },
        { key: 'lastName', value: 'Parent' },
        { key: 'requestType', value: 'new_account' },
        { key: 'children[0][firstName]', value: 'Bo' },
        { key: 'children[0][lastName]', value: 'Parent' },
        { key: 'children[0][tutorGroup]', value: '7B' },
        { key: 'privacyAccepted', value: 'yes' },
      ];
  for (const m of c.mutations) {
    switch (m.kind) {
      case 'set':
        pairs = pairs.filter((p) => p.key !== m.key).concat({ key: m.key, value: m.value });
        break;
      case 'raw':
        pairs = pairs.filter((p) => p.key !== m.key).concat({ key: percentEncode(m.key), value: m.value, raw: true });
        break;
      case 'delete':
        pairs = pairs.filter((p) => p.key !== m.key);
        break;
      case 'repeat':
        pairs = pairs.concat({ key: m.key, value: m.value });
        break;
      case 'action':
        pairs = pairs.filter((p) => p.key !== 'action').concat({ key: 'action', value: m.value });
        break;
      case 'many':
        for (let i = 0; i < m.n; i++) pairs.push({ key: `extra${i}`, value: String(i) });
        break;
    }
  }
  const token = { key: '_csrf', value: csrfToken };
  if (c.csrf === 'valid' || c.csrf === 'no-cookie') pairs = pairs.filter((p) => p.key !== '_csrf').concat(token);
  else if (c.csrf === 'wrong') pairs = pairs.filter((p) => p.key !== '_csrf').concat({ key: '_csrf', value: `${csrfToken.slice(0, -4)}AAAA` });
  else if (c.csrf === 'array') pairs = pairs.filter((p) => p.key !== '_csrf').concat({ key: '_csrf[]', value: csrfToken }, { key: '_csrf[]', value: csrfToken });
  else pairs = pairs.filter((p) => p.key !== '_csrf');
  const emails = pairs.filter((p) => p.key === 'email' || (p.raw && p.key === percentEncode('email')));
  return { body: encodePairs(pairs), unchanged: c.mutations.length === 0, email: emails.length === 1 ? decodedAsSent(emails[0] as Pair, latin1) : undefined };
}

// ------------------------------------------------------------------ the API

const jsonHostile: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, 0, -1, 1.5, 1e308, -0, Number.MAX_SAFE_INTEGER + 2) },
  { weight: 1, arbitrary: fc.array(hostileString, { maxLength: 3 }) },
  { weight: 1, arbitrary: fc.dictionary(fc.constantFrom('firstName', 'length', 'toString', '__proto__', 'x'), hostileString, { maxKeys: 3 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.integer({ min: 10, max: 200 }).map((depth) => JSON.parse('['.repeat(depth) + ']'.repeat(depth)) as unknown) },
);

type JsonMutation = { kind: 'set'; key: string; value: unknown } | { kind: 'delete'; key: string } | { kind: 'children'; value: unknown } | { kind: 'child'; index: number; key: string; value: unknown };

const API_FIELDS = ['title', 'firstName', 'lastName', 'email', 'requestType', 'children', 'comment', 'privacyAccepted'];

const jsonMutation: fc.Arbitrary<JsonMutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), key: fc.oneof(fc.constantFrom(...API_FIELDS, 'status', 'id', 'publicId', 'verifiedAt', '__proto__', 'constructor'), fc.string({ maxLength: 10 })), value: fc.oneof(jsonHostile, emailArbitrary) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), key: fc.constantFrom(...API_FIELDS) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('children' as const),
      value: fc.oneof(
        fc.constant([]),
        fc.array(validChild, { minLength: MAX_CHILDREN + 1, maxLength: 30 }),
        fc.array(fc.oneof(validChild, jsonHostile), { maxLength: 6 }),
        fc.dictionary(fc.constantFrom('0', '1', 'length'), validChild, { maxKeys: 3 }),
        jsonHostile,
      ),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('child' as const), index: fc.nat(MAX_CHILDREN), key: fc.constantFrom(...CHILD_FIELDS, 'moodleUserId', 'linkState', 'x'), value: jsonHostile }) },
);

interface ApiCase {
  shape: 'mutated' | 'random' | 'malformed' | 'oversize';
  valid: ValidRequest;
  email: string;
  mutations: JsonMutation[];
  random: unknown;
  malformed: string;
  contentType: string | undefined;
  key: 'valid' | 'missing' | 'wrong' | 'header';
  idempotencyKey: string | undefined;
  privacy: unknown;
}

const apiCase: fc.Arbitrary<ApiCase> = fc.record({
  shape: fc.oneof({ weight: 14, arbitrary: fc.constant('mutated' as const) }, { weight: 2, arbitrary: fc.constant('random' as const) }, { weight: 2, arbitrary: fc.constant('malformed' as const) }, { weight: 1, arbitrary: fc.constant('oversize' as const) }),
  valid: validRequest,
  email: fc.option(emailArbitrary, { nil: '', freq: 2 }),
  mutations: fc.oneof({ weight: 1, arbitrary: fc.constant([] as JsonMutation[]) }, { weight: 4, arbitrary: fc.array(jsonMutation, { minLength: 1, maxLength: 4 }) }),
  random: fc.jsonValue({ maxDepth: 4 }),
  malformed: fc.oneof(
    fc.constantFrom('{', '{"firstName":', '{"a":1}}', '[', "{'firstName':'Ann'}", '{"a":NaN}', '{"a":undefined}', '\u0000', '\ufeff{}', 'null', '"text"', '42', 'true', '', ' ', '{"a":"\\ud800"}', '{"a":"\\u0000"}', '{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"polluted":1}}}', '['.repeat(20_000)),
    fc.string({ maxLength: 50 }),
  ),
  contentType: fc.oneof(
    { weight: 12, arbitrary: fc.constant('application/json') },
    { weight: 1, arbitrary: fc.constantFrom('application/json; charset=utf-8', 'application/json; charset=latin1', 'application/json; charset=utf-16', 'text/plain', 'text/json', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=XyZ', 'application/vnd.api+json', 'APPLICATION/JSON', undefined) },
  ),
  key: fc.oneof({ weight: 15, arbitrary: fc.constant('valid' as const) }, { weight: 1, arbitrary: fc.constantFrom('missing' as const, 'wrong' as const, 'header' as const) }),
  idempotencyKey: fc.oneof({ weight: 6, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.oneof(fc.stringMatching(/^[A-Za-z0-9-]{1,20}$/), hostileString, fc.constant('k'.repeat(101))) }),
  privacy: fc.oneof({ weight: 8, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constantFrom('true', 'yes', 1, 'on', false, null, [true], { value: true }) }),
});

function apiObject(c: ApiCase): Record<string, unknown> {
  const v = c.valid;
  const body: Record<string, unknown> = {
    title: v.title,
    firstName: v.firstName,
    lastName: v.lastName,
    email: c.email === '' ? v.email : c.email,
    requestType: v.requestType,
    children: v.children.map((child) => ({ ...child })),
    comment: v.comment,
    privacyAccepted: c.privacy,
  };
  for (const m of c.mutations) {
    if (m.kind === 'set') Object.defineProperty(body, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
    else if (m.kind === 'delete') delete body[m.key];
    else if (m.kind === 'children') body.children = m.value;
    else if (Array.isArray(body.children) && body.children[m.index] && typeof body.children[m.index] === 'object') {
      (body.children[m.index] as Record<string, unknown>)[m.key] = m.value;
    }
  }
  return body;
}

function apiBody(c: ApiCase): string | Buffer {
  switch (c.shape) {
    case 'random':
      return JSON.stringify(c.random) ?? 'null';
    case 'malformed':
      return c.malformed;
    case 'oversize':
      return JSON.stringify({ ...apiObject(c), comment: 'x'.repeat(25_000) });
    default:
      return JSON.stringify(apiObject(c));
  }
}

// ------------------------------------------------------------------ the run

/** Answers that show how the service was built rather than what went wrong (pages that echo input are not checked). */
function assertNoInternals(text: string, where: string): void {
  // A request's public id is random base64url and can itself spell "ER_ABC": it is not looked at.
  const withoutIds = text.replace(/\/request\/status\/[A-Za-z0-9_-]+/g, '/request/status/ID').replace(/"id":"[A-Za-z0-9_-]+"/g, '"id":"ID"');
  assert.doesNotMatch(withoutIds, /node_modules|\.(?:ts|js):\d+:\d+|SQLITE_[A-Z]+|ER_[A-Z_]{3,}/, `${where}: the answer shows internals`);
}

const PLAIN_FORM_TYPES = ['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-8', 'APPLICATION/X-WWW-FORM-URLENCODED'];
const PLAIN_JSON_TYPES = ['application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON'];

describe('fuzzing the intake on SQLite', () => {
  let t: TestDatabase;
  let services: Services;
  let server: http.Server;
  let keepAlive: http.Agent;
  let csrfToken: string;
  let csrfCookie: string;
  let apiKey: string;

  before(async () => {
    t = await createTestDatabase('sqlite');
    // Thousands of commits: a disk flush after each would be most of the run, and a crash-safe
    // test database is worth nothing.
    await t.db.raw('PRAGMA synchronous = OFF');
    services = createServices(fuzzConfig(), { db: t.db, moodle: null });
    // One server and pooled connections for the whole run: a socket per body would be most of the time spent.
    const app = createApp(services);
    // As in production: templates compiled once, not at every page (the fuzzer renders thousands).
    app.enable('view cache');
    server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    keepAlive = new http.Agent({ keepAlive: true, maxSockets: 4 });
    const form = await request(server).get('/request').agent(keepAlive).expect(200);
    csrfToken = csrfTokenOf(form.text);
    const cookie = String((form.headers['set-cookie'] as unknown as string[])[0]);
    csrfCookie = cookie.split(';')[0] as string;
    apiKey = (await createApiKey(t.db, 'fuzz')).key;
  });

  after(async () => {
    keepAlive?.destroy();
    await new Promise<void>((resolve) => server?.close(() => resolve()));
    await services?.close();
    await t?.destroy();
  });

  /**
   * A refusal leaves every table as it was; a stored submission touches exactly one request
   * (the one its audit event names), which must be valid and filed under the email sent.
   */
  type Counts = Awaited<ReturnType<typeof counts>>;
  /** The counts after the last run, when it passed: nothing else writes, so they are still true. */
  let known: Counts | undefined;
  async function countsBefore(): Promise<Counts> {
    const before = known ?? (await counts(t.db));
    known = undefined;
    return before;
  }

  async function afterAnswer(before: Counts, now: Counts, status: number, accepted: boolean, email: unknown, where: string) {
    if (!accepted) {
      assert.deepEqual(now, before, `${where}: answered ${status} but changed the database`);
      return;
    }
    assert.ok(now.requests - before.requests <= 1, `${where}: at most one request per submission`);
    assert.equal(now.audit - before.audit, 1, `${where}: a stored submission has one audit event`);
    const event = (await t.db('audit_events').orderBy('id', 'desc').first()) as { request_id: number; action: string };
    assert.ok(['submitted', 'details_held'].includes(event.action), `${where}: audited as ${event.action}`);
    const row = (await t.db('requests').where({ id: event.request_id }).first()) as RequestRow;
    assert.equal(typeof email, 'string', `${where}: stored a request from a body without an email string`);
    assert.equal(row.email, (email as string).trim().toLowerCase(), `${where}: filed under the email sent`);
    await assertStoredRequestValid(t.db, row);
  }

  it(`POST /request: ${FORM_RUNS} random and hostile form bodies`, { timeout: 300_000 }, async () => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(formCase, async (c) => {
        const { body, unchanged, email } = formBody(c, csrfToken);
        let req = request(server).post('/request').agent(keepAlive);
        if (c.csrf !== 'no-cookie') req = req.set('Cookie', csrfCookie);
        if (c.csrf === 'header') req = req.set('X-CSRF-Token', csrfToken);
        const payload = c.contentType?.startsWith('multipart/') ? `--XyZ\r\nContent-Disposition: form-data; name="firstName"\r\n\r\n${body.slice(0, 200)}\r\n--XyZ--\r\n` : body;
        const before = await countsBefore();
        const res = c.contentType === undefined ? await req.send(Buffer.from(payload)) : await req.set('Content-Type', c.contentType).send(payload);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const where = `form body ${JSON.stringify(payload.slice(0, 300))} (${c.contentType}, csrf ${c.csrf})`;
        assert.ok(res.status < 500, `${where}: answered ${res.status}`);
        assert.ok([200, 400, 403, 413, 415].includes(res.status), `${where}: unexpected ${res.status}`);
        const thankYou = res.status === 200 && /<h1>Thank you<\/h1>/.test(res.text);
        if (res.status === 200) assert.ok(thankYou || /<form method="post" action="\/request"/.test(res.text), `${where}: a 200 is the thank-you page or the form`);
        if (res.status !== 400 && !(res.status === 200 && !thankYou)) assertNoInternals(res.text, where);
        const now = await counts(t.db);
        const changed = now.audit !== before.audit;
        // The honeypot: a filled "website" gets the thank-you page and nothing is stored.
        if (thankYou && !changed) assert.match(payload, /(^|&)website=[^&]/, `${where}: thanked but nothing stored`);
        await afterAnswer(before, now, res.status, thankYou && changed, email, where);
        // An untouched valid form, with its token, as a browser sends it, must get through.
        if (c.valid && unchanged && c.csrf === 'valid' && PLAIN_FORM_TYPES.includes(c.contentType ?? '')) {
          assert.ok(thankYou && changed, `${where}: a valid form was refused (${res.status}): ${res.text.match(/<li><a href="#[^"]+">[^<]+/g)?.join(' | ')}`);
        }
        known = now;
      }),
      { numRuns: FORM_RUNS, ...(SEED === undefined ? {} : { seed: SEED }) },
    );
    // The run must have reached every kind of answer, or the generators have gone blind.
    if (FORM_RUNS >= 1000) for (const status of [200, 400, 403, 413]) assert.ok((statuses.get(status) ?? 0) > 0, `no ${status} in ${JSON.stringify([...statuses])}`);
  });

  it(`POST /api/v1/requests: ${API_RUNS} random and hostile JSON bodies`, { timeout: 300_000 }, async () => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(apiCase, async (c) => {
        const body = apiBody(c);
        let req = request(server).post('/api/v1/requests').agent(keepAlive);
        if (c.key === 'valid') req = req.set('Authorization', `Bearer ${apiKey}`);
        if (c.key === 'header') req = req.set('X-Api-Key', apiKey);
        if (c.key === 'wrong') req = req.set('Authorization', `Bearer ${apiKey.slice(0, -3)}abc`);
        if (c.idempotencyKey !== undefined) {
          // Header values must be Latin-1 to be sent at all; the rest is the client's own error.
          if (/^[\x20-\x7e\x80-\xff]*$/.test(c.idempotencyKey)) req = req.set('Idempotency-Key', c.idempotencyKey);
        }
        const before = await countsBefore();
        const res = c.contentType === undefined ? await req.send(Buffer.from(body)) : await req.set('Content-Type', c.contentType).send(body);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const where = `API body ${String(body).slice(0, 300)} (${c.contentType}, key ${c.key}, idempotency ${JSON.stringify(c.idempotencyKey)?.slice(0, 100)})`;
        assert.ok(res.status < 500, `${where}: answered ${res.status} ${res.text.slice(0, 300)}`);
        // 431: Node's HTTP server refuses headers over 16 kB (a huge Idempotency-Key) before the app sees them.
        assert.ok([200, 201, 400, 401, 409, 413, 415, 431].includes(res.status), `${where}: unexpected ${res.status}`);
        // 409: an Idempotency-Key sent before with another body (the generator repeats short keys).
        if (res.status === 409) assert.equal(res.body?.error?.code, 'idempotency_key_reused', `${where}: 409 only for a reused Idempotency-Key`);
        if (res.status !== 431) assert.match(String(res.headers['content-type']), /application\/json/, `${where}: the API always answers JSON`);
        assertNoInternals(res.text, where);
        if (res.status >= 400 && res.status !== 431) assert.equal(typeof res.body?.error?.message, 'string', `${where}: an error says what is wrong`);
        const accepted = res.status === 201 || (res.status === 200 && res.body.outcome === 'extended');
        const parsed = c.shape === 'mutated' ? apiObject(c) : undefined;
        const now = await counts(t.db);
        await afterAnswer(before, now, res.status, accepted, parsed?.email, where);
        if (c.shape === 'mutated' && c.mutations.length === 0 && c.email === '' && c.privacy === true && (c.key === 'valid' || c.key === 'header') && c.idempotencyKey === undefined && PLAIN_JSON_TYPES.includes(c.contentType ?? '')) {
          assert.equal(res.status, 201, `${where}: a valid request was refused: ${res.text}`);
        }
        known = now;
      }),
      { numRuns: API_RUNS, ...(SEED === undefined ? {} : { seed: SEED }) },
    );
    if (API_RUNS >= 1000) for (const status of [201, 400, 401, 413, 415]) assert.ok((statuses.get(status) ?? 0) > 0, `no ${status} in ${JSON.stringify([...statuses])}`);
  });

  it('afterwards, every stored request and child is valid', async (context) => {
    const stored = await assertEveryStoredRequestValid(t.db);
    context.diagnostic(`${stored} requests stored by ${RUNS} bodies, all valid`);
    assert.ok(stored > RUNS / 20, `the fuzzer stored only ${stored} requests: it is hardly testing what gets through`);
  });
});

// ------------------------------------------------------------------ limits under a burst, and what the fuzzer found

for (const dialect of DIALECTS) {
  describe(`rate limits under a burst on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let server: http.Server;
    let apiKey: string;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(fuzzConfig({ FORM_RATE_LIMIT_PER_IP: '3', FORM_RATE_LIMIT_PER_EMAIL: '2' }), { db: t.db, moodle: null });
      server = http.createServer(createApp(services));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      apiKey = (await createApiKey(t.db, 'burst')).key;
    });
    after(async () => {
      if (skip) return;
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await services.close();
      await t.destroy();
    });

    it('25 forms at once from one address: exactly the limit is stored, the rest get 429, none a 5xx', { skip }, async () => {
      const sessions = await Promise.all(
        Array.from({ length: 25 }, async () => {
          // FormSession takes the app; a listening server lets the 25 share one address and port.
          const session = new FormSession(server as never);
          await session.open();
          return session;
        }),
      );
      const answers = await Promise.all(sessions.map((s) => s.post('/request', validFields())));
      const statuses = answers.map((a) => a.status).sort();
      assert.deepEqual([...new Set(statuses)], [200, 429], `statuses ${statuses.join(' ')}`);
      assert.equal(statuses.filter((s) => s === 200).length, 3);
      for (const refused of answers.filter((a) => a.status === 429)) {
        assert.match(refused.text, /Your request has not been sent yet/);
        assert.ok(Number(refused.headers['retry-after']) > 0);
      }
      assert.equal((await counts(t.db)).requests, 3);
    });

    it('10 API calls at once for one address: the per-email limit answers 429, never a 5xx, and one request holds it all', { skip }, async () => {
      const email = `burst.${dialect}.${process.pid}@example.org`;
      const body = (i: number) => ({
        firstName: 'Pat',
        lastName: 'Burst',
        email,
        requestType: 'new_account',
        children: [{ firstName: ['Ann', 'Bo', 'Cy', 'Di', 'Ed', 'Flo', 'Gus', 'Hal', 'Ivy', 'Jo'][i], lastName: 'Burst', tutorGroup: '7B' }],
        privacyAccepted: true,
      });
      const answers = await Promise.all(
        Array.from({ length: 10 }, (_, i) => request(server).post('/api/v1/requests').set('Authorization', `Bearer ${apiKey}`).send(body(i))),
      );
      const statuses = answers.map((a) => a.status);
      assert.ok(statuses.every((s) => s < 500), `statuses ${statuses.join(' ')}: ${answers.find((a) => a.status >= 500)?.text}`);
      // Two calls at the very same moment may race for the same open request: one is told to try again (409).
      assert.ok(statuses.every((s) => [200, 201, 409, 429].includes(s)), `statuses ${statuses.join(' ')}`);
      assert.equal(statuses.filter((s) => s === 429).length, 8, `the limit of 2 per address: ${statuses.join(' ')}`);
      for (const a of answers.filter((x) => x.status === 429)) assert.equal(a.body.error.code, 'rate_limited');
      for (const row of (await t.db('requests').where({ email })) as RequestRow[]) await assertStoredRequestValid(t.db, row);
    });
  });

  describe(`what the fuzzer found, on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: ReturnType<typeof createApp>;
    let apiKey: string;
    let sequence = 0;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(fuzzConfig(), { db: t.db, moodle: null });
      app = createApp(services);
      apiKey = (await createApiKey(t.db, 'regressions')).key;
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await t.destroy();
    });

    const apiBody = (overrides: Record<string, unknown> = {}) => {
      sequence += 1;
      return {
        firstName: 'Pat',
        lastName: 'Found',
        email: `found.${sequence}.${process.pid}@example.org`,
        requestType: 'new_account',
        children: [{ firstName: 'Ann', lastName: 'Found', tutorGroup: '7B' }],
        privacyAccepted: true,
        ...overrides,
      };
    };
    const post = (body: unknown) => request(app).post('/api/v1/requests').set('Authorization', `Bearer ${apiKey}`).send(body as object);

    /** Sends a body that must be refused on one field, and checks that nothing at all was written. */
    async function refused(body: unknown, field: string) {
      const before = await counts(t.db);
      const res = await post(body);
      assert.equal(res.status, 400, res.text);
      assert.ok(
        (res.body.error.fields as Array<{ field: string }>).some((f) => f.field === field),
        `refused on ${field}: ${JSON.stringify(res.body.error.fields)}`,
      );
      assert.deepEqual(await counts(t.db), before);
      return res;
    }

    it('an address that would grow past 254 characters when lower-cased is refused, not a 500', { skip }, async () => {
      // "İ" lower-cases to "i" and a combining dot: 130 of them would make 260 characters. It is
      // not lower-cased at all (only A to Z are), and refused as no Moodle username.
      const res = await refused(apiBody({ email: `${'İ'.repeat(130)}@example.org` }), 'email');
      assert.match(res.body.error.fields[0].message, /Moodle username/);
      const form = new FormSession(app);
      await form.open();
      const email = `${'İ'.repeat(130)}@example.org`;
      const page = await form.post('/request', validFields({ email, emailConfirm: email })).expect(400);
      assert.match(page.text, /Moodle username/);
    });

    it('an address of the longest allowed length is stored (its rate-limit key used to overflow its column)', { skip }, async () => {
      // The longest address that can be a Moodle username: 100 characters.
      const email = `${'a'.repeat(88 - String(process.pid).length)}${process.pid}@example.org`;
      assert.equal(email.length, 100);
      await post(apiBody({ email })).expect(201);
      const form = new FormSession(app);
      await form.open();
      const other = `${'b'.repeat(88 - String(process.pid).length)}${process.pid}@example.org`;
      const page = await form.post('/request', validFields({ email: other, emailConfirm: other })).expect(200);
      assert.match(page.text, /Thank you/);
      assert.equal((await t.db('rate_limits').where('key', 'like', `%${'a'.repeat(20)}%`)).length, 0, 'no address stored readable in rate_limits');
    });

    it('control and invisible characters in an address are refused', { skip }, async () => {
      for (const email of ['pat\u0000@example.org', 'pat@exa\u0007mple.org', '\u202egro.elpmaxe@tap', 'pat\u200b@example.org', 'pat@exam\ufeffple.org', 'p\ud800at@example.org']) {
        await refused(apiBody({ email }), 'email');
      }
    });

    it('control characters in a comment are refused; line breaks, tabs, emoji and right-to-left text are kept', { skip }, async () => {
      for (const comment of ['Hello\u0000', 'bell\u0007', 'esc\u001b[31m', 'c1\u0085', 'lone \ud800 surrogate']) {
        const res = await refused(apiBody({ comment }), 'comment');
        assert.match(res.body.error.fields[0].message, /hidden control characters/);
      }
      const comment = 'Line one\r\nLine two\twith a tab 👨‍👩‍👧 and שלום \u202bembedded\u202c';
      const created = await post(apiBody({ comment })).expect(201);
      const row = (await t.db('requests').where({ public_id: created.body.id }).first()) as RequestRow;
      assert.equal(row.parent_comment, comment);
    });

    /** The token of the link mailed for the newest submission held for this address's open request. */
    async function heldToken(email: string): Promise<string> {
      const row = (await t.db('mail_outbox').where({ recipient: email, kind: 'held_details' }).orderBy('id', 'desc').first()) as { payload: string };
      const link = (JSON.parse(row.payload) as { verificationLink: string }).verificationLink;
      return new URL(link).pathname.split('/').pop() as string;
    }

    it('sending again for an open request cannot take it past the children limit', { skip }, async () => {
      const email = `again.children.${process.pid}@example.org`;
      const child = (firstName: string) => ({ firstName, lastName: 'Again', tutorGroup: '7B' });
      await post(apiBody({ email, children: [child('Ann'), child('Bo'), child('Cy')] })).expect(201);
      // A child already on the request is not counted twice.
      const same = await post(apiBody({ email, children: [child('Ann'), child('Di')] })).expect(200);
      assert.equal(same.body.outcome, 'extended');
      assert.equal((await services.intake.confirmHeldDetails(await heldToken(email))).kind, 'added');
      // Held like any other: refusing it now would tell the sender that the address has a request.
      await post(apiBody({ email, children: [child('Ed')] })).expect(200);
      const tooMany = await services.intake.confirmHeldDetails(await heldToken(email));
      assert.equal(tooMany.kind, 'too-much');
      assert.match((tooMany as { message: string }).message, /up to 4 children on one request/);
      const form = new FormSession(app);
      await form.open();
      const page = await form.post('/request', validFields({ email, emailConfirm: email, 'children[1][firstName]': 'Flo' })).expect(200);
      assert.match(page.text, /Thank you/);
      assert.equal((await services.intake.confirmHeldDetails(await heldToken(email))).kind, 'too-much');
      const row = (await t.db('requests').where({ email }).first()) as RequestRow;
      assert.equal((await t.db('request_children').where({ request_id: row.id })).length, 4);
      // Using a held link confirms the address; everything else must still be what the schema allows.
      assert.equal(row.status, 'pending');
      await assertStoredRequestValid(t.db, { ...row, status: 'unverified' });
    });

    it('sending again for an open request cannot make its comment longer than the limit', { skip }, async () => {
      const email = `again.comment.${process.pid}@example.org`;
      await post(apiBody({ email, comment: 'x'.repeat(1500) })).expect(201);
      await post(apiBody({ email, comment: 'y'.repeat(600) })).expect(200);
      const tooLong = await services.intake.confirmHeldDetails(await heldToken(email));
      assert.equal(tooLong.kind, 'too-much');
      assert.match((tooLong as { message: string }).message, /Shorten this one to 498 characters or fewer/);
      await post(apiBody({ email, comment: 'y'.repeat(498) })).expect(200);
      assert.equal((await services.intake.confirmHeldDetails(await heldToken(email))).kind, 'added');
      const row = (await t.db('requests').where({ email }).first()) as RequestRow;
      assert.equal(row.parent_comment?.length, MAX_COMMENT);
      // Using a held link confirms the address; everything else must still be what the schema allows.
      assert.equal(row.status, 'pending');
      await assertStoredRequestValid(t.db, { ...row, status: 'unverified' });
    });

    it('a refused body shows no stack trace, even outside production', { skip }, async () => {
      const form = new FormSession(app);
      await form.open();
      const res = await form.agent
        .post('/request')
        .set('Content-Type', 'application/x-www-form-urlencoded; charset=utf-16')
        .send(`_csrf=${form.csrfToken}&firstName=Ann`);
      assert.equal(res.status, 415);
      assert.doesNotMatch(res.text, /node_modules|Technical detail|UnsupportedMediaTypeError/);
    });
  });
}
