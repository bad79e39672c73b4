// Guardian records: matching 5,000 confirmed requests against a 50,000-row snapshot of the MIS
// contact export, on MariaDB, against the Moodle test double answering each call after 25 ms.
// Measured: reading the CSV, the import (one transaction, then every waiting request matched),
// and matching all waiting requests again in batches; the baseline, measured in the same run, is
// matching requests one at a time (as at each confirmation) on a sample, scaled up.
// Runs in this process (the service and the double together), so its peak memory includes both.
import { randomBytes } from 'node:crypto';
import { parseConfig } from '../../../src/config';
import { readGuardianFile } from '../../../src/guardian-records/guardian-records-csv';
import { CHILDREN_TABLE, childToRow, REQUESTS_TABLE, requestToRow, type RequestRecord } from '../../../src/requests/request-repository';
import { createServices } from '../../../src/services';
import { seedRecordedSite, startMoodleDouble } from '../../support/moodle-double';
import { approvedRecord } from '../cycle/seed';
import { BENCH_AUTH_TABLE, type BenchDatabase } from '../support/bench-database';
import { decimal, integer, seconds, table } from '../support/format';
import { check, type BenchContext, type BenchScenario, type ReportSection } from '../support/scenario';

const LATENCY_MS = 25;
const SETTINGS = {
  full: { rows: 50_000, requests: 5_000, sample: 200 },
  quick: { rows: 5_000, requests: 500, sample: 50 },
} as const;
/** Two contacts per pupil: the snapshot has rows / 2 pupils. */
const CONTACTS_PER_PUPIL = 2;
const TIME_TARGET_MS = 60_000;
const SEED_BATCH = 500;

const email = (pupil: number, contact: number) => `contact.${pupil}.${contact}@bench.example.org`;
const admission = (pupil: number) => `ADM${100000 + pupil}`;
const group = (pupil: number) => `${7 + (pupil % 5)}${'ABCDEFGH'[pupil % 8]}`;

function snapshotCsv(rows: number): Buffer {
  const lines = ['Adno,Legal Forename,Legal Surname,Reg Group,Contact Title,Contact Forename,Contact Surname,Contact Email,Relationship,Parental Responsibility,Priority,Court Order'];
  for (let pupil = 0; pupil < rows / CONTACTS_PER_PUPIL; pupil++) {
    for (let c = 0; c < CONTACTS_PER_PUPIL; c++) {
      lines.push([admission(pupil), 'Child', `Pupil${pupil}`, group(pupil), c === 0 ? 'Mrs' : 'Mr', `Contact${c}`, `Pupil${pupil}`, email(pupil, c), c === 0 ? 'Mother' : 'Father', 'Y', String(c + 1), 'N'].join(','));
    }
  }
  return Buffer.from(lines.join('\r\n') + '\r\n', 'utf8');
}

/** A confirmed request waiting for review, from the contact's address: the cycle bench's request, not yet decided. */
function pendingRecord(index: number, now: number): Omit<RequestRecord, 'id'> {
  return {
    ...approvedRecord(index, now),
    status: 'pending',
    parentTitle: 'Mrs',
    parentFirstName: 'Contact0',
    parentLastName: `Pupil${index}`,
    email: email(index, 0),
    moodleUsername: null,
    decidedAt: null,
    decidedBy: null,
    // Submitted (1), confirmed (2).
    version: 2,
  };
}

/** `count` confirmed requests, each for one pupil by name and registration group (no identifier). */
async function seedConfirmedRequests(bench: BenchDatabase, count: number): Promise<number[]> {
  const now = Date.now();
  for (let start = 0; start < count; start += SEED_BATCH) {
    const indexes = Array.from({ length: Math.min(SEED_BATCH, count - start) }, (_, k) => start + k);
    await bench.db.transaction(async (trx) => {
      await trx(REQUESTS_TABLE).insert(indexes.map((i) => requestToRow(pendingRecord(i, now))));
      const ids = (await trx(REQUESTS_TABLE).whereIn('email', indexes.map((i) => email(i, 0))).select('id', 'email')) as Array<{ id: number; email: string }>;
      const idByEmail = new Map(ids.map((r) => [r.email, Number(r.id)]));
      await trx(CHILDREN_TABLE).insert(
        indexes.map((i) =>
          childToRow({
            requestId: idByEmail.get(email(i, 0)) as number,
            position: 0,
            firstName: 'Child',
            lastName: `Pupil${i}`,
            tutorGroup: group(i),
            pupilIdentifier: null,
            moodleUserId: null,
            linkState: 'unmatched',
            linkedAt: null,
            revokedAt: null,
            unassignPending: false,
            attempts: 0,
            lastError: null,
            nextAttemptAt: null,
            updatedAt: now,
          }),
        ),
      );
    });
  }
  return ((await bench.db(REQUESTS_TABLE).where({ status: 'pending' }).orderBy('id').pluck('id')) as unknown[]).map(Number);
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - start };
}

