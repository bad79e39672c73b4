// Dashboard: the staff request list and its search on MariaDB holding 100,000 requests, signed in
// through the real sign-in form, against a bare node:http + mysql2 server that runs each page's
// own SQL and answers the rows as JSON. Both run in their own process; this one seeds the data,
// drives both over loopback and checks every answer against what it seeded.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { Database } from '../../../src/db/database';
import { newPublicId } from '../../../src/requests/request-lifecycle';
import { CHILDREN_TABLE, REQUESTS_TABLE, childToRow, requestToRow, type ChildRecord, type RequestRecord } from '../../../src/requests/request-repository';
import { type ChildLinkState, type RequestSource, type RequestStatus, type RequestType } from '../../../src/requests/request-states';
import { usernameFromEmail } from '../../../src/requests/username';
import { prng, weighted } from '../support/random';
import { RequestSearchRepository, searchWords, type ListCursor, type ListSort, type StatusFilter } from '../../../src/review/request-search.repository';
import { listHref, PAGE_SIZE, TAB_ORDER } from '../../../src/review/request-list.routes';
import { assertAuthInvariant } from '../../support/builders';
import { htmlText } from '../../support/http';
import { BENCH_AUTH_TABLE, type BenchDatabase } from '../support/bench-database';
import { decimal, integer, ratio, seconds, table, yesNo } from '../support/format';
import { check, type BenchContext, type BenchScenario, type ReportSection, type TargetResult } from '../support/scenario';
import { START_NODE_FLAGS, startWorker, type WorkerHandle } from '../support/worker';
import type { BareAnswer, BarePage, Statement } from '../workers/dashboard-bare';

/** Two staff members at once: the office of a large school, on a 2-core machine. */
const CONNECTIONS = 2;
const TARGET_P95_MS = 50;
const SEED_BATCH = 2000;
const SEED_CONNECTIONS = 3;
const SQL_TIMING_RUNS = 10;
/** Pages reached through their "Next page" links before the jump to the deep page. */
const WALKED_PAGES = 10;
/**
 * The list's rule, as staff see it: a search matching more requests than this is not counted by
 * status; its "All" tab says "more than 1,000" and the others show no count.
 */
const SEARCH_COUNT_CAP = 1000;
const MORE_THAN_CAP = `more than ${SEARCH_COUNT_CAP.toLocaleString('en-GB')}`;

interface LoadSettings {
  warmupMs: number;
  durationMs: number;
  /** A slow page is measured for longer rather than reported from a handful of samples… */
  minSamples: number;
  /** …but not for ever. */
  maxMs: number;
}

const SETTINGS = {
  full: {
    requests: 100_000,
    deepPage: 200,
    service: { warmupMs: 1000, durationMs: 4000, minSamples: 150, maxMs: 8000 },
    bare: { warmupMs: 500, durationMs: 2000, minSamples: 150, maxMs: 5000 },
  },
  quick: {
    requests: 5000,
    deepPage: 20,
    service: { warmupMs: 300, durationMs: 1000, minSamples: 30, maxMs: 3000 },
    bare: { warmupMs: 200, durationMs: 600, minSamples: 30, maxMs: 2000 },
  },
} as const satisfies Record<string, { requests: number; deepPage: number; service: LoadSettings; bare: LoadSettings }>;

// ---------------------------------------------------------------------------------------------
// The seeded school: deterministic, so a run can be repeated and its checks computed here.

/** Picks from a list where the first entries are the most common, as names are (Zipf, exponent 0.5). */
function zipf<T>(items: readonly T[], random: () => number): () => T {
  const cumulative: number[] = [];
  let sum = 0;
  for (let i = 0; i < items.length; i++) cumulative.push((sum += 1 / Math.sqrt(i + 1)));
  return () => {
    const x = random() * sum;
    let lo = 0;
    let hi = cumulative.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((cumulative[mid] as number) < x) lo = mid + 1;
      else hi = mid;
    }
    return items[lo] as T;
  };
}

