// The CLI drives the same lifecycle as the dashboard: plain messages, meaningful exit codes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../../src/cli';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';

const ROOT = path.resolve(__dirname, '..', '..');

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t: string) => out.push(t), err: (t: string) => err.push(t) }, out, err };
}

for (const dialect of DIALECTS) {
  describe(`cli on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(parseConfig({ NODE_ENV: 'test' }), { db: t.db });
    });
    after(async () => t?.destroy());

    const run = async (...argv: string[]) => {
      const c = capture();
      const code = await runCli(argv, c.io, { services });
      return { code, out: c.out.join('\n'), err: c.err.join('\n') };
    };

    it('lists, shows, approves and revokes through the lifecycle', { skip }, async () => {
      const { request, children } = await services.lifecycle.submitRequest(submission({ email: 'cli.parent@example.org', parentFirstName: 'Casey' }), { type: 'parent' });
      const list = await run('requests', 'list', '--status', 'pending');
      assert.equal(list.code, 0);
      assert.match(list.out, new RegExp(`${request.id}\\s+pending.*Casey.*cli.parent@example.org`));

      const show = await run('requests', 'show', String(request.id));
      assert.equal(show.code, 0);
      assert.match(show.out, new RegExp(`\\[${children[0]!.id}\\] Ann Pupil, tutor group 7B, pupil id ADM1001: unmatched`));

      const approve = await run('requests', 'approve', String(request.id), '--child', `${children[0]!.id}=3`, '--child', `${children[1]!.id}=none`, '--version', String(request.version));
      assert.equal(approve.code, 0, approve.err);
      assert.match(approve.out, /is now approved/);
      assert.equal((await t.db(TEST_AUTH_TABLE).where({ request_id: request.id })).length, 1);
      const audit = await services.requestRepository.auditFor(t.db, request.id);
      assert.equal(audit.at(-1)?.actorType, 'cli');

      const again = await run('requests', 'approve', String(request.id), '--child', `${children[0]!.id}=3`, '--child', `${children[1]!.id}=none`);
      assert.equal(again.code, 1);
      assert.match(again.err, /Cannot approve a request that is "approved, account being set up"/);

      const revoke = await run('requests', 'revoke', String(request.id), '--reason', 'Left the school');
      assert.equal(revoke.code, 0);
      assert.equal((await t.db(TEST_AUTH_TABLE).where({ request_id: request.id })).length, 0);
    });

    it('refuses a deny without a reason with exit code 1 and a plain message', { skip }, async () => {
      const { request } = await services.lifecycle.submitRequest(submission(), { type: 'parent' });
      const r = await run('requests', 'deny', String(request.id));
      assert.equal(r.code, 1);
      assert.match(r.err, /Give a reason/);
      assert.equal((await services.lifecycle.get(request.id)).request.status, 'pending');
    });

    it('answers wrong usage with exit code 2 and the usage text', { skip }, async () => {
      for (const argv of [['requests', 'fly'], ['requests', 'show', 'abc'], ['nonsense'], ['requests', 'list', '--colour'], ['requests', 'approve', '1', '--child', '1:3']]) {
        const r = await run(...argv);
        assert.equal(r.code, 2, argv.join(' '));
        assert.match(r.err, /Usage: npm run cli/);
      }
      const missing = await run('requests', 'show', '999999');
      assert.equal(missing.code, 1);
      assert.match(missing.err, /There is no request number 999999/);
    });

    it('reports migration status', { skip }, async () => {
      const r = await run('migrate', 'status');
      assert.equal(r.code, 0);
      assert.match(r.out, /Pending: 0/);
      assert.equal((await run('migrate')).out, 'The database is up to date.');
    });
  });
}

for (const dialect of DIALECTS) {
  describe(`cli on an empty ${dialect} database`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect, { migrate: false });
      services = createServices(parseConfig({ NODE_ENV: 'test' }), { db: t.db });
    });
    after(async () => t?.destroy());

    const run = async (...argv: string[]) => {
      const c = capture();
      const code = await runCli(argv, c.io, { services });
      return { code, out: c.out.join('\n'), err: c.err.join('\n') };
    };

    it('says in one line that the database is not set up and what to run, then migrate sets it up', { skip }, async () => {
      for (const argv of [['requests', 'list'], ['staff', 'list'], ['api-keys', 'list'], ['cycle'], ['privacy', 'erase-expired']]) {
        const r = await run(...argv);
        assert.equal(r.code, 1, argv.join(' '));
        assert.equal(r.err.split('\n').length, 1, `one line for ${argv.join(' ')}: ${r.err}`);
        assert.match(r.err, /^The database \(.+\) is not set up yet: run "npm run cli -- migrate" first/, argv.join(' '));
        assert.doesNotMatch(r.err, /no such table|doesn't exist|ER_NO_SUCH_TABLE/i);
      }
      assert.equal(await t.db.schema.hasTable('requests'), false, 'refusing created no tables');

      const migrate = await run('migrate');
      assert.equal(migrate.code, 0, migrate.err);
      assert.match(migrate.out, /Applied \d+ migration/);
      const list = await run('requests', 'list');
      assert.equal(list.code, 0, list.err);
      assert.equal(list.out, 'No requests.');
    });
  });
}

describe('cli as a process', () => {
  it('migrates a new SQLite database and exits 0; a bad DATABASE_URL exits 1 naming the variable', () => {
    const dir = require('node:fs').mkdtempSync(path.join(require('node:os').tmpdir(), 'mpp-cli-'));
    const tsx = path.join(ROOT, 'node_modules', '.bin', 'tsx');
    const ok = spawnSync(tsx, [path.join(ROOT, 'src/cli.ts'), 'migrate'], { cwd: dir, env: { ...process.env, DATABASE_URL: '', NODE_ENV: 'test' }, encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /Applied \d+ migration/);
    const bad = spawnSync(tsx, [path.join(ROOT, 'src/cli.ts'), 'requests', 'list'], { cwd: dir, env: { ...process.env, DATABASE_URL: 'oracle://x', NODE_ENV: 'test' }, encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /DATABASE_URL must start with mysql:\/\//);
  });
});
