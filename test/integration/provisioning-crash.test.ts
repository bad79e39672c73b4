// The provisioning cycle killed (SIGKILL) at many points of its work, as a real CLI process: after
// Moodle's next sync and one clean cycle, every request ends exactly where it should, once.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { assertAuthInvariant, submission, staff } from '../support/builders';
import { PARENT_ROLE, serviceEnv, sleep, startCliCycle, waitFor, type ServiceProcess } from '../support/cycle-process';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { CONTEXT_LEVELS, seedRecordedSite, startMoodleDouble, type DoubleCall, type MoodleDouble } from '../support/moodle-double';

/**
 * A pupil Moodle has (its look-up finds it) but without a user context (assign.missing-context):
 * its assignment fails, alone once its batch is split.
 */
const BAD_PUPIL = 998;

/**
 * One round's requests, in id order (the cycle's work order). `late` is approved after Moodle's
 * sync, so the killed cycle finds its parent missing and the clean cycle provisions it.
 */
const ROUND = [
  { key: 'one', pupils: 1, bad: false, none: false, late: false },
  { key: 'two', pupils: 2, bad: false, none: false, late: false },
  { key: 'three', pupils: 3, bad: false, none: false, late: false },
  { key: 'bad', pupils: 1, bad: true, none: false, late: false },
  { key: 'none', pupils: 1, bad: false, none: true, late: false },
  { key: 'late', pupils: 2, bad: false, none: false, late: true },
  { key: 'last', pupils: 1, bad: false, none: false, late: false },
] as const;

/**
 * With MOODLE_BATCH_SIZE=2 the killed cycle's calls are: 1 site info; 2–7 pupil look-ups by id
 * (twelve matched pupils); 8–11 parent look-ups (seven usernames); role assignments 12 [one, two],
 * 13 [two, three], 14 [three, three], 15 [bad's good child, the bad one] refused whole, then split:
 * 16 the good one, 17 the bad one refused; 18 [none, last].
 */
const LAST_CALL = 18;
const calledFunction = (call: number) => (call === 1 ? 'core_webservice_get_site_info' : call <= 11 ? 'core_user_get_users_by_field' : 'core_role_assign_roles');

type Phase = 'received' | 'handled' | 'answered';
/** received: Moodle has not acted; handled: it has (roles landed) but the answer is lost; answered: the answer left. */
interface KillPoint {
  label: string;
  moodle?: { phase: Phase; call: number };
  /** MariaDB only: the process is killed while a statement of it waits for a row lock the test holds. */
  database?: 'opening' | 'recording' | 'releasing';
}

/**
 * Twenty of the 29 points around those calls (each costs a process start): every kind of call
 * before and after Moodle answers, and role batches that land with their answer lost.
 */
const MOODLE_POINTS: KillPoint[] = (
  [
    ['received', [1, 2, 8, 12, 15, 17, 18]],
    ['handled', [12, 14, 16, 18]],
    ['answered', [1, 7, 11, 12, 13, 15, 16, 17, 18]],
  ] as Array<[Phase, number[]]>
).flatMap(([phase, calls]) =>
  calls.map((call) => ({
    label: { received: `call ${call} received`, handled: `call ${call} done in Moodle, answer lost`, answered: `call ${call} answered` }[phase],
    moodle: { phase, call },
  })),
);

const MARIADB_SKIPS = ['call 2 received', 'call 7 answered', 'call 13 answered'];

const DATABASE_POINTS: KillPoint[] = [
  { label: 'lock taken, cycle record not yet written', database: 'opening' },
  { label: 'inside the recording transaction, after all Moodle work', database: 'recording' },
  { label: 'cycle recorded and finished, lock not yet released', database: 'releasing' },
];

interface RoundRequest {
  key: string;
  id: number;
  email: string;
  goodPupils: number[];
  bad: boolean;
}