// Most common first. ASCII only: MariaDB's utf8mb4_unicode_ci and JavaScript then agree on what
// a prefix matches, so the expected rows can be computed here.
const PARENT_FIRST_NAMES = [
  'Sarah', 'Emma', 'David', 'Claire', 'James', 'Laura', 'Mark', 'Rebecca', 'Paul', 'Gemma', 'Andrew', 'Louise', 'Richard', 'Michelle',
  'Daniel', 'Nicola', 'Christopher', 'Kelly', 'Michael', 'Lisa', 'John', 'Joanne', 'Matthew', 'Helen', 'Stephen', 'Rachel', 'Robert',
  'Victoria', 'Lee', 'Amy', 'Jonathan', 'Katie', 'Simon', 'Natalie', 'Peter', 'Hannah', 'Thomas', 'Kate', 'Adam', 'Charlotte', 'Craig',
  'Jennifer', 'Gareth', 'Zoe', 'Martin', 'Samantha', 'Neil', 'Stephanie', 'Carl', 'Jessica', 'Ian', 'Lucy', 'Jason', 'Donna', 'Steven',
  'Leanne', 'Wayne', 'Kirsty', 'Anthony', 'Amanda', 'Darren', 'Fiona', 'Scott', 'Jade', 'Gary', 'Hayley', 'Dean', 'Sophie', 'Ben', 'Catherine',
  'Mohammed', 'Fatima', 'Ahmed', 'Ayesha', 'Imran', 'Nadia', 'Rajesh', 'Priya', 'Sanjay', 'Anita', 'Tomasz', 'Agnieszka', 'Piotr', 'Katarzyna',
  'Chukwuemeka', 'Ngozi', 'Kwame', 'Abena', 'Wei', 'Mei', 'Luca', 'Giulia', 'Joao', 'Ana', 'Sean', 'Siobhan', 'Rhys', 'Cerys', 'Alistair',
  'Morag', 'Jean-Paul', 'Anne-Marie', 'Mary-Kate',
];
const CHILD_FIRST_NAMES = [
  'Oliver', 'Olivia', 'Amelia', 'George', 'Harry', 'Isla', 'Jack', 'Ava', 'Noah', 'Mia', 'Charlie', 'Emily', 'Leo', 'Sophia', 'Jacob', 'Grace',
  'Freddie', 'Lily', 'Alfie', 'Ella', 'Oscar', 'Evie', 'Archie', 'Poppy', 'Thomas', 'Isabella', 'Joshua', 'Sophie', 'William', 'Freya',
  'Muhammad', 'Aisha', 'Arthur', 'Florence', 'Henry', 'Willow', 'Theo', 'Rosie', 'Ethan', 'Daisy', 'Max', 'Phoebe', 'Lucas', 'Harper',
  'Isaac', 'Sienna', 'Logan', 'Matilda', 'Mason', 'Elsie', 'Joseph', 'Ruby', 'Samuel', 'Maya', 'Alexander', 'Millie', 'Dylan', 'Zara',
  'Sebastian', 'Layla', 'Reuben', 'Eva', 'Adam', 'Imogen', 'Finley', 'Esme', 'Toby', 'Ivy', 'Riley', 'Chloe', 'Elijah', 'Erin', 'Ibrahim',
  'Maryam', 'Zain', 'Hafsa', 'Yusuf', 'Nia', 'Kai', 'Anaya', 'Rohan', 'Amara', 'Arjun', 'Jessica', 'Jayden', 'Lucy', 'Tyler', 'Niamh',
  'Liam', 'Megan', 'Connor', 'Seren', 'Zofia', 'Jakub', 'Chidi', 'Adaeze', 'Hugo', 'Ines', 'Mateo', 'Aoife', 'Callum', 'Skye',
];
const SURNAMES = [
  'Smith', 'Jones', 'Williams', 'Taylor', 'Brown', 'Davies', 'Evans', 'Wilson', 'Thomas', 'Johnson', 'Roberts', 'Robinson', 'Thompson',
  'Wright', 'Walker', 'White', 'Edwards', 'Hughes', 'Green', 'Hall', 'Lewis', 'Harris', 'Clarke', 'Patel', 'Jackson', 'Wood', 'Turner',
  'Martin', 'Cooper', 'Hill', 'Ward', 'Morris', 'Moore', 'Clark', 'Lee', 'King', 'Baker', 'Harrison', 'Morgan', 'Allen', 'James', 'Scott',
  'Phillips', 'Watson', 'Davis', 'Parker', 'Price', 'Bennett', 'Young', 'Griffiths', 'Mitchell', 'Kelly', 'Cook', 'Carter', 'Richardson',
  'Bailey', 'Collins', 'Bell', 'Shaw', 'Murphy', 'Miller', 'Cox', 'Richards', 'Khan', 'Marshall', 'Anderson', 'Simpson', 'Ellis', 'Adams',
  'Singh', 'Begum', 'Wilkinson', 'Foster', 'Chapman', 'Powell', 'Webb', 'Rogers', 'Gray', 'Mason', 'Ali', 'Hunt', 'Hussain', 'Campbell',
  'Matthews', 'Owen', 'Palmer', 'Holmes', 'Mills', 'Barnes', 'Knight', 'Lloyd', 'Butler', 'Russell', 'Barker', 'Fisher', 'Stevens',
  'Jenkins', 'Murray', 'Dixon', 'Harvey', 'Graham', 'Pearson', 'Ahmed', 'Fletcher', 'Walsh', 'Kaur', 'Gibson', 'Howard', 'Andrews',
  'Stewart', 'Elliott', 'Reynolds', 'Saunders', 'Payne', 'Fox', 'Ford', 'Pearce', 'Day', 'Brooks', 'West', 'Lawrence', 'Cole', 'Atkinson',
  'Bradley', 'Spencer', 'Gill', 'Dawson', 'Ball', 'Burton', "O'Brien", 'Watts', 'Rose', 'Booth', 'Perry', 'Ryan', 'Grant', 'Wells',
  'Armstrong', 'Francis', 'Rees', 'Hayes', 'Hart', 'Hudson', 'Newman', 'Barrett', 'Webster', 'Hunter', 'Gregory', 'Carr', 'Lowe', 'Page',
  'Marsh', 'Riley', 'Dunn', 'Woods', 'Parsons', 'Berry', 'Stone', 'Reid', 'Holland', 'Hawkins', 'Harding', 'Porter', 'Robertson', 'Newton',
  'Oliver', 'Reed', 'Kennedy', 'Williamson', 'Bird', 'Gardner', 'Shah', 'Dean', 'Lane', 'Cooke', 'Bates', 'Henderson', 'Parry', 'Burgess',
  'Bishop', 'Walton', 'Burns', 'Nicholson', 'Shepherd', 'Ross', 'Cross', 'Long', 'Freeman', 'Warren', 'Nicholls', 'Hamilton', 'Byrne',
  'Sutton', 'McDonald', 'Yates', 'Hodgson', 'Robson', 'Curtis', 'Hopkins', "O'Connor", 'Harper', 'Coleman', 'Watkins', 'Moss', 'McCarthy',
  'Chambers', "O'Neill", 'Griffin', 'Sharp', 'Hardy', 'Wheeler', 'Potter', 'Osborne', 'Johnston', 'Gordon', 'Doyle', 'Wallace', 'George',
  'Patterson', 'Paterson', 'Nowak', 'Kowalski', 'Wisniewski', 'Okafor', 'Adeyemi', 'Mensah', 'Osei', 'Chen', 'Wang', 'Nguyen', 'Silva',
  'Santos', 'Rossi', 'Costa', 'Smith-Jones', 'Lloyd-Webber', 'Ahmed-Khan', 'Van der Berg', 'De Souza', 'MacLeod', 'Fitzgerald',
];
const TITLES = { Mrs: 30, Ms: 20, Mr: 30, Miss: 8, Dr: 2, Mx: 1, '': 9 } as const;
const EMAIL_DOMAINS = ['gmail.com', 'hotmail.co.uk', 'outlook.com', 'yahoo.co.uk', 'icloud.com', 'btinternet.com', 'live.co.uk', 'sky.com', 'hotmail.com', 'aol.com'];
const TUTOR_GROUPS = [7, 8, 9, 10, 11, 12, 13].flatMap((year) => ['A', 'B', 'C', 'D', 'E', 'F'].map((form) => `${year}${form}`));
const DENIAL_REASONS = ['We could not find your child at the school.', 'The email address does not match our records.', 'Please contact the school office.'];

/** What the checks need of each seeded request. */
interface SeededRequest {
  id: number;
  status: RequestStatus;
  createdAt: number;
  parentFirstName: string;
  parentLastName: string;
  email: string;
  children: Array<{ firstName: string; lastName: string; tutorGroup: string }>;
}

/** The rest of a request's row, for the insert. */
interface RequestExtra {
  title: string;
  requestType: RequestType;
  source: RequestSource;
  comment: string | null;
}

interface School {
  requests: SeededRequest[];
  extras: Map<number, RequestExtra>;
}

/**
 * `count` requests over three years, ids in order of arrival. Most are provisioned; the newest
 * few hundred are still waiting (email not confirmed, waiting for review, approved); the rest are
 * denied, duplicates (a parent who asked twice: same name, email and children), not genuine or
 * revoked. 1–3 children each, siblings mostly with the parent's surname, in tutor groups 7A–13F.
 */
