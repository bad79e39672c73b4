// `reconcile` and `cycle --dry-run` from the command line, wired as the service wires them: the
// summary and exit codes, the staff mail, the metrics, against a real database and the Moodle double.
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { runCli } from '../../src/cli';
import { configForDouble } from '../support/cycle-settings';
import { createServices, type Services } from '../../src/services';
import { closeOffOpenWork, staff, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';

for (const dialect of DIALECTS) {
  describe(`reconcile and cycle --dry-run from the command line on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let services: Services;
    before(async () => {
      if (!skip) t = await createTestDatabase(dialect);
    });
    after(async () => t?.destroy());
    beforeEach(async () => {
      if (skip) return;
      await closeOffOpenWork(t.db);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      services = servicesWith();
    });
    afterEach(async () => {
      if (skip) return;
      await services.close();
      await moodle.close();
    });

    function servicesWith(extra: Record<string, string> = {}) {
      return createServices(configForDouble(moodle, extra), { db: t.db });
    }

    const run = async (...argv: string[]) => {
      const out: string[] = [];
      const err: string[] = [];
      const code = await runCli(argv, { out: (x) => out.push(x), err: (x) => err.push(x) }, { services });
      return { code, out: out.join('\n'), err: err.join('\n') };
    };

    async function provisioned(email: string, pupils: number[]) {
      const children = pupils.map((_, i) => ({ firstName: `Kid${i}`, lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: null }));
      const { request, children: kids } = await services.lifecycle.submitRequest(submission({ email, children }), { type: 'parent' });
      await services.lifecycle.approveRequest(request.id, { children: kids.map((c, i) => ({ childId: c.id, moodleUserId: pupils[i] ?? null })) }, staff);
      await moodle.sync(t.db, TEST_AUTH_TABLE);
      await services.cycle.run('manual', 'office');
      return { requestId: request.id, childIds: kids.map((c) => c.id) };
    }

    it('cycle --dry-run says what the cycle will do and assigns nothing', { skip }, async () => {
      const { request, children } = await services.lifecycle.submitRequest(submission({ email: 'dry.run@example.org', children: [{ firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: null }] }), { type: 'parent' });
      await services.lifecycle.approveRequest(request.id, { children: [{ childId: children[0]!.id, moodleUserId: 3 }] }, staff);
      moodle.resetCounts();
      const text = await run('cycle', '--dry-run');
      assert.equal(text.code, 0, text.err);
      assert.match(text.out, /nothing was changed/);
      assert.match(text.out, /Parents Moodle's next user sync creates: 1/);
      assert.match(text.out, new RegExp(`Request ${request.id}: Moodle creates dry\\.run@example\\.org`));
      const json = await run('cycle', '--dry-run', '--json');
      assert.equal(JSON.parse(json.out).requestsWaiting[0].requestId, request.id);
      assert.equal(moodle.calls('core_role_assign_roles'), 0);
      assert.equal(await t.db('provisioning_cycles').where({ trigger: 'cli' }).first(), undefined, 'no cycle was run');
    });

    it('reconcile prints what it ended, mails staff, counts in the metrics; exit 0', { skip }, async () => {
      const p = await provisioned('cli.reconcile@example.org', [3, 4]);
      moodle.state.deleteUser(4);
      const r = await run('reconcile');
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /Moodle check \d+: succeeded/);
      assert.match(r.out, /Links ended: 1 \(pupil deleted: 1; pupil left: 0\)/);
      assert.match(r.out, new RegExp(`Request ${p.requestId}, child ${p.childIds[1]}: Link ended: the pupil's Moodle account was deleted`));
      const mail = (await t.db('mail_outbox').where({ kind: 'staff_reconcile_summary' })) as Array<{ payload: string; recipient: string }>;
      assert.equal(mail.length, 1);
      const payload = JSON.parse(mail[0]!.payload) as { subject: string; text: string };
      assert.match(payload.subject, /Moodle check \d+: 1 link ended/);
      assert.match(payload.text, /\/admin\/moodle-check/);
      const metrics = await services.metrics.render();
      assert.match(metrics, /mpp_reconcile_runs_total\{state="succeeded"\} 1/);
      assert.match(metrics, /mpp_reconcile_links_ended_total\{reason="pupil_deleted"\} 1/);
      assert.match(metrics, /mpp_reconcile_roles_reasserted_total 1/);

      const json = await run('reconcile', '--json');
      assert.equal(JSON.parse(json.out).counts.linksChecked, 1);
      assert.equal((await t.db('mail_outbox').where({ kind: 'staff_reconcile_summary' })).length, 1, 'a run that found nothing mails nobody');
      moodle.state.setSuspended(3, true);
      const suspended = await run('reconcile');
      assert.match(suspended.out, /attention/);
      assert.equal((await t.db('mail_outbox').where({ kind: 'staff_reconcile_summary' })).length, 1, 'a pupil within the grace period needs nobody yet');
    });

    it('reconcile with a token that sees nobody exits 1 with the reason, and mails it once', { skip }, async () => {
      await provisioned('cli.blind@example.org', [3]);
      await services.close();
      services = servicesWith({ MOODLE_TOKEN: moodle.tokens.readonly });
      const before = (await t.db('mail_outbox').where({ kind: 'staff_reconcile_summary' })).length;
      const r = await run('reconcile');
      assert.equal(r.code, 1);
      assert.match(r.err, /moodle\/user:viewdetails/);
      assert.equal((await run('reconcile')).code, 1);
      assert.equal((await t.db('mail_outbox').where({ kind: 'staff_reconcile_summary' })).length, before + 1, 'the same problem is mailed once');
      assert.match(await services.metrics.render(), /mpp_reconcile_runs_total\{state="failed"\} 2/);
    });
  });
}
