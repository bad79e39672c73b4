// Reading Moodle's scheduled-task output: every recorded CLI run in shared/moodle-contract/cli,
// with its recorded exit code, and the cases where output and exit code disagree.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describeSyncRefusal, parseScheduledTaskOutput, type ScheduledTaskReport } from '../../src/moodle/sync-command';
import { loadCliRecordings } from '../support/moodle-contract';

type Expected = Pick<ScheduledTaskReport, 'ok' | 'inserted' | 'errors' | 'suspended' | 'revived'> & {
  summary: RegExp;
  failureLine?: string | RegExp;
};

// Every recording needs an entry here: a new recording must come with what it means.
const EXPECTED: Record<string, Expected> = {
  'send-new-user-passwords.txt': {
    ok: true,
    summary: /^Moodle's task "Send new user passwords" finished\.$/,
    inserted: [],
    errors: [],
    suspended: [],
    revived: [],
  },
  'sync-users.add-invalid-remove.txt': {
    ok: true,
    summary:
      /^Moodle's task "Synchronise users task" finished: 1 account created, 1 account suspended, 1 not created \(Parent\.Five: not a username Moodle accepts \(only lower-case letters, digits and _ \. @ -\)\)\.$/,
    inserted: [{ username: 'parent.four', id: 11 }],
    errors: [{ username: 'Parent.Five', reason: 'not_accepted' }],
    suspended: [{ username: 'parent.two', id: 7 }],
    revived: [],
  },
  'sync-users.clash-with-manual-account.txt': {
    ok: true,
    summary:
      /^Moodle's task "Synchronise users task" finished: 1 account created, 1 not created \(clash\.rec@example\.org: Moodle already has a manual account with this username\)\.$/,
    inserted: [{ username: 'fresh.rec@example.org', id: 66 }],
    errors: [{ username: 'clash.rec@example.org', reason: 'username_taken', plugin: 'manual' }],
    suspended: [],
    revived: [],
  },
  'sync-users.external-db-down.txt': {
    ok: false,
    summary: /^Moodle could not connect to the database of the auth table: check the External database settings/,
    failureLine: /^Scheduled task failed: Synchronise users task \(auth_db\\task\\sync_users\),mysqli_query\(\)/,
    inserted: [],
    errors: [],
    suspended: [],
    revived: [],
  },
  'sync-users.revive.txt': {
    ok: true,
    summary: /^Moodle's task "Synchronise users task" finished: 1 account restored, 1 not created \(Parent\.Five: not a username Moodle accepts/,
    inserted: [],
    errors: [{ username: 'Parent.Five', reason: 'not_accepted' }],
    suspended: [],
    revived: [{ username: 'parent.two', id: 7 }],
  },
  'unknown-task.txt': {
    ok: false,
    summary: /^The Moodle command failed \(exit code 1\): Task '\\auth_db\\task\\no_such_task' not found$/,
    failureLine: "Task '\\auth_db\\task\\no_such_task' not found",
    inserted: [],
    errors: [],
    suspended: [],
    revived: [],
  },
};

const recordings = loadCliRecordings();

describe('every recorded scheduled-task run', () => {
  test('the recordings are there, each with an expectation', () => {
    assert.ok(recordings.length >= 5, `found only ${recordings.length} CLI recordings`);
    assert.deepEqual(
      recordings.map((r) => r.file).filter((f) => !(f in EXPECTED)),
      [],
    );
  });

  for (const recording of recordings) {
    test(`${recording.file} (exit ${recording.exitCode})`, () => {
      const expected = EXPECTED[recording.file];
      assert.ok(expected, `no expectation for ${recording.file}`);
      const report = parseScheduledTaskOutput(recording.output, recording.exitCode);
      assert.equal(report.ok, expected.ok);
      assert.match(report.summary, expected.summary);
      assert.deepEqual(report.inserted, expected.inserted);
      assert.deepEqual(report.errors, expected.errors);
      assert.deepEqual(report.suspended, expected.suspended);
      assert.deepEqual(report.revived, expected.revived);
      if (expected.failureLine === undefined) assert.equal(report.failureLine, undefined);
      else if (typeof expected.failureLine === 'string') assert.equal(report.failureLine, expected.failureLine);
      else assert.match(report.failureLine ?? '', expected.failureLine);
    });
  }
});