function generateSchool(count: number, now: number): School {
  const random = prng(20261122);
  const parentFirst = zipf(PARENT_FIRST_NAMES, random);
  const childFirst = zipf(CHILD_FIRST_NAMES, random);
  const surname = zipf(SURNAMES, random);
  const title = weighted(TITLES, random);
  const recentStatus = weighted<RequestStatus>({ pending: 45, unverified: 25, approved: 10, provisioned: 10, denied: 5, duplicate: 3, bogus: 2, revoked: 0 }, random);
  const olderStatus = weighted<RequestStatus>({ provisioned: 88, revoked: 3.5, denied: 4, duplicate: 3, bogus: 1.5, pending: 0, unverified: 0, approved: 0 }, random);
  const requestType = weighted<RequestType>({ new_account: 85, cannot_log_in: 10, child_not_linked: 5 }, random);
  const source = weighted<RequestSource>({ form: 80, api: 15, import: 5, cli: 0, wordpress_plugin: 0 }, random);
  const childCount = weighted({ one: 55, two: 35, three: 10 }, random);
  const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)] as T;

  const span = 3 * 365 * 24 * 3_600_000;
  const step = span / count;
  const start = now - span - 3_600_000;
  const emails = new Set<string>();
  const requests: SeededRequest[] = [];
  const extras: School['extras'] = new Map();
  const local = (s: string) => s.toLowerCase().replace(/[^a-z]/g, '');

  for (let i = 0; i < count; i++) {
    const id = i + 1;
    // Strictly increasing: steps of minutes at 100,000 requests, jitter under half a step.
    const createdAt = start + Math.floor(i * step + random() * (step / 2));
    const status = i >= count * 0.94 ? recentStatus() : olderStatus();
    const extra = { title: title(), requestType: requestType(), source: source(), comment: random() < 0.1 ? 'My children started this September.' : null };
    const original = status === 'duplicate' && i > 0 ? requests[Math.floor(random() * i)] : undefined;
    if (original) {
      requests.push({ ...original, id, status, createdAt, children: original.children.map((c) => ({ ...c })) });
      extras.set(id, extra);
      continue;
    }
    const firstName = parentFirst();
    const lastName = surname();
    const shape = random();
    const base =
      shape < 0.5 ? `${local(firstName)}.${local(lastName)}` : shape < 0.75 ? `${local(firstName).slice(0, 1)}${local(lastName)}` : `${local(lastName)}.${local(firstName)}`;
    const numbered = random() < 0.4 ? `${base}${1965 + Math.floor(random() * 35)}` : base;
    const domain = pick(EMAIL_DOMAINS);
    let email = `${numbered}@${domain}`;
    for (let n = 2; emails.has(email); n++) email = `${numbered}${n}@${domain}`;
    emails.add(email);
    const children = Array.from({ length: { one: 1, two: 2, three: 3 }[childCount()] }, () => ({
      firstName: childFirst(),
      lastName: random() < 0.85 ? lastName : surname(),
      tutorGroup: pick(TUTOR_GROUPS),
    }));
    requests.push({ id, status, createdAt, parentFirstName: firstName, parentLastName: lastName, email, children });
    extras.set(id, extra);
  }
  return { requests, extras };
}

const VERSION_OF: Record<RequestStatus, number> = { unverified: 1, pending: 2, approved: 3, provisioned: 4, denied: 3, duplicate: 3, bogus: 3, revoked: 5 };
const LINK_STATE_OF: Record<RequestStatus, ChildLinkState> = {
  unverified: 'unmatched',
  pending: 'unmatched',
  approved: 'matched',
  provisioned: 'linked',
  denied: 'unmatched',
  duplicate: 'unmatched',
  bogus: 'unmatched',
  revoked: 'revoked',
};
const MOODLE_USER_BASE = 5000;

/** The row the lifecycle would have left for a request in this status. */
function requestRecord(r: SeededRequest, extra: RequestExtra): RequestRecord {
  const hour = 3_600_000;
  const verified = r.status !== 'unverified';
  const decided = !['unverified', 'pending'].includes(r.status);
  const entitled = r.status === 'approved' || r.status === 'provisioned' || r.status === 'revoked';
  const username = usernameFromEmail(r.email);
  if (!username.ok) throw new Error(username.reason);
  return {
    id: r.id,
    publicId: newPublicId(),
    status: r.status,
    requestType: extra.requestType,
    source: extra.source,
    parentTitle: extra.title,
    parentFirstName: r.parentFirstName,
    parentLastName: r.parentLastName,
    email: r.email,
    parentComment: extra.comment,
    staffComment: null,
    moodleUsername: entitled ? username.username : null,
    moodleUserId: r.status === 'provisioned' || r.status === 'revoked' ? MOODLE_USER_BASE + r.id : null,
    linkExistingAccount: false,
    verificationTokenHash: verified ? null : randomBytes(32).toString('hex'),
    verificationExpiresAt: verified ? null : r.createdAt + 48 * hour,
    verifiedAt: verified ? r.createdAt + hour : null,
    decidedAt: decided ? r.createdAt + 26 * hour : null,
    decidedBy: decided ? 'staff:office' : null,
    decisionReason: r.status === 'denied' ? (DENIAL_REASONS[r.id % DENIAL_REASONS.length] as string) : null,
    provisionedAt: r.status === 'provisioned' || r.status === 'revoked' ? r.createdAt + 27 * hour : null,
    attempts: 0,
    lastError: null,
    nextAttemptAt: null,
    waitingSince: null,
    version: VERSION_OF[r.status],
    submitterIp: extra.source === 'form' ? `192.0.2.${r.id % 250}` : null,
    submitterAgent: extra.source === 'form' ? 'Mozilla/5.0 (Windows NT 10.0; Win64; x64)' : null,
    idempotencyKey: null,
    importBatchId: null,
    erasedAt: null,
    createdAt: r.createdAt,
    updatedAt: r.createdAt + 27 * hour,
  };
}

function childRecords(r: SeededRequest): Array<Omit<ChildRecord, 'id'>> {
  const linkState = LINK_STATE_OF[r.status];
  return r.children.map((c, position) => ({
    requestId: r.id,
    position,
    firstName: c.firstName,
    lastName: c.lastName,
    tutorGroup: c.tutorGroup,
    pupilIdentifier: null,
    moodleUserId: linkState === 'unmatched' ? null : 1_000_000 + r.id * 3 + position,
    linkState,
    linkedAt: linkState === 'linked' || linkState === 'revoked' ? r.createdAt + 27 * 3_600_000 : null,
    revokedAt: linkState === 'revoked' ? r.createdAt + 400 * 24 * 3_600_000 : null,
    unassignPending: false,
    attempts: 0,
    lastError: null,
    nextAttemptAt: null,
    updatedAt: r.createdAt + 27 * 3_600_000,
  }));
}

/**
 * Multi-row inserts, SEED_BATCH requests at a time with their children and auth rows (the auth
 * table holds exactly the approved and provisioned parents, as the lifecycle keeps it), then
 * ANALYZE so the optimiser knows the tables as it would after months of use.
 */
async function seed(db: Database, school: School, log: (message: string) => void): Promise<void> {
  const { requests, extras } = school;
  const writeBatch = async (start: number) => {
    const batch = requests.slice(start, start + SEED_BATCH);
    const records = batch.map((r) => requestRecord(r, extras.get(r.id) as RequestExtra));
    await db(REQUESTS_TABLE).insert(records.map((r) => requestToRow(r)));
    await db(CHILDREN_TABLE).insert(batch.flatMap((r) => childRecords(r).map((c) => childToRow(c))));
    const entitled = records.filter((r) => r.status === 'approved' || r.status === 'provisioned');
    if (entitled.length > 0) {
      await db(BENCH_AUTH_TABLE).insert(
        entitled.map((r) => ({ username: r.moodleUsername, firstname: r.parentFirstName, lastname: r.parentLastName, email: r.email, request_id: r.id })),
      );
    }
  };
  // Batches side by side: MariaDB then keeps both cores busy maintaining the indexes.
  let next = 0;
  let written = 0;
  const chain = async () => {
    while (next < requests.length) {
      const start = next;
      next += SEED_BATCH;
      await writeBatch(start);
      written += Math.min(SEED_BATCH, requests.length - start);
      if ((written / SEED_BATCH) % 10 === 0) log(`dashboard: ${integer(written)} requests written`);
    }
  };
  await Promise.all(Array.from({ length: SEED_CONNECTIONS }, chain));
  await db.raw(`ANALYZE TABLE ${REQUESTS_TABLE}, ${CHILDREN_TABLE}, ${BENCH_AUTH_TABLE}`);
  await assertAuthInvariant(db);
  const stored = (await db(REQUESTS_TABLE).count({ n: '*' }).first()) as { n: number | string };
  check(Number(stored.n) === requests.length, `${stored.n} requests in the database, ${requests.length} generated`);
}

