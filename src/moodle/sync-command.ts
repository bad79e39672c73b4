// Runs the operator's Moodle command (MOODLE_SYNC_COMMAND, e.g. `ssh moodle php admin/cli/scheduled_task.php
// --execute='\auth_db\task\sync_users'`) and reads Moodle's output, which exits 0 even when the task failed.
import { spawn } from 'node:child_process';

/** Output beyond this is dropped from the front: the end holds Moodle's verdict. */
export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;
/** After SIGTERM, how long the command gets to stop before SIGKILL. */
const DEFAULT_KILL_GRACE_MS = 2_000;

// The command comes from the environment and is trusted, but it has no use for this service's own
// secrets; keeping them out of its environment keeps them out of anything it logs.
const SECRET_VARIABLES = ['MOODLE_TOKEN', 'SESSION_SECRET', 'DATABASE_URL', 'SMTP_URL'];

export interface RunCommandOptions {
  timeoutMs: number;
  maxOutputBytes?: number;
  /** After a time-out's SIGTERM, how long before SIGKILL. */
  killGraceMs?: number;
  /** The command's environment; defaults to this process's, without the service's secrets. */
  env?: NodeJS.ProcessEnv;
}

export interface CommandResult {
  /** null when the command was ended by a signal (for example on time-out). */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** stdout and stderr, interleaved as they arrived (the last maxOutputBytes only). */
  output: string;
  truncated: boolean;
  durationMs: number;
}

/**
 * Runs a command string through /bin/sh -c with no stdin, capturing stdout and stderr together.
 * On time-out the whole process group is killed (an ssh and the php it started, not just the shell).
 */
export function runMoodleCommand(command: string, options: RunCommandOptions): Promise<CommandResult> {
  const maxBytes = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
  const env = options.env ?? withoutSecrets(process.env);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', command], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so a time-out can end everything the command started.
      detached: true,
      env,
    });
    const chunks: Buffer[] = [];
    let kept = 0;
    let truncated = false;
    const collect = (data: Buffer) => {
      chunks.push(data);
      kept += data.length;
      while (kept > maxBytes && chunks.length > 0) {
        const first = chunks[0] as Buffer;
        const excess = kept - maxBytes;
        if (first.length <= excess) {
          chunks.shift();
          kept -= first.length;
        } else {
          chunks[0] = first.subarray(excess);
          kept -= excess;
        }
        truncated = true;
      }
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);

    let timedOut = false;
    let forceClose: NodeJS.Timeout | undefined;
    const signalGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        // The group is already gone.
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      signalGroup('SIGTERM');
      forceClose = setTimeout(() => {
        signalGroup('SIGKILL');
        // A grandchild that left the group could hold the pipes open for ever: stop waiting for it.
        setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
        }, 1_000).unref();
      }, options.killGraceMs ?? DEFAULT_KILL_GRACE_MS);
      forceClose.unref();
    }, options.timeoutMs);

    child.on('error', (error) => {
      clearTimeout(timer);
      if (forceClose !== undefined) clearTimeout(forceClose);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (forceClose !== undefined) clearTimeout(forceClose);
      let output = Buffer.concat(chunks).toString('utf8');
      // A cut in the middle of a line (or of a character) is noise: start at the next full line.
      if (truncated) output = output.slice(output.indexOf('\n') + 1);
      resolve({ exitCode: code, signal, timedOut, output, truncated, durationMs: Date.now() - started });
    });
  });
}

function withoutSecrets(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const copy = { ...env };
  for (const name of SECRET_VARIABLES) delete copy[name];
  return copy;
}

export interface SyncedUser {
  username: string;
  id: number;
}

/**
 * A row of the auth table that Moodle's sync did not turn into an account. `username_taken`: Moodle
 * already has the username as an account of another sign-in method (`plugin`, say "manual" for a
 * teacher who is also a parent). `not_accepted`: "Error inserting user X" alone, which Moodle
 * prints for a username it will not store (capital letters, characters it does not allow).
 */
export type SyncRefusal =
  | { username: string; reason: 'username_taken'; plugin: string }
  | { username: string; reason: 'not_accepted' }
  | { username: string; reason: 'other'; detail: string };

