// Intake: the parents' form (POST /request) under load on MariaDB, against a bare node:http
// server that stores the same form with one INSERT. Both run in their own process; autocannon
// drives them from this one over loopback with the same connections and duration.
import { randomBytes } from 'node:crypto';
import autocannon from 'autocannon';
import { validFields } from '../../support/http';
import type { BenchDatabase } from '../support/bench-database';
import { CAUSES, cpuByCause, type CpuCause, type CpuProfile } from '../support/cpu-causes';
import { decimal, integer, megabytes, ratio, table, yesNo } from '../support/format';
import { check, type BenchContext, type BenchScenario, type ReportSection, type TargetResult } from '../support/scenario';
import { START_NODE_FLAGS, startWorker, type WorkerHandle } from '../support/worker';

type Variant = 'bare' | 'service';

const CONNECTIONS = 10;
const SETTINGS = {
  full: { warmupSeconds: 3, durationSeconds: 10, profileSeconds: 5 },
  quick: { warmupSeconds: 1, durationSeconds: 3, profileSeconds: 2 },
} as const;
/** The form must reach at least this share of the bare server's throughput… */
const THROUGHPUT_TARGET = 0.3;
/** …with its slowest answers still quick. */
const P99_TARGET_MS = 50;
const RATE_LIMIT = '100000';

/** The service's configuration for the run: production mode, rate limits raised, no schedule. */
function serviceEnvironment(databaseUrl: string): Record<string, string> {
  return {
    NODE_ENV: 'production',
    SESSION_SECRET: randomBytes(32).toString('base64url'),
    DATABASE_URL: databaseUrl,
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    FORM_RATE_LIMIT_PER_IP: RATE_LIMIT,
    FORM_RATE_LIMIT_PER_EMAIL: RATE_LIMIT,
    CYCLE_SCHEDULE: 'off',
  };
}

interface FormSession {
  cookie: string;
  token: string;
}

/** GET /request once, as a browser would: the CSRF cookie and the form's token, reused for every POST. */
async function openForm(port: number): Promise<FormSession> {
  const response = await fetch(`http://127.0.0.1:${port}/request`);
  const html = await response.text();
  check(response.status === 200, `GET /request answered ${response.status}`);
  const setCookie = response.headers.getSetCookie().find((c) => c.startsWith('mpp.csrf='));
  const token = /name="_csrf" value="([^"]+)"/.exec(html)?.[1];
  check(setCookie !== undefined && token !== undefined, 'GET /request gave no CSRF cookie and token');
  return { cookie: setCookie.split(';')[0] as string, token };
}

interface LoadRun {
  result: autocannon.Result;
  /** Emails of the requests answered 2xx/3xx. */
  answered: Set<string>;
  /** Emails of every request autocannon built (sent or about to be). */
  built: Set<string>;
  emailPrefix: string;
  failures: Map<number, number>;
}

async function load(port: number, session: FormSession, seconds: number): Promise<LoadRun> {
  const tag = randomBytes(4).toString('hex');
  const emailPrefix = `bench.${tag}.`;
  const answered = new Set<string>();
  const built = new Set<string>();
  const failures = new Map<number, number>();
  let sequence = 0;
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    pipelining: 1,
    duration: seconds,
    timeout: 10,
    requests: [
      {
        method: 'POST',
        path: '/request',
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: session.cookie },
        // Every request a new parent: the same email would join the open request instead.
        setupRequest: (request, context) => {
          sequence += 1;
          const email = `${emailPrefix}${sequence}@example.org`;
          context.email = email;
          built.add(email);
          const body = new URLSearchParams({ _csrf: session.token, ...validFields({ email, emailConfirm: email }) }).toString();
          return { ...request, body };
        },
        onResponse: (status, _body, context) => {
          if (status >= 200 && status < 400) answered.add(String(context.email));
          else failures.set(status, (failures.get(status) ?? 0) + 1);
        },
      },
    ],
  });
  return { result, answered, built, emailPrefix, failures };
}

