#!/usr/bin/env node
// The command line for school IT: migrations, looking at requests and acting on them through
// the same lifecycle as the dashboard. Exit codes: 0 done, 1 refused or failed, 2 wrong usage.
import os from 'node:os';
import { parseArgs } from 'node:util';
import { loadConfig, type Config } from './config';
import { isIntId, MAX_INT_ID } from './db/columns';
import { AppError, ConfigError, ValidationError } from './errors';
import type { Actor } from './requests/request-lifecycle';
import type { ChildRecord, RequestRecord } from './requests/request-repository';
import { REQUEST_STATUSES, STATUS_LABELS, type RequestStatus } from './requests/request-states';
import { API_KEY_USAGE, runApiKeyCommand } from './intake/api-key-commands';
import { formatDoctor } from './diagnostics/doctor';
import { createServices, type Services } from './services';
import { runStaffCommand, STAFF_USAGE, type StaffCommandIo } from './staff-auth/staff-commands';
import { PRIVACY_USAGE, runPrivacyCommand } from './privacy/privacy-commands';
import { previewCounts, type CyclePreview } from './provisioning/cycle-preview';
import { RECONCILE_USAGE, runReconcileCommand } from './reconcile/reconcile-commands';
import { GUARDIANS_USAGE, runGuardianCommand } from './guardian-records/guardian-commands';
import { runTvsMigrateCommand, TVS_MIGRATE_USAGE } from './tvs-migration/tvs-migrate-commands';

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  readPassword?: StaffCommandIo['readPassword'];
}

const USAGE = `Usage: npm run cli -- <command> [options]

Commands:
  doctor [--run-sync] [--json]    check the database, Moodle, the sync command, mail and the privacy notice
  cycle [--json]                  run one provisioning cycle now and print its summary
  cycle --dry-run [--json]        say what the next cycle will do, asking Moodle only read-only questions
  migrate                         apply pending database migrations
  migrate status                  list applied and pending migrations
  requests list [--status S] [--limit N] [--json]
  requests show <id> [--json]
  requests approve <id> --child <childId>=<moodleUserId|none> [--child …]
                        [--existing-account <moodleUserId>] [--version N]
  requests deny <id> --reason "…" [--version N]
  requests duplicate <id> [--of <otherId>] [--reason "…"] [--version N]
  requests bogus <id> [--reason "…"] [--version N]
  requests revoke <id> [--reason "…"] [--version N]
  requests revoke-child <id> <childId> [--reason "…"] [--version N]
  requests comment <id> "text"
${API_KEY_USAGE}
${STAFF_USAGE}
${PRIVACY_USAGE}
${RECONCILE_USAGE}
${GUARDIANS_USAGE}
${TVS_MIGRATE_USAGE}
  help                            this text

Statuses: ${REQUEST_STATUSES.join(', ')}`;

class UsageError extends Error {}

function positiveInt(value: string | undefined, what: string): number {
  // Ids, versions and counts all sit in INT columns: a larger number could only fail in the database.
  if (value === undefined || !/^\d+$/.test(value) || !isIntId(Number(value))) throw new UsageError(`${what} must be a whole number from 1 to ${MAX_INT_ID} (got ${value ?? 'nothing'}).`);
  return Number(value);
}

function optionalVersion(value: string | undefined): number | undefined {
  return value === undefined ? undefined : positiveInt(value, '--version');
}

function describeRequest(request: RequestRecord, children: ChildRecord[]): string {
  const lines = [
    `Request ${request.id} (${request.status}: ${STATUS_LABELS[request.status]}) version ${request.version}`,
    `  Parent:   ${[request.parentTitle, request.parentFirstName, request.parentLastName].filter(Boolean).join(' ')} <${request.email}>`,
    `  Type:     ${request.requestType}   Source: ${request.source}`,
    `  Created:  ${new Date(request.createdAt).toISOString()}`,
  ];
  if (request.moodleUsername) lines.push(`  Moodle:   ${request.moodleUsername}${request.moodleUserId ? ` (user id ${request.moodleUserId})` : ''}${request.linkExistingAccount ? ' [existing account]' : ''}`);
  if (request.decidedBy) lines.push(`  Decided:  by ${request.decidedBy} at ${new Date(request.decidedAt ?? 0).toISOString()}${request.decisionReason ? `: ${request.decisionReason}` : ''}`);
  if (request.lastError) lines.push(`  Problem:  ${request.lastError}`);
  if (request.parentComment) lines.push(`  Parent's comment: ${request.parentComment}`);
  if (request.staffComment) lines.push(`  Staff comment: ${request.staffComment}`);
  lines.push('  Children:');
  for (const c of children) {
    lines.push(
      `    [${c.id}] ${c.firstName} ${c.lastName}, tutor group ${c.tutorGroup || '-'}${c.pupilIdentifier ? `, pupil id ${c.pupilIdentifier}` : ''}: ${c.linkState}` +
        `${c.moodleUserId ? ` (Moodle user ${c.moodleUserId})` : ''}${c.lastError ? ` – ${c.lastError}` : ''}`,
    );
  }
  return lines.join('\n');
}