export interface ScheduledTaskReport {
  ok: boolean;
  /** Plain words for staff: what happened. */
  summary: string;
  /** The task's name as Moodle printed it, when it printed one. */
  task?: string;
  inserted: SyncedUser[];
  /** Rows Moodle could not turn into accounts, and why. */
  errors: SyncRefusal[];
  suspended: SyncedUser[];
  revived: SyncedUser[];
  /** The line that tells why it failed, for IT. */
  failureLine?: string;
}

const TASK_VERDICT = /^Scheduled task (complete|failed): (.*)$/;
const INSERTED = /^Inserted user (\S+) id (\d+)$/;
const INSERT_ERROR = /^Error inserting user (\S+)(?:\s+-\s+(.*))?$/;
const TAKEN_BY_PLUGIN = /^user with this username was already created through '([^']+)' plugin\.?$/;
const SUSPENDED = /^Suspended user (\S+) id (\d+)$/;
const REVIVED = /^Revived user (\S+) id (\d+)$/;

/**
 * Decides whether a `php admin/cli/scheduled_task.php --execute=...` run worked, from Moodle's
 * verdict line AND the exit code (Moodle exits 0 on a failed task, 1 on an unknown task), and lists
 * what the auth_db user sync did to each user.
 */
export function parseScheduledTaskOutput(output: string, exitCode: number | null): ScheduledTaskReport {
  const lines = output.split(/\r?\n/).map((l) => l.trim());
  const report: ScheduledTaskReport = { ok: false, summary: '', inserted: [], errors: [], suspended: [], revived: [] };
  let verdict: { complete: boolean; line: string; rest: string } | undefined;
  for (const line of lines) {
    let m: RegExpExecArray | null;
    if ((m = TASK_VERDICT.exec(line)) !== null) verdict = { complete: m[1] === 'complete', line, rest: m[2] ?? '' };
    else if ((m = INSERTED.exec(line)) !== null) report.inserted.push({ username: m[1] ?? '', id: Number(m[2]) });
    else if ((m = INSERT_ERROR.exec(line)) !== null) report.errors.push(refusal(m[1] ?? '', m[2]));
    else if ((m = SUSPENDED.exec(line)) !== null) report.suspended.push({ username: m[1] ?? '', id: Number(m[2]) });
    else if ((m = REVIVED.exec(line)) !== null) report.revived.push({ username: m[1] ?? '', id: Number(m[2]) });
  }
  const lastLine = [...lines].reverse().find((l) => l !== '');

  if (verdict === undefined) {
    if (lastLine !== undefined) report.failureLine = lastLine;
    report.summary =
      exitCode === null
        ? 'The Moodle command was stopped before it finished.'
        : exitCode !== 0
          ? `The Moodle command failed (exit code ${exitCode})${lastLine === undefined ? '.' : `: ${lastLine}`}`
          : 'The Moodle command finished without saying whether the task ran; check that it runs admin/cli/scheduled_task.php.';
    return report;
  }

  // "Synchronise users task (auth_db\task\sync_users),mysqli_query(): ..." → name, then the reason.
  const named = /^(.*?\([^()]*\))(?:,\s*(.*))?$/.exec(verdict.rest);
  const taskName = (named?.[1] ?? verdict.rest).trim();
  const reason = named?.[2]?.trim();
  report.task = taskName;
  const plainName = taskName.replace(/\s*\([^()]*\)$/, '');

  if (!verdict.complete) {
    report.failureLine = verdict.line;
    report.summary = authTableUnreachable(taskName, reason, output)
      ? AUTH_TABLE_UNREACHABLE
      : `Moodle's task "${plainName}" failed${reason === undefined || reason === '' ? '.' : `: ${reason}`}`;
    return report;
  }
  if (exitCode !== 0) {
    report.failureLine = lastLine ?? verdict.line;
    report.summary = `Moodle's task "${plainName}" finished, but the command then failed (${exitCode === null ? 'stopped' : `exit code ${exitCode}`}).`;
    return report;
  }
  report.ok = true;
  report.summary = `Moodle's task "${plainName}" finished${describeUserChanges(report)}.`;
  return report;
}

