// `doctor` against the Moodle test double, a real SMTP server and a real database: all good,
// an invalid token, a missing function, Moodle down, web services off.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../../src/cli';
import { parseConfig } from '../../src/config';
import { createServices } from '../../src/services';
import { staff, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { loadCliRecordings } from '../support/moodle-contract';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { TestSmtpServer } from '../support/smtp-server';

async function closedPortUrl(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return `http://127.0.0.1:${port}`;
}

describe('doctor', () => {
  let t: TestDatabase;
  let smtp: TestSmtpServer;
  let moodle: MoodleDouble;
  before(async () => {
    t = await createTestDatabase('sqlite');
    smtp = await new TestSmtpServer().start();
    moodle = await startMoodleDouble({ state: seedRecordedSite() });
  });
  after(async () => {
    await moodle?.close();
    await smtp?.close();
    await t?.destroy();
  });

  async function doctor(env: Record<string, string>, ...args: string[]) {
    const config = parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, MOODLE_PARENT_ROLE_ID: '9', SMTP_URL: smtp.url, MOODLE_RETRIES: '0', MOODLE_TIMEOUT_MS: '2000', ...env });
    const services = createServices(config, { db: t.db });
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCli(['doctor', ...args], { out: (s) => out.push(s), err: (s) => err.push(s) }, { services });
    return { code, text: out.join('\n') + err.join('\n') };
  }

  it('all good: every check passes and the exit code is 0', async () => {
    const r = await doctor({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws });
    assert.equal(r.code, 0, r.text);
    for (const label of ['Database', 'Auth table', 'Moodle address', 'Moodle web services', 'Moodle web service token', 'Web service functions', 'Parent role', 'User sync command', 'Mail']) {
      assert.match(r.text, new RegExp(`✓ ${label}`), `${label} ok`);
    }
    assert.match(r.text, /Everything checked is working/);
    assert.equal(r.text.includes(moodle.tokens.ws), false, 'the token is never printed');
  });

  it('an invalid token is named as such, with where to get a new one', async () => {
    const r = await doctor({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.invalid });
    assert.equal(r.code, 1);
    assert.match(r.text, /✗ Moodle web service token/);
    assert.match(r.text, /Manage tokens/);
    assert.equal(r.text.includes(moodle.tokens.invalid), false);
  });

  it('a function missing from the service is named', async () => {
    moodle.state.removeServiceFunction('core_role_assign_roles');
    try {
      const r = await doctor({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws });
      assert.equal(r.code, 1);
      assert.match(r.text, /✗ Web service functions: .*core_role_assign_roles/);
      assert.match(r.text, /External services/);
    } finally {
      moodle.state.serviceFunctions.push('core_role_assign_roles');
    }
  });

  it('Moodle down: the address check fails in plain words and the later Moodle checks are not run', async () => {
    const r = await doctor({ MOODLE_URL: await closedPortUrl(), MOODLE_TOKEN: 'whatever-token' });
    assert.equal(r.code, 1);
    assert.match(r.text, /✗ Moodle address \(MOODLE_URL\): .*could not be reached/i);
    assert.match(r.text, /- Moodle web service token/);
    assert.match(r.text, /✓ Database/);
  });

  it('web services switched off in Moodle are reported with where to switch them on', async () => {
    moodle.setFaults({ webServicesEnabled: false });
    try {
      const r = await doctor({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws });
      assert.equal(r.code, 1);
      assert.match(r.text, /✗ Moodle web services: .*switched off/i);
      assert.match(r.text, /Enable web services/);
    } finally {
      moodle.setFaults({ webServicesEnabled: true });
    }
  });

  it('Moodle not configured and the sync command run with --run-sync are reported', async () => {
    const none = await doctor({});
    assert.equal(none.code, 1);
    assert.match(none.text, /✗ Moodle address \(MOODLE_URL\)/);
    const failing = await doctor({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws, MOODLE_SYNC_COMMAND: "printf '%s\\n' \"Task 'auth_db_task_nope' not found\"; exit 1" }, '--run-sync');
    assert.equal(failing.code, 1);
    assert.match(failing.text, /✗ User sync command .*failed/);
    assert.match(failing.text, /\| Task .* not found/);
    const ok = await doctor({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws, MOODLE_SYNC_COMMAND: "printf 'Execute scheduled task: Synchronise users task (auth_db\\\\task\\\\sync_users)\\nScheduled task complete: Synchronise users task (auth_db\\\\task\\\\sync_users)\\n'" }, '--run-sync');
    assert.equal(ok.code, 0, ok.text);
    assert.match(ok.text, /✓ User sync command .*Ran successfully/);
  });

  it('cycle: runs one provisioning cycle, prints its summary, exit 1 when it cannot work', async () => {
    const unconfigured = await runCycle({});
    assert.equal(unconfigured.code, 1);
    assert.match(unconfigured.text, /Moodle is not configured/);
    const ok = await runCycle({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws });
    assert.equal(ok.code, 0, ok.text);
    assert.match(ok.text, /Cycle \d+: succeeded/);
  });

  it('proves the token can see a user other than itself with a matched pupil, and names moodle/user:viewdetails when it cannot', async () => {
    const before = await doctor({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.readonly });
    assert.match(before.text, /- Seeing Moodle accounts \(moodle\/user:viewdetails\): Not proven: no pupil has been matched/);

    const services = createServices(parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SMTP_URL: smtp.url }), { db: t.db });
    const { request, children } = await services.lifecycle.submitRequest(
      submission({ email: 'doctor.visibility@example.org', children: [{ firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: null }] }),
      { type: 'parent' },
    );
    await services.lifecycle.approveRequest(request.id, { children: [{ childId: children[0]!.id, moodleUserId: 3 }] }, staff);

    const blind = await doctor({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.readonly });
    assert.equal(blind.code, 1);
    assert.match(blind.text, /✗ Seeing Moodle accounts \(moodle\/user:viewdetails\): .*the web service user lacks moodle\/user:viewdetails/);
    assert.match(blind.text, /What to do: .*moodle\/user:viewdetails.*Define roles/);
    const seeing = await doctor({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws });
    assert.match(seeing.text, /✓ Seeing Moodle accounts \(moodle\/user:viewdetails\): The token can see other Moodle accounts/);
  });

  async function runCycle(env: Record<string, string>) {
    const config = parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, MOODLE_PARENT_ROLE_ID: '9', SMTP_URL: smtp.url, ...env });
    const services = createServices(config, { db: t.db });
    const out: string[] = [];
    const code = await runCli(['cycle'], { out: (s) => out.push(s), err: (s) => out.push(s) }, { services });
    return { code, text: out.join('\n') };
  }
});

