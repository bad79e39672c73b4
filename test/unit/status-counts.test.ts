// The tab counts cache: reused for a few seconds, forgotten at once (and again at commit) when
// this instance changes a request, and never keeps a count read while a change happened.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Knex } from 'knex';
import { REQUEST_STATUSES } from '../../src/requests/request-states';
import { StatusCountsCache, type StatusCounts } from '../../src/review/status-counts';

function counts(pending: number): StatusCounts {
  return { ...(Object.fromEntries(REQUEST_STATUSES.map((s) => [s, 0])) as StatusCounts), pending };
}

describe('status counts cache', () => {
  it('counts once within the maximum age, again after it', async () => {
    let clock = 0;
    let loads = 0;
    const cache = new StatusCountsCache(async () => counts(++loads), () => clock, 5_000);
    assert.equal((await cache.get()).pending, 1);
    clock = 4_999;
    assert.equal((await cache.get()).pending, 1);
    clock = 5_000;
    assert.equal((await cache.get()).pending, 2);
    assert.equal(loads, 2);
  });

  it('forgets the counts when a change starts and again when it commits', async () => {
    let loads = 0;
    const cache = new StatusCountsCache(async () => counts(++loads), () => 0);
    await cache.get();
    let commit!: () => void;
    const trx = { executionPromise: new Promise<void>((resolve) => (commit = resolve)) } as unknown as Knex.Transaction;
    await cache.listener(trx);
    assert.equal((await cache.get()).pending, 2, 'recounted after the change started');
    assert.equal((await cache.get()).pending, 2, 'and kept');
    commit();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal((await cache.get()).pending, 3, 'recounted once the change committed');
  });

  it('does not keep a count that was read while something changed', async () => {
    let release!: () => void;
    let loads = 0;
    const cache = new StatusCountsCache(
      () =>
        new Promise<StatusCounts>((resolve) => {
          loads += 1;
          const n = loads;
          release = () => resolve(counts(n));
        }),
      () => 0,
    );
    const first = cache.get();
    cache.forget();
    release();
    assert.equal((await first).pending, 1);
    const second = cache.get();
    release();
    assert.equal((await second).pending, 2, 'the count read during the change was not kept');
  });
});
