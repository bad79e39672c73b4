// The Moodle double's own behaviour beyond the REST contract: auth_db's user sync read from a real
// (SQLite) auth table, printing what Moodle's CLI printed in the recordings; and its fault switches.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import knexFactory, { type Knex } from 'knex';
import { parseScheduledTaskOutput } from '../../src/moodle/sync-command';
import { loadCliRecordings } from '../support/moodle-contract';
import { DOUBLE_TOKENS, parsePhpForm, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';

const AUTH_TABLE = 'moodle_auth_users';

/** The lines that do not change from run to run (timings and memory use do). */
const stableLines = (output: string) =>
  output
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.startsWith('... '));

const recorded = (file: string) => {
  const recording = loadCliRecordings().find((r) => r.file === file);
  assert.ok(recording, file);
  return recording.output;
};

let double: MoodleDouble;
let knex: Knex;
beforeEach(async () => {
  double = await startMoodleDouble();
  knex = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
  await knex.schema.createTable(AUTH_TABLE, (t) => {
    t.increments('id');
    t.string('username').notNullable().unique();
    t.string('firstname');
    t.string('lastname');
    t.string('email');
  });
});
afterEach(async () => {
  await knex.destroy();
  await double.close();
});

const rows = (...usernames: string[]) => usernames.map((username) => ({ username, firstname: 'F', lastname: 'L', email: `${username}@example.com` }));