function describeUserChanges(report: ScheduledTaskReport): string {
  const count = (n: number, what: string) => `${n} ${what}`;
  const parts: string[] = [];
  if (report.inserted.length > 0) parts.push(count(report.inserted.length, report.inserted.length === 1 ? 'account created' : 'accounts created'));
  if (report.suspended.length > 0) parts.push(count(report.suspended.length, report.suspended.length === 1 ? 'account suspended' : 'accounts suspended'));
  if (report.revived.length > 0) parts.push(count(report.revived.length, report.revived.length === 1 ? 'account restored' : 'accounts restored'));
  if (report.errors.length > 0) {
    parts.push(`${report.errors.length} not created (${report.errors.map((e) => `${e.username}: ${shortRefusalReason(e)}`).join('; ')})`);
  }
  return parts.length === 0 ? '' : `: ${parts.join(', ')}`;
}

function refusal(username: string, detail: string | undefined): SyncRefusal {
  if (detail === undefined || detail.trim() === '') return { username, reason: 'not_accepted' };
  const taken = TAKEN_BY_PLUGIN.exec(detail.trim());
  if (taken !== null) return { username, reason: 'username_taken', plugin: taken[1] ?? '' };
  return { username, reason: 'other', detail: detail.trim() };
}

/** What staff are told when Moodle's sync cannot reach the database that holds the auth table. */
export const AUTH_TABLE_UNREACHABLE =
  'Moodle could not connect to the database of the auth table: check the External database settings ' +
  '(Site administration > Plugins > Authentication > External database: host, database, user and password).';

/**
 * auth_db's sync failing before it read a row because its connection is not there: PHP then calls
 * mysqli_query() (or the driver of another database) with `false` instead of a connection, or the
 * driver says it could not connect. The raw lines stay in the command output for IT.
 */
function authTableUnreachable(taskName: string, reason: string | undefined, output: string): boolean {
  if (!taskName.includes('auth_db\\task\\sync_users')) return false;
  const text = reason ?? '';
  if (/must be of type (mysqli|PgSql\\Connection|resource), bool given/i.test(text)) return true;
  return /could not connect|can't connect|unable to connect|connection refused|access denied for user/i.test(text) && /auth\/db\/auth\.php/.test(output);
}

function shortRefusalReason(refused: SyncRefusal): string {
  switch (refused.reason) {
    case 'username_taken':
      return refused.plugin === 'manual'
        ? 'Moodle already has a manual account with this username'
        : `Moodle already has an account with this username that signs in through "${refused.plugin}"`;
    case 'not_accepted':
      return 'not a username Moodle accepts (only lower-case letters, digits and _ . @ -)';
    default:
      return refused.detail;
  }
}

/** What staff are told about an account Moodle's sync did not create, and what to do about it. */
export function explainSyncRefusal(refused: SyncRefusal): string {
  switch (refused.reason) {
    case 'username_taken':
      return (
        "Moodle's user sync did not create this parent's account, because Moodle already has " +
        (refused.plugin === 'manual' ? 'a manual account (made by hand in Moodle)' : `an account that signs in through "${refused.plugin}"`) +
        " with this username. If that account is the parent's, link the request to it as an existing account; otherwise ask the parent for another email address."
      );
    case 'not_accepted':
      return "Moodle's user sync did not accept this username (Moodle takes only lower-case letters, digits and _ . @ -). Correct the parent's email address on the request.";
    default:
      return `Moodle's user sync could not create this account: ${refused.detail}`;
  }
}

/** The same, naming the request the account belongs to when one is known. */
export function describeSyncRefusal(refused: SyncRefusal, requestId?: number): string {
  const who = requestId === undefined ? refused.username : `Request ${requestId} (${refused.username})`;
  return `${who}: ${explainSyncRefusal(refused)}`;
}

/** Runs a scheduled-task command and reads its verdict in one step. */
export async function runScheduledTask(
  command: string,
  options: RunCommandOptions,
): Promise<ScheduledTaskReport & { command: CommandResult }> {
  const result = await runMoodleCommand(command, options);
  const report = parseScheduledTaskOutput(result.output, result.exitCode);
  if (result.timedOut) {
    report.ok = false;
    report.summary = `The Moodle command did not finish within ${describeDuration(options.timeoutMs)} and was stopped.`;
  }
  return { ...report, command: result };
}

function describeDuration(ms: number): string {
  if (ms < 1_000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 1_000)} seconds`;
  return `${Math.round(ms / 60_000)} minutes`;
}
