// Rate-limit counters in the database: a limiter leaves no timer of its own that would query a
// closed database, and the retention run removes counters that expired more than an hour ago.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createHash } from 'node:crypto';
import { createRateLimit, clearExpiredRateLimits, RATE_LIMITS_TABLE } from '../../src/web/rate-limit';
import { createTestDatabase, DIALECTS, skipReason, type TestDatabase } from '../support/databases';

const HOUR = 3_600_000;

for (const dialect of DIALECTS) {
  describe(`rate-limit counters on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    before(async () => {
      if (!skip) t = await createTestDatabase(dialect);
    });
    after(async () => {
      await t?.destroy();
    });

    it('a limiter schedules no purge timer of its own', { skip }, async () => {
      // The library's purge is an unref'd 5-minute setTimeout; count timers of 5 minutes or more set while a
      // limiter is made and used.
      const realSetTimeout = globalThis.setTimeout;
      const long: number[] = [];
      globalThis.setTimeout = ((fn: () => void, ms?: number, ...args: unknown[]) => {
        if ((ms ?? 0) >= 300_000) long.push(ms as number);
        return realSetTimeout(fn, ms, ...args);
      }) as typeof setTimeout;
      try {
        const limit = createRateLimit(t.db, { keyPrefix: 'test', points: 5, durationSeconds: 60 });
        await limit.consume('someone@example.org');
      } finally {
        globalThis.setTimeout = realSetTimeout;
      }
      assert.deepEqual(long, [], 'no long timer left behind by the limiter');
      assert.equal(await t.db(RATE_LIMITS_TABLE).count({ n: '*' }).first().then((r) => Number(r?.n)), 1);
    });

    it('removes counters that expired over an hour ago, and keeps the rest', { skip }, async () => {
      const now = Date.now();
      const key = (name: string) => createHash('sha256').update(name).digest('base64url');
      await t.db(RATE_LIMITS_TABLE).insert([
        { key: key('old'), points: 3, expire: now - 2 * HOUR },
        { key: key('recent'), points: 3, expire: now - HOUR / 2 },
        { key: key('live'), points: 3, expire: now + HOUR },
      ]);
      const removed = await clearExpiredRateLimits(t.db, now);
      assert.equal(removed, 1);
      const left = (await t.db(RATE_LIMITS_TABLE).select('key')).map((r: { key: string }) => r.key);
      assert.ok(!left.includes(key('old')));
      assert.ok(left.includes(key('recent')) && left.includes(key('live')));
    });
  });
}
