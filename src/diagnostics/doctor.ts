// The `doctor` diagnostics: every check the service depends on, in order, each reported as ok or
// a problem in plain words with what to do. Shown by the CLI and on the staff diagnostics page.
import type { Config } from '../config';
import type { Database } from '../db/database';
import { migrationStatus } from '../db/migrator';
import type { MailCheck } from '../mail/mail-transport';
import { checkMoodle } from '../moodle/moodle-checks';
import type { MoodleClient } from '../moodle/moodle-client';
import { describeSyncRefusal, runScheduledTask } from '../moodle/sync-command';
import { CycleRepository } from '../provisioning/cycle-repository';

export interface DoctorCheck {
  id: string;
  label: string;
  ok: boolean;
  message: string;
  help?: string;
  skipped?: boolean;
  /** Working, but something to put right (the service runs; ok stays true and the exit code 0). */
  warning?: boolean;
  /** Command output, for the sync check run with --run-sync. */
  output?: string;
}

export interface DoctorDependencies {
  config: Readonly<Config>;
  db: Database;
  moodle: Pick<MoodleClient, 'getSiteInfo' | 'getUsersByField'> | undefined;
  verifyMail: () => Promise<MailCheck>;
}

export async function runDoctor(deps: DoctorDependencies, options: { runSync?: boolean } = {}): Promise<DoctorCheck[]> {
  const { config, db } = deps;
  const checks: DoctorCheck[] = [];

  let databaseOk = false;
  try {
    await db.raw('select 1');
    const status = await migrationStatus(db, { authTable: config.authTable });
    if (status.pending.length > 0) {
      checks.push({
        id: 'database',
        label: 'Database',
        ok: false,
        message: `The database is reachable but ${status.pending.length} migration(s) have not been applied.`,
        help: 'Run "npm run cli -- migrate" (the service also applies them when it starts).',
      });
    } else {
      databaseOk = true;
      checks.push({ id: 'database', label: 'Database', ok: true, message: `Reachable (${config.database.display}), all ${status.applied.length} migrations applied.` });
    }
  } catch (error) {
    checks.push({
      id: 'database',
      label: 'Database',
      ok: false,
      message: `The database could not be reached (${config.database.display}): ${(error as Error).message}`,
      help: 'Check DATABASE_URL and that the database server is running and accepts this user.',
    });
  }

  if (!databaseOk) {
    checks.push({ id: 'auth-table', label: `Auth table (${config.authTable})`, ok: false, skipped: true, message: 'Not checked: the database is not ready.' });
  } else if (await db.schema.hasTable(config.authTable)) {
    const count = await db(config.authTable).count({ n: '*' }).first();
    checks.push({
      id: 'auth-table',
      label: `Auth table (${config.authTable})`,
      ok: true,
      message: `Present, with ${Number(count?.n ?? 0)} parent(s) allowed to log in. Moodle's External database authentication must read this table (fields username, firstname, lastname, email).`,
    });
  } else {
    checks.push({
      id: 'auth-table',
      label: `Auth table (${config.authTable})`,
      ok: false,
      message: `The table ${config.authTable} does not exist in the database.`,
      help: 'AUTH_TABLE must name the table the migrations created; run "npm run cli -- migrate".',
    });
  }

  const moodleChecks = await checkMoodle(deps.moodle, {
    url: config.moodle.url,
    token: config.moodle.token,
    parentRoleId: config.moodle.parentRoleId,
    // Accounts known to exist (pupils and parents the service has matched): looking them up proves
    // the token can see users other than its own (moodle/user:viewdetails).
    knownUserIds: databaseOk ? await new CycleRepository(db).knownMoodleAccountIds(new Set(), 20) : [],
  });
  checks.push(...moodleChecks);

  const command = config.moodle.syncCommand;
  if (!command) {
    checks.push({
      id: 'sync-command',
      label: 'User sync command (MOODLE_SYNC_COMMAND)',
      ok: true,
      message: "Not set: new parents appear in Moodle when Moodle's own cron runs the External database sync task.",
      help: 'Make sure the task \\auth_db\\task\\sync_users is enabled in Moodle (Site administration > Server > Scheduled tasks).',
    });
  } else if (!options.runSync) {
    checks.push({ id: 'sync-command', label: 'User sync command (MOODLE_SYNC_COMMAND)', ok: true, message: 'Set (not run; use --run-sync to run it now).' });
  } else {
    const result = await runScheduledTask(command, { timeoutMs: config.moodle.commandTimeoutMs });
    let refusals = '';
    if (result.ok && result.errors.length > 0) {
      const requestIds = databaseOk ? await requestIdsInAuthTable(db, config.authTable, result.errors.map((e) => e.username)) : new Map<string, number>();
      refusals = ` ${result.errors.map((e) => describeSyncRefusal(e, requestIds.get(e.username))).join(' ')}`;
    }
    checks.push({
      id: 'sync-command',
      label: 'User sync command (MOODLE_SYNC_COMMAND)',
      ok: result.ok,
      message: result.ok ? `Ran successfully: ${result.summary}${refusals}` : `The sync command failed: ${result.summary}`,
      ...(result.ok ? {} : { help: "Read the output below; run the same command by hand as the service's user to see why." }),
      output: result.command.output,
    });
  }

  const mail = await deps.verifyMail();
  checks.push({ id: 'smtp', label: 'Mail (SMTP_URL)', ok: mail.ok, message: mail.message, ...(mail.ok ? {} : { help: mail.help }) });
  checks.push(privacyNoticeCheck(config));
  return checks;
}

