// Moving from the old WordPress plugin: its two tables in a MariaDB database of their own, seeded
// with the mess a real school has, this service's database on SQLite and MariaDB, and the Moodle
// double. plan changes nothing; run keeps every username Moodle's auth_db reads, adds nobody,
// imports nothing twice, and never reads the plugin's plaintext initial passwords.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { runCli } from '../../src/cli';
import { parseConfig } from '../../src/config';
import { MoodleClient } from '../../src/moodle/moodle-client';
import { createServices, type Services } from '../../src/services';
import { openPluginDatabase } from '../../src/tvs-migration/plugin-tables.repository';
import type { PluginSource } from '../../src/tvs-migration/tvs-migration.service';
import { approvedRequest } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createPluginDatabase, type PluginAuthSeed, type PluginDatabase, type PluginRequestSeed } from '../support/wordpress-plugin';

const INITIAL_PASSWORD = 'Plain-Initial-Pa55!';
const cli = { type: 'cli' as const, id: 'it' };

/** The mess: zero dates, empty and NULL child slots, mixed-case emails, duplicated and orphan auth rows, a deleting row. */
const REQUESTS: PluginRequestSeed[] = [
  // Provisioned; its only child matches one pupil (Ann Pupil, 7B = Moodle user 3); a zero creation date.
  { id: 1, status: 'provisioned', parent_fname: 'Pat', parent_sname: 'One', parent_email: 'Pat.One@Example.COM', child_fname: 'Ann', child_sname: 'Pupil', child_tg: '7B', child3_fname: null, date_created: '0000-00-00 00:00:00', provisioned_username: 'parent.one', provisioned_initialpass: INITIAL_PASSWORD },
  // Approved: one child matches (Bob Pupil 9C = 4), one is ambiguous (two Cara Smith in 8A), one is not in Moodle.
  { id: 2, status: 'approved', parent_fname: 'Pam', parent_sname: 'Two', parent_email: 'pam.two@example.com', child_fname: 'Bob', child_sname: 'Pupil', child_tg: '9C', child2_fname: 'Cara', child2_sname: 'Smith', child2_tg: '8A', child3_fname: 'Dan', child3_sname: 'Nobody', child3_tg: '7C', provisioned_username: 'parent.two', provisioned_initialpass: INITIAL_PASSWORD, staff_comment: 'Checked against SIMS' },
  { id: 3, status: 'pending', parent_fname: 'Quinn', parent_sname: 'Waiting', parent_email: 'Quinn@Example.org', child_fname: 'Ann', child_sname: 'Pupil', child_tg: '10A', request_type: 'I have a Moodle account, but cannot log in.' },
  { id: 4, status: 'rejected', parent_fname: 'Rae', parent_sname: 'Refused', parent_email: 'rae@example.org', child_fname: 'Eve', child_sname: 'Else', child_tg: '11Z' },
  { id: 5, status: 'deleting', parent_fname: 'Del', parent_sname: 'Eting', parent_email: 'del@example.org', child_fname: 'Ann', child_sname: 'Pupil', child_tg: '7B', provisioned_username: 'del@example.org' },
  { id: 6, status: 'unknown', parent_fname: 'Uma', parent_sname: 'Unknown', parent_email: 'uma@example.org', child_fname: 'Bob', child_sname: 'Pupil', child_tg: '9C', date_created: '0000-00-00 00:00:00' },
  { id: 7, status: 'bogus', parent_fname: 'Bo', parent_sname: 'Gus', parent_email: 'bo@example.org', child_fname: 'X', child_sname: 'Y', child_tg: '1A' },
  { id: 8, status: 'duplicate', parent_fname: 'Pat', parent_sname: 'One', parent_email: 'pat.one@example.com', child_fname: 'Ann', child_sname: 'Pupil', child_tg: '7B' },
  // Provisioned once, but its auth row was deleted by hand: the parent cannot log in today.
  { id: 9, status: 'provisioned', parent_fname: 'Gone', parent_sname: 'Away', parent_email: 'gone@example.org', child_fname: 'Bob', child_sname: 'Pupil', child_tg: '9C', provisioned_username: 'gone@example.org', provisioned_initialpass: INITIAL_PASSWORD },
];
const AUTH: PluginAuthSeed[] = [
  { id: 1, username: 'parent.one', parent_fname: 'Pat', parent_sname: 'One', parent_email: 'Pat.One@Example.COM', request_id: 1 },
  // The plugin enforced no uniqueness: the same username twice.
  { id: 2, username: 'parent.two', parent_fname: 'Pam', parent_sname: 'Two', parent_email: 'pam.two@example.com', request_id: 2 },
  { id: 3, username: 'parent.two', parent_fname: 'Pam', parent_sname: 'Two', parent_email: 'pam.two@example.com', request_id: 2 },
  // Added by hand, no request (Moodle has this account, suspended).
  { id: 4, username: 'parent.three', parent_fname: 'Pia', parent_sname: 'Three', parent_email: 'pia.three@example.com', request_id: 0 },
  // Names a request that is not there.
  { id: 5, username: 'Hand.Added@Example.org', parent_fname: 'Hal', parent_sname: 'Hand', parent_email: 'Hand.Added@Example.org', request_id: 999 },
];
const PLUGIN_USERNAMES = ['Hand.Added@Example.org', 'parent.one', 'parent.three', 'parent.two'];

