// Running real commands through /bin/sh: output capture, exit codes, no stdin, time-outs that kill
// the whole process group, bounded output, and the service's secrets kept out of the command.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { runMoodleCommand, runScheduledTask } from '../../src/moodle/sync-command';
import { CONTRACT_DIR } from '../support/moodle-contract';

/** Running, not a zombie: a killed orphan may wait unreaped when PID 1 (in a container) never reaps. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return fs.existsSync('/proc/self/stat') ? false : true;
  }
}

async function waitUntilGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 50 && isAlive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  return !isAlive(pid);
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

describe('runMoodleCommand', () => {
  test('stdout and stderr are captured together, with the exit code', async () => {
    const result = await runMoodleCommand("printf 'one\\n'; printf 'two\\n' >&2; printf 'three\\n'; exit 3", { timeoutMs: 5_000 });
    assert.equal(result.exitCode, 3);
    assert.equal(result.timedOut, false);
    assert.deepEqual(result.output.split('\n').filter(Boolean).sort(), ['one', 'three', 'two']);
  });

  test('there is no stdin: a command that reads gets end-of-input at once', async () => {
    const result = await runMoodleCommand('read line; echo "got:[$line] status:$?"', { timeoutMs: 5_000 });
    assert.match(result.output, /^got:\[\] status:1$/m);
  });

  test('a command that does not exist', async () => {
    const result = await runScheduledTask('no-such-command-4f2a', { timeoutMs: 5_000 });
    assert.equal(result.ok, false);
    assert.equal(result.command.exitCode, 127);
    assert.match(result.summary, /^The Moodle command failed \(exit code 127\): .*not found/);
  });

  test('a time-out kills the whole process group, background children included', async () => {
    const result = await runMoodleCommand('sleep 30 & echo "child:$!"; sleep 30; echo never', { timeoutMs: 300, killGraceMs: 200 });
    assert.equal(result.timedOut, true);
    assert.equal(result.exitCode, null);
    assert.equal(result.output.includes('never'), false);
    const pid = Number(/child:(\d+)/.exec(result.output)?.[1]);
    assert.ok(pid > 0);
    assert.equal(await waitUntilGone(pid), true, 'the background sleep survived');
  });

  test('a command that ignores SIGTERM gets SIGKILL after the grace time', async () => {
    const result = await runMoodleCommand("trap '' TERM; echo started; sleep 30 & wait; sleep 30", { timeoutMs: 200, killGraceMs: 200 });
    assert.equal(result.timedOut, true);
    assert.equal(result.signal, 'SIGKILL');
    assert.match(result.output, /started/);
  });

  test('only the end of a long output is kept', async () => {
    const result = await runMoodleCommand("head -c 3000000 /dev/zero | tr '\\0' 'a'; echo; printf '%s\\n' 'Scheduled task complete: T (x\\t)'", {
      timeoutMs: 10_000,
      maxOutputBytes: 4096,
    });
    assert.equal(result.truncated, true);
    assert.ok(Buffer.byteLength(result.output) <= 4096);
    assert.equal(result.output, 'Scheduled task complete: T (x\\t)\n');
  });

  test("the service's secrets are not in the command's environment", async () => {
    const before = process.env.MOODLE_TOKEN;
    process.env.MOODLE_TOKEN = 'secret-token-value';
    try {
      const result = await runMoodleCommand('echo "token:[$MOODLE_TOKEN] path:[${PATH:+set}]"', { timeoutMs: 5_000 });
      assert.equal(result.output.trim(), 'token:[] path:[set]');
    } finally {
      if (before === undefined) delete process.env.MOODLE_TOKEN;
      else process.env.MOODLE_TOKEN = before;
    }
  });
});

describe('runScheduledTask with recorded Moodle output', () => {
  const cli = (file: string) => shellQuote(path.join(CONTRACT_DIR, 'cli', file));

  test('a sync that worked, printed by a real command', async () => {
    const result = await runScheduledTask(`sed '/^# /d' ${cli('sync-users.add-invalid-remove.txt')}`, { timeoutMs: 5_000 });
    assert.equal(result.ok, true);
    assert.deepEqual(result.inserted, [{ username: 'parent.four', id: 11 }]);
    assert.deepEqual(result.suspended, [{ username: 'parent.two', id: 7 }]);
  });

  test('a failed sync with exit code 0 is a failure, with the output kept for staff', async () => {
    const result = await runScheduledTask(`sed '/^# /d' ${cli('sync-users.external-db-down.txt')}; exit 0`, { timeoutMs: 5_000 });
    assert.equal(result.command.exitCode, 0);
    assert.equal(result.ok, false);
    assert.match(result.command.output, /Backtrace:/);
  });

  test('an unknown task (exit 1)', async () => {
    const result = await runScheduledTask(`sed '/^# /d' ${cli('unknown-task.txt')}; exit 1`, { timeoutMs: 5_000 });
    assert.equal(result.ok, false);
    assert.equal(result.failureLine, "Task '\\auth_db\\task\\no_such_task' not found");
  });

  test('a time-out is reported in plain words', async () => {
    const result = await runScheduledTask('sleep 30', { timeoutMs: 200, killGraceMs: 100 });
    assert.equal(result.ok, false);
    assert.match(result.summary, /did not finish within 200 ms and was stopped/);
  });
});
