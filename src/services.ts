// The one wiring point: builds every service once from the configuration. Tests build the
// same graph with a test configuration (and their own database, Moodle or mail transport).
import type { Config } from './config';
import { createDatabase, type Database } from './db/database';
import { migrateToLatest, migrationStatus } from './db/migrator';
import { ImportService } from './import/import.service';
import { IntakeService } from './intake/intake.service';
import { createLogger, type Logger } from './logger';
import { ServiceMetrics } from './metrics';
import { createMailMessages } from './mail/mail-messages';
import { registerMailNotifications } from './mail/mail-notifications';
import { MailOutbox } from './mail/mail-outbox';
import { createMailTransport, type MailTransport } from './mail/mail-transport';
import { createMoodleClient } from './moodle/create-moodle-client';
import { runDoctor } from './diagnostics/doctor';
import type { MoodleClient } from './moodle/moodle-client';
import { CyclePreviewer } from './provisioning/cycle-preview';
import { CycleScheduler } from './provisioning/cycle-scheduler';
import { ProvisioningCycle, type CycleSummary } from './provisioning/provisioning-cycle';
import { Reconciliation, type ReconcileSummary } from './reconcile/reconciliation';
import { RequestLifecycle } from './requests/request-lifecycle';
import { RequestRepository } from './requests/request-repository';
import { RequestSearchRepository } from './review/request-search.repository';
import { StaffAccounts } from './staff-auth/staff-accounts.service';
import { SignInThrottle } from './staff-auth/staff-sign-in-throttle';
import { StatusCountsCache } from './review/status-counts';
import { PrivacyService } from './privacy/privacy.service';
import { GuardianRecordsService } from './guardian-records/guardian-records.service';
import { TvsMigration } from './tvs-migration/tvs-migration.service';
import { tvsMigrationDoctorCheck } from './tvs-migration/tvs-migration-doctor';
import { createCsrf } from './web/csrf';
import { createSessionMiddleware, sessionCookieName } from './web/sessions';
import { createRateLimit } from './web/rate-limit';

export interface ServiceOptions {
  /** Use this database instead of opening the configured one (tests). */
  db?: Database;
  logger?: Logger;
  now?: () => number;
  /** Use this Moodle client (tests); null means "Moodle not configured". */
  moodle?: MoodleClient | null;
  /** The configured Moodle client's HTTP round trip (the benchmark times the waits for Moodle around it). */
  moodleFetch?: typeof fetch;
  mailTransport?: MailTransport;
}