async function requestsCommand(services: Services, args: string[], io: CliIo, actor: Actor): Promise<number> {
  const [action, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      status: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean' },
      child: { type: 'string', multiple: true },
      'existing-account': { type: 'string' },
      version: { type: 'string' },
      reason: { type: 'string' },
      of: { type: 'string' },
    },
  });
  const lifecycle = services.lifecycle;
  const version = optionalVersion(values.version);
  // --version, when given, makes every action refuse a request that changed since it was shown.
  const versioned = version !== undefined ? { expectedVersion: version } : {};
  const decision = { reason: values.reason ?? null, ...versioned };
  const print = (request: RequestRecord) => io.out(`Request ${request.id} is now ${request.status} (${STATUS_LABELS[request.status]}).`);

  switch (action) {
    case 'list': {
      let status: RequestStatus | undefined;
      if (values.status !== undefined) {
        if (!(REQUEST_STATUSES as readonly string[]).includes(values.status)) throw new UsageError(`--status must be one of ${REQUEST_STATUSES.join(', ')}.`);
        status = values.status as RequestStatus;
      }
      const limit = values.limit === undefined ? 50 : positiveInt(values.limit, '--limit');
      const requests = await services.requestRepository.list(services.db, { ...(status ? { status } : {}), limit });
      if (values.json) {
        io.out(JSON.stringify(requests, null, 2));
        return 0;
      }
      if (requests.length === 0) {
        io.out('No requests.');
        return 0;
      }
      for (const r of requests) {
        io.out(`${String(r.id).padStart(6)}  ${r.status.padEnd(11)}  ${new Date(r.createdAt).toISOString().slice(0, 16).replace('T', ' ')}  ${r.parentFirstName} ${r.parentLastName} <${r.email}>`);
      }
      return 0;
    }
    case 'show': {
      const id = positiveInt(positionals[0], 'The request id');
      const { request, children } = await lifecycle.get(id);
      io.out(values.json ? JSON.stringify({ request, children }, null, 2) : describeRequest(request, children));
      return 0;
    }
    case 'approve': {
      const id = positiveInt(positionals[0], 'The request id');
      const matches = (values.child ?? []).map((spec) => {
        const m = /^(\d+)=(\d+|none)$/.exec(spec);
        if (!m) throw new UsageError(`--child takes <childId>=<moodleUserId> or <childId>=none (got ${spec}).`);
        return { childId: Number(m[1]), moodleUserId: m[2] === 'none' ? null : Number(m[2]) };
      });
      if (matches.length === 0) throw new UsageError('Give --child <childId>=<moodleUserId> for each child (see "requests show").');
      const existing = values['existing-account'];
      const request = await lifecycle.approveRequest(
        id,
        {
          children: matches,
          ...versioned,
          ...(existing !== undefined ? { existingAccount: { moodleUserId: positiveInt(existing, '--existing-account') } } : {}),
        },
        actor,
      );
      print(request);
      return 0;
    }
    case 'deny': {
      const id = positiveInt(positionals[0], 'The request id');
      print(await lifecycle.denyRequest(id, decision, actor));
      return 0;
    }
    case 'duplicate': {
      const id = positiveInt(positionals[0], 'The request id');
      const of = values.of === undefined ? null : positiveInt(values.of, '--of');
      print(await lifecycle.markDuplicate(id, { ...decision, duplicateOf: of }, actor));
      return 0;
    }
    case 'bogus': {
      const id = positiveInt(positionals[0], 'The request id');
      print(await lifecycle.markBogus(id, decision, actor));
      return 0;
    }
    case 'revoke': {
      const id = positiveInt(positionals[0], 'The request id');
      print(await lifecycle.revokeRequest(id, decision, actor));
      return 0;
    }
    case 'revoke-child': {
      const id = positiveInt(positionals[0], 'The request id');
      const childId = positiveInt(positionals[1], 'The child id');
      print(await lifecycle.revokeChild(id, childId, decision, actor));
      return 0;
    }
    case 'comment': {
      const id = positiveInt(positionals[0], 'The request id');
      const text = positionals.slice(1).join(' ');
      print(await lifecycle.addStaffComment(id, text, actor, version));
      return 0;
    }
    default:
      throw new UsageError(action ? `Unknown requests command "${action}".` : 'Say what to do with requests.');
  }
}