// ---------------------------------------------------------------------------------------------
// What each page must show, computed from the seeded data (not by the code under test).

function matchesWord(r: SeededRequest, word: string): boolean {
  const prefix = word.toLowerCase();
  const starts = (value: string) => value.toLowerCase().startsWith(prefix);
  const number = /^#?(\d{1,9})$/.exec(word);
  return (
    (number !== null && Number(number[1]) === r.id) ||
    starts(r.parentLastName) ||
    starts(r.parentFirstName) ||
    starts(r.email) ||
    r.children.some((c) => starts(c.lastName) || starts(c.firstName) || starts(c.tutorGroup))
  );
}

function matching(school: School, search: string): SeededRequest[] {
  const words = searchWords(search);
  return school.requests.filter((r) => words.every((w) => matchesWord(r, w)));
}

/** The tab counts in the page's order (TAB_ORDER, "all" last). */
function expectedTabCounts(found: SeededRequest[]): number[] {
  return TAB_ORDER.map((tab) => (tab === 'all' ? found.length : found.filter((r) => r.status === tab).length));
}

/** What a search's tabs show: every count, or null when it matches more than the cap and is not counted. */
function expectedSearchCounts(found: SeededRequest[]): number[] | null {
  return found.length > SEARCH_COUNT_CAP ? null : expectedTabCounts(found);
}

/** Newest first, as the list shows by default. */
function newestIds(found: SeededRequest[], status: StatusFilter): number[] {
  return found
    .filter((r) => status === 'all' || r.status === status)
    .sort((a, b) => b.createdAt - a.createdAt || b.id - a.id)
    .map((r) => r.id);
}

// ---------------------------------------------------------------------------------------------
// HTTP over loopback, as a browser would: keep-alive connections and the cookies it was given.

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function send(agent: http.Agent, port: number, method: 'GET' | 'POST', path: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent, headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

class Browser {
  private readonly cookies = new Map<string, string>();
  readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

  constructor(readonly port: number) {}

  cookieHeader(): string {
    return [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  private remember(answer: Answer): Answer {
    for (const line of answer.headers['set-cookie'] ?? []) {
      const [pair] = line.split(';');
      const at = (pair ?? '').indexOf('=');
      if (at > 0) this.cookies.set((pair as string).slice(0, at).trim(), (pair as string).slice(at + 1).trim());
    }
    return answer;
  }

  async get(path: string): Promise<Answer> {
    return this.remember(await send(this.agent, this.port, 'GET', path, { cookie: this.cookieHeader(), accept: 'text/html' }));
  }

  async post(path: string, fields: Record<string, string>): Promise<Answer> {
    const headers = { cookie: this.cookieHeader(), accept: 'text/html', 'content-type': 'application/x-www-form-urlencoded' };
    return this.remember(await send(this.agent, this.port, 'POST', path, headers, new URLSearchParams(fields).toString()));
  }
}

/** Through the real sign-in form: its CSRF cookie and token, then the session cookie it answers with. */
async function signIn(browser: Browser, username: string, password: string): Promise<void> {
  const form = await browser.get('/admin/sign-in');
  check(form.status === 200, `GET /admin/sign-in answered ${form.status}`);
  const token = /name="_csrf" value="([^"]+)"/.exec(form.body)?.[1];
  check(token !== undefined, 'the sign-in page has no CSRF token');
  const signedIn = await browser.post('/admin/sign-in', { _csrf: htmlText(token), username, password });
  check(signedIn.status === 303 && signedIn.headers.location === '/admin', `POST /admin/sign-in answered ${signedIn.status} ${signedIn.headers.location ?? ''}: ${signedIn.body.slice(0, 300)}`);
  check(browser.cookieHeader().includes('mpp.sid='), 'signing in set no session cookie');
  const overview = await browser.get('/admin');
  check(overview.status === 200 && !overview.body.includes('name="password"'), `GET /admin after signing in answered ${overview.status}`);
}

/** The request ids in the list's table, in page order. */
function listedIds(html: string): number[] {
  const body = html.slice(html.indexOf('<tbody>'), html.indexOf('</tbody>'));
  return [...body.matchAll(/<a href="\/admin\/requests\/(\d+)">Request \d+<\/a>/g)].map((m) => Number(m[1]));
}

/** What each tab says in brackets after its name, in page order ('' for a tab without a count). */
function tabCounts(html: string): string[] {
  const nav = html.slice(html.indexOf('<nav class="status-tabs"'), html.indexOf('</nav>', html.indexOf('<nav class="status-tabs"')));
  return [...nav.matchAll(/<a href="[^"]*"(?: aria-current="page")?>[^<]*?(?: <span class="count">\(([^)<]*)\)<\/span>)?<\/a>/g)].map((m) => m[1] ?? '');
}

/** What the tabs must say: the counts, or for a search beyond the cap "more than 1,000" on "All" and nothing on the others. */
function expectedTabTexts(counts: number[] | null): string[] {
  return counts ? counts.map(String) : TAB_ORDER.map((tab) => (tab === 'all' ? MORE_THAN_CAP : ''));
}

function nextLink(html: string): string | undefined {
  const match = /<a href="([^"]+)" rel="next">/.exec(html);
  return match ? htmlText(match[1] as string) : undefined;
}

const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((v, i) => v === b[i]);

// ---------------------------------------------------------------------------------------------
// The pages measured, and how each answer is checked.

interface PageCase {
  key: string;
  label: string;
  kind: 'list' | 'search';
  /** The dashboard address (the deep page's is filled in by following the "next" links). */
  path: string;
  status: StatusFilter;
  search: string;
  sort: ListSort;
  cursor: ListCursor | null;
  expectedIds: number[];
  /** The count in every tab, or null for a search matching more than the cap (not counted). */
  expectedCounts: number[] | null;
  /** How many requests of the data are in the page's tab (and match its search). */
  matching: number;
  /**
   * The page's own SQL, captured from the search repository, for the baseline and EXPLAIN: the tab
   * counts and the page's ids; for a search the one pass over the matches that gives both, and
   * when it matches more than the cap, the walk that gives the page's ids instead.
   */
  statements?: { counts?: Statement; ids: Statement; walk?: Statement };
  /** A search matching thousands: its plan is shown whether or not it meets the target. */
  explainAlways?: boolean;
}