describe('the double\'s auth_db sync prints what Moodle printed', () => {
  test('add, invalid and remove (sync-users.add-invalid-remove)', async () => {
    await knex(AUTH_TABLE).insert(rows('parent.one', 'Parent.Five', 'parent.four'));
    const output = await double.sync(knex, AUTH_TABLE);
    assert.deepEqual(stableLines(output), stableLines(recorded('sync-users.add-invalid-remove.txt')));
    assert.deepEqual(parseScheduledTaskOutput(output, 0), parseScheduledTaskOutput(recorded('sync-users.add-invalid-remove.txt'), 0));
    const four = double.state.userByUsername('parent.four');
    assert.equal(four?.id, 11);
    assert.equal(four?.auth, 'db');
    assert.equal(double.state.users.get(7)?.suspended, true);
    assert.ok(double.state.userContext(11), 'a new user gets a user context');
  });

  test('a returning row is revived, not created again (sync-users.revive)', async () => {
    await knex(AUTH_TABLE).insert(rows('parent.one', 'Parent.Five', 'parent.four'));
    await double.sync(knex, AUTH_TABLE);
    await knex(AUTH_TABLE).insert(rows('parent.two'));
    const output = await double.sync(knex, AUTH_TABLE);
    assert.deepEqual(stableLines(output), stableLines(recorded('sync-users.revive.txt')));
    assert.equal(double.state.users.get(7)?.suspended, false);
  });

  test('the new-user password task sends to created users, not to revived ones', async () => {
    // parent.three (suspended) comes back: revived, so no new password for it.
    await knex(AUTH_TABLE).insert(rows('parent.one', 'parent.two', 'parent.three', 'parent.four'));
    const report = parseScheduledTaskOutput(await double.sync(knex, AUTH_TABLE), 0);
    assert.deepEqual(report.revived, [{ username: 'parent.three', id: 8 }]);
    const output = double.sendNewUserPasswords();
    assert.deepEqual(stableLines(output), stableLines(recorded('send-new-user-passwords.txt')));
    assert.deepEqual(double.state.passwordEmailsSent, ['parent.four']);
  });

  test('an empty auth table suspends every active db user', async () => {
    const output = await double.sync(knex, AUTH_TABLE);
    const report = parseScheduledTaskOutput(output, 0);
    assert.equal(report.ok, true);
    assert.deepEqual(report.suspended, [
      { username: 'parent.one', id: 6 },
      { username: 'parent.two', id: 7 },
    ]);
  });

  test('a username taken by a manual account is skipped', async () => {
    await knex(AUTH_TABLE).insert(rows('parent.one', 'parent.two', 'pupil.a'));
    const report = parseScheduledTaskOutput(await double.sync(knex, AUTH_TABLE), 0);
    assert.deepEqual(report.errors, [{ username: 'pupil.a', reason: 'username_taken', plugin: 'manual' }]);
    assert.equal(double.state.userByUsername('pupil.a')?.auth, 'manual');
  });

  test('a manual account with an auth-table username: the clash line, the rest created (sync-users.clash-with-manual-account)', async () => {
    // As recorded: a teacher's manual account, the last id before the new parent's 66.
    double.state.addUser({ id: 65, username: 'clash.rec@example.org', firstname: 'Clash', lastname: 'Teacher', email: 'clash.rec@example.org', auth: 'manual' });
    await knex(AUTH_TABLE).insert(rows('parent.one', 'parent.two', 'clash.rec@example.org', 'fresh.rec@example.org'));
    const output = await double.sync(knex, AUTH_TABLE);
    assert.deepEqual(stableLines(output), stableLines(recorded('sync-users.clash-with-manual-account.txt')));
    assert.deepEqual(parseScheduledTaskOutput(output, 0), parseScheduledTaskOutput(recorded('sync-users.clash-with-manual-account.txt'), 0));
    assert.equal(double.state.userByUsername('clash.rec@example.org')?.auth, 'manual', 'the manual account is left as it was');
    assert.equal(double.state.userByUsername('fresh.rec@example.org')?.auth, 'db');
  });

  test('an auth table whose database cannot be reached fails as recorded (sync-users.external-db-down)', async () => {
    const unreachable = knexFactory({ client: 'mysql2', connection: { host: '127.0.0.1', port: 1, user: 'moodle', connectTimeout: 2000 }, pool: { min: 0, max: 1 } });
    try {
      const output = await double.sync(unreachable, AUTH_TABLE);
      assert.deepEqual(stableLines(output), stableLines(recorded('sync-users.external-db-down.txt')));
    } finally {
      await unreachable.destroy();
    }
  });

  test('an unreadable auth table fails the task, exit code 0 all the same', async () => {
    await knex.schema.dropTable(AUTH_TABLE);
    const output = await double.sync(knex, AUTH_TABLE);
    const report = parseScheduledTaskOutput(output, 0);
    assert.equal(report.ok, false);
    assert.match(report.failureLine ?? '', /^Scheduled task failed: Synchronise users task/);
  });

  test('a synced parent can be found and linked through the REST API', async () => {
    await knex(AUTH_TABLE).insert(rows('parent.one', 'parent.two', 'new.parent'));
    await double.sync(knex, AUTH_TABLE);
    const response = await fetch(`${double.url}/webservice/rest/server.php`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `wstoken=${DOUBLE_TOKENS.ws}&wsfunction=core_user_get_users_by_field&moodlewsrestformat=json&field=username&values%5B0%5D=new.parent`,
    });
    const users = (await response.json()) as Array<{ id: number; auth: string; email?: string }>;
    assert.equal(users.length, 1);
    assert.equal(users[0]?.auth, 'db');
    // As in the recordings, the service user does not see a parent's address.
    assert.equal(users[0]?.email, undefined);
  });
});

