// The Moodle client against the Moodle double over real HTTP: errors in plain words, no token
// anywhere, batch isolation with exact call counts, retries only for passing faults, chunked look-ups.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import {
  MoodleClient,
  type MoodleCallOutcome,
  type MoodleClientOptions,
  type RoleAssignment,
  type UserSearchCriterion,
} from '../../src/moodle/moodle-client';
import { MoodleError } from '../../src/moodle/moodle-error';
import { DOUBLE_TOKENS, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';

const ASSIGN = 'core_role_assign_roles';
const UNASSIGN = 'core_role_unassign_roles';

interface Harness {
  client: MoodleClient;
  outcomes: MoodleCallOutcome[];
  logs: string[];
}

function makeClient(double: MoodleDouble, overrides: Partial<MoodleClientOptions> = {}): Harness {
  const outcomes: MoodleCallOutcome[] = [];
  const logs: string[] = [];
  const client = new MoodleClient({
    url: double.url,
    token: DOUBLE_TOKENS.ws,
    timeoutMs: 2_000,
    retries: 2,
    batchSize: 100,
    retryDelayMs: 1,
    onCall: (_fn, outcome) => outcomes.push(outcome),
    logger: {
      debug: (details, message) => logs.push(`${message} ${JSON.stringify(details)}`),
      warn: (details, message) => logs.push(`${message} ${JSON.stringify(details)}`),
    },
    ...overrides,
  });
  return { client, outcomes, logs };
}

async function failure(promise: Promise<unknown>): Promise<MoodleError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof MoodleError, `expected a MoodleError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected the call to fail');
}

/** A port where nothing listens. */
async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const parentInPupil = (userid: number, pupil: number): RoleAssignment => ({ roleid: 9, userid, contextlevel: 'user', instanceid: pupil });

let double: MoodleDouble;
beforeEach(async () => {
  double = await startMoodleDouble();
});
afterEach(async () => {
  await double.close();
});

/** A self-signed certificate for 127.0.0.1, made with the machine's openssl. */
function selfSignedCertificate(): { key: string; cert: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
    return { key: fs.readFileSync(path.join(dir, 'key.pem'), 'utf8'), cert: fs.readFileSync(path.join(dir, 'cert.pem'), 'utf8') };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('over HTTPS, as a real Moodle is reached', () => {
  test('a certificate the machine does not trust is named; once trusted, the same calls answer as over HTTP', async () => {
    const tls = selfSignedCertificate();
    // A TLS front for the double, as a web server in front of Moodle would be.
    const target = new URL(double.url);
    const front = https.createServer(tls, (req, res) => {
      const forwarded = http.request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      req.pipe(forwarded);
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    const url = `https://127.0.0.1:${(front.address() as AddressInfo).port}`;
    const trusted = https.globalAgent.options.ca;
    try {
      const untrusted = await failure(makeClient(double, { url, retries: 0 }).client.getSiteInfo());
      assert.equal(untrusted.errorcode, 'unreachable');
      assert.match(untrusted.help ?? '', /SELF_SIGNED|self.signed/i, 'the certificate problem is named');

      https.globalAgent.options.ca = tls.cert;
      const { client } = makeClient(double, { url });
      const site = await client.getSiteInfo();
      assert.equal(site.userid, (await makeClient(double).client.getSiteInfo()).userid);
      const [found] = await client.getUsersByField('username', ['pupil.a']);
      assert.equal(found?.username, 'pupil.a');
    } finally {
      https.globalAgent.options.ca = trusted;
      https.globalAgent.destroy();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    }
  });
});