function inspectPage(page: PageCase): (answer: Answer) => string | undefined {
  const ids = page.expectedIds.join(',');
  const counts = expectedTabTexts(page.expectedCounts).join(',');
  return (answer) => {
    if (answer.status !== 200) return `${page.label}: answered ${answer.status}: ${answer.body.slice(0, 200)}`;
    const listed = listedIds(answer.body).join(',');
    if (listed !== ids) return `${page.label}: listed requests ${listed.slice(0, 120)}… instead of ${ids.slice(0, 120)}…`;
    const shown = tabCounts(answer.body).join(',');
    if (shown !== counts) return `${page.label}: tab counts ${shown} instead of ${counts}`;
    return undefined;
  };
}

function inspectBare(page: PageCase): (answer: Answer) => string | undefined {
  const ids = page.expectedIds.join(',');
  const counts = page.expectedCounts?.join(',') ?? 'not counted';
  return (answer) => {
    if (answer.status !== 200) return `bare ${page.label}: answered ${answer.status}`;
    const json = JSON.parse(answer.body) as BareAnswer;
    const listed = json.rows.map((r) => Number(r.id)).join(',');
    if (listed !== ids) return `bare ${page.label}: rows ${listed.slice(0, 120)}… instead of ${ids.slice(0, 120)}…`;
    const found = json.counts;
    const total = found ? Object.values(found).reduce((s, n) => s + n, 0) : 0;
    const shown = found ? TAB_ORDER.map((tab) => (tab === 'all' ? total : (found[tab] ?? 0))).join(',') : 'not counted';
    if (shown !== counts) return `bare ${page.label}: counts ${shown} instead of ${counts}`;
    return undefined;
  };
}

interface Sampled {
  latencies: number[];
  elapsedMs: number;
}

/**
 * CONNECTIONS loops, each sending the next request when its answer is in, for the duration (and
 * until minSamples, up to maxMs). Every answer is checked; the first failure stops the run.
 */
async function drive(
  port: number,
  path: string,
  headers: Record<string, string>,
  limits: { durationMs: number; minSamples: number; maxMs: number },
  inspect: (answer: Answer) => string | undefined,
): Promise<Sampled> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const latencies: number[] = [];
  let failure: string | undefined;
  const started = performance.now();
  const loop = async () => {
    for (;;) {
      const now = performance.now() - started;
      if (failure !== undefined || now >= limits.maxMs || (now >= limits.durationMs && latencies.length >= limits.minSamples)) return;
      const t = performance.now();
      const answer = await send(agent, port, 'GET', path, headers);
      latencies.push(performance.now() - t);
      failure ??= inspect(answer);
    }
  };
  try {
    await Promise.all(Array.from({ length: CONNECTIONS }, loop));
  } finally {
    agent.destroy();
  }
  check(failure === undefined, failure ?? '');
  return { latencies, elapsedMs: performance.now() - started };
}

interface Latency {
  samples: number;
  warmupSamples: number;
  perSecond: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

function percentiles({ latencies, elapsedMs }: Sampled, warmupSamples: number): Latency {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] as number;
  return { samples: sorted.length, warmupSamples, perSecond: (sorted.length * 1000) / elapsedMs, p50: at(50), p95: at(95), p99: at(99), max: sorted[sorted.length - 1] as number };
}

/** Rounds of service then baseline: a shared machine's slow spell then falls on both, not on one. */
const ROUNDS = 4;

interface Target {
  port: number;
  path: string;
  headers: Record<string, string>;
  settings: LoadSettings;
  inspect: (answer: Answer) => string | undefined;
}

async function measurePair(service: Target, bare: Target): Promise<{ service: Latency; bare: Latency }> {
  const warm = async (t: Target) => (await drive(t.port, t.path, t.headers, { durationMs: t.settings.warmupMs, minSamples: 0, maxMs: t.settings.warmupMs }, t.inspect)).latencies.length;
  const warmed = [await warm(service), await warm(bare)];
  const runs: Sampled[][] = [[], []];
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, t] of [service, bare].entries()) {
      const { durationMs, minSamples, maxMs } = t.settings;
      (runs[i] as Sampled[]).push(await drive(t.port, t.path, t.headers, { durationMs: durationMs / ROUNDS, minSamples: Math.ceil(minSamples / ROUNDS), maxMs: maxMs / ROUNDS }, t.inspect));
    }
  }
  const merged = (sampled: Sampled[]): Sampled => ({ latencies: sampled.flatMap((s) => s.latencies), elapsedMs: sampled.reduce((sum, s) => sum + s.elapsedMs, 0) });
  return { service: percentiles(merged(runs[0] as Sampled[]), warmed[0] as number), bare: percentiles(merged(runs[1] as Sampled[]), warmed[1] as number) };
}

/** The statements a repository call sends, in order. */
async function captured<T>(db: Database, fn: () => Promise<T>): Promise<{ value: T; statements: Statement[] }> {
  const statements: Statement[] = [];
  const listener = (query: { sql: string; bindings?: unknown[] }) => statements.push({ sql: query.sql, bindings: query.bindings ?? [] });
  db.on('query', listener);
  try {
    return { value: await fn(), statements };
  } finally {
    db.off('query', listener);
  }
}

async function sqlAloneMs(db: Database, statement: Statement): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < SQL_TIMING_RUNS; i++) {
    const t = performance.now();
    await db.raw(statement.sql, statement.bindings as never);
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)] as number;
}

type ExplainRow = Record<string, unknown>;

async function explain(db: Database, statement: Statement): Promise<ExplainRow[]> {
  const [rows] = (await db.raw(`EXPLAIN ${statement.sql}`, statement.bindings as never)) as [ExplainRow[]];
  return rows;
}

function explainTable(rows: ExplainRow[]): string {
  const columns = ['id', 'select_type', 'table', 'type', 'key', 'rows', 'Extra'];
  return table(columns, rows.map((r) => columns.map((c) => (r[c] === null || r[c] === undefined ? '' : String(r[c])))));
}

interface PageFigures {
  page: PageCase;
  service: Latency;
  bare: Latency;
  /** Absent for a search: its counts come from the same statement as its ids. */
  countsSqlMs?: number;
  idsSqlMs: number;
  /** A search matching more than the cap: the walk giving its page's ids, after the one pass. */
  walkSqlMs?: number;
  /** The service process's CPU time per answer (its event loop, GC and libuv threads). */
  cpuMsPerAnswer: number;
  explainCounts?: ExplainRow[];
  explainIds?: ExplainRow[];
  explainWalk?: ExplainRow[];
}

// ---------------------------------------------------------------------------------------------