function formatPreview(preview: CyclePreview): string[] {
  const n = previewCounts(preview);
  const lines = [
    'What the next provisioning cycle will do (nothing was changed):',
    `  Parents Moodle's next user sync creates: ${n.parentsToCreate}`,
    `  Links to add: ${n.linksToAdd}${preview.linksToAdd.some((l) => l.afterSync) ? ` (${preview.linksToAdd.filter((l) => l.afterSync).length} once the sync command has created the parent)` : ''}`,
    `  Links to remove: ${n.linksToRemove}`,
    `  Children that will fail (pupil deleted in Moodle): ${n.childrenFailing}`,
    `  Requests still waiting: ${n.requestsWaiting}${n.waitingTooLong > 0 ? ` (${n.waitingTooLong} for too long)` : ''}; with a conflicting Moodle account: ${n.requestsConflicting}`,
  ];
  for (const p of preview.parentsToCreate) lines.push(`  Request ${p.requestId}: Moodle ${p.revived ? 'reactivates' : 'creates'} ${p.username}`);
  for (const l of preview.linksToAdd) lines.push(`  Request ${l.requestId}, child ${l.childId}: link to Moodle pupil ${l.pupilId}${l.afterSync ? ' (after the sync)' : ''}`);
  for (const l of preview.linksToRemove) lines.push(`  Request ${l.requestId}, child ${l.childId}: remove the link${l.inMoodle ? '' : ' (nothing to remove in Moodle)'}`);
  for (const c of preview.childrenFailing) lines.push(`  Request ${c.requestId}, child ${c.childId}: fails, Moodle pupil ${c.pupilId} was deleted`);
  for (const w of preview.requestsWaiting.filter((x) => x.tooLong)) lines.push(`  Request ${w.requestId}: ${w.message}`);
  for (const c of preview.requestsConflicting) lines.push(`  Request ${c.requestId}: ${c.message}`);
  return lines;
}

/** Report entries the cycle command reads at a time. */
const REPORT_PAGE = 500;

async function cycleCommand(services: Services, args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, 'dry-run': { type: 'boolean' } } });
  if (values['dry-run']) {
    const preview = await services.cyclePreview.preview();
    if (values.json) io.out(JSON.stringify(preview, null, 2));
    else if (preview.problem) io.err(`${preview.problem.message}${preview.problem.help ? `\n${preview.problem.help}` : ''}`);
    else for (const line of formatPreview(preview)) io.out(line);
    return preview.problem ? 1 : 0;
  }
  const summary = await services.cycle.run('cli', safeUsername());
  if (values.json) {
    io.out(JSON.stringify({ ...summary, report: await services.cycle.repository.outcomes(summary.cycleId) }, null, 2));
  } else {
    const c = summary.counts;
    io.out(`Cycle ${summary.cycleId}: ${summary.state}`);
    io.out(`  Requests worked on: ${c.requests}; provisioned: ${c.provisioned}; children linked: ${c.childrenLinked}; failed: ${c.childrenFailed}`);
    io.out(`  Waiting for Moodle: ${c.waiting}${c.waitedTooLong ? ` (${c.waitedTooLong} for too long)` : ''}; links removed: ${c.unassigned}; refused (changed meanwhile): ${c.refused}`);
    io.out(`  Moodle calls: ${c.moodleCalls}`);
    // Problems first, read a page at a time: a cycle over thousands of requests is not held whole.
    for (let offset = 0; ; offset += REPORT_PAGE) {
      const page = await services.cycle.repository.outcomes(summary.cycleId, { withMessage: true, offset, limit: REPORT_PAGE });
      for (const r of page) io.out(`  Request ${r.requestId}: ${r.outcome} – ${r.message}`);
      if (page.length < REPORT_PAGE) break;
    }
    if (summary.error) io.err(summary.error + (summary.help ? `\n${summary.help}` : ''));
  }
  return summary.state === 'succeeded' ? 0 : 1;
}