/** Waits until no more rows arrive: requests cut off at the end may still be finishing. */
async function storedEmails(bench: BenchDatabase, prefix: string): Promise<string[]> {
  let previous = -1;
  for (;;) {
    const rows = (await bench.db('requests').where('email', 'like', `${prefix}%`).select('email')) as Array<{ email: string }>;
    if (rows.length === previous) return rows.map((r) => r.email);
    previous = rows.length;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

interface Verified {
  stored: number;
  answered: number;
  cutOff: number;
}

/**
 * Every answered request has its row, nothing is stored twice, and the only rows without a
 * counted answer are the requests in flight when autocannon stopped: it closes its connections
 * then without waiting, so at most one per connection.
 */
async function verify(variant: Variant, bench: BenchDatabase, run: LoadRun): Promise<Verified> {
  const { result } = run;
  const statuses = JSON.stringify(result.statusCodeStats);
  check(result.errors === 0 && result.timeouts === 0, `${variant}: ${result.errors} errors, ${result.timeouts} timeouts`);
  check(result.non2xx === 0 && run.failures.size === 0, `${variant}: answers other than 2xx: ${statuses}`);
  const counted = result['2xx'] + result['3xx'];
  check(counted > 0, `${variant}: no request was answered`);
  check(run.answered.size === counted, `${variant}: ${counted} 2xx/3xx answers counted but ${run.answered.size} distinct emails answered`);
  const stored = await storedEmails(bench, run.emailPrefix);
  const storedSet = new Set(stored);
  check(storedSet.size === stored.length, `${variant}: ${stored.length - storedSet.size} emails stored twice`);
  const missing = [...run.answered].filter((email) => !storedSet.has(email));
  check(missing.length === 0, `${variant}: ${missing.length} answered requests have no row (e.g. ${missing[0]})`);
  const unanswered = stored.filter((email) => !run.answered.has(email));
  check(
    unanswered.every((email) => run.built.has(email)),
    `${variant}: rows stored for emails the benchmark never sent`,
  );
  check(
    unanswered.length <= CONNECTIONS,
    `${variant}: ${unanswered.length} rows without a counted answer; at most ${CONNECTIONS} (one per connection) can be cut off at the end`,
  );
  check(stored.length === counted + unanswered.length, `${variant}: rows ${stored.length} ≠ answers ${counted} + cut off ${unanswered.length}`);
  return { stored: stored.length, answered: counted, cutOff: unanswered.length };
}

interface VariantFigures {
  variant: Variant;
  requestsPerSecond: number;
  p50: number;
  p99: number;
  durationSeconds: number;
  /** The server process's CPU time over the measured run's wall time (1 = one core busy). */
  cpuShare: number;
  verified: Verified;
  peakRssBytes: number;
  /** Database statements per submission in the measured run (the service's own count; the bare server sends one). */
  statementsPerSubmission?: number;
  /** From a separate, profiled run after the measured one. */
  profile?: { causes: CpuCause[]; submissions: number; seconds: number };
}

async function measure(context: BenchContext, variant: Variant): Promise<VariantFigures> {
  const { warmupSeconds, durationSeconds } = SETTINGS[context.scale];
  const bench = await context.databases.create(`intake_${variant}`);
  let worker: WorkerHandle | undefined;
  try {
    worker =
      variant === 'service'
        ? await startWorker('intake-service.ts', {
            // Express caches compiled views only when NODE_ENV is production in the process itself.
            env: { NODE_ENV: 'production', BENCH_SERVICE_ENV: JSON.stringify(serviceEnvironment(bench.url)) },
            nodeFlags: START_NODE_FLAGS,
            verbose: context.verbose,
          })
        : await startWorker('intake-bare.ts', { env: { BENCH_DATABASE_URL: bench.url }, verbose: context.verbose });
    const { port } = await worker.call<{ port: number }>('address');
    const session = variant === 'service' ? await openForm(port) : { cookie: 'mpp.csrf=unused', token: 'unused' };

    context.log(`intake/${variant}: warming up for ${warmupSeconds} s`);
    const warm = await load(port, session, warmupSeconds);
    await verify(variant, bench, warm);

    context.log(`intake/${variant}: measuring for ${durationSeconds} s with ${CONNECTIONS} connections`);
    const statementsBefore = variant === 'service' ? (await worker.call<{ statements: number }>('statements')).statements : 0;
    const cpuBefore = await worker.call<NodeJS.CpuUsage>('cpu');
    const run = await load(port, session, durationSeconds);
    const cpuAfter = await worker.call<NodeJS.CpuUsage>('cpu');
    const statementsAfter = variant === 'service' ? (await worker.call<{ statements: number }>('statements')).statements : 0;
    const verified = await verify(variant, bench, run);
    const memory = await worker.call<{ peakRssBytes: number }>('memory');
    const figures: VariantFigures = {
      variant,
      requestsPerSecond: verified.answered / run.result.duration,
      p50: run.result.latency.p50,
      p99: run.result.latency.p99,
      durationSeconds: run.result.duration,
      // Includes the few milliseconds of the two IPC calls around the run.
      cpuShare: (cpuAfter.user - cpuBefore.user + cpuAfter.system - cpuBefore.system) / 1e6 / run.result.duration,
      verified,
      peakRssBytes: memory.peakRssBytes,
    };
    if (variant === 'service') {
      // Every stored submission, answered or cut off, sent its statements.
      figures.statementsPerSubmission = (statementsAfter - statementsBefore) / verified.stored;
      const { profileSeconds } = SETTINGS[context.scale];
      context.log(`intake/service: a further ${profileSeconds} s with the CPU profiler on, for the causes`);
      await worker.call('startProfile');
      const profiled = await load(port, session, profileSeconds);
      const profile = await worker.call<CpuProfile>('stopProfile');
      const profiledVerified = await verify(variant, bench, profiled);
      figures.profile = { causes: cpuByCause(profile), submissions: profiledVerified.stored, seconds: profiled.result.duration };
    }
    context.log(
      `intake/${variant}: ${decimal(figures.requestsPerSecond)} submissions/s, p99 ${figures.p99} ms, server CPU ${decimal(figures.cpuShare * 100, 0)} %, ` +
        `${verified.stored} rows = ${verified.answered} answered + ${verified.cutOff} cut off; peak RSS ${megabytes(memory.peakRssBytes)}`,
    );
    return figures;
  } finally {
    await worker?.stop();
    await bench.drop();
  }
}

async function run(context: BenchContext): Promise<ReportSection> {
  const { durationSeconds, warmupSeconds } = SETTINGS[context.scale];
  const bare = await measure(context, 'bare');
  const service = await measure(context, 'service');

  const throughputRatio = service.requestsPerSecond / bare.requestsPerSecond;
  const target: TargetResult = {
    name: 'Intake throughput',
    target: `form submissions/s ≥ ${THROUGHPUT_TARGET}× the bare server's, p99 < ${P99_TARGET_MS} ms`,
    measured: `${decimal(service.requestsPerSecond)}/s vs ${decimal(bare.requestsPerSecond)}/s = ${ratio(service.requestsPerSecond, bare.requestsPerSecond)}, p99 ${service.p99} ms`,
    met: throughputRatio >= THROUGHPUT_TARGET && service.p99 < P99_TARGET_MS,
  };
  const needed = THROUGHPUT_TARGET * bare.requestsPerSecond;
  if (!target.met) {
    const shortfalls: string[] = [];
    if (throughputRatio < THROUGHPUT_TARGET) {
      shortfalls.push(
        `${ratio(service.requestsPerSecond, bare.requestsPerSecond)} instead of ${THROUGHPUT_TARGET}×: ` +
          `${decimal(needed - service.requestsPerSecond)} submissions/s short of the ${decimal(needed)}/s needed, ` +
          `${decimal((1 - service.requestsPerSecond / needed) * 100, 0)} % below the target`,
      );
    }
    if (service.p99 >= P99_TARGET_MS) shortfalls.push(`p99 ${service.p99} ms, not under ${P99_TARGET_MS} ms`);
    target.shortfall = shortfalls.join('; ');
  }
  const cpuPerSubmission = (f: VariantFigures) => (f.cpuShare * 1000) / f.requestsPerSecond;

  const rows = [bare, service].map((f) => [
    f.variant === 'service' ? 'the service: POST /request' : 'bare node:http + one INSERT',
    decimal(f.requestsPerSecond),
    f.variant === 'service' ? ratio(f.requestsPerSecond, bare.requestsPerSecond) : '1.00×',
    `${f.p50} ms`,
    `${f.p99} ms`,
    f.variant === 'service' ? ratio(f.p99, bare.p99) : '1.00×',
    `${decimal(f.cpuShare * 100, 0)} %`,
    `${decimal(cpuPerSubmission(f), 2)} ms`,
    f.variant === 'service' ? decimal(f.statementsPerSubmission ?? 0, 1) : '1',
    `${integer(f.verified.stored)} = ${integer(f.verified.answered)} + ${f.verified.cutOff}`,
    megabytes(f.peakRssBytes),
  ]);

  const body = [
    table(
      [
        'server',
        'submissions/s',
        'vs bare',
        'p50 latency',
        'p99 latency',
        'p99 vs bare',
        'server CPU (of one core)',
        'CPU per submission',
        'database statements per submission',
        'rows stored = answered + cut off',
        'peak RSS',
      ],
      rows,
    ),
    '',
    `Target: the service reaches at least ${THROUGHPUT_TARGET}× the bare throughput with p99 under ${P99_TARGET_MS} ms — ${yesNo(target.met)}` +
      (target.shortfall ? `: ${target.shortfall}.` : '.'),
    '',
    '**Method.** Each server runs in its own Node process on a fresh MariaDB database; autocannon runs in the bench process ' +
      `over loopback with ${CONNECTIONS} connections, no pipelining, ${warmupSeconds} s of warm-up (not counted) and then ` +
      `${durationSeconds} s measured. Every request is a complete, valid form (two children) with a new email address.`,
    '',
    '- *The service*: the real app (`createServices` + `startServer`, as `src/server.ts` runs it) with `NODE_ENV=production`, ' +
      `\`FORM_RATE_LIMIT_PER_IP\` and \`FORM_RATE_LIMIT_PER_EMAIL\` raised to ${RATE_LIMIT}, email confirmation on (the default) ` +
      'and request logging at `info` to stdout (discarded). The CSRF cookie and token come from one `GET /request` and are sent ' +
      'with every POST. Each submission is one transaction: it looks for an open request of the address, stores the request, ' +
      'its children and an audit event, queues the confirmation email, and counts the submission against the two rate limits ' +
      '(last, so that the counter row of the one client address is locked only for the commit); then the thank-you page is rendered.',
    '- *Bare*: `node:http`, the body parsed with `URLSearchParams`, one `INSERT` into `requests` through a mysql2 pool of the same size ' +
      'as the service\'s knex pool (10), a fixed short answer. No validation, CSRF, rate limit, transaction or template.',
    '- *Checks* (the run stops without figures if one fails): no errors, timeouts or non-2xx answers; every answered email has ' +
      'exactly one row; the only rows without a counted answer are requests in flight when autocannon stopped (it closes its ' +
      `connections without waiting for them), at most one per connection. Throughput counts answered requests only.`,
    ...causesSection(service, bare, needed),
    '- Latency is autocannon\'s, in whole milliseconds. *Server CPU* is the server process\'s CPU time during the measured run ' +
      'over its length (above 100 % when garbage collection and libuv threads add to the main thread); *CPU per submission* ' +
      'divides it by the submissions answered. *Database statements* are the knex query events of the service process during the ' +
      'measured run (BEGIN and COMMIT included) over the submissions stored. The machine has 2 cores: server and load generator ' +
      'use about one each, and MariaDB shares them.',
  ].join('\n');

  return {
    title: 'Intake: form submissions on MariaDB',
    body,
    targets: [target],
    peakMemory: [
      { label: 'intake: the service under load', rssBytes: service.peakRssBytes },
      { label: 'intake: bare baseline under load', rssBytes: bare.peakRssBytes },
    ],
  };
}

/**
 * Where the service's CPU goes per submission, by cause, from the profiled run, and what that
 * leaves of the gap: on one core, a server can answer at most 1000 / (CPU ms per submission) a second.
 */
function causesSection(service: VariantFigures, bare: VariantFigures, needed: number): string[] {
  if (!service.profile) return [];
  const { causes, submissions, seconds } = service.profile;
  const total = causes.reduce((sum, c) => sum + c.ms, 0);
  const perSubmission = (ms: number) => ms / submissions;
  const budget = 1000 / needed;
  const measured = (service.cpuShare * 1000) / service.requestsPerSecond;
  const bareCpu = (bare.cpuShare * 1000) / bare.requestsPerSecond;
  const rows = causes.map((c) => [c.cause, `${decimal(perSubmission(c.ms), 3)} ms`, `${decimal((c.ms / total) * 100, 1)} %`]);
  rows.push(['**all**', `**${decimal(perSubmission(total), 3)} ms**`, '100 %']);
  const databaseMs = causes.filter((c) => c.cause.startsWith('database')).reduce((sum, c) => sum + c.ms, 0);
  const writesMs = causes.find((c) => c.cause === CAUSES.databaseWrites)?.ms ?? 0;
  const gcMs = causes.find((c) => c.cause === CAUSES.gc)?.ms ?? 0;
  return [
    '',
    `**Where the service's CPU goes**, per submission, from a further ${decimal(seconds, 0)} s of the same load with the V8 CPU profiler ` +
      `on in the service process (node:inspector; ${integer(submissions)} submissions; the profiler itself slows the process, so these ` +
      'add up to a little more than the measured CPU per submission). Each sample counts for the nearest package or folder of the ' +
      'service on its stack, so a socket write counts for the database driver that made it.',
    '',
    table(['cause', 'CPU per submission', 'share'], rows),
    '',
    `**What remains of the gap.** The service answers from one Node thread, which the load keeps busy (${decimal(service.cpuShare * 100, 0)} % ` +
      `of a core, garbage collection included), so its throughput is about 1000 / its CPU per submission. ${THROUGHPUT_TARGET}× the ` +
      `baseline is ${decimal(needed)} submissions/s, a budget of ${decimal(budget, 2)} ms of CPU per submission; the service spends ` +
      `${decimal(measured, 2)} ms (the baseline ${decimal(bareCpu, 2)} ms for its one INSERT). ` +
      `The database path alone takes ${decimal(perSubmission(databaseMs), 2)} ms for ${decimal(service.statementsPerSubmission ?? 0, 1)} ` +
      `statements, ${decimal(perSubmission(writesMs), 2)} ms of it the socket writes of the statements themselves (one system call each ` +
      'over loopback, in which the kernel also delivers the packet to MariaDB): each statement a submission needs (BEGIN, the ' +
      'open-request check, the request, its children and their read back, the audit event, the confirmation email, the rate-limit ' +
      'counters, COMMIT) costs its round trip. ' +
      `Garbage collection takes ${decimal(perSubmission(gcMs), 2)} ms: the service runs with the Node flags of \`npm start\` ` +
      `(${START_NODE_FLAGS.map((f) => `\`${f}\``).join(' ') || 'none'}), and \`--optimize-for-size\` collects more often to keep the ` +
      'service\'s memory flat (see the memory sections below)' +
      (perSubmission(databaseMs) > budget ? '; without any garbage collection the database path alone would still be over the budget. ' : '. ') +
      'The rest is spread over HTTP and Express, the two templates, validation and logging, none of ' +
      'them large alone; closing the gap would take fewer statements per submission than the checks need, or a server without ' +
      'Express and knex, not one change.',
    '',
  ];
}

export const intakeScenario: BenchScenario = { id: 'intake', run };
