// Two `cycle` commands started at the same moment by two processes against one MariaDB database
// (as two app instances or a cron job beside the server would): the database lock lets one run.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLifecycle, staff, submission } from '../support/builders';
import { serviceEnv, startCliCycle } from '../support/cycle-process';
import { createTestDatabase, skipReason, TEST_AUTH_TABLE } from '../support/databases';
import { seedRecordedSite, startMoodleDouble } from '../support/moodle-double';

describe('two cycle commands started together on mariadb', async () => {
  const skip = await skipReason('mariadb');

  it('exactly one runs; the other exits 1 saying a cycle is already running, with its id', { skip, timeout: 120_000 }, async () => {
    const t = await createTestDatabase('mariadb');
    const moodle = await startMoodleDouble({ state: seedRecordedSite(), faults: { latencyMs: 100 } });
    try {
      const lifecycle = createLifecycle(t.db);
      for (const email of ['first.racer@example.org', 'second.racer@example.org']) {
        const { request, children } = await lifecycle.submitRequest(submission({ email }), { type: 'parent' });
        await lifecycle.approveRequest(request.id, { children: children.map((c, i) => ({ childId: c.id, moodleUserId: 3 + i })) }, staff);
      }
      await moodle.sync(t.db, TEST_AUTH_TABLE);

      // The first cycle to reach Moodle is held there until the other process has ended, so it is
      // certainly still running when the other one starts. Were both let in, the second would not
      // be held, and both would finish.
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      moodle.setHooks({ received: (call) => (call.index === 1 ? held : undefined) });

      const env = serviceEnv(t, moodle);
      const racers = [startCliCycle(env), startCliCycle(env)];
      const firstOut = await Promise.race(racers.map((proc) => proc.exited.then((exit) => ({ proc, exit }))));
      release();
      const results = await Promise.all(racers.map(async (proc) => ({ proc, exit: await proc.exited, ...proc.output() })));

      const ran = results.filter((r) => r.exit.code === 0);
      const refused = results.filter((r) => r.exit.code !== 0);
      assert.equal(ran.length, 1, `exactly one cycle ran: ${JSON.stringify(results.map(({ exit, stdout, stderr }) => ({ exit, stdout, stderr })))}`);
      assert.equal(refused.length, 1);
      assert.equal(firstOut.proc, refused[0]!.proc, 'the refused one ended while the other was still at work');
      assert.equal(refused[0]!.exit.code, 1);
      const cycleId = Number(/^Cycle (\d+): succeeded$/m.exec(ran[0]!.stdout)?.[1]);
      assert.ok(cycleId > 0, ran[0]!.stdout);
      assert.match(refused[0]!.stderr, new RegExp(`A provisioning cycle is already running \\(cycle ${cycleId}\\)\\.`));
      assert.doesNotMatch(refused[0]!.stdout, /^Cycle \d+/m, 'the refused one printed no cycle summary');

      const cycles = (await t.db('provisioning_cycles').select('id', 'state', 'trigger')) as Array<{ id: number; state: string; trigger: string }>;
      assert.deepEqual(
        cycles.map((c) => ({ ...c, id: Number(c.id) })),
        [{ id: cycleId, state: 'succeeded', trigger: 'cli' }],
      );
      assert.equal(await t.db('locks').first(), undefined, 'the lock is released');
      assert.equal(moodle.calls('core_webservice_get_site_info'), 1, 'only one process talked to Moodle');
      const statuses = (await t.db('requests').select('status')) as Array<{ status: string }>;
      assert.deepEqual(
        statuses.map((s) => s.status),
        ['provisioned', 'provisioned'],
      );
    } finally {
      await moodle.close();
      await t.destroy();
    }
  });
});
