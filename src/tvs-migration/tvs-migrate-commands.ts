// `tvs-migrate plan | run | check`: moving a school from the old WordPress plugin, from the
// command line. The WordPress database's password is never printed: every message naming the
// source shows it masked, and any error text is scrubbed of it.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'csv-stringify/sync';
import { parseMysqlUrl } from '../config';
import type { Actor } from '../requests/request-lifecycle';
import type { Services } from '../services';
import { openPluginDatabase, withoutPassword, WORDPRESS_PREFIX } from './plugin-tables.repository';
import type { CheckResult, MigrationReport, PluginSource, ReportRow } from './tvs-migration.service';

export const TVS_MIGRATE_USAGE = `  tvs-migrate plan [--from mysql://user:password@host:3306/wordpress] [--prefix wp_] [--report FILE] [--json]
                                  what moving from the WordPress plugin would do with each of its rows
                                  (changes nothing; writes the report as CSV)
  tvs-migrate run [--from …] [--prefix wp_] [--report FILE]
                                  import the plugin's requests and auth table (again: imports nothing twice);
                                  exit 1 unless every plugin username is in this service's auth table
  tvs-migrate check [--from …] [--prefix wp_] [--json]
                                  who re-pointing Moodle's auth_db would suspend or newly let in; exit 0 only if nobody
                                  (--from and --prefix default to TVS_MIGRATE_FROM and TVS_MIGRATE_PREFIX)`;

export interface TvsMigrateIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

const INITIAL_PASSWORD_ADVICE = (prefix: string) =>
  `The plugin's table ${prefix}tvs_parent_moodle_provisioning keeps every parent's first password in plain text ` +
  '(its provisioned_initialpass column). This service never read it. Once the move is done, clear it: ' +
  `UPDATE ${prefix}tvs_parent_moodle_provisioning SET provisioned_initialpass = NULL; (see docs/migrating-from-wordpress-plugin.md).`;

const REPORT_COLUMNS: Array<[keyof ReportRow, string]> = [
  ['table', 'plugin table'],
  ['pluginId', 'plugin id'],
  ['parent', 'parent'],
  ['email', 'email'],
  ['username', 'username'],
  ['pluginStatus', 'status in the plugin'],
  ['outcome', 'what happens'],
  ['serviceStatus', 'status here'],
  ['serviceRequestId', 'request here'],
  ['children', 'children'],
  ['notes', 'notes'],
];

/** Spreadsheets run a cell starting with = + - @ as a formula: such cells are quoted with '. */
const cell = (value: unknown): string => {
  const text = value === null || value === undefined ? '' : String(value);
  return /^[=+\-@\t\r]/.test(text) ? `'${text}` : text;
};

export function reportCsv(rows: ReportRow[]): string {
  return stringify([REPORT_COLUMNS.map(([, title]) => title), ...rows.map((row) => REPORT_COLUMNS.map(([key]) => cell(row[key])))]);
}

function writeReport(services: Services, file: string | undefined, kind: 'plan' | 'run', rows: ReportRow[]): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-');
  const target = path.resolve(file ?? path.join(services.config.dataDir, `tvs-migrate-${kind}-${stamp}.csv`));
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(target, reportCsv(rows));
  return target;
}

function summary(report: MigrationReport, running: boolean): string[] {
  const c = report.counts;
  return [
    `${running ? 'Imported' : 'Would import'}: ${c.imported} request(s); already imported: ${c.alreadyImported}; skipped: ${c.skipped}.`,
    `The plugin's auth table: ${c.authRows} row(s), ${c.usernames} username(s), each ${running ? 'carried over' : 'to be carried over'} exactly as written.`,
    `Children ${running ? '' : 'to be '}linked to their Moodle pupil: ${c.childrenMatched}; children whose pupil staff must pick (flagged on the request page, access kept): ${c.childrenToPick}.`,
  ];
}

