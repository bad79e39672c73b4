// Recording a cycle's outcomes is a handful of set queries whatever the number of requests (the
// audit events and the queued "account ready" mail included), and keeps optimistic locking: a
// request changed since the cycle read it is refused, not overwritten.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../src/config';
import type { ProvisioningOutcome } from '../../src/requests/request-lifecycle';
import { createServices } from '../../src/services';
import { assertAuthInvariant, createLifecycle, cycleActor, insertApprovedRequests } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';

type Bulk = Awaited<ReturnType<typeof insertApprovedRequests>>;

/**
 * Four kinds in turn: all children linked; one linked and one failed; parent waiting for Moodle;
 * all linked but the request changed since the cycle read it (its version moved on).
 */
function outcomesFor(rows: Bulk, nextAttemptAt: number): ProvisioningOutcome[] {
  return rows.map((r, i) => {
    const base = { requestId: r.id, expectedVersion: r.version, parentMoodleUserId: 100_000 + r.id };
    switch (i % 4) {
      case 0:
        return { ...base, linkedChildIds: r.childIds };
      case 1:
        return {
          ...base,
          linkedChildIds: [r.childIds[0]!],
          failedChildren: [{ childId: r.childIds[1]!, error: `Pupil account ${r.pupilIds[1]} was not found in Moodle.` }],
          nextAttemptAt,
        };
      case 2:
        return { ...base, parentMoodleUserId: null, waiting: { message: 'Waiting for Moodle to create the account.' }, nextAttemptAt: null };
      default:
        return { ...base, linkedChildIds: r.childIds };
    }
  });
}