/** A MOODLE_SYNC_COMMAND that prints a recorded Moodle run (without its "# " header lines). */
function recordedSyncCommand(dir: string, file: string): string {
  const recording = loadCliRecordings().find((r) => r.file === file);
  assert.ok(recording, file);
  const out = path.join(dir, file);
  fs.writeFileSync(out, recording.output);
  return `cat '${out}'`;
}

for (const dialect of DIALECTS) {
  describe(`doctor --run-sync reads Moodle's sync output right, on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let dir: string;
    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-doctor-'));
    });
    after(async () => {
      if (skip) return;
      await moodle.close();
      await t.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    async function doctorRunSync(command: string) {
      const config = parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, MOODLE_PARENT_ROLE_ID: '9', MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws, MOODLE_SYNC_COMMAND: command });
      const services = createServices(config, { db: t.db });
      const out: string[] = [];
      const code = await runCli(['doctor', '--run-sync'], { out: (s) => out.push(s), err: (s) => out.push(s) }, { services });
      return { code, text: out.join('\n') };
    }

    it('a username Moodle has as a manual account is said as such, naming the request', { skip }, async () => {
      const config = parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE });
      const services = createServices(config, { db: t.db });
      const { request, children } = await services.lifecycle.submitRequest(submission({ email: 'clash.rec@example.org' }), { type: 'parent' });
      await services.lifecycle.approveRequest(request.id, { expectedVersion: request.version, children: children.map((c, i) => ({ childId: c.id, moodleUserId: i === 0 ? 3 : null })) }, { type: 'staff', id: 'office' });

      const { text } = await doctorRunSync(recordedSyncCommand(dir, 'sync-users.clash-with-manual-account.txt'));
      const line = text.split('\n').find((l) => l.includes('User sync command')) ?? '';
      assert.match(line, /Ran successfully: Moodle's task "Synchronise users task" finished: 1 account created, 1 not created \(clash\.rec@example\.org: Moodle already has a manual account with this username\)\./);
      assert.match(line, new RegExp(`Request ${request.id} \\(clash\\.rec@example\\.org\\): Moodle's user sync did not create this parent's account, because Moodle already has a manual account`));
      assert.doesNotMatch(line, /lower-case/);
    });

    it('a sync that cannot reach the auth table’s database is said in words, with the raw output', { skip }, async () => {
      const { code, text } = await doctorRunSync(recordedSyncCommand(dir, 'sync-users.external-db-down.txt'));
      assert.equal(code, 1);
      assert.match(text, /✗ User sync command \(MOODLE_SYNC_COMMAND\): The sync command failed: Moodle could not connect to the database of the auth table: check the External database settings/);
      assert.match(text, /\| Scheduled task failed: Synchronise users task \(auth_db\\task\\sync_users\),mysqli_query\(\)/);
    });
  });
}