for (const dialect of DIALECTS) {
  describe(`provisioning cycle killed with SIGKILL, on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let clean: Services;
    let childEnv: Record<string, string>;
    const allRounds: RoundRequest[] = [];

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      const bad = moodle.state.addUser({ id: BAD_PUPIL, username: 'pupil.without.context', firstname: 'No', lastname: 'Context' });
      moodle.state.contexts.delete(moodle.state.userContext(bad.id)!.id);
      // Small batches make many Moodle calls to kill at; a short lock lets the next cycle take over
      // soon; failed children are retried only after the whole test, so each is counted once.
      const settings = { MOODLE_BATCH_SIZE: '2', CYCLE_LOCK_TTL_SECONDS: '1', RETRY_BASE_SECONDS: '7200' };
      childEnv = serviceEnv(t, moodle, settings);
      clean = createServices(parseConfig({ ...childEnv, DATABASE_URL: 'sqlite::memory:', LOG_LEVEL: 'silent' }), { db: t.db });
    });
    after(async () => {
      await clean?.close();
      await moodle?.close();
      await t?.destroy();
    });

    let round = 0;
    async function prepareRound(): Promise<RoundRequest[]> {
      round += 1;
      const lifecycle = clean.lifecycle;
      const created: Array<{ spec: (typeof ROUND)[number]; id: number; email: string; matches: Array<{ childId: number; moodleUserId: number | null }>; good: number[] }> = [];
      for (const spec of ROUND) {
        const email = `${spec.key}.r${round}@example.org`;
        const names = Array.from({ length: spec.pupils + (spec.bad || spec.none ? 1 : 0) }, (_, i) => ({
          firstName: `Kid${i}`,
          lastName: `${spec.key}${round}`,
          tutorGroup: '7B',
          pupilIdentifier: null,
        }));
        const { request, children } = await lifecycle.submitRequest(submission({ email, children: names }), { type: 'parent' });
        const good = Array.from({ length: spec.pupils }, (_, i) => moodle.state.addUser({ username: `pupil.${spec.key}.${round}.${i}`, firstname: `Kid${i}`, lastname: `${spec.key}${round}` }).id);
        const pupils: Array<number | null> = [...good, ...(spec.bad ? [BAD_PUPIL] : spec.none ? [null] : [])];
        created.push({ spec, id: request.id, email, matches: children.map((c, i) => ({ childId: c.id, moodleUserId: pupils[i] ?? null })), good });
      }
      for (const c of created.filter((x) => !x.spec.late)) await lifecycle.approveRequest(c.id, { children: c.matches }, staff);
      await moodle.sync(t.db, TEST_AUTH_TABLE);
      for (const c of created.filter((x) => x.spec.late)) await lifecycle.approveRequest(c.id, { children: c.matches }, staff);
      return created.map((c) => ({ key: c.spec.key, id: c.id, email: c.email, goodPupils: c.good, bad: c.spec.bad }));
    }

    const mariadbName = () => new URL((t.config as { url: string }).url).pathname.slice(1);

    /**
     * Threads of the cycle process whose statement matching `pattern` has run for a while: on these
     * tiny tables that means it waits for a lock the test holds.
     */
    async function blockedStatements(pattern: RegExp = /./): Promise<number[] | undefined> {
      const [rows] = (await t.db.raw(
        `SELECT id, info FROM information_schema.processlist
         WHERE db = ? AND command = 'Query' AND time_ms >= 200 AND id <> CONNECTION_ID()`,
        [mariadbName()],
      )) as [Array<{ id: number; info: string | null }>];
      const threads = rows.filter((r) => pattern.test(r.info ?? '')).map((r) => Number(r.id));
      return threads.length > 0 ? threads : undefined;
    }

    /** The killed process's statements must not run once it is gone: end them as the server would a dropped client. */
    async function endWaitingStatements(): Promise<void> {
      for (const thread of (await blockedStatements()) ?? []) await t.db.raw(`KILL ${Number(thread)}`);
    }

    /** Runs one CLI cycle and kills it at the point; resolves once it is dead. */
    async function runAndKill(point: KillPoint, roundIds: number[]): Promise<{ proc: ServiceProcess; exit: { code: number | null; signal: NodeJS.Signals | null } }> {
      moodle.resetCounts();
      let proc: ServiceProcess | undefined;
      let held: Knex.Transaction | undefined;
      let killedIn: string | undefined;
      const kill = async () => {
        proc?.child.kill('SIGKILL');
        await proc?.exited;
      };
      const at = (phase: Phase, call: DoubleCall) => {
        const here = point.moodle?.phase === phase && point.moodle.call === call.index;
        if (here) killedIn = call.wsfunction;
        return here;
      };
      moodle.setHooks({
        received: async (call) => {
          if (at('received', call)) {
            await kill();
            return 'reset';
          }
          if (call.index === LAST_CALL && point.database === 'recording') {
            held = await t.db.transaction();
            await held('requests').whereIn('id', roundIds).forUpdate();
          }
          if (call.index === LAST_CALL && point.database === 'releasing') {
            held = await t.db.transaction();
            await held('locks').forUpdate();
          }
          return undefined;
        },
        handled: async (call) => {
          if (!at('handled', call)) return undefined;
          await kill();
          return 'reset';
        },
        answered: (call) => {
          if (at('answered', call)) proc?.child.kill('SIGKILL');
        },
      });
      try {
        if (point.database === 'opening') {
          held = await t.db.transaction();
          // Locks the gap after the last cycle row: the new cycle's insert waits, after its lock row.
          const last = (await held('provisioning_cycles').max({ id: 'id' }).first()) as { id: number | null };
          await held('provisioning_cycles').where('id', '>', Number(last?.id ?? 0)).forUpdate();
        }
        proc = startCliCycle(childEnv);
        if (point.database !== undefined) {
          const waiting = { opening: /insert into `provisioning_cycles`/i, recording: /from `requests`.*for update/is, releasing: /delete from `locks`/i }[point.database];
          await Promise.race([
            waitFor(`the cycle to wait for the test's lock (${point.label})`, () => blockedStatements(waiting), 60_000).catch((e: Error) => {
              throw new Error(`${e.message}: ${JSON.stringify(proc?.output())}`);
            }),
            proc.exited.then(() => {
              throw new Error(`the cycle ended before reaching "${point.label}": ${JSON.stringify(proc?.output())}`);
            }),
          ]);
          await kill();
          await endWaitingStatements();
        }
        const exit = await proc.exited;
        if (point.moodle) assert.equal(killedIn, calledFunction(point.moodle.call), `${point.label}: the call is the one planned`);
        return { proc, exit };
      } finally {
        moodle.setHooks(undefined);
        await held?.rollback().catch(() => undefined);
      }
    }

    async function waitForLockExpiry(): Promise<{ holder: string; cycleId: number | null } | undefined> {
      const row = (await t.db('locks').where({ name: 'provisioning-cycle' }).first()) as { holder: string; cycle_id: number | null; expires_at: number } | undefined;
      if (!row) return undefined;
      const wait = Number(row.expires_at) - Date.now() + 20;
      if (wait > 0) await sleep(wait);
      return { holder: row.holder, cycleId: row.cycle_id === null ? null : Number(row.cycle_id) };
    }

    async function checkRound(requests: RoundRequest[], label: string): Promise<void> {
      for (const r of requests) {
        const { request, children } = await clean.lifecycle.get(r.id);
        const parent = moodle.state.userByUsername(r.email);
        assert.ok(parent, `${label}: ${r.key}'s parent exists in Moodle`);
        const audit = await clean.requestRepository.auditFor(t.db, r.id);
        const count = (action: string) => audit.filter((a) => a.action === action).length;
        const mails = (await t.db('mail_outbox').where({ request_id: r.id, kind: 'provisioned' })) as Array<{ recipient: string }>;
        const matched = children.filter((c) => c.moodleUserId !== null);
        assert.deepEqual(
          matched.filter((c) => c.moodleUserId !== BAD_PUPIL).map((c) => c.linkState),
          r.goodPupils.map(() => 'linked'),
          `${label}: ${r.key}'s good children are linked`,
        );
        assert.equal(count('children_linked'), 1, `${label}: ${r.key}'s links are recorded once`);
        assert.equal(request.moodleUserId, parent.id, `${label}: ${r.key} points at its parent's Moodle account`);
        if (r.bad) {
          assert.equal(request.status, 'approved', `${label}: ${r.key} waits for its bad child`);
          const badChild = children.find((c) => c.moodleUserId === BAD_PUPIL)!;
          assert.equal(badChild.linkState, 'matched');
          assert.equal(badChild.attempts, 1, `${label}: the bad child's failure is counted once`);
          assert.ok(badChild.lastError);
          assert.equal(request.attempts, 1);
          assert.equal(count('link_failed'), 1, `${label}: the failure is recorded once`);
          assert.equal(count('provisioned'), 0);
          assert.equal(mails.length, 0);
        } else {
          assert.equal(request.status, 'provisioned', `${label}: ${r.key} is provisioned`);
          assert.equal(count('provisioned'), 1, `${label}: ${r.key} is provisioned exactly once`);
          assert.deepEqual(
            mails.map((m) => m.recipient),
            [r.email],
            `${label}: ${r.key}'s parent gets exactly one "account ready" mail`,
          );
        }
      }
    }

    /** Every Parent role assignment in Moodle is one the rounds so far call for, and none is missing. */
    function checkMoodleRoles(label: string): void {
      const contexts = moodle.state.contexts;
      const actual = moodle.state.assignments
        .map((a) => {
          const context = contexts.get(a.contextid);
          return `${a.roleid}:${a.userid}->${context !== undefined && context.contextlevel === CONTEXT_LEVELS.user ? `user ${context.instanceid}` : `context ${a.contextid}`}`;
        })
        .sort();
      const expected = allRounds
        .flatMap((r) => r.goodPupils.map((pupil) => `${PARENT_ROLE}:${moodle.state.userByUsername(r.email)?.id}->user ${pupil}`))
        .sort();
      assert.deepEqual(actual, expected, `${label}: Moodle holds exactly the expected Parent roles`);
    }

    // On MariaDB three Moodle points give way to the database ones, keeping the run short.
    const points = dialect === 'mariadb' ? [...MOODLE_POINTS.filter((p) => !MARIADB_SKIPS.includes(p.label)), ...DATABASE_POINTS] : MOODLE_POINTS;
    it(`${points.length} kill points: no request lost, none provisioned twice, every role right, the lock taken over`, { skip, timeout: 600_000 }, async () => {
      assert.ok(new Set(points.map((p) => p.label)).size >= 20);
      for (const point of points) {
        const requests = await prepareRound();
        allRounds.push(...requests);
        const label = `killed at "${point.label}"`;
        const lastCycle = (await t.db('provisioning_cycles').max({ id: 'id' }).first()) as { id: number | null };
        const { proc, exit } = await runAndKill(
          point,
          requests.map((r) => r.id),
        );
        assert.equal(exit.signal, 'SIGKILL', `${label}: the point was reached (the process ended by itself: ${JSON.stringify({ ...exit, ...proc.output() })})`);

        // Straight after the crash nothing is half written.
        await assertAuthInvariant(t.db);
        const statuses = (await t.db('requests').whereIn('id', requests.map((r) => r.id)).select('status')) as Array<{ status: string }>;
        assert.equal(statuses.length, requests.length, `${label}: no request lost`);
        for (const s of statuses) assert.ok(['approved', 'provisioned'].includes(s.status), `${label}: status ${s.status}`);
        const killed = (await t.db('provisioning_cycles').where('id', '>', Number(lastCycle?.id ?? 0))) as Array<{ id: number; state: string }>;
        if (point.database === 'opening') {
          assert.deepEqual(killed, [], `${label}: no cycle record without its lock`);
          assert.equal(await t.db('locks').first(), undefined, `${label}: no lock without its cycle record`);
        } else {
          assert.equal(killed.length, 1, `${label}: the killed cycle has its record`);
        }
        const killedCycle = killed[0];

        await moodle.sync(t.db, TEST_AUTH_TABLE);
        const stale = await waitForLockExpiry();
        if (killedCycle) {
          assert.ok(stale, `${label}: the dead process's lock is still there`);
          assert.match(stale.holder, new RegExp(`:${proc.pid}:`));
          assert.equal(stale.cycleId, Number(killedCycle.id));
        }
        const summary = await clean.cycle.run('schedule', null);
        assert.notEqual(summary.state, 'failed', `${label}: the clean cycle ran (${summary.error})`);
        assert.equal(await t.db('locks').first(), undefined, `${label}: the clean cycle released the lock`);
        if (killedCycle) {
          const record = await clean.cycle.repository.get(Number(killedCycle.id));
          if (point.database === 'releasing') {
            assert.ok(record && record.state !== 'running' && record.state !== 'interrupted' && record.finishedAt, `${label}: it had finished its record`);
          } else {
            assert.equal(record?.state, 'interrupted', `${label}: the killed cycle is marked interrupted`);
            assert.match(record?.error ?? '', /stopped before it finished/);
          }
        }
        await checkRound(requests, label);
        checkMoodleRoles(label);
        await assertAuthInvariant(t.db);
      }
    });
  });
}
