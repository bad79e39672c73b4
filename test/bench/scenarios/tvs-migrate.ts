// Moving from the WordPress plugin: 10,000 plugin requests (the plugin's own tables in a MariaDB
// database of their own, seeded with a school's mix of statuses, one to three children each, some
// duplicated and orphan auth rows) imported by `tvs-migrate run` into a fresh service database,
// against the Moodle test double answering each call after 25 ms. Target: under a minute.
import { randomBytes } from 'node:crypto';
import { parseConfig } from '../../../src/config';
import { createServices } from '../../../src/services';
import { openPluginDatabase } from '../../../src/tvs-migration/plugin-tables.repository';
import type { PluginSource } from '../../../src/tvs-migration/tvs-migration.service';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../../support/moodle-double';
import { createPluginDatabase, type PluginAuthSeed, type PluginRequestSeed } from '../../support/wordpress-plugin';
import { BENCH_AUTH_TABLE } from '../support/bench-database';
import { decimal, integer, megabytes, seconds, table } from '../support/format';
import { prng, weighted } from '../support/random';
import { check, type BenchContext, type BenchScenario, type ReportSection } from '../support/scenario';

const LATENCY_MS = 25;
const SIZES = { full: 10_000, quick: 1_000 } as const;
const TARGET_MS = 60_000;
const SURNAME_COUNT = { full: 1_500, quick: 300 } as const;
const FIRST_NAMES = ['Amelia', 'Ava', 'Bella', 'Charlie', 'Daisy', 'Ella', 'Emily', 'Evie', 'Freya', 'George', 'Grace', 'Harry', 'Isla', 'Jack', 'Jacob', 'Leo', 'Lily', 'Mia', 'Noah', 'Oliver', 'Oscar', 'Poppy', 'Rosie', 'Sophia', 'Thomas', 'William'];
const FIRST_PUPIL_ID = 2_000_001;

interface School {
  requests: PluginRequestSeed[];
  auth: PluginAuthSeed[];
  usernames: number;
  children: number;
  ambiguous: number;
  missing: number;
}