for (const dialect of DIALECTS) {
  describe(`recording provisioning outcomes on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    before(async () => {
      if (!skip) t = await createTestDatabase(dialect);
    });
    after(async () => t?.destroy());

    /** Runs fn and counts the SQL statements it sends (knex's query event). */
    async function countQueries<T>(fn: () => Promise<T>): Promise<{ result: T; queries: string[] }> {
      const queries: string[] = [];
      const listen = (q: { sql: string }) => queries.push(q.sql);
      t.db.on('query', listen);
      try {
        return { result: await fn(), queries };
      } finally {
        t.db.off('query', listen);
      }
    }

    async function record(count: number) {
      const now = 1_900_000_000_000;
      // The service's own lifecycle, with its listeners: the parent's mail is queued with the outcome.
      const services = createServices(parseConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', AUTH_TABLE: TEST_AUTH_TABLE }), { db: t.db, now: () => now });
      const lifecycle = services.lifecycle;
      const rows = await insertApprovedRequests(t.db, count, { childrenEach: 2 });
      const stale = rows.filter((_, i) => i % 4 === 3).map((r) => r.id);
      // Staff touched these after the cycle read them.
      for (let i = 0; i < stale.length; i += 500) await t.db('requests').whereIn('id', stale.slice(i, i + 500)).update({ version: 3, staff_comment: 'Checked' });
      const outcomes = outcomesFor(rows, now + 60_000);
      const { result, queries } = await countQueries(() => lifecycle.recordProvisioningOutcomes(outcomes, cycleActor));
      await services.close();
      return { now, rows, outcomes, result, queries };
    }

    it('1,000 outcomes take a few set queries, not one per request, and each lands exactly as before', { skip }, async () => {
      const small = await record(8);
      const large = await record(1000);
      // Per 500 requests: one update of the requests, one of the failed and one of the linked
      // children; for the whole batch one read of the requests, their children (500 at a time),
      // audit inserts 500 events a statement, and the "account ready" mails 100 a statement.
      assert.ok(large.queries.length <= 20, `1,000 outcomes took ${large.queries.length} queries:\n${large.queries.join('\n')}`);
      assert.ok(large.queries.length - small.queries.length <= 10, `${small.queries.length} queries for 8 outcomes, ${large.queries.length} for 1,000`);
      assert.equal(large.queries.filter((q) => /^insert into `?audit_events`?/i.test(q)).length, 3, '1,250 audit events in three statements');
      assert.equal(large.queries.filter((q) => /^insert into `?mail_outbox`?/i.test(q)).length, 3, '250 mails in three statements');
      assert.equal(large.queries.filter((q) => /^update `?requests`?/i.test(q)).length, 2, 'requests are updated 500 to a statement');

      const { now, rows, result } = large;
      assert.deepEqual(
        result.map((r) => r.requestId),
        rows.map((r) => r.id),
        'one result per outcome, in order',
      );
      const requests = new Map(((await t.db('requests').whereIn('id', rows.map((r) => r.id))) as Array<Record<string, unknown>>).map((r) => [Number(r.id), r]));
      const children = new Map(((await t.db('request_children').whereIn('request_id', rows.map((r) => r.id))) as Array<Record<string, unknown>>).map((c) => [Number(c.id), c]));
      rows.forEach((row, i) => {
        const request = requests.get(row.id)!;
        const result1 = result[i]!;
        const [first, second] = row.childIds.map((id) => children.get(id)!);
        switch (i % 4) {
          case 0:
            assert.deepEqual(result1, { requestId: row.id, applied: true, status: 'provisioned' });
            assert.equal(request.status, 'provisioned');
            assert.equal(Number(request.provisioned_at), now);
            assert.equal(Number(request.version), 3);
            assert.equal(Number(request.moodle_user_id), 100_000 + row.id);
            assert.deepEqual([first!.link_state, second!.link_state], ['linked', 'linked']);
            break;
          case 1:
            assert.deepEqual(result1, { requestId: row.id, applied: true, status: 'approved' });
            assert.equal(request.status, 'approved');
            assert.equal(Number(request.attempts), 1);
            assert.equal(request.last_error, `Pupil account ${row.pupilIds[1]} was not found in Moodle.`);
            assert.equal(Number(request.next_attempt_at), now + 60_000);
            assert.deepEqual([first!.link_state, second!.link_state], ['linked', 'matched']);
            assert.equal(second!.last_error, `Pupil account ${row.pupilIds[1]} was not found in Moodle.`);
            assert.equal(Number(second!.attempts), 1);
            assert.equal(Number(second!.next_attempt_at), now + 60_000);
            assert.equal(first!.last_error, null);
            break;
          case 2:
            assert.deepEqual(result1, { requestId: row.id, applied: true, status: 'approved' });
            assert.equal(Number(request.waiting_since), now);
            assert.equal(request.last_error, 'Waiting for Moodle to create the account.');
            assert.equal(Number(request.attempts), 0);
            assert.equal(request.moodle_user_id, null);
            assert.deepEqual([first!.link_state, second!.link_state], ['matched', 'matched']);
            break;
          default:
            assert.equal(result1.applied, false);
            assert.equal(result1.status, 'approved');
            assert.match(result1.refusal ?? '', /changed while the cycle ran/);
            assert.equal(Number(request.version), 3, 'the staff change stands');
            assert.equal(request.staff_comment, 'Checked');
            assert.equal(request.moodle_user_id, null);
            assert.deepEqual([first!.link_state, second!.link_state], ['matched', 'matched']);
        }
      });
      const audit = (await t.db('audit_events').whereIn('request_id', rows.map((r) => r.id)).select('action')) as Array<{ action: string }>;
      const actions = (name: string) => audit.filter((a) => a.action === name).length;
      assert.equal(actions('provisioned'), 250);
      assert.equal(actions('children_linked'), 500);
      assert.equal(actions('link_failed'), 250);
      assert.equal(actions('waiting_for_moodle'), 250);
      await assertAuthInvariant(t.db);
    });

    it('a second outcome for the same request in one batch is refused as stale; the first stands', { skip }, async () => {
      const lifecycle = createLifecycle(t.db);
      const [row] = await insertApprovedRequests(t.db, 1);
      const results = await lifecycle.recordProvisioningOutcomes(
        [
          { requestId: row!.id, expectedVersion: row!.version, linkedChildIds: row!.childIds },
          { requestId: row!.id, expectedVersion: row!.version, waiting: { message: 'Waiting.' } },
        ],
        cycleActor,
      );
      assert.deepEqual(
        results.map((r) => [r.applied, r.status]),
        [
          [true, 'provisioned'],
          [false, 'approved'],
        ],
      );
      assert.match(results[1]!.refusal ?? '', /changed by someone else/);
      const after = (await t.db('requests').where({ id: row!.id }).first()) as { status: string; version: number; waiting_since: number | null };
      assert.deepEqual([after.status, Number(after.version), after.waiting_since], ['provisioned', 3, null]);
    });

    it('an outcome for a request no longer approved is refused and changes nothing', { skip }, async () => {
      const lifecycle = createLifecycle(t.db);
      const [row] = await insertApprovedRequests(t.db, 1);
      await t.db('requests').where({ id: row!.id }).update({ status: 'denied' });
      const before = await t.db('requests').where({ id: row!.id }).first();
      const [result] = await lifecycle.recordProvisioningOutcomes([{ requestId: row!.id, expectedVersion: row!.version, linkedChildIds: row!.childIds }], cycleActor);
      assert.equal(result?.applied, false);
      assert.equal(result?.status, 'denied');
      assert.deepEqual(await t.db('requests').where({ id: row!.id }).first(), before);
      assert.deepEqual(
        ((await t.db('request_children').where({ request_id: row!.id })) as Array<{ link_state: string }>).map((c) => c.link_state),
        ['matched', 'matched'],
      );
      await t.db('requests').where({ id: row!.id }).update({ status: 'approved' });
    });
  });
}