/** Every table's row count and a checksum of its rows (in any order), to prove nothing changed. */
async function digest(db: Knex, dialect: 'sqlite' | 'mariadb'): Promise<Record<string, string>> {
  const tables =
    dialect === 'sqlite'
      ? ((await db('sqlite_master').where({ type: 'table' }).whereNot('name', 'like', 'sqlite_%').pluck('name')) as string[])
      : ((await db('information_schema.tables').whereRaw('table_schema = database()').pluck('table_name')) as string[]);
  const out: Record<string, string> = {};
  for (const table of tables.sort()) {
    const rows = ((await db(table).select()) as unknown[]).map((r) => JSON.stringify(r)).sort();
    out[table] = `${rows.length}:${createHash('sha256').update(rows.join('\n')).digest('hex')}`;
  }
  return out;
}

async function everyStoredValue(db: Knex, dialect: 'sqlite' | 'mariadb'): Promise<string> {
  const tables =
    dialect === 'sqlite'
      ? ((await db('sqlite_master').where({ type: 'table' }).pluck('name')) as string[])
      : ((await db('information_schema.tables').whereRaw('table_schema = database()').pluck('table_name')) as string[]);
  const parts: string[] = [];
  for (const table of tables) if (!table.startsWith('sqlite_')) parts.push(JSON.stringify(await db(table).select()));
  return parts.join('\n');
}