/** The plugin's rows, and the pupils in the double: most children unique, some ambiguous, some missing. */
function buildSchool(size: number, surnameCount: number, moodle: MoodleDouble): School {
  const random = prng(20261202);
  const status = weighted({ provisioned: 72, approved: 4, pending: 6, rejected: 6, duplicate: 5, bogus: 3, unknown: 2, deleting: 2 }, random);
  const childCount = weighted({ one: 55, two: 35, three: 10 }, random);
  const requests: PluginRequestSeed[] = [];
  const auth: PluginAuthSeed[] = [];
  const pupils = new Map<string, number>();
  let nextPupil = FIRST_PUPIL_ID;
  let children = 0;
  let ambiguous = 0;
  let missing = 0;
  const addPupil = (first: string, last: string, group: string) =>
    moodle.state.addUser({ id: nextPupil, username: `pupil.${nextPupil++}`, firstname: first, lastname: last, department: group });
  for (let i = 1; i <= size; i++) {
    const requestStatus = status();
    const count = childCount();
    const kids: Array<{ first: string; last: string; group: string }> = [];
    const surname = `Family${Math.floor(random() * surnameCount)}`;
    for (let c = 0; c < (count === 'one' ? 1 : count === 'two' ? 2 : 3); c++) {
      const first = FIRST_NAMES[Math.floor(random() * FIRST_NAMES.length)] as string;
      const group = `${7 + Math.floor(random() * 5)}${'ABCDEFGHIJ'[Math.floor(random() * 10)]}`;
      kids.push({ first, last: surname, group });
      children += 1;
      const key = `${first}|${surname}|${group}`;
      if (pupils.has(key)) continue;
      const fate = random();
      if (fate < 0.02) {
        missing += 1;
        pupils.set(key, 0);
        continue;
      }
      pupils.set(key, nextPupil);
      addPupil(first, surname, group);
      if (fate < 0.05) {
        ambiguous += 1;
        addPupil(first, surname, group);
      }
    }
    const username = `parent${i}@bench.example.org`;
    const access = requestStatus === 'provisioned' || requestStatus === 'approved';
    requests.push({
      id: i,
      status: requestStatus,
      parent_fname: 'Pat',
      parent_sname: surname,
      parent_email: i % 7 === 0 ? `Parent${i}@Bench.Example.org` : username,
      child_fname: kids[0]?.first ?? '',
      child_sname: kids[0]?.last ?? '',
      child_tg: kids[0]?.group ?? '',
      child2_fname: kids[1]?.first ?? '',
      child2_sname: kids[1]?.last ?? '',
      child2_tg: kids[1]?.group ?? '',
      child3_fname: kids[2]?.first ?? (i % 5 === 0 ? null : ''),
      child3_sname: kids[2]?.last ?? '',
      child3_tg: kids[2]?.group ?? '',
      date_created: i % 50 === 0 ? '0000-00-00 00:00:00' : '2020-01-15 09:30:00',
      provisioned_username: access ? username : null,
      provisioned_initialpass: access ? `Initial-${i}` : null,
    });
    if (access) {
      auth.push({ username, parent_fname: 'Pat', parent_sname: surname, parent_email: username, request_id: i });
      // The plugin enforced no uniqueness: a few usernames twice.
      if (i % 100 === 0) auth.push({ username, parent_fname: 'Pat', parent_sname: surname, parent_email: username, request_id: i });
    }
  }
  // Rows added by hand, without a request.
  for (let k = 0; k < size / 100; k++) auth.push({ username: `hand.added.${k}@bench.example.org`, parent_fname: 'Hal', parent_sname: `Hand${k}`, parent_email: `hand.added.${k}@bench.example.org`, request_id: 0 });
  return { requests, auth, usernames: new Set(auth.map((a) => a.username)).size, children, ambiguous, missing };
}