export const guardianRecordsScenario: BenchScenario = {
  id: 'guardian-records',
  async run(context: BenchContext): Promise<ReportSection> {
    const size = SETTINGS[context.scale];
    const state = seedRecordedSite();
    for (let pupil = 0; pupil < size.rows / CONTACTS_PER_PUPIL; pupil++) {
      state.addUser({ id: 2_000_000 + pupil, username: `gpupil.${pupil}`, firstname: 'Child', lastname: `Pupil${pupil}`, department: group(pupil), idnumber: admission(pupil) });
    }
    const moodle = await startMoodleDouble({ state });
    const bench = await context.databases.create('guardian_records');
    try {
      const services = createServices(
        parseConfig({
          NODE_ENV: 'production',
          SESSION_SECRET: randomBytes(32).toString('base64url'),
          DATABASE_URL: bench.url,
          AUTH_TABLE: BENCH_AUTH_TABLE,
          MOODLE_URL: moodle.url,
          MOODLE_TOKEN: moodle.tokens.ws,
          CYCLE_SCHEDULE: 'off',
          GUARDIAN_MATCH: 'suggest',
          LOG_LEVEL: context.verbose ? 'info' : 'silent',
        }),
      );
      try {
        context.log(`guardian records: seeding ${integer(size.requests)} confirmed requests`);
        const ids = await seedConfirmedRequests(bench, size.requests);
        check(ids.length === size.requests, `seeded ${ids.length} requests, expected ${size.requests}`);
        const csv = snapshotCsv(size.rows);
        moodle.setFaults({ latencyMs: LATENCY_MS });

        const read = await timed(async () => readGuardianFile(csv, 'admission_number'));
        check(read.value.ok && read.value.records.length === size.rows, 'the snapshot is read whole');
        if (!read.value.ok) throw new Error('unreachable');
        const snapshot = read.value;
        context.log(`guardian records: importing ${integer(size.rows)} rows (then every waiting request is matched)`);
        moodle.resetCounts();
        const imported = await timed(() => services.guardianRecords.importSnapshot(snapshot, { source: 'cli', fileName: 'bench.csv', actor: { type: 'cli', id: 'bench' } }));
        check(imported.value.ok, 'the import succeeded');
        if (!imported.value.ok) throw new Error('unreachable');
        check(imported.value.matched.full === size.requests, `after the import ${imported.value.matched.full} of ${size.requests} requests match fully`);
        const importCalls = moodle.calls();

        context.log(`guardian records: matching ${integer(size.requests)} waiting requests again`);
        moodle.resetCounts();
        const rematch = await timed(() => services.guardianRecords.rematchPending());
        check(rematch.value.full === size.requests, `${rematch.value.full} of ${size.requests} requests match fully`);
        const rematchCalls = moodle.calls();

        context.log(`guardian records: baseline, ${size.sample} requests matched one at a time`);
        moodle.resetCounts();
        const sample = ids.slice(0, size.sample);
        const oneByOne = await timed(async () => {
          for (const id of sample) await services.guardianRecords.matchRequests([id]);
        });
        const sampleCalls = moodle.calls();
        const scaledMs = (oneByOne.ms / size.sample) * size.requests;
        const scaledCalls = (sampleCalls / size.sample) * size.requests;
        const rows = await bench.db('guardian_records').count({ n: '*' }).first();
        check(Number((rows as { n?: number | string } | undefined)?.n) === size.rows, 'the snapshot holds every row');

        const met = rematch.ms <= TIME_TARGET_MS;
        const body = [
          `${integer(size.requests)} confirmed requests (one child each, named without a pupil identifier, so each is found by ` +
            `forename, surname and registration group) against a snapshot of ${integer(size.rows)} rows (${integer(size.rows / CONTACTS_PER_PUPIL)} pupils, ` +
            `${CONTACTS_PER_PUPIL} contacts each), on MariaDB, with the Moodle double answering each call after ${LATENCY_MS} ms. Every request matches fully.`,
          '',
          table(
            ['step', 'time', 'Moodle calls'],
            [
              [`read the ${integer(size.rows)}-row CSV`, seconds(read.ms), '0'],
              [`import it (one transaction) and match the ${integer(size.requests)} waiting requests`, seconds(imported.ms), integer(importCalls)],
              [`match the ${integer(size.requests)} waiting requests again (batches of 1,000)`, seconds(rematch.ms), integer(rematchCalls)],
              [
                `baseline: one request at a time, as at each confirmation (${size.sample} measured, scaled to ${integer(size.requests)})`,
                `${seconds(scaledMs)} (${seconds(oneByOne.ms)} for ${size.sample})`,
                `${integer(scaledCalls)} (${integer(sampleCalls)} for ${size.sample})`,
              ],
            ],
          ),
          '',
          `Matching in batches is ${decimal(scaledMs / Math.max(rematch.ms, 1))}× faster than one request at a time, and asks Moodle ` +
            `${integer(rematchCalls)} times instead of ${integer(scaledCalls)} (every pupil identifier of a batch in one look-up, ` +
            `split by MOODLE_BATCH_SIZE).`,
        ].join('\n');
        return {
          title: 'Guardian records matching',
          body,
          targets: [
            {
              name: `match ${integer(size.requests)} confirmed requests against ${integer(size.rows)} records`,
              target: `under ${seconds(TIME_TARGET_MS)}, never one Moodle call per request`,
              measured: `${seconds(rematch.ms)}, ${integer(rematchCalls)} Moodle calls`,
              met: met && rematchCalls < size.requests / 10,
              ...(met ? {} : { shortfall: `${seconds(rematch.ms - TIME_TARGET_MS)} over` }),
            },
          ],
          // The bench's own process: the service and the Moodle double together, and every scenario run before this one.
          peakMemory: [{ label: 'guardian records (the bench process: service and Moodle double together)', rssBytes: process.resourceUsage().maxRSS * 1024 }],
        };
      } finally {
        await services.close();
      }
    } finally {
      await bench.drop();
      await moodle.close();
    }
  },
};