export function createServices(config: Readonly<Config>, options: ServiceOptions = {}) {
  const logger = options.logger ?? createLogger(config);
  const db = options.db ?? createDatabase(config.database, { logger });
  const clock = options.now ? { now: options.now } : {};
  const requestRepository = new RequestRepository(config.authTable);
  const lifecycle = new RequestLifecycle(db, requestRepository, clock);

  const moodleCalls = { total: 0 };
  const moodle =
    options.moodle === null
      ? undefined
      : (options.moodle ??
        createMoodleClient(config.moodle, {
          logger,
          onCall: (wsfunction, outcome, errorcode) => {
            moodleCalls.total += 1;
            metrics.recordMoodleCall(wsfunction, outcome, errorcode);
          },
          ...(options.moodleFetch ? { fetch: options.moodleFetch } : {}),
        }));

  const mailTransport = options.mailTransport ?? createMailTransport(config.mail, logger);
  const mailMessages = createMailMessages(config);
  const mailOutbox = new MailOutbox(db, mailTransport, logger, clock);
  const metrics = new ServiceMetrics({ db, mailOutbox, logger });
  registerMailNotifications(lifecycle, mailOutbox, mailMessages, {
    requireEmailVerification: config.intake.requireEmailVerification,
    staffNotify: config.mail.staffNotify,
    logger,
    ...(config.moodle.url ? { moodleLoginUrl: `${config.moodle.url}/login/index.php` } : {}),
  });

  /**
   * Staff hear about a cycle only when something needs their attention. A cycle that stopped
   * (a revoked token, Moodle down: checked every cycle, even on a quiet day) is mailed once per
   * problem, not every few minutes while it lasts.
   */
  const notifyStaffOfCycle = async (summary: CycleSummary) => {
    const c = summary.counts;
    const failed = c.childrenFailed + c.unassignFailed + summary.outcomes.failed;
    if (config.mail.staffNotify.length === 0 || (summary.state !== 'failed' && failed === 0 && c.waitedTooLong === 0)) return;
    // Only the check's own plain messages go into the mail; any other failure is read in the report.
    const stopped = summary.state === 'failed' && summary.moodleCheck?.ok === false && summary.error !== null;
    if (stopped) {
      const [, previous] = await cycle.repository.recent(2);
      const storedError = summary.help ? `${summary.error}\n${summary.help}` : summary.error;
      if (previous && previous.id < summary.cycleId && previous.state === 'failed' && previous.error === storedError) return;
    }
    const message = mailMessages.staffCycleSummaryMessage(
      {
        cycleId: summary.cycleId,
        provisioned: c.provisioned,
        waiting: c.waitedTooLong,
        failed: summary.state === 'failed' ? Math.max(failed, 1) : failed,
        problem: stopped ? { message: summary.error as string, help: summary.help } : null,
      },
      [...config.mail.staffNotify],
    );
    await mailOutbox.enqueue(db, message, { kind: 'staff_cycle_summary' });
  };

  const cycle = new ProvisioningCycle({
    db,
    lifecycle,
    moodle,
    logger,
    ...clock,
    moodleCallCount: () => moodleCalls.total,
    onFinished: async (summary) => {
      await metrics.recordCycle(summary, () => cycle.repository.get(summary.cycleId));
      await notifyStaffOfCycle(summary);
      // A request confirmed while Moodle was down is matched against the guardian records now.
      await guardianRecords.afterCycle().catch((error: unknown) => logger.error({ err: error }, 'could not retry guardian records matches'));
    },
    settings: {
      parentRoleId: config.moodle.parentRoleId,
      extraContextIds: config.moodle.extraContextIds,
      syncCommand: config.moodle.syncCommand,
      passwordEmailCommand: config.moodle.passwordEmailCommand,
      commandTimeoutMs: config.moodle.commandTimeoutMs,
      lockTtlMs: config.cycle.lockTtlMs,
      syncWaitWarnMs: config.cycle.syncWaitWarnMs,
      retryBaseMs: config.cycle.retryBaseMs,
      retryMaxMs: config.cycle.retryMaxMs,
    },
  });
  const scheduler = new CycleScheduler(cycle, config.cycle.schedule, logger);
  const cyclePreview = new CyclePreviewer({
    db,
    requests: requestRepository,
    moodle,
    settings: { parentRoleId: config.moodle.parentRoleId, syncCommand: config.moodle.syncCommand, syncWaitWarnMs: config.cycle.syncWaitWarnMs },
    ...clock,
  });

  /**
   * Staff hear from a reconcile run when it ended links or found something to decide; a run that
   * stopped on the same problem as the one before is not mailed again.
   */
  const notifyStaffOfReconcile = async (summary: ReconcileSummary) => {
    const reported = summary.findings.filter((f) => f.action === 'reported');
    // A pupil suspended within the grace period needs nobody yet (the check ends the link itself when
    // it runs out), so that alone mails nobody day after day; with PUPIL_LEFT_GRACE_DAYS=off staff decide.
    const needsSomeone = reported.filter((f) => f.kind !== 'pupil_suspended' || config.reconcile.pupilLeftGraceDays === null);
    if (config.mail.staffNotify.length === 0) return;
    if (summary.state !== 'failed' && summary.counts.linksEnded === 0 && needsSomeone.length === 0) return;
    if (summary.state === 'failed') {
      const [, previous] = await reconcile.repository.recent(2);
      const storedError = summary.help ? `${summary.error}\n${summary.help}` : summary.error;
      if (previous && previous.state === 'failed' && previous.error === storedError) return;
    }
    const message = mailMessages.staffReconcileSummaryMessage(
      {
        runId: summary.runId,
        linksEnded: summary.counts.linksEnded,
        parentsRevoked: summary.counts.parentsRevoked,
        reported: reported.map((f) => ({ requestId: f.requestId, message: f.message })),
        problem: summary.state === 'failed' ? { message: summary.error ?? 'The Moodle check stopped.', help: summary.help } : null,
      },
      [...config.mail.staffNotify],
    );
    await mailOutbox.enqueue(db, message, { kind: 'staff_reconcile_summary' });
  };

  const reconcile = new Reconciliation({
    db,
    authTable: config.authTable,
    lifecycle,
    moodle,
    logger,
    ...clock,
    moodleCallCount: () => moodleCalls.total,
    onFinished: async (summary) => {
      metrics.recordReconcile(summary, (options.now ?? Date.now)());
      await notifyStaffOfReconcile(summary);
    },
    settings: {
      parentRoleId: config.moodle.parentRoleId,
      lockTtlMs: config.cycle.lockTtlMs,
      pupilLeftGraceDays: config.reconcile.pupilLeftGraceDays,
      reassert: config.reconcile.reassert,
      // A scheduled check waits this long for a cycle to finish rather than being skipped until tomorrow.
      scheduledLockWaitMs: 30 * 60_000,
    },
  });
  const reconcileScheduler = new CycleScheduler(reconcile, config.reconcile.schedule, logger, 'reconcile');

  const intakeRateLimits = {
    perIp: createRateLimit(db, { keyPrefix: 'form_ip', points: config.intake.rateLimitPerIpPerHour, durationSeconds: 3600 }),
    perEmail: createRateLimit(db, { keyPrefix: 'form_email', points: config.intake.rateLimitPerEmailPerDay, durationSeconds: 86_400 }),
    resend: createRateLimit(db, { keyPrefix: 'form_resend', points: 3, durationSeconds: 3600 }),
  };
  const intake = new IntakeService(config, db, lifecycle, requestRepository, intakeRateLimits, clock);
  const csrf = createCsrf(config);
  const staffAccounts = new StaffAccounts(db, new SignInThrottle(db), { sessionSecret: config.sessionSecret, ...clock });

  const privacy = new PrivacyService({
    db,
    lifecycle,
    mailOutbox,
    retentionDays: config.privacy.retentionDays,
    submitterDetailsDays: config.privacy.submitterDetailsDays,
    requests: requestRepository,
    logger,
    ...clock,
  });
  lifecycle.addListener(privacy.erasureListener);
  const guardianRecords = new GuardianRecordsService({
    db,
    lifecycle,
    requests: requestRepository,
    moodle,
    logger,
    settings: config.guardianRecords,
    ...clock,
  });
  lifecycle.addListener(guardianRecords.confirmationListener);
  const tvsMigration = new TvsMigration({ db, lifecycle, requestRepository, moodle, logger, ...clock });
  const requestSearch = new RequestSearchRepository();
  const statusCounts = new StatusCountsCache(() => requestSearch.countByStatus(db, ''));
  const imports = new ImportService({
    db,
    lifecycle,
    requestRepository,
    moodle,
    logger,
    maxChildren: config.intake.maxChildren,
  });
  lifecycle.addListener(statusCounts.listener);

  return {
    config,
    logger,
    db,
    requestRepository,
    lifecycle,
    moodle,
    mailTransport,
    mailMessages,
    mailOutbox,
    cycle,
    cyclePreview,
    reconcile,
    metrics,
    scheduler,
    reconcileScheduler,
    intake,
    csrf,
    staffAccounts,
    staffSession: createSessionMiddleware(config, db, logger),
    sessionCookieName: sessionCookieName(config),
    statusCounts,
    imports,
    privacy,
    guardianRecords,
    tvsMigration,
    migrate: () => migrateToLatest(db, { authTable: config.authTable }),
    migrationStatus: () => migrationStatus(db, { authTable: config.authTable }),
    doctor: async (runSync = false) => {
      const checks = await runDoctor({ config, db, moodle, verifyMail: () => mailTransport.verify() }, { runSync });
      // While a school moves from the WordPress plugin: would re-pointing auth_db suspend anyone?
      const from = config.tvsMigration.from;
      if (from) checks.push(await tvsMigrationDoctorCheck(tvsMigration, from, config.tvsMigration.prefix));
      return checks;
    },
    /** Starts the background work of a running server: the mail sender and the cycle schedule. */
    startBackground(): void {
      mailOutbox.startSender(10_000);
      scheduler.start();
      reconcileScheduler.start();
      privacy.startRetention();
      staffAccounts.announceSetup(logger, config.baseUrl).catch((error) => logger.error({ err: error }, 'could not check for staff accounts'));
    },
    async close(): Promise<void> {
      await scheduler.stop().catch(() => undefined);
      // A scheduled check may be waiting for the lock: told to stop, it gives up within a second.
      await reconcile.requestStop().catch(() => undefined);
      await reconcileScheduler.stop().catch(() => undefined);
      await privacy.stop().catch(() => undefined);
      await guardianRecords.settled();
      await mailOutbox.stop().catch(() => undefined);
      mailTransport.close();
      if (!options.db) await db.destroy();
    },
  };
}

export type Services = ReturnType<typeof createServices>;