async function run(context: BenchContext): Promise<ReportSection> {
  const settings = SETTINGS[context.scale];
  const count = settings.requests;
  const bench: BenchDatabase = await context.databases.create('dashboard');
  const workers: WorkerHandle[] = [];
  try {
    const school = generateSchool(count, Date.now());
    context.log(`dashboard: seeding ${integer(count)} requests (migrations applied)`);
    const seedStarted = performance.now();
    await seed(bench.db, school, context.log);
    const seedMs = performance.now() - seedStarted;
    const childrenTotal = school.requests.reduce((s, r) => s + r.children.length, 0);
    const byStatus = expectedTabCounts(school.requests);
    context.log(`dashboard: ${integer(count)} requests and ${integer(childrenTotal)} children in ${seconds(seedMs)}`);

    // The search terms, taken from the data so that each finds something.
    const surnamePrefix = 'Pat';
    const emailTerm = (school.requests[Math.floor(count * 0.37)] as SeededRequest).email;
    const tutorGroup = '9C';
    const commonFirstName = PARENT_FIRST_NAMES[0] as string;
    const byName = (await bench.db(REQUESTS_TABLE).orderBy(['parent_last_name', 'parent_first_name', 'id']).limit(PAGE_SIZE).select('id')) as Array<{ id: number }>;

    const listCase = (key: string, label: string, path: string, status: StatusFilter, sort: ListSort, expectedIds: number[]): PageCase => ({
      key,
      label,
      kind: 'list',
      path,
      status,
      search: '',
      sort,
      cursor: null,
      expectedIds,
      expectedCounts: byStatus,
      matching: byStatus[TAB_ORDER.indexOf(status)] as number,
    });
    const searchCase = (key: string, label: string, term: string, explainAlways = false): PageCase => {
      const found = matching(school, term);
      check(found.length > 0, `the search "${term}" matches no seeded request`);
      return {
        key,
        label: `${label}: ?status=all&q=${term}`,
        kind: 'search',
        path: `/admin/requests?status=all&q=${encodeURIComponent(term)}`,
        status: 'all',
        search: term,
        sort: 'newest',
        cursor: null,
        expectedIds: newestIds(found, 'all').slice(0, PAGE_SIZE),
        expectedCounts: expectedSearchCounts(found),
        matching: found.length,
        explainAlways,
      };
    };
    const provisionedNewest = newestIds(school.requests, 'provisioned');
    check(provisionedNewest.length > settings.deepPage * PAGE_SIZE, `only ${provisionedNewest.length} provisioned requests: no page ${settings.deepPage}`);
    const deep = listCase(
      'deep',
      `page ${settings.deepPage} of "Account ready" (keyset cursor, as its "Next page" link)`,
      '',
      'provisioned',
      'newest',
      provisionedNewest.slice((settings.deepPage - 1) * PAGE_SIZE, settings.deepPage * PAGE_SIZE),
    );
    const pages: PageCase[] = [
      listCase('pending', 'the default tab, "Waiting for review": /admin/requests', '/admin/requests', 'pending', 'newest', newestIds(school.requests, 'pending').slice(0, PAGE_SIZE)),
      listCase('provisioned', 'the big tab, "Account ready": ?status=provisioned', '/admin/requests?status=provisioned', 'provisioned', 'newest', provisionedNewest.slice(0, PAGE_SIZE)),
      listCase('by-name', 'every request by parent name: ?status=all&sort=name', '/admin/requests?status=all&sort=name', 'all', 'name', byName.map((r) => Number(r.id))),
      deep,
      searchCase('surname', 'surname prefix', surnamePrefix),
      searchCase('email', 'an email address', emailTerm),
      searchCase('tutor-group', 'a tutor group', tutorGroup, true),
      searchCase('first-name', 'the commonest first name', commonFirstName, true),
    ];

    // The service, signed in through the real form.
    const service = await startWorker('dashboard-service.ts', {
      // Express caches compiled views only when NODE_ENV is production in the process itself.
      env: {
        NODE_ENV: 'production',
        BENCH_SERVICE_ENV: JSON.stringify({
          NODE_ENV: 'production',
          SESSION_SECRET: randomBytes(32).toString('base64url'),
          DATABASE_URL: bench.url,
          AUTH_TABLE: BENCH_AUTH_TABLE,
          HOST: '127.0.0.1',
          PORT: '0',
          LOG_LEVEL: 'info',
          CYCLE_SCHEDULE: 'off',
        }),
      },
      nodeFlags: START_NODE_FLAGS,
      verbose: context.verbose,
    });
    workers.push(service);
    const { port } = await service.call<{ port: number }>('address');
    const password = randomBytes(18).toString('base64url');
    const { username } = await service.call<{ username: string }>('addStaff', { username: 'bench.office', password });
    const browser = new Browser(port);
    await signIn(browser, username, password);
    context.log('dashboard: signed in through /admin/sign-in');

    // "Next page" from the first page for a few pages, checking each link carries exactly the cursor
    // listHref makes from the previous page's last row; then straight to the deep page with the
    // cursor made the same way (following 199 links would spend half the run on the walk).
    context.log(`dashboard: following "Next page" through "Account ready", then to page ${settings.deepPage}`);
    const createdAt = new Map(school.requests.map((r) => [r.id, r.createdAt]));
    const cursorAfterPage = (n: number): ListCursor => {
      const last = provisionedNewest[n * PAGE_SIZE - 1] as number;
      return { direction: 'after', values: [createdAt.get(last) as number, last] };
    };
    const provisionedParams = { status: 'provisioned' as const, q: '', sort: 'newest' as const };
    let path = listHref(provisionedParams);
    for (let n = 1; n <= WALKED_PAGES; n++) {
      const answer = await browser.get(path);
      check(answer.status === 200, `page ${n} of "Account ready" answered ${answer.status}`);
      check(same(listedIds(answer.body), provisionedNewest.slice((n - 1) * PAGE_SIZE, n * PAGE_SIZE)), `page ${n} of "Account ready" lists other requests than the ${n}th ${PAGE_SIZE} newest`);
      const next = nextLink(answer.body);
      check(next === listHref(provisionedParams, cursorAfterPage(n)), `page ${n} of "Account ready" links to ${next ?? 'no next page'}, not to the page after its last row`);
      path = next;
    }
    deep.cursor = cursorAfterPage(settings.deepPage - 1);
    deep.path = listHref(provisionedParams, deep.cursor);

    // The page's own SQL, from the repository itself, for the baseline, the timing alone and EXPLAIN.
    const repository = new RequestSearchRepository();
    for (const page of pages) {
      const filter = { status: page.status, search: page.search };
      if (page.kind === 'search') {
        // As the list does for a search: the counts and the page from one pass over the matches, or
        // beyond the cap, a pass that only counts the matches, then the walk giving the page's ids.
        const pass = await captured(bench.db, () => repository.searchPage(bench.db, filter, page.sort, PAGE_SIZE, page.cursor));
        check(pass.statements.length >= 1, `${page.label}: no statement`);
        check(same(pass.value.page.rows.map((r) => r.id), page.expectedIds), `${page.label}: the repository's rows differ from the seeded data's`);
        const counts = pass.value.counts;
        const shown = counts ? TAB_ORDER.map((tab) => (tab === 'all' ? Object.values(counts).reduce((a, b) => a + b, 0) : counts[tab])) : null;
        check(shown === null ? page.expectedCounts === null : page.expectedCounts !== null && same(shown, page.expectedCounts), `${page.label}: the repository's counts differ from the seeded data's`);
        page.statements = { ids: pass.statements[0] as Statement, ...(counts === null ? { walk: pass.statements[1] as Statement } : {}) };
        continue;
      }
      const counts = await captured(bench.db, () => repository.countByStatus(bench.db, page.search));
      const list = await captured(bench.db, () => repository.page(bench.db, filter, page.sort, PAGE_SIZE, page.cursor));
      check(counts.statements.length === 1 && list.statements.length >= 1, `${page.label}: unexpected statements ${JSON.stringify([...counts.statements, ...list.statements].map((s) => s.sql))}`);
      check(same(list.value.rows.map((r) => r.id), page.expectedIds), `${page.label}: the repository's rows differ from the seeded data's`);
      page.statements = { counts: counts.statements[0] as Statement, ids: list.statements[0] as Statement };
    }

    const bare = await startWorker('dashboard-bare.ts', { env: { BENCH_DATABASE_URL: bench.url }, verbose: context.verbose });
    workers.push(bare);
    const barePort = (await bare.call<{ port: number }>('address')).port;
    for (const page of pages) {
      const statements = page.statements as NonNullable<PageCase['statements']>;
      await bare.call('prepare', { key: page.key, counts: statements.counts, ids: statements.ids, walk: statements.walk, countLimit: SEARCH_COUNT_CAP, pageSize: PAGE_SIZE } satisfies BarePage);
    }

    const headers = { cookie: browser.cookieHeader(), accept: 'text/html' };
    const figures: PageFigures[] = [];
    for (const page of pages) {
      const statements = page.statements as NonNullable<PageCase['statements']>;
      const cpuBefore = await service.call<NodeJS.CpuUsage>('cpu');
      const measured = await measurePair(
        { port, path: page.path, headers, settings: settings.service, inspect: inspectPage(page) },
        { port: barePort, path: `/pages/${page.key}`, headers: {}, settings: settings.bare, inspect: inspectBare(page) },
      );
      const cpuAfter = await service.call<NodeJS.CpuUsage>('cpu');
      const serviceLatency = measured.service;
      const bareLatency = measured.bare;
      // The service is idle while the baseline runs: its CPU over the pair is its own answers'.
      const cpuMsPerAnswer = (cpuAfter.user - cpuBefore.user + cpuAfter.system - cpuBefore.system) / 1000 / (serviceLatency.samples + serviceLatency.warmupSamples);
      const countsSqlMs = statements.counts ? await sqlAloneMs(bench.db, statements.counts) : undefined;
      const idsSqlMs = await sqlAloneMs(bench.db, statements.ids);
      const walkSqlMs = statements.walk ? await sqlAloneMs(bench.db, statements.walk) : undefined;
      const f: PageFigures = { page, service: serviceLatency, bare: bareLatency, countsSqlMs, idsSqlMs, walkSqlMs, cpuMsPerAnswer };
      if (serviceLatency.p95 >= TARGET_P95_MS || page.explainAlways) {
        if (statements.counts) f.explainCounts = await explain(bench.db, statements.counts);
        f.explainIds = await explain(bench.db, statements.ids);
        if (statements.walk) f.explainWalk = await explain(bench.db, statements.walk);
      }
      figures.push(f);
      context.log(
        `dashboard ${page.key}: p50 ${decimal(serviceLatency.p50)} p95 ${decimal(serviceLatency.p95)} p99 ${decimal(serviceLatency.p99)} ms (${serviceLatency.samples} answers, CPU ${decimal(cpuMsPerAnswer)} ms each); ` +
          `bare p95 ${decimal(bareLatency.p95)} ms; SQL alone: ${countsSqlMs === undefined ? `one pass ${decimal(idsSqlMs)} ms${walkSqlMs === undefined ? '' : `, walk ${decimal(walkSqlMs)} ms`}` : `counts ${decimal(countsSqlMs)} ms, ids ${decimal(idsSqlMs)} ms`}`,
      );
    }

    const serviceRss = (await service.call<{ peakRssBytes: number }>('memory')).peakRssBytes;
    const bareRss = (await bare.call<{ peakRssBytes: number }>('memory')).peakRssBytes;
    return report(context, { count, childrenTotal, seedMs, byStatus, figures, serviceRss, bareRss });
  } finally {
    for (const worker of workers) await worker.stop();
    await bench.drop();
  }
}