describe('output and exit code together', () => {
  const complete = recordings.find((r) => r.file === 'sync-users.add-invalid-remove.txt');
  const failed = recordings.find((r) => r.file === 'sync-users.external-db-down.txt');

  test('a completed task whose command then exits non-zero (say ssh failing) is a failure', () => {
    assert.ok(complete);
    const report = parseScheduledTaskOutput(complete.output, 255);
    assert.equal(report.ok, false);
    assert.match(report.summary, /finished, but the command then failed \(exit code 255\)/);
    // What Moodle did is still reported: those accounts exist.
    assert.deepEqual(report.inserted, [{ username: 'parent.four', id: 11 }]);
  });

  test('a failed task is a failure even with exit code 0', () => {
    assert.ok(failed);
    assert.equal(failed.exitCode, 0);
    assert.equal(parseScheduledTaskOutput(failed.output, 0).ok, false);
  });

  test('exit 0 without any verdict line is not taken as success', () => {
    const report = parseScheduledTaskOutput('Cannot run tasks: cron is disabled\n', 0);
    assert.equal(report.ok, false);
    assert.match(report.summary, /without saying whether the task ran/);
    assert.equal(report.failureLine, 'Cannot run tasks: cron is disabled');
  });

  test('a command stopped by a signal', () => {
    const report = parseScheduledTaskOutput('Execute scheduled task: Synchronise users task (auth_db\\task\\sync_users)\n', null);
    assert.equal(report.ok, false);
    assert.match(report.summary, /stopped before it finished/);
  });

  test('the last verdict counts (Windows line ends too)', () => {
    const output = 'Scheduled task failed: A (x\\a),boom\r\nScheduled task complete: B (x\\b)\r\n';
    const report = parseScheduledTaskOutput(output, 0);
    assert.equal(report.ok, true);
    assert.equal(report.task, 'B (x\\b)');
  });

  test('a duplicate-username skip counts as an error for that user', () => {
    const output = [
      'User entries to add: 1',
      "  Error inserting user t.teacher - user with this username was already created through 'manual' plugin.",
      'Scheduled task complete: Synchronise users task (auth_db\\task\\sync_users)',
    ].join('\n');
    assert.deepEqual(parseScheduledTaskOutput(output, 0).errors, [{ username: 't.teacher', reason: 'username_taken', plugin: 'manual' }]);
  });

  test('a clash with a manual account is not told as a username in capitals, and names the request', () => {
    const clash = recordings.find((r) => r.file === 'sync-users.clash-with-manual-account.txt');
    assert.ok(clash);
    const report = parseScheduledTaskOutput(clash.output, clash.exitCode);
    assert.doesNotMatch(report.summary, /lower-case/);
    const [refused] = report.errors;
    assert.ok(refused);
    assert.equal(
      describeSyncRefusal(refused, 12),
      "Request 12 (clash.rec@example.org): Moodle's user sync did not create this parent's account, because Moodle already has a manual account " +
        "(made by hand in Moodle) with this username. If that account is the parent's, link the request to it as an existing account; otherwise ask the parent for another email address.",
    );
    assert.match(describeSyncRefusal({ username: 'Parent.Five', reason: 'not_accepted' }), /^Parent\.Five: Moodle's user sync did not accept this username/);
  });

  test('a database the auth table is in that cannot be reached is said in words, the raw reason kept for IT', () => {
    const report = parseScheduledTaskOutput(failed?.output ?? '', 0);
    assert.equal(
      report.summary,
      'Moodle could not connect to the database of the auth table: check the External database settings ' +
        '(Site administration > Plugins > Authentication > External database: host, database, user and password).',
    );
    assert.match(report.failureLine ?? '', /mysqli_query\(\): Argument #1 \(\$mysql\) must be of type mysqli, bool given$/);
    // Another task failing with the same PHP words is not about the auth table.
    const other = parseScheduledTaskOutput('Scheduled task failed: Other (core\\task\\other),mysqli_query(): Argument #1 ($mysql) must be of type mysqli, bool given\n', 0);
    assert.match(other.summary, /^Moodle's task "Other" failed: mysqli_query/);
  });
});