export const tvsMigrateScenario: BenchScenario = {
  id: 'tvs-migrate',
  async run(context: BenchContext): Promise<ReportSection> {
    const size = SIZES[context.scale];
    const bench = await context.databases.create('tvs_migrate');
    const plugin = await createPluginDatabase();
    const moodle = await startMoodleDouble({ state: seedRecordedSite() });
    const source: PluginSource = { db: openPluginDatabase(plugin.readerUrl), prefix: plugin.prefix, display: 'the bench WordPress database' };
    const config = parseConfig({
      NODE_ENV: 'production',
      SESSION_SECRET: randomBytes(32).toString('base64url'),
      DATABASE_URL: bench.url,
      AUTH_TABLE: BENCH_AUTH_TABLE,
      MOODLE_URL: moodle.url,
      MOODLE_TOKEN: moodle.tokens.ws,
      CYCLE_SCHEDULE: 'off',
      LOG_LEVEL: context.verbose ? 'info' : 'silent',
    });
    const services = createServices(config, { db: bench.db });
    try {
      context.log(`tvs-migrate: seeding ${integer(size)} plugin requests and the pupils in the Moodle double`);
      const school = buildSchool(size, SURNAME_COUNT[context.scale], moodle);
      await plugin.seed(school.requests, school.auth);
      moodle.setFaults({ latencyMs: LATENCY_MS });

      moodle.resetCounts();
      context.log('tvs-migrate: plan');
      let t = performance.now();
      const plan = await services.tvsMigration.plan(source);
      const planMs = performance.now() - t;
      const planCalls = moodle.calls();

      moodle.resetCounts();
      context.log('tvs-migrate: run');
      const rssBefore = process.resourceUsage().maxRSS * 1024;
      t = performance.now();
      const run = await services.tvsMigration.run(source, { type: 'cli', id: 'bench' });
      const runMs = performance.now() - t;
      const runCalls = moodle.calls();

      context.log('tvs-migrate: run again');
      t = performance.now();
      const again = await services.tvsMigration.run(source, { type: 'cli', id: 'bench' });
      const againMs = performance.now() - t;

      const deleting = school.requests.filter((r) => r.status === 'deleting').length;
      check(run.invariant && run.invariant.missing.length === 0 && run.invariant.added.length === 0, `the invariant does not hold: ${JSON.stringify(run.invariant)}`);
      check(run.counts.imported === plan.counts.imported, `run imported ${run.counts.imported}, plan said ${plan.counts.imported}`);
      check(run.counts.skipped === deleting, `run skipped ${run.counts.skipped}, ${deleting} are deleting`);
      check(again.counts.imported === 0, `the second run imported ${again.counts.imported}`);
      const authRows = Number(((await bench.db(BENCH_AUTH_TABLE).count({ n: '*' }).first()) as { n: number | string }).n);
      check(authRows === school.usernames, `the auth table has ${authRows} rows, the plugin ${school.usernames} usernames`);
      const peakRss = process.resourceUsage().maxRSS * 1024;
      context.log(`tvs-migrate: run ${seconds(runMs)} (${integer(runCalls)} Moodle calls), plan ${seconds(planMs)}, second run ${seconds(againMs)}`);

      const met = runMs < TARGET_MS;
      return {
        title: `Moving from the WordPress plugin (${integer(size)} requests)`,
        body: [
          `\`tvs-migrate\` against the plugin's own two tables (its CREATE TABLE statements, in a MariaDB database of their own, read by an account that may only SELECT), ` +
            `seeded with ${integer(size)} requests (72 % provisioned, 4 % approved, the rest pending, rejected, duplicate, bogus, unknown and 2 % deleting), ` +
            `${integer(school.children)} children in ${integer(SURNAME_COUNT[context.scale])} families' surnames, and ${integer(school.auth.length)} auth rows ` +
            `(${integer(school.usernames)} usernames: some twice, ${integer(size / 100)} without a request). In the Moodle double ${integer(school.ambiguous)} name + tutor group ` +
            `combinations have two pupils and ${integer(school.missing)} none; it answers each call after ${LATENCY_MS} ms. The service database is MariaDB. ` +
            'Children are looked up one surname per call, four at a time; requests are imported 200 per transaction through the lifecycle.',
          '',
          table(
            ['step', 'wall time', 'Moodle calls', 'imported', 'already imported', 'skipped'],
            [
              ['plan (writes nothing)', seconds(planMs), integer(planCalls), `${integer(plan.counts.imported)} (would be)`, integer(plan.counts.alreadyImported), integer(plan.counts.skipped)],
              ['run', `**${seconds(runMs)}**`, integer(runCalls), integer(run.counts.imported), integer(run.counts.alreadyImported), integer(run.counts.skipped)],
              ['run again', seconds(againMs), '0', integer(again.counts.imported), integer(again.counts.alreadyImported), integer(again.counts.skipped)],
            ],
          ),
          '',
          `Run: ${decimal(run.counts.imported / (runMs / 1000), 0)} requests/s; ${integer(run.counts.childrenMatched)} children linked or matched, ` +
            `${integer(run.counts.childrenToPick)} flagged for staff to pick; the invariant held (every plugin username in the auth table, nobody added). ` +
            `Peak RSS of the bench process (the migration and the double together): ${megabytes(peakRss)} (${megabytes(rssBefore)} before the run).`,
        ].join('\n'),
        targets: [
          {
            name: `tvs-migrate run, ${integer(size)} plugin requests`,
            target: `< ${seconds(TARGET_MS)} against the double`,
            measured: seconds(runMs),
            met,
            ...(met ? {} : { shortfall: `${seconds(runMs - TARGET_MS)} over` }),
          },
        ],
        peakMemory: [],
      };
    } finally {
      await source.db.destroy();
      await services.close();
      await moodle.close();
      await plugin.destroy();
      await bench.drop();
    }
  },
};