// ---------------------------------------------------------------------------------------------

function pageTarget(name: string, figures: PageFigures[]): TargetResult {
  const worst = figures.reduce((a, b) => (b.service.p95 > a.service.p95 ? b : a));
  const missed = figures.filter((f) => f.service.p95 >= TARGET_P95_MS);
  const target: TargetResult = {
    name,
    target: `p95 < ${TARGET_P95_MS} ms on every page`,
    measured: `worst p95 ${decimal(worst.service.p95)} ms (${worst.page.key}); bare baseline ${decimal(worst.bare.p95)} ms`,
    met: missed.length === 0,
  };
  if (missed.length > 0) {
    target.shortfall = missed
      .map((f) => `${f.page.key} ${decimal(f.service.p95)} ms, ${decimal(f.service.p95 - TARGET_P95_MS)} ms over (${ratio(f.service.p95, TARGET_P95_MS)} the target)`)
      .join('; ');
  }
  return target;
}

function report(
  context: BenchContext,
  r: { count: number; childrenTotal: number; seedMs: number; byStatus: number[]; figures: PageFigures[]; serviceRss: number; bareRss: number },
): ReportSection {
  const settings = SETTINGS[context.scale];
  const ms = (n: number) => `${decimal(n)} ms`;
  const verdict = (f: PageFigures) =>
    f.service.p95 < TARGET_P95_MS ? `met (${ms(TARGET_P95_MS - f.service.p95)} to spare)` : `**missed** by ${ms(f.service.p95 - TARGET_P95_MS)}`;
  const rows = r.figures.map((f) => [
    f.page.label,
    integer(f.page.matching),
    ms(f.service.p50),
    ms(f.service.p95),
    ms(f.service.p99),
    `${integer(f.service.samples)} (${decimal(f.service.perSecond)}/s)`,
    ms(f.cpuMsPerAnswer),
    `${ms(f.bare.p50)} / ${ms(f.bare.p95)}`,
    ratio(f.service.p95, f.bare.p95),
    f.countsSqlMs !== undefined
      ? `${ms(f.countsSqlMs)} + ${ms(f.idsSqlMs)}`
      : f.walkSqlMs !== undefined
        ? `one pass ${ms(f.idsSqlMs)} + walk ${ms(f.walkSqlMs)}`
        : `one pass: ${ms(f.idsSqlMs)}`,
    verdict(f),
  ]);
  const list = r.figures.filter((f) => f.page.kind === 'list');
  const search = r.figures.filter((f) => f.page.kind === 'search');
  const targets = [pageTarget('Dashboard request list', list), pageTarget('Dashboard search', search)];
  const explained = r.figures.filter((f) => f.explainIds);

  const body = [
    `${integer(r.count)} requests with ${integer(r.childrenTotal)} children, seeded in ${seconds(r.seedMs)}. ` +
      `By tab: ${TAB_ORDER.map((tab, i) => `${tab} ${integer(r.byStatus[i] as number)}`).join(', ')}.`,
    '',
    table(
      ['page', 'requests in the tab (matching)', 'p50', 'p95', 'p99', 'answers (per second)', 'service CPU per answer', 'bare p50 / p95', 'p95 vs bare', 'SQL alone: counts + ids (or one pass, + walk)', `target p95 < ${TARGET_P95_MS} ms`],
      rows,
    ),
    '',
    ...targets.map((t) => `${t.name}: ${yesNo(t.met)}${t.shortfall ? ` — ${t.shortfall}` : ''}.`),
    '',
    '**Method.** A fresh MariaDB database, migrated (so the list\'s real indexes exist), then seeded with multi-row inserts of ' +
      `${integer(SEED_BATCH)} requests (with their children and auth rows) at a time on ${SEED_CONNECTIONS} connections, and \`ANALYZE TABLE\`d. The data is generated from a fixed seed: ` +
      'three years of requests, most provisioned, the newest 6 % still waiting (email not confirmed, waiting for review, approved), the rest ' +
      'denied, duplicates (same parent, email and children as an earlier request), not genuine or revoked; 1–3 children each; names drawn ' +
      `from ${PARENT_FIRST_NAMES.length} parent first names, ${CHILD_FIRST_NAMES.length} children's and ${SURNAMES.length} surnames with the first ` +
      `ones commonest; ${TUTOR_GROUPS.length} tutor groups (7A–13F); emails built from the names at ten providers.`,
    '',
    `- *The service*: the real app (\`createServices\` + \`createApp\`) in its own process on loopback, \`NODE_ENV=production\`, request ` +
      'logging at `info` to stdout (discarded). A staff account is added through the accounts service, then the bench signs in through ' +
      '`GET` and `POST /admin/sign-in` (CSRF cookie and token, then the session cookie) and sends those cookies with every request, so ' +
      'each answer pays for the session read and its rolling expiry write, the account check and the CSRF token, as a browser\'s would. ' +
      `The first ${WALKED_PAGES} pages of "Account ready" are reached through their own "Next page" links, each checked, and each link ` +
      'checked to carry exactly the cursor the list\'s `listHref` makes from the previous page\'s last row; the deep page\'s address is made ' +
      'the same way from the last row of the page before it. Searches are made in the "All" tab, where staff look for a parent whose status they do not know.',
    `- *Bare*: \`node:http\` and a mysql2 pool of the service's size (10) running each page's own SQL, captured from the search ` +
      'repository for that page: the tab counts beside the page\'s id query (for a search, the one statement giving both, and beyond ' +
      `${integer(SEARCH_COUNT_CAP)} matches the walk giving the page's ids after it), then those rows by id and their children, answered as JSON. ` +
      'No Express, session, sign-in check, CSRF, knex or template.',
    `- *Load*: ${CONNECTIONS} connections, each sending its next request when the previous answer is in, over loopback from the bench ` +
      `process. Per page: ${seconds(settings.service.warmupMs)} of warm-up on the service and ${seconds(settings.bare.warmupMs)} on the ` +
      `baseline (not counted), then ${ROUNDS} rounds of service then baseline, ${seconds(settings.service.durationMs)} and ` +
      `${seconds(settings.bare.durationMs)} in all (longer if needed for ${settings.service.minSamples} answers each, at most ` +
      `${seconds(settings.service.maxMs)} and ${seconds(settings.bare.maxMs)}), so that a slow spell of the shared machine falls on both. ` +
      'Latency is the time from sending a request to the last byte of its answer; percentiles are exact over every answer. ' +
      "*Service CPU per answer* is the service process's CPU time (main thread, garbage collection, libuv threads) over the page's " +
      `warm-up and rounds, divided by its answers. *SQL alone* is the median of ${SQL_TIMING_RUNS} runs of the page's count query and ` +
      'id query (for a search, of its one pass, and of its walk when it has one) from the bench process, after the load.',
    '- *Checks* (the run stops without figures if one fails): every answer, service and baseline, warm-up included, is a 200 that lists ' +
      'exactly the expected requests in the expected order and the expected count in every tab, or for a search matching more than ' +
      `${integer(SEARCH_COUNT_CAP)} requests "${MORE_THAN_CAP}" on "All" and no count on the others. The expected rows and counts are computed ` +
      'from the generated data in the bench (prefix matching, newest first), not by the code under test; only the order by name comes ' +
      'from a plain `ORDER BY parent_last_name, parent_first_name, id` in MariaDB, since its collation decides it.',
    '',
  ];
  body.push(
    '*Why the list pages beat the baseline*: without a search the service keeps the tab counts for up to five seconds ' +
      '(`src/review/status-counts.ts`; its own changes forget them at once), while the baseline counts every request on every ' +
      'answer, as the service did before.',
    '',
  );
  body.push(
    '*Searches and their counts* (`searchPage` in `src/review/request-search.repository.ts`): one statement takes a search\'s ' +
      `matching ids from its words' index ranges, no more than ${integer(SEARCH_COUNT_CAP + 1)}, and counts them. Within ${integer(SEARCH_COUNT_CAP)} ` +
      'it also reads each match by id, counts them by status (a window `COUNT(*) OVER (PARTITION BY status)`) and numbers the tab\'s ' +
      'rows beyond the cursor in sort order (`ROW_NUMBER()`): the exact counts and the page in one pass. Beyond that it reads no request: ' +
      `the tabs say "${MORE_THAN_CAP}" on "All" and nothing on the others, and a second statement walks the sort's index from the ` +
      'cursor (newest first: `created_at`), looking each request up among the matches, until the page is full: about a page\'s worth ' +
      'divided by the share that match. Counting by status and sorting every match read each match\'s row, which made the commonest ' +
      'first name miss the target. The plans of the two broadest searches are below.',
    '',
  );
  if (r.figures.some((f) => f.service.p95 >= TARGET_P95_MS && f.page.kind === 'search')) {
    body.push(
      '**Why some searches miss.** The time of a search grows with its matches: each match\'s id is read from its index range, and ' +
        `within ${integer(SEARCH_COUNT_CAP)} matches each is read by id for its status and sort values. The same SQL through the bare baseline is in the table beside it.`,
      '',
    );
  }
  for (const f of explained) {
    body.push(
      `**EXPLAIN of ${f.page.label}** (${f.service.p95 < TARGET_P95_MS ? 'met' : 'missed'} the target).`,
      '',
      ...(f.explainCounts
        ? ['The tab counts:', '', '```sql', (f.page.statements as NonNullable<PageCase['statements']>).counts?.sql ?? '', '```', '', explainTable(f.explainCounts), '', "The page's ids:"]
        : f.explainWalk
          ? [`The one pass (here it only counts the matches: more than ${integer(SEARCH_COUNT_CAP)}):`]
          : ['The one pass (tab counts and the page\'s ids):']),
      '',
      '```sql',
      (f.page.statements as NonNullable<PageCase['statements']>).ids.sql,
      '```',
      '',
      explainTable(f.explainIds as ExplainRow[]),
      '',
      ...(f.explainWalk
        ? ["The walk (the page's ids):", '', '```sql', (f.page.statements as NonNullable<PageCase['statements']>).walk?.sql ?? '', '```', '', explainTable(f.explainWalk), '']
        : []),
    );
  }

  return {
    title: `Dashboard: the request list and search with ${integer(r.count)} requests on MariaDB`,
    body: body.join('\n'),
    targets,
    peakMemory: [
      { label: 'dashboard: the service (sign-in, page walk, every page under load)', rssBytes: r.serviceRss },
      { label: 'dashboard: bare baseline under load', rssBytes: r.bareRss },
    ],
  };
}

export const dashboardScenario: BenchScenario = { id: 'dashboard', run };