function printCheck(result: CheckResult, io: TvsMigrateIo): void {
  io.out(`The plugin's auth table: ${result.counts.plugin} username(s); this service's: ${result.counts.service}; Moodle's auth_db accounts: ${result.counts.moodle}.`);
  if (result.moodleProblem) io.err(`Moodle could not be compared: ${result.moodleProblem}`);
  io.out(result.wouldBeSuspended.length === 0 ? 'Would be suspended by the switch: nobody.' : `Would be suspended by the switch (${result.wouldBeSuspended.length}):`);
  for (const e of result.wouldBeSuspended) io.out(`  ${e.username}: ${e.why}`);
  io.out(result.wouldNewlyLogIn.length === 0 ? 'Would newly be able to log in: nobody.' : `Would newly be able to log in (${result.wouldNewlyLogIn.length}):`);
  for (const e of result.wouldNewlyLogIn) io.out(`  ${e.username}: ${e.why}`);
  io.out(result.ok ? 'Safe to switch: Moodle would see exactly the same parents.' : 'Not safe to switch yet: see above.');
}

export async function runTvsMigrateCommand(services: Services, args: string[], io: TvsMigrateIo, actor: Actor): Promise<number> {
  const [action, ...rest] = args;
  if (action !== 'plan' && action !== 'run' && action !== 'check') {
    io.err(`${action ? `Unknown tvs-migrate command "${action}".` : 'Say what to do: plan, run or check.'}\n\nUsage:\n${TVS_MIGRATE_USAGE}`);
    return 2;
  }
  const { values } = parseArgs({
    args: rest,
    options: { from: { type: 'string' }, prefix: { type: 'string' }, report: { type: 'string' }, json: { type: 'boolean' } },
  });
  const usage = (problem: string) => {
    io.err(`${problem}\n\nUsage:\n${TVS_MIGRATE_USAGE}`);
    return 2;
  };
  const raw = values.from ?? services.config.tvsMigration.from?.url;
  if (raw === undefined) return usage('Give the WordPress database with --from mysql://user:password@host:3306/wordpress (or set TVS_MIGRATE_FROM).');
  const parsed = parseMysqlUrl(raw);
  if (typeof parsed === 'string') return usage(`--from ${parsed}.`);
  const prefix = values.prefix ?? services.config.tvsMigration.prefix;
  if (!WORDPRESS_PREFIX.test(prefix)) return usage('--prefix must be letters, digits and underscores, like wp_.');
  const source: PluginSource = { db: openPluginDatabase(parsed.url), prefix, display: parsed.display };
  try {
    io.out(`Reading the WordPress plugin's tables from ${source.display} (prefix ${prefix}).`);
    if (action === 'check') {
      const result = await services.tvsMigration.check(source);
      if (values.json) io.out(JSON.stringify(result, null, 2));
      else printCheck(result, io);
      return result.ok ? 0 : 1;
    }
    const running = action === 'run';
    const report = running ? await services.tvsMigration.run(source, actor) : await services.tvsMigration.plan(source);
    const file = writeReport(services, values.report, action, report.rows);
    if (values.json) io.out(JSON.stringify({ ...report, reportFile: file }, null, 2));
    else for (const line of summary(report, running)) io.out(line);
    io.out(`The report of every row is in ${file}.`);
    io.out(INITIAL_PASSWORD_ADVICE(prefix));
    if (!report.invariant) return 0;
    const { missing, added } = report.invariant;
    if (missing.length === 0 && added.length === 0) {
      io.out('Checked: every username in the plugin\'s auth table is in this service\'s auth table, and nobody else was added.');
      return 0;
    }
    if (missing.length > 0) io.err(`NOT SAFE TO SWITCH: ${missing.length} username(s) of the plugin's auth table are not in this service's auth table: ${missing.join(', ')}`);
    if (added.length > 0) io.err(`The migration added ${added.length} username(s) the plugin's auth table does not have: ${added.join(', ')}`);
    return 1;
  } catch (error) {
    // A driver's message may quote the address it was given.
    if (error instanceof Error) error.message = withoutPassword(error.message, parsed.url);
    throw error;
  } finally {
    await source.db.destroy();
  }
}