async function doctorCommand(services: Services, args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args, options: { 'run-sync': { type: 'boolean' }, json: { type: 'boolean' } } });
  const checks = await services.doctor(values['run-sync'] ?? false);
  io.out(values.json ? JSON.stringify(checks, null, 2) : formatDoctor(checks));
  return checks.some((c) => !c.ok && !c.skipped) ? 1 : 0;
}

export async function runCli(argv: string[], io: CliIo, options: { config?: Readonly<Config>; services?: Services } = {}): Promise<number> {
  const [command, ...args] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    io.out(USAGE);
    return command === undefined ? 2 : 0;
  }
  let services = options.services;
  try {
    if (!services) {
      const config = options.config ?? loadConfig();
      services = createServices(config);
    }
    const actor: Actor = { type: 'cli', id: safeUsername() };
    if (NEEDS_MIGRATED_DATABASE.has(command)) {
      const notReady = await describeUnmigratedDatabase(services);
      if (notReady !== undefined) {
        io.err(notReady);
        return 1;
      }
    }
    switch (command) {
      case 'migrate': {
        if (args[0] === 'status') {
          const status = await services.migrationStatus();
          io.out(`Applied: ${status.applied.length}`);
          for (const name of status.applied) io.out(`  ✓ ${name}`);
          io.out(`Pending: ${status.pending.length}`);
          for (const name of status.pending) io.out(`  · ${name}`);
          return 0;
        }
        if (args.length > 0) throw new UsageError(`Unknown migrate option "${args[0]}".`);
        const applied = await services.migrate();
        io.out(applied.length === 0 ? 'The database is up to date.' : `Applied ${applied.length} migration(s):\n${applied.map((n) => `  ✓ ${n}`).join('\n')}`);
        return 0;
      }
      case 'requests':
        return await requestsCommand(services, args, io, actor);
      case 'doctor':
        return await doctorCommand(services, args, io);
      case 'cycle':
        return await cycleCommand(services, args, io);
      case 'api-keys':
        return await runApiKeyCommand(services, args, io);
      case 'staff':
        return await runStaffCommand(services, args, io);
      case 'privacy':
        return await runPrivacyCommand(services, args, io);
      case 'reconcile':
        return await runReconcileCommand(services, args, io, safeUsername());
      case 'guardians':
        return await runGuardianCommand(services, args, io, actor);
      case 'tvs-migrate':
        return await runTvsMigrateCommand(services, args, io, actor);
      default:
        throw new UsageError(`Unknown command "${command}".`);
    }
  } catch (error) {
    if (error instanceof UsageError || (error as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || (error as { code?: string }).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      io.err(`${(error as Error).message}\n\n${USAGE}`);
      return 2;
    }
    if (error instanceof ConfigError) {
      io.err(error.message);
      return 1;
    }
    if (error instanceof AppError) {
      io.err(`${error.message}${error instanceof ValidationError && error.fields.length > 0 ? `\n${error.fields.map((f) => `  - ${f.field}: ${f.message}`).join('\n')}` : ''}${error.help && error.help !== error.message ? `\n${error.help}` : ''}`);
      return 1;
    }
    io.err(`Failed: ${(error as Error).message}`);
    return 1;
  } finally {
    if (!options.services) await services?.close().catch(() => undefined);
  }
}

// `migrate` sets the database up and `doctor` reports on it, so only these wait for a migrated one.
const NEEDS_MIGRATED_DATABASE = new Set(['requests', 'cycle', 'api-keys', 'staff', 'privacy', 'reconcile', 'guardians', 'tvs-migrate']);

/**
 * One line when the database lacks migrations, instead of a raw "no such table" later. The CLI does
 * not migrate on its own (the server does, at start): a command run against the wrong DATABASE_URL
 * must not quietly create a schema there.
 */
async function describeUnmigratedDatabase(services: Services): Promise<string | undefined> {
  const { applied, pending } = await services.migrationStatus();
  if (pending.length === 0) return undefined;
  const what =
    applied.length === 0
      ? 'is not set up yet'
      : `is missing ${pending.length} update${pending.length === 1 ? '' : 's'} to its tables`;
  return `The database (${services.config.database.display}) ${what}: run "npm run cli -- migrate" first (starting the service does the same).`;
}

function safeUsername(): string {
  try {
    return os.userInfo().username;
  } catch {
    return 'unknown';
  }
}

if (require.main === module) {
  runCli(process.argv.slice(2), { out: (t) => process.stdout.write(`${t}\n`), err: (t) => process.stderr.write(`${t}\n`) }).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`Failed: ${(error as Error).message}\n`);
      process.exit(1);
    },
  );
}
