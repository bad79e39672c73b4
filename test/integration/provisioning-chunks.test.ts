// The cycle reads and does its due work a chunk at a time (so its memory does not grow with the
// work): 2,500 requests in chunks of 1,000 end exactly as in one chunk — statuses, links, the roles
// Moodle holds, audit events, queued mail and the cycle report — with batches sent two at a time.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { MoodleClient } from '../../src/moodle/moodle-client';
import { ProvisioningCycle, type CycleSummary } from '../../src/provisioning/provisioning-cycle';
import { createServices } from '../../src/services';
import { assertAuthInvariant, insertApprovedRequests } from '../support/builders';
import { configForDouble, TEST_CYCLE_SETTINGS } from '../support/cycle-settings';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { seedRecordedSite, startMoodleDouble } from '../support/moodle-double';

const REQUESTS = 2500;
const FIRST_PUPIL_ID = 100_000;
const PARENT_ROLE = 9;

type Row = Record<string, unknown>;

/**
 * Seeds `REQUESTS` approved requests × 2 children and a Moodle double where Moodle's sync has
 * created the parents, with some of everything a cycle meets: a deleted pupil (that child fails),
 * a suspended pupil (the request waits), a parent Moodle has not created (waits for the sync), and
 * one assignment Moodle refuses (the pupil's context is gone), which must be isolated. Then runs
 * one cycle with the given chunk size and returns what it left behind, with ids made comparable.
 */
async function runCycle(t: TestDatabase, chunkSize: number) {
  const rows = await insertApprovedRequests(t.db, REQUESTS, { childrenEach: 2, firstPupilId: FIRST_PUPIL_ID, emailPrefix: 'chunk' });
  const state = seedRecordedSite();
  const moodle = await startMoodleDouble({ state });
  const queries: string[] = [];
  const listen = (q: { sql: string }) => queries.push(q.sql);
  try {
    await moodle.sync(t.db, TEST_AUTH_TABLE);
    rows.forEach((r, i) => {
      r.pupilIds.forEach((id, c) => state.addUser({ id, username: `chunk.pupil.${i}.${c}`, firstname: `Child${c}`, lastname: `Bulk${i}` }));
    });
    rows.forEach((r, i) => {
      if (i % 300 === 7) state.deleteUser(r.pupilIds[0]!);
      if (i % 300 === 11) state.setSuspended(r.pupilIds[1]!, true);
      if (i % 300 === 13) state.deleteUser(state.userByUsername(r.email)!.id);
    });
    // Moodle refuses the role in a context that is not there: the one bad assignment of its batch.
    const badPupil = rows[1234]!.pupilIds[1]!;
    state.contexts.delete(state.userContext(badPupil)!.id);
    moodle.resetCounts();

    const services = createServices(configForDouble(moodle), { db: t.db });
    const calls = { n: 0 };
    const client = new MoodleClient({ url: moodle.url, token: moodle.tokens.ws, timeoutMs: 10_000, retries: 0, batchSize: 100, concurrency: 2, onCall: () => (calls.n += 1) });
    // The services' lifecycle: its listeners queue the "account ready" mail.
    const cycle = new ProvisioningCycle({
      db: t.db,
      lifecycle: services.lifecycle,
      moodle: client,
      settings: { ...TEST_CYCLE_SETTINGS, chunkSize },
      logger: pino({ level: 'silent' }),
      moodleCallCount: () => calls.n,
    });
    t.db.on('query', listen);
    const summary = await cycle.run('manual', 'office');
    t.db.off('query', listen);
    await assertAuthInvariant(t.db);

    const ids = rows.map((r) => r.id);
    const index = new Map(ids.map((id, i) => [id, i]));
    const childIndex = new Map(rows.flatMap((r, i) => r.childIds.map((id, c) => [id, `${i}.${c}`] as const)));
    const requests = ((await t.db('requests').whereIn('id', ids).orderBy('id')) as Row[]).map((r) => ({
      i: index.get(Number(r.id)),
      status: r.status,
      attempts: Number(r.attempts),
      lastError: r.last_error,
      waiting: r.waiting_since !== null,
      retried: r.next_attempt_at !== null,
      version: Number(r.version),
    }));
    const children = ((await t.db('request_children').whereIn('request_id', ids).orderBy('id')) as Row[]).map((c) => ({
      child: childIndex.get(Number(c.id)),
      linkState: c.link_state,
      lastError: c.last_error,
      attempts: Number(c.attempts),
    }));
    const usernames = new Map([...state.users.values()].map((u) => [u.id, u.username]));
    const roles = state.assignments
      .filter((a) => a.roleid === PARENT_ROLE)
      .map((a) => `${usernames.get(a.userid)} in ${usernames.get(state.contexts.get(a.contextid)!.instanceid)}`)
      .sort();
    const audit = ((await t.db('audit_events').whereIn('request_id', ids).where({ actor_type: 'cycle' }).orderBy('id')) as Row[])
      .map((e) => {
        const details = JSON.parse(String(e.details)) as Record<string, unknown>;
        // Child ids differ between the two databases only by where the rows start: name them by position.
        if (Array.isArray(details.childIds)) details.childIds = details.childIds.map((id) => childIndex.get(Number(id)));
        if (Array.isArray(details.children)) details.children = (details.children as Array<{ childId: number }>).map((c) => ({ ...c, childId: childIndex.get(c.childId) }));
        delete details.parentMoodleUserId;
        return `${index.get(Number(e.request_id))} ${e.action} ${JSON.stringify(details)}`;
      })
      .sort();
    const mails = ((await t.db('mail_outbox').whereIn('request_id', ids).orderBy('id')) as Row[])
      .map((m) => `${index.get(Number(m.request_id))} ${m.kind} ${m.recipient} ${(JSON.parse(String(m.payload)) as { subject: string }).subject}`)
      .sort();
    const stored = await cycle.repository.outcomes(summary.cycleId);
    assert.equal(stored.length, REQUESTS, 'one report entry per request, written chunk by chunk');
    const report = stored.map((r) => ({
      ...r,
      requestId: index.get(r.requestId),
      children: r.children.map((c) => ({ ...c, childId: childIndex.get(c.childId) })),
    }));
    await services.close().catch(() => undefined);
    return { summary, calls: calls.n, requests, children, roles, audit, mails, report, queries };
  } finally {
    t.db.off('query', listen);
    await moodle.close();
  }
}

