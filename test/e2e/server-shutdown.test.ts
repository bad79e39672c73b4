// Stopping the service (SIGTERM, as systemd or docker do) while a provisioning cycle runs: it stops
// taking requests, lets the cycle finish the step it is on, records the cycle as stopped,
// releases the cycle lock and exits 0.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { STOPPED_MESSAGE } from '../../src/provisioning/provisioning-cycle';
import { assertAuthInvariant, createLifecycle, staff, submission } from '../support/builders';
import { serviceEnv, startServiceProcess, waitFor, type ServiceProcess } from '../support/cycle-process';
import { createTestDatabase, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';

describe('stopping the service with SIGTERM while a cycle runs', () => {
  let t: TestDatabase;
  let moodle: MoodleDouble;
  before(async () => {
    t = await createTestDatabase('sqlite');
    moodle = await startMoodleDouble({ state: seedRecordedSite(), faults: { latencyMs: 50 } });
  });
  after(async () => {
    await moodle?.close();
    await t?.destroy();
  });

  it('stops taking requests, finishes the current step, records the cycle as stopped, releases the lock and exits 0', { timeout: 120_000 }, async () => {
    const lifecycle = createLifecycle(t.db);
    const { request, children } = await lifecycle.submitRequest(submission({ email: 'stopping.parent@example.org' }), { type: 'parent' });
    await lifecycle.approveRequest(request.id, { children: children.map((c, i) => ({ childId: c.id, moodleUserId: 3 + i })) }, staff);
    await moodle.sync(t.db, TEST_AUTH_TABLE);

    // The scheduled cycle is held while it looks the pupils up in Moodle (part of the check every
    // cycle starts with), until the signal has arrived.
    const held = moodle.holdCalls('core_user_get_users_by_field');

    const server: ServiceProcess = startServiceProcess('server.ts', [], serviceEnv(t, moodle, { HOST: '127.0.0.1', PORT: '0', CYCLE_SCHEDULE: '* * * * * *' }));
    let exited = false;
    void server.exited.then(() => (exited = true));
    try {
      const url = await waitFor('the server to listen', async () => /running at (http:\/\/\S+)/.exec(server.output().stdout)?.[1] ?? (exited ? Promise.reject(new Error(JSON.stringify(server.output()))) : undefined));
      assert.equal((await fetch(`${url}/healthz`)).status, 200);
      await held.reached;
      const cycle = (await t.db('provisioning_cycles').first()) as { id: number; state: string; step: string };
      assert.equal(cycle.state, 'running');
      assert.equal(cycle.step, 'checking');

      server.child.kill('SIGTERM');
      await waitFor('the server to stop taking requests', () =>
        fetch(`${url}/healthz`).then(
          () => false,
          () => true,
        ),
      );
      assert.equal(exited, false, 'the process waits for the cycle to finish its step');
      assert.ok(await t.db('locks').first(), 'the cycle still holds its lock');

      held.release();
      const exit = await server.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, JSON.stringify(server.output()));

      assert.equal(await t.db('locks').first(), undefined, 'the lock is released');
      const records = (await t.db('provisioning_cycles').select('id', 'state', 'error', 'finished_at')) as Array<{ id: number; state: string; error: string; finished_at: number | null }>;
      assert.equal(records.length, 1, 'no other cycle was started while stopping');
      assert.equal(records[0]!.state, 'interrupted');
      assert.equal(records[0]!.error, STOPPED_MESSAGE);
      assert.match(records[0]!.error, /service was stopped/);
      assert.ok(records[0]!.finished_at);
      assert.equal(moodle.calls('core_role_assign_roles'), 0, 'no Moodle step was started after the signal');
      const after = await lifecycle.get(request.id);
      assert.equal(after.request.status, 'approved', 'the request is left for the next cycle');
      assert.deepEqual(
        after.children.map((c) => c.linkState),
        ['matched', 'matched'],
      );
      await assertAuthInvariant(t.db);
    } finally {
      held.release();
      if (!exited) server.child.kill('SIGKILL');
      await server.exited;
    }
  });
});