describe('what changes under the service in Moodle', () => {
  const call = async (body: string) =>
    (await fetch(`${double.url}/webservice/rest/server.php`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `wstoken=${DOUBLE_TOKENS.ws}&moodlewsrestformat=json&${body}`,
    }).then((r) => r.json())) as unknown;

  test('a suspended pupil still comes back by id, marked suspended, and keeps its roles; reactivated it is not', async () => {
    double.state.addUserContextRole(9, 6, 3);
    double.state.setSuspended(3, true);
    const [pupil] = (await call('wsfunction=core_user_get_users_by_field&field=id&values%5B0%5D=3')) as Array<{ id: number; username: string; suspended: boolean }>;
    assert.deepEqual([pupil?.id, pupil?.username, pupil?.suspended], [3, 'pupil.a', true]);
    assert.ok(double.state.hasUserContextRole(9, 6, 3), 'suspending removes no role');
    double.state.setSuspended(3, false);
    const [again] = (await call('wsfunction=core_user_get_users_by_field&field=id&values%5B0%5D=3')) as Array<{ suspended: boolean }>;
    assert.equal(again?.suspended, false);
  });

  test('a role removed by hand is gone, and assigning it again (null, as assign.ok) brings it back', async () => {
    double.state.addUserContextRole(9, 6, 3);
    double.state.removeUserContextRole(9, 6, 3);
    assert.equal(double.state.hasUserContextRole(9, 6, 3), false);
    const answer = await call('wsfunction=core_role_assign_roles&assignments%5B0%5D%5Broleid%5D=9&assignments%5B0%5D%5Buserid%5D=6&assignments%5B0%5D%5Bcontextlevel%5D=user&assignments%5B0%5D%5Binstanceid%5D=3');
    assert.equal(answer, null);
    assert.ok(double.state.hasUserContextRole(9, 6, 3));
  });
});

describe('the double\'s fault switches and counters', () => {
  const siteInfo = () =>
    fetch(`${double.url}/webservice/rest/server.php`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `wstoken=${DOUBLE_TOKENS.ws}&wsfunction=core_webservice_get_site_info&moodlewsrestformat=json`,
    });

  test('scripted faults come in order, then normal answers', async () => {
    double.setFaults({ next: ['5xx', 'garbage'] });
    assert.equal((await siteInfo()).status, 503);
    const garbage = await siteInfo();
    assert.equal(garbage.status, 200);
    assert.match(garbage.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(await garbage.text(), /Log in to the site/);
    assert.equal((await siteInfo()).headers.get('content-type'), 'application/json');
    assert.equal(double.calls('core_webservice_get_site_info'), 3);
  });

  test('a seeded error rate repeats exactly from run to run', async () => {
    const statuses = async (d: MoodleDouble) => {
      d.setFaults({ errorRate: 0.5 });
      const out: number[] = [];
      for (let i = 0; i < 12; i++) {
        const response = await fetch(`${d.url}/webservice/rest/server.php`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `wstoken=${DOUBLE_TOKENS.ws}&wsfunction=core_webservice_get_site_info&moodlewsrestformat=json`,
        });
        await response.text();
        out.push(response.status);
      }
      return out;
    };
    const first = await statuses(double);
    const other = await startMoodleDouble();
    try {
      assert.deepEqual(await statuses(other), first);
    } finally {
      await other.close();
    }
    assert.ok(first.includes(503) && first.includes(200));
  });

  test('a latency delays the answer but changes nothing else', async () => {
    double.setFaults({ latencyMs: 30 });
    const response = await siteInfo();
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { userid: number }).userid, 5);
  });

  test('close() ends requests that are never answered', async () => {
    double.setFaults({ next: ['hang'] });
    const pending = siteInfo().then(
      () => 'answered',
      () => 'connection closed',
    );
    while (double.calls() === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await double.close();
    assert.equal(await pending, 'connection closed');
    double = await startMoodleDouble(); // for afterEach
  });
});

describe('PHP-style form fields', () => {
  test('nested arrays, in order', () => {
    const parsed = parsePhpForm(new URLSearchParams('a%5B0%5D%5Bx%5D=1&a%5B0%5D%5By%5D=2&a%5B1%5D%5Bx%5D=3&b=4&c%5B%5D=5&c%5B%5D=6'));
    assert.deepEqual(JSON.parse(JSON.stringify(parsed)), { a: { 0: { x: '1', y: '2' }, 1: { x: '3' } }, b: '4', c: { 0: '5', 1: '6' } });
  });
});