/** The form always links to a notice; without the school's own, parents read this service's short one. */
export function privacyNoticeCheck(config: Pick<Config, 'intake'>): DoctorCheck {
  const label = 'Privacy notice (PRIVACY_NOTICE_URL)';
  const url = config.intake.privacyNoticeUrl;
  if (url) return { id: 'privacy-notice', label, ok: true, message: `The request form links to the school's privacy notice at ${url}.` };
  return {
    id: 'privacy-notice',
    label,
    ok: true,
    warning: true,
    message: "The school's own privacy notice is not set: the request form links to this service's short notice at /privacy instead.",
    help: "Set PRIVACY_NOTICE_URL to the address of the school's privacy notice, once it covers parent accounts in Moodle.",
  };
}

/** Which request each auth-table username belongs to; a look-up that fails names none. */
async function requestIdsInAuthTable(db: Database, authTable: string, usernames: string[]): Promise<Map<string, number>> {
  try {
    const rows = (await db(authTable).whereIn('username', usernames).select('username', 'request_id')) as Array<{ username: string; request_id: unknown }>;
    return new Map(rows.filter((r) => r.request_id !== null).map((r) => [r.username, Number(r.request_id)]));
  } catch {
    return new Map();
  }
}

export function formatDoctor(checks: DoctorCheck[]): string {
  const lines: string[] = [];
  for (const c of checks) {
    const mark = c.skipped ? '-' : !c.ok ? '✗' : c.warning ? '!' : '✓';
    lines.push(`${mark} ${c.label}: ${c.message}`);
    if (c.help && (!c.ok || c.warning)) lines.push(`    What to do: ${c.help}`);
    if (c.output && !c.ok) lines.push(...c.output.trim().split('\n').slice(-20).map((l) => `    | ${l}`));
  }
  const problems = checks.filter((c) => !c.ok && !c.skipped).length;
  const warnings = checks.filter((c) => c.ok && c.warning).length;
  const warningText = warnings === 0 ? '' : ` ${warnings} warning(s) to look at (marked !).`;
  lines.push('', (problems === 0 ? 'Everything checked is working.' : `${problems} problem(s) found.`) + warningText);
  return lines.join('\n');
}
