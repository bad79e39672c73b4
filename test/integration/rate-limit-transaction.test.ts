// Counting rate limits inside a caller's transaction keeps the counters exactly as
// rate-limiter-flexible keeps them: the library's own limiter reads and resets what was counted,
// a window that ended starts again at 1, and the first attempt over its limit is refused with the
// time left in its window.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { consumeInTransaction as consume, createRateLimit, createLimiter, RATE_LIMITS_TABLE, RateLimitedError, storedKey, type RateLimitAttempt } from '../../src/web/rate-limit';
import { createTestDatabase, DIALECTS, skipReason, type TestDatabase } from '../support/databases';

for (const dialect of DIALECTS) {
  describe(`rate limits counted in a transaction on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    before(async () => {
      if (!skip) t = await createTestDatabase(dialect);
    });
    after(async () => {
      if (!skip) await t.destroy();
    });

    // On MariaDB the upsert answers with the counters; the read after it (MySQL, older MariaDB) is checked too.
    const ways = dialect === 'mariadb' ? [{ upsertReturns: true }, { upsertReturns: false }, {}] : [{}];
    for (const [i, options] of ways.entries()) {
      const way = options.upsertReturns === undefined ? 'as the server allows' : options.upsertReturns ? 'with RETURNING' : 'read after the upsert';
      it(`counts as the library does, refuses the first attempt over its limit, and restarts a window that ended (${way})`, { skip }, async () => {
        const hourPrefix = `tx_hour${i}`;
        const dayPrefix = `tx_day${i}`;
        const hourly = createRateLimit(t.db, { keyPrefix: hourPrefix, points: 2, durationSeconds: 3600 });
        const daily = createRateLimit(t.db, { keyPrefix: dayPrefix, points: 3, durationSeconds: 86_400 });
        const now = Date.now();
        const both = () => [hourly.attempt('10.0.0.1'), daily.attempt('a@example.org', 'Too many for this address.')];
        const consumeInTransaction = (trx: Knex.Transaction, attempts: RateLimitAttempt[], at: number) => consume(trx, attempts, at, options);

        await t.db.transaction((trx) => consumeInTransaction(trx, both(), now));
        await t.db.transaction((trx) => consumeInTransaction(trx, both(), now + 1000));
        // The library's own limiter sees the same counts.
        const library = createLimiter(t.db, { keyPrefix: hourPrefix, points: 2, durationSeconds: 3600 });
        assert.equal((await library.get(storedKey('10.0.0.1')))?.consumedPoints, 2);

        // The third: the hourly limit is used up; it is named, with the time left in its window.
        const refused = await t.db.transaction((trx) => consumeInTransaction(trx, both(), now + 2000)).catch((e: unknown) => e);
        assert.ok(refused instanceof RateLimitedError);
        assert.equal(refused.limit, hourPrefix);
        assert.equal(refused.retryAfterSeconds, 3598);
        // The refused attempt rolled back with its transaction: the daily count is still 2.
        const day = await t.db(RATE_LIMITS_TABLE).where({ key: `${dayPrefix}:${storedKey('a@example.org')}` }).first();
        assert.equal(Number(day.points), 2);

        // An hour later the hourly window starts again at 1; the daily one goes on and runs out.
        await t.db.transaction((trx) => consumeInTransaction(trx, both(), now + 3600_000 + 1));
        const hour = await t.db(RATE_LIMITS_TABLE).where({ key: `${hourPrefix}:${storedKey('10.0.0.1')}` }).first();
        assert.equal(Number(hour.points), 1);
        const overDaily = await t.db.transaction((trx) => consumeInTransaction(trx, both(), now + 3600_000 + 2)).catch((e: unknown) => e);
        assert.ok(overDaily instanceof RateLimitedError);
        assert.equal(overDaily.limit, dayPrefix);
        assert.equal(overDaily.message, 'Too many for this address.');

        // reset (the library's delete) clears what was counted in a transaction.
        await daily.reset('a@example.org');
        await t.db.transaction((trx) => consumeInTransaction(trx, [daily.attempt('a@example.org')], now + 3600_000 + 3));
        assert.equal(Number((await t.db(RATE_LIMITS_TABLE).where({ key: `${dayPrefix}:${storedKey('a@example.org')}` }).first()).points), 1);
      });
    }
  });
}