describe('every recorded failure surfaces as a MoodleError in plain words', () => {
  test('invalid token', async () => {
    const { client } = makeClient(double, { token: DOUBLE_TOKENS.invalid });
    const error = await failure(client.getSiteInfo());
    assert.equal(error.errorcode, 'invalidtoken');
    assert.equal(error.fromMoodle, true);
    assert.match(error.message, /did not accept the web service token/);
    assert.match(error.help ?? '', /Site administration > Server > Web services > Manage tokens/);
  });

  test('a function missing from the service is named', async () => {
    double.state.removeServiceFunction(ASSIGN);
    const { client } = makeClient(double);
    const error = await failure(client.assignRoles([parentInPupil(6, 3)]));
    assert.equal(error.errorcode, 'accessexception');
    assert.equal(error.message, 'The Moodle web service is missing the function core_role_assign_roles.');
    assert.match(error.help ?? '', /Site administration > Server > Web services > External services > \(your service\) > Functions/);
  });

  test('a service user without moodle/role:assign', async () => {
    const { client } = makeClient(double, { token: DOUBLE_TOKENS.readonly });
    const error = await failure(client.assignRoles([parentInPupil(6, 3)]));
    assert.equal(error.errorcode, 'nopermissions');
    assert.match(error.message, /lacks the capability moodle\/role:assign/);
    assert.match(error.help ?? '', /Allow role assignments/);
  });

  for (const [name, assignment] of [
    ['a role not assignable in the user context', { roleid: 5, userid: 6, contextlevel: 'user', instanceid: 3 }],
    ['a pupil account that does not exist', { roleid: 9, userid: 7, contextlevel: 'user', instanceid: 998 }],
  ] as const) {
    test(name, async () => {
      const { client } = makeClient(double);
      const error = await failure(client.assignRoles([assignment]));
      assert.equal(error.errorcode, 'invalidparameter');
      assert.match(error.message, /the Parent role cannot be assigned in this user context, or the pupil or parent account does not exist/);
      assert.match(error.help ?? '', /Define roles > Parent > Context types where this role may be assigned: User/);
      assert.match(error.help ?? '', /Allow role assignments/);
    });
  }

  test('a parent account that does not exist', async () => {
    const { client } = makeClient(double);
    const error = await failure(client.assignRoles([parentInPupil(999, 3)]));
    assert.equal(error.errorcode, 'codingerror');
    assert.equal(error.message, 'The Moodle account no longer exists (it was deleted in Moodle).');
  });

  test('a deleted pupil account still takes the role: Moodle does not refuse it (assign.deleted-user-context)', async () => {
    double.state.deleteUser(3);
    const { client } = makeClient(double);
    await client.assignRoles([parentInPupil(6, 3)]);
    assert.equal(double.state.hasUserContextRole(9, 6, 3), true, 'so the service must check the pupil before assigning');
  });

  test('a function this Moodle does not know', async () => {
    const { client } = makeClient(double);
    const error = await failure(client.call('local_nothing_here'));
    assert.equal(error.errorcode, 'invalidrecordunknown');
    assert.equal(error.message, 'This Moodle does not know the web service function local_nothing_here.');
  });

  test('a function that exists but is not in the service', async () => {
    const { client } = makeClient(double);
    const error = await failure(client.call('core_course_get_courses'));
    assert.equal(error.errorcode, 'accessexception');
    assert.match(error.message, /missing the function core_course_get_courses/);
  });

  test('an invalid look-up field (codingerror) and an upper-case value sent raw (invalidparameter)', async () => {
    const { client } = makeClient(double);
    const badField = await failure(client.call('core_user_get_users_by_field', { field: 'department', values: ['7B'] }));
    assert.equal(badField.errorcode, 'codingerror');
    assert.match(badField.message, /internal error in core_user_get_users_by_field/);
    const upper = await failure(client.call('core_user_get_users_by_field', { field: 'username', values: ['parent.one', 'Parent.Two'] }));
    assert.equal(upper.errorcode, 'invalidparameter');
    assert.match(upper.message, /not in the form Moodle stores/);
  });

  test('a boolean sent as a word', async () => {
    const { client } = makeClient(double, { token: DOUBLE_TOKENS.admin });
    const error = await failure(client.call('core_user_update_users', { users: [{ id: 6, suspended: 'true' }] }));
    assert.equal(error.errorcode, 'invalidparameter');
    // The typed way sends 0/1 and works.
    await client.call('core_user_update_users', { users: [{ id: 6, suspended: true }] });
    assert.equal(double.state.users.get(6)?.suspended, true);
  });

  test('web services switched off (403, empty body) is not retried', async () => {
    double.setFaults({ webServicesEnabled: false });
    const { client, outcomes } = makeClient(double, { retries: 3 });
    const error = await failure(client.getSiteInfo());
    assert.equal(error.errorcode, 'webservicesdisabled');
    assert.equal(error.message, 'Web services are switched off in Moodle.');
    assert.match(error.help ?? '', /Site administration > Advanced features > Enable web services/);
    assert.match(error.help ?? '', /Manage protocols/);
    assert.equal(double.calls(), 1);
    assert.deepEqual(outcomes, ['failed']);
  });

  test('Moodle down: nothing listens at the address', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const { client, outcomes } = makeClient(double, { url, retries: 1 });
    const error = await failure(client.getSiteInfo());
    assert.equal(error.errorcode, 'unreachable');
    assert.equal(error.message, `Moodle could not be reached at ${url}.`);
    assert.match(error.help ?? '', /Check MOODLE_URL/);
    assert.match(error.help ?? '', /ECONNREFUSED/);
    assert.deepEqual(outcomes, ['retried', 'failed']);
  });

  test('no answer in time', async () => {
    double.setFaults({ next: ['hang'] });
    const { client } = makeClient(double, { timeoutMs: 100, retries: 0 });
    const error = await failure(client.getSiteInfo());
    assert.equal(error.errorcode, 'timeout');
    assert.match(error.message, /did not answer in time/);
    assert.match(error.help ?? '', /MOODLE_TIMEOUT_MS/);
  });

  test('an HTML page instead of Moodle (wrong address) is not retried', async () => {
    double.setFaults({ garbage: true });
    const { client } = makeClient(double, { retries: 3 });
    const error = await failure(client.getSiteInfo());
    assert.equal(error.errorcode, 'badresponse');
    assert.match(error.message, /^The address in MOODLE_URL does not look like a Moodle site/);
    assert.match(String(error.details?.body), /Log in to the site/);
    assert.equal(double.calls(), 1);
  });

  test('an address under the site (HTTP 404)', async () => {
    const { client } = makeClient(double, { url: `${double.url}/moodle` });
    const error = await failure(client.getSiteInfo());
    assert.equal(error.errorcode, 'badresponse');
    assert.match(error.help ?? '', /HTTP status 404/);
  });

  test('a redirect is reported with where it points, not followed', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(301, { location: 'https://moodle.example.org/webservice/rest/server.php' });
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const { client } = makeClient(double, { url: `http://127.0.0.1:${port}` });
      const error = await failure(client.getSiteInfo());
      assert.equal(error.errorcode, 'redirected');
      assert.match(error.help ?? '', /https:\/\/moodle\.example\.org/);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('the token never leaves the client', () => {
  const SECRET = 'Sx9+k/2=qT7vL4mN8pR1wZ6yB3cD5fG0';

  test('not in any message, help, details, cause, stack or log line', async () => {
    double.state.addToken(SECRET, { userid: 10, siteAdmin: false, capabilities: new Set(['webservice/rest:use']), assignableRoleIds: new Set() });
    const errors: MoodleError[] = [];
    const logs: string[] = [];
    const attempt = async (overrides: Partial<MoodleClientOptions>, run: (c: MoodleClient) => Promise<unknown>) => {
      const harness = makeClient(double, { token: SECRET, ...overrides });
      try {
        await run(harness.client);
      } catch (error) {
        assert.ok(error instanceof MoodleError);
        errors.push(error);
      }
      logs.push(...harness.logs);
    };
    await attempt({}, (c) => c.assignRoles([parentInPupil(6, 3)])); // nopermissions
    await attempt({ token: `${SECRET}-wrong` }, (c) => c.getSiteInfo()); // invalidtoken
    double.setFaults({ next: ['echo'] }); // a page that repeats the request, token and all
    await attempt({ retries: 0 }, (c) => c.getSiteInfo());
    double.setFaults({ next: ['5xx', '5xx'] });
    await attempt({ retries: 1 }, (c) => c.getSiteInfo());
    double.setFaults({ next: ['hang'] });
    await attempt({ retries: 0, timeoutMs: 100 }, (c) => c.getSiteInfo());
    await attempt({ url: `http://127.0.0.1:${await closedPort()}`, retries: 0 }, (c) => c.getSiteInfo());

    assert.deepEqual(
      errors.map((e) => e.errorcode),
      ['nopermissions', 'invalidtoken', 'badresponse', 'httperror', 'timeout', 'unreachable'],
    );
    // The echo page really carried the token: the check below would catch a leak.
    assert.ok(double.requests.some((r) => r.form.includes(encodeURIComponent(SECRET))));
    assert.match(String(errors[2]?.details?.body), /\[hidden\]/);
    const everything = [
      ...errors.map((e) =>
        JSON.stringify({ message: e.message, help: e.help, details: e.details, moodleMessage: e.moodleMessage, cause: String(e.cause), stack: e.stack }),
      ),
      ...logs,
    ].join('\n');
    for (const form of [SECRET, encodeURIComponent(SECRET), new URLSearchParams({ t: SECRET }).toString().slice(2)]) {
      assert.equal(everything.includes(form), false, `the token appears as ${form}`);
    }
    assert.ok(logs.length > 0);
  });
});

describe('batch isolation', () => {
  const pupils: number[] = [];
  const setUpPupils = () => {
    pupils.length = 0;
    for (let i = 0; i < 12; i++) {
      pupils.push(double.state.addUser({ username: `pupil.x${i}`, firstname: 'X', lastname: `Pupil${i}` }).id);
    }
  };
  const assignmentsWithBad = (count: number, badAt: number[]): RoleAssignment[] =>
    Array.from({ length: count }, (_, i) => parentInPupil(badAt.includes(i) ? 999 : 6, pupils[i] as number));

  test('8 assignments with 1 bad: the 7 good land, in exactly 7 calls', async () => {
    setUpPupils();
    const { client } = makeClient(double, { batchSize: 8 });
    const assignments = assignmentsWithBad(8, [5]);
    const outcome = await client.assignRolesIsolated(assignments);
    assert.equal(outcome.done.length, 7);
    assert.deepEqual(outcome.failed.map((f) => f.assignment), [assignments[5]]);
    assert.equal(outcome.failed[0]?.error.errorcode, 'codingerror');
    // [0-7] fails; [0-3] lands; [4-7] fails; [4,5] fails; [4] lands; [5] fails alone; [6,7] lands.
    assert.equal(double.calls(ASSIGN), 7);
    assert.equal(double.state.assignments.length, 7);
    for (const a of outcome.done) assert.equal(double.state.hasUserContextRole(9, 6, (a as { instanceid: number }).instanceid), true);
  });

  test('8 assignments with 2 bad cost exactly 11 calls', async () => {
    setUpPupils();
    const { client } = makeClient(double, { batchSize: 8 });
    const assignments = assignmentsWithBad(8, [1, 6]);
    const outcome = await client.assignRolesIsolated(assignments);
    assert.equal(outcome.done.length, 6);
    assert.deepEqual(outcome.failed.map((f) => f.assignment), [assignments[1], assignments[6]]);
    assert.equal(double.calls(ASSIGN), 11);
    assert.equal(double.state.assignments.length, 6);
  });

  test('with MOODLE_CONCURRENCY 3, batches go to Moodle together and the one bad assignment among them is still found', async () => {
    setUpPupils();
    let inFlight = 0;
    let mostAtOnce = 0;
    double.setHooks({
      received: async () => {
        inFlight++;
        mostAtOnce = Math.max(mostAtOnce, inFlight);
        // Long enough for the other batches to arrive while this one is held.
        await new Promise((resolve) => setTimeout(resolve, 20));
      },
      answered: () => {
        inFlight--;
      },
    });
    try {
      const { client } = makeClient(double, { batchSize: 4, concurrency: 3 });
      const assignments = assignmentsWithBad(12, [6]);
      const outcome = await client.assignRolesIsolated(assignments);
      assert.equal(mostAtOnce, 3, 'three batches were in Moodle at once');
      assert.deepEqual(outcome.failed.map((f) => f.assignment), [assignments[6]]);
      assert.equal(outcome.failed[0]?.error.errorcode, 'codingerror');
      assert.equal(outcome.done.length, 11);
      // Three batches of 4; [4-7] fails, [4,5] lands, [6,7] fails, [6] fails alone, [7] lands.
      assert.equal(double.calls(ASSIGN), 7);
      assert.equal(double.state.assignments.length, 11);
      for (const a of outcome.done) assert.equal(double.state.hasUserContextRole(9, 6, (a as { instanceid: number }).instanceid), true);
    } finally {
      double.setHooks(undefined);
    }
  });

  test('a clean batch of batchSize is one call; more is split into batches', async () => {
    setUpPupils();
    const { client } = makeClient(double, { batchSize: 5 });
    const first = await client.assignRolesIsolated(assignmentsWithBad(5, []));
    assert.equal(first.done.length, 5);
    assert.equal(double.calls(ASSIGN), 1);
    double.resetCounts();
    const second = await client.assignRolesIsolated(assignmentsWithBad(12, []));
    assert.equal(second.done.length, 12);
    assert.deepEqual(second.failed, []);
    assert.equal(double.calls(ASSIGN), 3);
  });

  test('the form carries PHP-style fields with contextlevel "user" (never 30)', async () => {
    setUpPupils();
    const { client } = makeClient(double);
    await client.assignRolesIsolated([parentInPupil(6, 3)]);
    assert.equal(
      double.requests[0]?.form,
      `wstoken=${DOUBLE_TOKENS.ws}&wsfunction=core_role_assign_roles&moodlewsrestformat=json` +
        '&assignments%5B0%5D%5Broleid%5D=9&assignments%5B0%5D%5Buserid%5D=6&assignments%5B0%5D%5Bcontextlevel%5D=user&assignments%5B0%5D%5Binstanceid%5D=3',
    );
  });

  test('assignment by context id (extra contexts) works', async () => {
    const { client } = makeClient(double);
    const context = double.state.userContext(4);
    assert.ok(context);
    await client.assignRoles([{ roleid: 9, userid: 7, contextid: context.id }]);
    assert.equal(double.state.hasUserContextRole(9, 7, 4), true);
  });

  for (const [name, prepare, token, errorcode] of [
    ['a token without the capability', () => undefined, DOUBLE_TOKENS.readonly, 'nopermissions'],
    ['a function missing from the service', () => double.state.removeServiceFunction(ASSIGN), DOUBLE_TOKENS.ws, 'accessexception'],
    ['an invalid token', () => undefined, DOUBLE_TOKENS.invalid, 'invalidtoken'],
    ['web services off', () => double.setFaults({ webServicesEnabled: false }), DOUBLE_TOKENS.ws, 'webservicesdisabled'],
  ] as const) {
    test(`${name} is thrown at once, not split`, async () => {
      setUpPupils();
      prepare();
      const { client } = makeClient(double, { token, batchSize: 8 });
      const error = await failure(client.assignRolesIsolated(assignmentsWithBad(8, [2])));
      assert.equal(error.errorcode, errorcode);
      assert.equal(double.calls(ASSIGN), 1);
      assert.equal(double.state.assignments.length, 0);
    });
  }

  test('a network failure after the retries is thrown, not split', async () => {
    setUpPupils();
    double.setFaults({ next: ['5xx', '5xx', '5xx'] });
    const { client } = makeClient(double, { batchSize: 8, retries: 2 });
    const error = await failure(client.assignRolesIsolated(assignmentsWithBad(8, [2])));
    assert.equal(error.errorcode, 'httperror');
    assert.equal(double.calls(ASSIGN), 3);
  });

  test('unassign isolates a bad one the same way; removing what is not there is fine', async () => {
    setUpPupils();
    for (const pupil of pupils.slice(0, 3)) double.state.addUserContextRole(9, 6, pupil);
    const { client } = makeClient(double, { batchSize: 4 });
    const unassignments = [
      parentInPupil(6, pupils[0] as number),
      parentInPupil(6, pupils[1] as number),
      parentInPupil(6, 998), // no such pupil: no such context
      parentInPupil(6, pupils[5] as number), // never assigned: a silent no-op
    ];
    const outcome = await client.unassignRolesIsolated(unassignments);
    assert.equal(outcome.done.length, 3);
    assert.deepEqual(outcome.failed.map((f) => f.assignment), [unassignments[2]]);
    assert.equal(outcome.failed[0]?.error.errorcode, 'invalidparameter');
    // [0-3] fails; [0,1] lands; [2,3] fails; [2] fails alone; [3] lands.
    assert.equal(double.calls(UNASSIGN), 5);
    assert.deepEqual(
      double.state.assignments.map((a) => a.userid),
      [6],
    );
    assert.equal(double.state.hasUserContextRole(9, 6, pupils[2] as number), true);
  });
});

describe('retries: transient failures only', () => {
  test('HTTP 5xx twice, then an answer', async () => {
    double.setFaults({ next: ['5xx', '5xx'] });
    const { client, outcomes } = makeClient(double, { retries: 2 });
    const info = await client.getSiteInfo();
    assert.equal(info.username, 'wsprov');
    assert.equal(double.calls('core_webservice_get_site_info'), 3);
    assert.deepEqual(outcomes, ['retried', 'retried', 'ok']);
  });

  test('a dropped connection and a time-out are retried', async () => {
    double.setFaults({ next: ['reset', 'hang'] });
    const { client, outcomes } = makeClient(double, { retries: 2, timeoutMs: 150 });
    await client.getSiteInfo();
    assert.equal(double.calls(), 3);
    assert.deepEqual(outcomes, ['retried', 'retried', 'ok']);
  });

  test('retries run out: the last failure is thrown after retries + 1 calls', async () => {
    double.setFaults({ next: ['5xx', '5xx', '5xx'] });
    const { client, outcomes } = makeClient(double, { retries: 1 });
    const error = await failure(client.getSiteInfo());
    assert.equal(error.errorcode, 'httperror');
    assert.equal(error.transient, true);
    assert.match(error.message, /HTTP status 503/);
    assert.equal(double.calls(), 2);
    assert.deepEqual(outcomes, ['retried', 'failed']);
  });

  test('an errorcode answer is never retried', async () => {
    const { client, outcomes } = makeClient(double, { token: DOUBLE_TOKENS.invalid, retries: 3 });
    await failure(client.getSiteInfo());
    assert.equal(double.calls(), 1);
    assert.deepEqual(outcomes, ['moodle_error']);
    double.resetCounts();
    const readonly = makeClient(double, { token: DOUBLE_TOKENS.readonly, retries: 3 });
    await failure(readonly.client.assignRoles([parentInPupil(6, 3)]));
    assert.equal(double.calls(), 1);
  });

  test('a failing metrics callback is not mistaken for a Moodle failure and retried', async () => {
    const { client } = makeClient(double, {
      retries: 3,
      onCall: () => {
        throw new Error('metrics broke');
      },
    });
    await assert.rejects(client.getSiteInfo(), /metrics broke/);
    assert.equal(double.calls(), 1);
  });

  test('a seeded error rate is ridden out by retries', async () => {
    double.setFaults({ errorRate: 0.3 });
    const { client, outcomes } = makeClient(double, { retries: 5 });
    for (let i = 0; i < 10; i++) await client.getSiteInfo();
    const retried = outcomes.filter((o) => o === 'retried').length;
    assert.equal(outcomes.filter((o) => o === 'ok').length, 10);
    assert.equal(double.calls(), 10 + retried);
    assert.ok(retried > 0, 'the error rate produced no failures at all');
  });
});

describe('look-ups', () => {
  test('getSiteInfo names the service user and the functions', async () => {
    const { client } = makeClient(double);
    const info = await client.getSiteInfo();
    assert.equal(info.userid, 5);
    assert.equal(info.userissiteadmin, false);
    assert.ok(info.functions.includes(ASSIGN));
    assert.equal(info.release, '5.1 (Build: 20251006)');
  });

  test('a search that came back with warnings is refused (an unsupported key returns everyone)', async () => {
    const { client } = makeClient(double);
    const error = await failure(client.getUsers([{ key: 'department', value: '7B' } as unknown as UserSearchCriterion]));
    assert.equal(error.errorcode, 'searchwarnings');
    assert.match(error.message, /cannot be trusted/);
    assert.match(error.help ?? '', /The search key 'department' is not supported/);
  });

  test('getUsers by name, case-insensitively, leaves nobody out', async () => {
    const { client } = makeClient(double);
    const users = await client.getUsers([
      { key: 'firstname', value: 'ann' },
      { key: 'lastname', value: 'PUPIL' },
    ]);
    assert.deepEqual(users.map((u) => [u.id, u.department, u.idnumber]), [
      [3, '7B', 'ADM1001'],
      [9, '10A', 'ADM1003'],
    ]);
  });

  test('250 usernames with batchSize 100: 3 calls, results merged', async () => {
    const names: string[] = [];
    for (let i = 0; i < 250; i++) {
      const username = `user${String(i).padStart(3, '0')}`;
      names.push(username);
      if (i % 5 !== 0) double.state.addUser({ username, firstname: 'U', lastname: String(i) });
    }
    const { client } = makeClient(double, { batchSize: 100 });
    const users = await client.getUsersByField('username', names);
    assert.equal(double.calls('core_user_get_users_by_field'), 3);
    assert.equal(users.length, 200);
    assert.deepEqual(users.map((u) => u.username), names.filter((_, i) => i % 5 !== 0));
  });

  test('usernames are lower-cased and de-duplicated; impossible ones are never sent', async () => {
    const { client } = makeClient(double);
    const users = await client.getUsersByField('username', ['parent.one', 'Parent.Two', ' PARENT.ONE ', "o'brien"]);
    assert.deepEqual(users.map((u) => u.username), ['parent.one', 'parent.two']);
    assert.equal(double.calls(), 1);
    assert.equal(double.requests[0]?.form.includes('brien'), false);
    double.resetCounts();
    assert.deepEqual(await client.getUsersByField('username', ["o'brien", '']), []);
    assert.equal(double.calls(), 0);
  });

  test('by idnumber; missing values are simply left out', async () => {
    const { client } = makeClient(double);
    const users = await client.getUsersByField('idnumber', ['ADM1001', 'ADM1002', 'ADM9999']);
    assert.deepEqual(users.map((u) => u.id), [3, 4]);
  });

  test('by email: Moodle returns only users whose address the service user may see', async () => {
    const { client } = makeClient(double);
    const users = await client.getUsersByField('email', ['admin@example.com', 'pat.one@example.com', 'not an email']);
    assert.deepEqual(users.map((u) => u.username), ['admin']);
  });
});
