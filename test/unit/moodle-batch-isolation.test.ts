// Batch isolation as a property: whatever the batch size and wherever the bad items are, every good
// item lands, every bad one is reported alone, and the number of calls stays within O(k log n).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { encodeMoodleForm, normaliseLookupValue, sendIsolated } from '../../src/moodle/moodle-client';
import { MoodleError } from '../../src/moodle/moodle-error';

/** A Moodle-like sender: a batch with any bad item fails whole (one transaction). */
function fakeMoodle(bad: ReadonlySet<number>) {
  const landed: number[] = [];
  let calls = 0;
  const send = async (batch: number[]) => {
    calls++;
    if (batch.some((item) => bad.has(item))) {
      throw new MoodleError({ errorcode: 'codingerror', moodleMessage: 'User ID does not exist or is deleted!' });
    }
    landed.push(...batch);
  };
  return { send, landed, calls: () => calls };
}

describe('sendIsolated', () => {
  test('every good item lands, every bad one fails alone, within the call bound', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 60 }),
        fc.integer({ min: 1, max: 20 }),
        fc.array(fc.nat(59), { maxLength: 8 }),
        async (n, batchSize, badPicks) => {
          const items = Array.from({ length: n }, (_, i) => i);
          const bad = new Set(badPicks.filter((b) => b < n));
          const moodle = fakeMoodle(bad);
          const outcome = await sendIsolated(items, batchSize, moodle.send);
          assert.deepEqual([...outcome.done].sort((a, b) => a - b), items.filter((i) => !bad.has(i)));
          assert.deepEqual(
            outcome.failed.map((f) => f.assignment).sort((a, b) => a - b),
            [...bad].sort((a, b) => a - b),
          );
          assert.deepEqual([...moodle.landed].sort((a, b) => a - b), items.filter((i) => !bad.has(i)));
          const batches = Math.ceil(n / batchSize);
          const depth = Math.ceil(Math.log2(Math.max(2, Math.min(batchSize, n))));
          assert.ok(moodle.calls() <= batches + 2 * bad.size * depth, `${moodle.calls()} calls for n=${n} b=${batchSize} k=${bad.size}`);
          if (bad.size === 0) assert.equal(moodle.calls(), batches);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('batches sent concurrently: still every good item lands and every bad one fails alone, never more at once than allowed', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 60 }),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 2, max: 4 }),
        fc.array(fc.nat(59), { maxLength: 6 }),
        async (n, batchSize, concurrency, badPicks) => {
          const items = Array.from({ length: n }, (_, i) => i);
          const bad = new Set(badPicks.filter((b) => b < n));
          const moodle = fakeMoodle(bad);
          let inFlight = 0;
          let mostAtOnce = 0;
          const send = async (batch: number[]) => {
            inFlight++;
            mostAtOnce = Math.max(mostAtOnce, inFlight);
            // Answers come back out of order, as from a web server answering several at once.
            await new Promise((resolve) => setTimeout(resolve, (batch[0] ?? 0) % 3));
            inFlight--;
            await moodle.send(batch);
          };
          const outcome = await sendIsolated(items, batchSize, send, concurrency);
          assert.deepEqual([...outcome.done].sort((a, b) => a - b), items.filter((i) => !bad.has(i)));
          assert.deepEqual(
            outcome.failed.map((f) => f.assignment).sort((a, b) => a - b),
            [...bad].sort((a, b) => a - b),
          );
          const batches = Math.ceil(n / batchSize);
          assert.ok(mostAtOnce <= concurrency, `${mostAtOnce} calls at once with concurrency ${concurrency}`);
          if (batches >= concurrency) assert.equal(mostAtOnce, concurrency, 'the batches did go out together');
          const depth = Math.ceil(Math.log2(Math.max(2, Math.min(batchSize, n))));
          assert.ok(moodle.calls() <= batches + 2 * bad.size * depth, `${moodle.calls()} calls for n=${n} b=${batchSize} k=${bad.size}`);
          if (bad.size === 0) assert.equal(moodle.calls(), batches);
        },
      ),
      { numRuns: 150 },
    );
  });

  test('with concurrency, a failure that is not about one item starts no further batch', async () => {
    const sent: number[][] = [];
    const send = async (batch: number[]) => {
      sent.push(batch);
      await new Promise((resolve) => setImmediate(resolve));
      throw new MoodleError({ errorcode: 'nopermissions' });
    };
    await assert.rejects(sendIsolated([1, 2, 3, 4, 5, 6, 7, 8], 2, send, 2), (e: unknown) => e instanceof MoodleError && e.errorcode === 'nopermissions');
    assert.deepEqual(sent, [[1, 2], [3, 4]], 'the two batches already out, and none after');
  });

  test('a failure that is not about one item stops everything at once', async () => {
    let calls = 0;
    const send = async () => {
      calls++;
      throw new MoodleError({ errorcode: 'nopermissions' });
    };
    await assert.rejects(sendIsolated([1, 2, 3, 4], 4, send), (e: unknown) => e instanceof MoodleError && e.errorcode === 'nopermissions');
    assert.equal(calls, 1);
  });

  test('nothing to send costs no call', async () => {
    const moodle = fakeMoodle(new Set());
    assert.deepEqual(await sendIsolated([], 10, moodle.send), { done: [], failed: [] });
    assert.equal(moodle.calls(), 0);
  });
});

describe('the form body', () => {
  test('field order, PHP-style arrays, booleans as 0/1, nothing for null/undefined', () => {
    const form = encodeMoodleForm('tok', 'fn', {
      users: [{ id: 6, suspended: true, skipped: undefined, none: null }, { id: 7, suspended: false }],
      field: 'a b&c',
    });
    assert.equal(
      form,
      'wstoken=tok&wsfunction=fn&moodlewsrestformat=json' +
        '&users%5B0%5D%5Bid%5D=6&users%5B0%5D%5Bsuspended%5D=1&users%5B1%5D%5Bid%5D=7&users%5B1%5D%5Bsuspended%5D=0&field=a+b%26c',
    );
  });
});

describe('normaliseLookupValue', () => {
  test('values Moodle would refuse are never sent', () => {
    assert.equal(normaliseLookupValue('username', ' Parent.Two '), 'parent.two');
    assert.equal(normaliseLookupValue('username', "o'brien"), undefined);
    assert.equal(normaliseLookupValue('username', 'two words'), undefined);
    assert.equal(normaliseLookupValue('id', '12'), '12');
    assert.equal(normaliseLookupValue('id', 12), '12');
    assert.equal(normaliseLookupValue('id', '12a'), undefined);
    assert.equal(normaliseLookupValue('id', 0), undefined);
    assert.equal(normaliseLookupValue('email', 'Pat.One@Example.com'), 'Pat.One@Example.com');
    assert.equal(normaliseLookupValue('email', 'root@localhost'), undefined);
    assert.equal(normaliseLookupValue('idnumber', 'ADM 1001'), 'ADM 1001');
    assert.equal(normaliseLookupValue('idnumber', ''), undefined);
  });
});