function sameCounts(a: CycleSummary, b: CycleSummary) {
  const { moodleCalls: _a, ...countsA } = a.counts;
  const { moodleCalls: _b, ...countsB } = b.counts;
  assert.deepEqual(countsA, countsB);
}

for (const dialect of DIALECTS) {
  describe(`the cycle in chunks on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let chunked: TestDatabase;
    let whole: TestDatabase;
    before(async () => {
      if (skip) return;
      chunked = await createTestDatabase(dialect);
      whole = await createTestDatabase(dialect);
    });
    after(async () => {
      await chunked?.destroy();
      await whole?.destroy();
    });

    it('2,500 requests in chunks of 1,000 end exactly as in one chunk, and the one bad assignment is isolated', { skip }, async () => {
      const inChunks = await runCycle(chunked, 1000);
      const inOne = await runCycle(whole, 10_000);

      // The chunked cycle read its work 1,000 requests at a time: three reads of due requests.
      const dueReads = (queries: string[]) => queries.filter((q) => /^select \* from [`"]requests[`"] where [`"]status[`"] = \?/i.test(q));
      assert.equal(dueReads(inChunks.queries).length, 3, dueReads(inChunks.queries).join('\n'));
      assert.ok(dueReads(inChunks.queries).every((q) => /limit \?/i.test(q)));
      assert.equal(dueReads(inOne.queries).length, 1);

      const s = inChunks.summary;
      assert.equal(s.state, 'problems');
      assert.equal(s.counts.requests, REQUESTS);
      // Every 300th from 7: a deleted pupil; from 11: a suspended one; from 13: no parent account yet.
      const every = Math.ceil((REQUESTS - 7) / 300);
      assert.equal(s.counts.waiting, 2 * every);
      assert.equal(s.counts.childrenFailed, every + 1, 'the deleted pupils and the one refused assignment');
      assert.equal(s.counts.provisioned, REQUESTS - 3 * every - 1);
      const bad = inChunks.children.find((c) => c.child === '1234.1')!;
      assert.equal(bad.linkState, 'matched');
      assert.ok(bad.lastError, 'the refused assignment is told on its child');
      assert.equal(inChunks.children.find((c) => c.child === '1234.0')?.linkState, 'linked', 'its sibling in the same batch landed');
      // Two roles per request provisioned, one for a deleted or a suspended pupil's sibling and for the refused one's.
      assert.equal(inChunks.roles.length, 2 * s.counts.provisioned + 2 * every + 1, 'every good assignment landed');
      assert.equal(inChunks.mails.length, s.counts.provisioned);
      // Calls: the same batches, except that a chunk's last batch of each kind may be short.
      assert.ok(inChunks.calls <= inOne.calls + 3 * 3, `${inChunks.calls} calls in chunks, ${inOne.calls} in one`);

      sameCounts(inChunks.summary, inOne.summary);
      assert.equal(inChunks.summary.state, inOne.summary.state);
      assert.deepEqual(inChunks.requests, inOne.requests);
      assert.deepEqual(inChunks.children, inOne.children);
      assert.deepEqual(inChunks.roles, inOne.roles);
      assert.deepEqual(inChunks.audit, inOne.audit);
      assert.deepEqual(inChunks.mails, inOne.mails);
      assert.deepEqual(inChunks.report, inOne.report);
      assert.deepEqual(inChunks.summary.outcomes, inOne.summary.outcomes);
    });
  });
}