for (const dialect of DIALECTS) {
  describe(`tvs-migrate from a WordPress plugin on MariaDB into ${dialect}`, async () => {
    const skip = (await skipReason('mariadb')) || (await skipReason(dialect));
    let t: TestDatabase;
    let plugin: PluginDatabase;
    let moodle: MoodleDouble;
    let services: Services;
    let source: PluginSource;
    const queries: string[] = [];
    const reportDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-tvs-'));

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      plugin = await createPluginDatabase();
      await plugin.seed(REQUESTS, AUTH);
      const state = seedRecordedSite();
      state.addUser({ username: 'cara.s1', firstname: 'Cara', lastname: 'Smith', department: '8A' });
      state.addUser({ username: 'cara.s2', firstname: 'Cara', lastname: 'Smith', department: '8A' });
      moodle = await startMoodleDouble({ state });
      const client = new MoodleClient({ url: moodle.url, token: moodle.tokens.ws, timeoutMs: 5000, retries: 0, batchSize: 100 });
      services = createServices(parseConfig({ NODE_ENV: 'test' }, { cwd: reportDir }), { db: t.db, moodle: client });
      source = { db: openPluginDatabase(plugin.readerUrl), prefix: 'wp_', display: 'wordpress' };
      source.db.on('query', (q: { sql: string }) => queries.push(q.sql));
    });
    after(async () => {
      await source?.db.destroy();
      await services?.close();
      await moodle?.close();
      await plugin?.destroy();
      await t?.destroy();
      fs.rmSync(reportDir, { recursive: true, force: true });
    });

    const run = async (...argv: string[]) => {
      const out: string[] = [];
      const err: string[] = [];
      const code = await runCli(argv, { out: (x) => out.push(x), err: (x) => err.push(x) }, { services });
      return { code, out: out.join('\n'), err: err.join('\n') };
    };

    it('check before the import: everyone in the plugin’s auth table would be suspended (exit 1)', { skip }, async () => {
      const result = await services.tvsMigration.check(source);
      assert.equal(result.ok, false);
      assert.deepEqual(result.wouldBeSuspended.map((e) => e.username).sort(), [...PLUGIN_USERNAMES].sort());
      assert.deepEqual(result.wouldNewlyLogIn, []);
      const r = await run('tvs-migrate', 'check', '--from', plugin.readerUrl);
      assert.equal(r.code, 1, r.err);
      assert.match(r.out, /Would be suspended by the switch \(4\)/);
    });

    it('plan reports every row and changes nothing in either database, nor in Moodle', { skip }, async () => {
      const pluginBefore = await digest(plugin.db, 'mariadb');
      const serviceBefore = await digest(t.db, dialect);
      const assignmentsBefore = JSON.stringify(moodle.state.assignments);
      const reportFile = path.join(reportDir, 'plan.csv');
      const r = await run('tvs-migrate', 'plan', '--from', plugin.readerUrl, '--report', reportFile);
      assert.equal(r.code, 0, r.err);
      assert.deepEqual(await digest(plugin.db, 'mariadb'), pluginBefore);
      assert.deepEqual(await digest(t.db, dialect), serviceBefore);
      assert.equal(JSON.stringify(moodle.state.assignments), assignmentsBefore);
      assert.match(r.out, /Would import: 10 request\(s\); already imported: 0; skipped: 1/);
      assert.match(r.out, /provisioned_initialpass/);
      const csv = fs.readFileSync(reportFile, 'utf8');
      assert.match(csv, /^plugin table,plugin id,parent,email,username,status in the plugin,what happens/);
      assert.match(csv, /requests,5,.*skipped,.*deleting/);
      assert.match(csv, /Cara Smith \(8A\): ambiguous \(2 pupils\), staff pick the pupil/);
      assert.match(csv, /Dan Nobody \(7C\): not found, staff pick the pupil/);
      assert.match(csv, /auth,3,.*one with auth row 2 \(same username\)/);
      assert.ok(!csv.includes(INITIAL_PASSWORD));
      // The reader's password appears in no output.
      assert.ok(!`${r.out}\n${r.err}`.includes(plugin.readerPassword));
      assert.match(r.out, /Reading the WordPress plugin's tables from mysql:\/\/wpr_[0-9a-f_]+:\*\*\*@/);
    });

    it('run imports nothing when Moodle cannot be asked, or is not set up', { skip }, async () => {
      const before = await digest(t.db, dialect);
      const refused = new MoodleClient({ url: moodle.url, token: moodle.tokens.invalid, timeoutMs: 5000, retries: 0, batchSize: 100 });
      for (const client of [refused, null]) {
        const other = createServices(parseConfig({ NODE_ENV: 'test' }, { cwd: reportDir }), { db: t.db, moodle: client });
        const out: string[] = [];
        const code = await runCli(['tvs-migrate', 'run', '--from', plugin.readerUrl, '--report', path.join(reportDir, 'refused.csv')], { out: (x) => out.push(x), err: (x) => out.push(x) }, { services: other });
        await other.close();
        assert.equal(code, 1, out.join('\n'));
        assert.ok(!out.join('\n').includes(plugin.readerPassword));
        if (client === null) assert.match(out.join('\n'), /Nothing was imported: Moodle is not set up/);
      }
      assert.deepEqual(await digest(t.db, dialect), before);
    });

    it('run imports through the lifecycle and keeps every auth username exactly, adding nobody', { skip }, async () => {
      const r = await run('tvs-migrate', 'run', '--from', plugin.readerUrl, '--report', path.join(reportDir, 'run.csv'));
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /every username in the plugin's auth table is in this service's auth table, and nobody else was added/);
      assert.ok(!`${r.out}\n${r.err}`.includes(plugin.readerPassword));

      const usernames = ((await t.db(TEST_AUTH_TABLE).pluck('username')) as string[]).sort();
      assert.deepEqual(usernames, [...PLUGIN_USERNAMES].sort());

      const byWp = async (wpId: number) => {
        const row = await t.db('requests').where({ wp_request_id: wpId }).first();
        return row ? services.lifecycle.get(Number(row.id)) : undefined;
      };
      const one = await byWp(1);
      assert.equal(one?.request.status, 'provisioned');
      assert.equal(one?.request.source, 'wordpress_plugin');
      assert.equal(one?.request.email, 'pat.one@example.com');
      assert.deepEqual(one?.children.map((c) => [c.firstName, c.linkState, c.moodleUserId]), [['Ann', 'linked', 3]]);
      const two = await byWp(2);
      assert.equal(two?.request.status, 'approved');
      assert.deepEqual(two?.children.map((c) => [c.firstName, c.linkState, c.moodleUserId]), [['Bob', 'matched', 4], ['Cara', 'unmatched', null], ['Dan', 'unmatched', null]]);
      assert.match(two?.children[1]?.lastError ?? '', /^Pick the pupil: more than one pupil in Moodle could be Cara Smith \(8A\)/);
      assert.match(two?.children[2]?.lastError ?? '', /^Pick the pupil: no pupil called Dan Nobody \(7C\)/);
      assert.match(two?.request.staffComment ?? '', /Checked against SIMS/);
      assert.equal((await byWp(3))?.request.status, 'pending');
      assert.equal((await byWp(3))?.request.requestType, 'cannot_log_in');
      assert.equal((await byWp(4))?.request.status, 'denied');
      assert.equal(await byWp(5), undefined);
      assert.equal((await byWp(6))?.request.status, 'pending');
      assert.match((await byWp(6))?.request.staffComment ?? '', /“unknown”/);
      assert.equal((await byWp(7))?.request.status, 'bogus');
      assert.equal((await byWp(8))?.request.status, 'duplicate');
      assert.equal((await byWp(9))?.request.status, 'revoked');

      // Auth rows without a request became provisioned requests of their own.
      const own = await t.db('requests').where({ source: 'wordpress_plugin' }).whereNull('wp_request_id').orderBy('id');
      assert.deepEqual(own.map((r) => [r.status, r.moodle_username]), [['provisioned', 'parent.three'], ['provisioned', 'Hand.Added@Example.org']]);

      // One audit event per imported request, in the lifecycle's words.
      const imported = await t.db('requests').where({ source: 'wordpress_plugin' }).count({ n: '*' }).first();
      const events = await t.db('audit_events').where({ action: 'imported_from_wordpress_plugin' }).count({ n: '*' }).first();
      assert.equal(Number(imported?.n), 10);
      assert.equal(Number(events?.n), 10);
    });

    it('run again imports nothing twice', { skip }, async () => {
      const before = await digest(t.db, dialect);
      const r = await run('tvs-migrate', 'run', '--from', plugin.readerUrl, '--report', path.join(reportDir, 'run2.csv'));
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /Imported: 0 request\(s\); already imported: 10; skipped: 1/);
      assert.deepEqual(await digest(t.db, dialect), before);
    });

    it('never reads the initial password: no query names its column, no stored row holds it', { skip }, async () => {
      // The service-level runs use `source`, whose queries were recorded.
      await services.tvsMigration.plan(source);
      await services.tvsMigration.run(source, cli);
      assert.ok(queries.length > 0);
      for (const sql of queries) {
        assert.doesNotMatch(sql, /initialpass/i, sql);
        assert.doesNotMatch(sql, /select \*/i, sql);
      }
      assert.ok(!(await everyStoredValue(t.db, dialect)).includes(INITIAL_PASSWORD));
    });

    it('the WordPress connection cannot write, whatever a bug tried', { skip }, async () => {
      await assert.rejects(source.db('wp_tvs_parent_moodle_provisioning_auth').insert({ username: 'x', parent_title: '', parent_fname: '', parent_sname: '', parent_email: '', description: '', request_id: 0 }));
      assert.equal(Number((await plugin.db('wp_tvs_parent_moodle_provisioning_auth').count({ n: '*' }).first())?.n), AUTH.length);
    });

    it('check after the import: nobody suspended, nobody new (exit 0); a parent approved here since is listed', { skip }, async () => {
      const ok = await run('tvs-migrate', 'check', '--from', plugin.readerUrl);
      assert.equal(ok.code, 0, `${ok.out}\n${ok.err}`);
      assert.match(ok.out, /Safe to switch/);

      await approvedRequest(services.lifecycle, { email: 'new.parent@example.org' });
      const result = await services.tvsMigration.check(source);
      assert.equal(result.ok, false);
      assert.deepEqual(result.wouldNewlyLogIn.map((e) => e.username), ['new.parent@example.org']);
      assert.deepEqual(result.wouldBeSuspended, []);

      // An auth_db account in Moodle that neither table has would be suspended by the switch.
      moodle.state.addUser({ username: 'stray.parent', firstname: 'Stray', lastname: 'Parent', auth: 'db' });
      const stray = await services.tvsMigration.check(source);
      assert.deepEqual(stray.wouldBeSuspended.map((e) => e.username), ['stray.parent']);
    });

    it('answers wrong usage with exit 2 and a missing table with exit 1 in words', { skip }, async () => {
      const noFrom = await run('tvs-migrate', 'plan');
      assert.equal(noFrom.code, 2);
      assert.match(noFrom.err, /--from mysql:\/\//);
      const sqlite = await run('tvs-migrate', 'plan', '--from', 'sqlite:x.sqlite');
      assert.equal(sqlite.code, 2);
      const badPrefix = await run('tvs-migrate', 'plan', '--from', plugin.readerUrl, '--prefix', 'wp2_');
      assert.equal(badPrefix.code, 1);
      assert.match(badPrefix.err, /has no table wp2_tvs_parent_moodle_provisioning/);
      assert.ok(!badPrefix.err.includes(plugin.readerPassword));
      const wrongPassword = await run('tvs-migrate', 'check', '--from', plugin.readerUrl.replace(plugin.readerPassword, 'Wrong-Guess-123'));
      assert.equal(wrongPassword.code, 1);
      assert.ok(!`${wrongPassword.out}\n${wrongPassword.err}`.includes('Wrong-Guess-123'));
    });

    it('doctor runs the same check when TVS_MIGRATE_FROM is set, without showing its password', { skip }, async () => {
      const client = new MoodleClient({ url: moodle.url, token: moodle.tokens.ws, timeoutMs: 5000, retries: 0, batchSize: 100 });
      const configured = createServices(parseConfig({ NODE_ENV: 'test', TVS_MIGRATE_FROM: plugin.readerUrl }), { db: t.db, moodle: client });
      try {
        const checks = await configured.doctor();
        const check = checks.find((c) => c.id === 'tvs_migration');
        assert.ok(check);
        assert.equal(check.ok, false);
        assert.match(check.message, /1 would newly be able to log in/);
        assert.ok(!JSON.stringify(checks).includes(plugin.readerPassword));
      } finally {
        await configured.close();
      }
    });
  });
}
