// The one place that reads the environment: parses it once with a schema, reports every
// problem by variable name, and returns a frozen, typed configuration.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import dotenv from 'dotenv';
import cron from 'node-cron';
import { z } from 'zod';
import { ConfigError } from './errors';

const DEFAULT_SQLITE_FILE = 'data/moodle-parent-provisioning.sqlite';

const booleanWord = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'].includes(v), {
    message: 'must be true or false',
  })
  .transform((v) => ['true', '1', 'yes', 'on'].includes(v));

const positiveInt = (max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, { message: 'must be a whole number' })
    .transform(Number)
    .refine((n) => n >= 1 && n <= max, { message: `must be between 1 and ${max}` });

const optionalText = z
  .string()
  .trim()
  .optional()
  .transform((v) => (v === undefined || v === '' ? undefined : v));

const commaList = z
  .string()
  .optional()
  .transform((v) =>
    (v ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
  );

const sqlIdentifier = z
  .string()
  .trim()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, {
    message: 'must be a table name of letters, digits and underscores (at most 64 characters)',
  });

const httpUrl = z
  .string()
  .trim()
  .refine(
    (v) => {
      try {
        const u = new URL(v);
        return u.protocol === 'http:' || u.protocol === 'https:';
      } catch {
        return false;
      }
    },
    { message: 'must be a full http:// or https:// address' },
  )
  .transform((v) => v.replace(/\/+$/, ''));

const emailAddress = z.string().trim().email({ message: 'must be an email address' });

const environmentSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  HOST: z.string().trim().min(1).default('127.0.0.1'),
  PORT: z
    .string()
    .trim()
    .regex(/^\d+$/, { message: 'must be a port number' })
    .transform(Number)
    .refine((n) => n >= 0 && n <= 65535, { message: 'must be a port number from 0 to 65535' })
    .default(3000),
  BASE_URL: httpUrl.optional(),
  DATABASE_URL: optionalText,
  AUTH_TABLE: sqlIdentifier.default('moodle_auth_users'),
  SESSION_SECRET: optionalText.refine((v) => v === undefined || v.length >= 32, {
    message: 'must be at least 32 characters long (use a long random string)',
  }),
  SCHOOL_NAME: z.string().trim().min(1).max(200).default('Our school'),
  // How parents reach the school office: shown on the parents' pages and in every email when set.
  SCHOOL_CONTACT_EMAIL: optionalText.refine((v) => v === undefined || emailAddress.safeParse(v).success, {
    message: 'must be an email address, such as office@example-school.org',
  }),
  SCHOOL_CONTACT_PHONE: optionalText.refine((v) => v === undefined || (/^\+?[0-9][0-9 ()./-]{4,30}$/.test(v) && v.replace(/\D/g, '').length >= 5), {
    message: 'must be a telephone number of digits, spaces and + ( ) - . only, such as 01632 960123',
  }),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  SHOW_ERROR_DETAILS: booleanWord.default(false),
  METRICS_TOKEN: optionalText.refine((v) => v === undefined || v.length >= 16, {
    message: 'must be at least 16 characters long (use a long random string)',
  }),

  MOODLE_URL: httpUrl.optional(),
  MOODLE_TOKEN: optionalText,
  MOODLE_PARENT_ROLE_ID: positiveInt().optional(),
  MOODLE_EXTRA_CONTEXT_IDS: commaList.refine((ids) => ids.every((id) => /^\d+$/.test(id) && Number(id) > 0), {
    message: 'must be a comma-separated list of Moodle context ids (whole numbers)',
  }),
  MOODLE_TIMEOUT_MS: positiveInt(600_000).default(15_000),
  MOODLE_RETRIES: z
    .string()
    .trim()
    .regex(/^\d+$/, { message: 'must be a whole number' })
    .transform(Number)
    .refine((n) => n <= 10, { message: 'must be between 0 and 10' })
    .default(2),
  MOODLE_BATCH_SIZE: positiveInt(1000).default(100),
  MOODLE_CONCURRENCY: positiveInt(8).default(2),
  MOODLE_SYNC_COMMAND: optionalText,
  MOODLE_PASSWORD_EMAIL_COMMAND: optionalText,
  MOODLE_COMMAND_TIMEOUT_MS: positiveInt(3_600_000).default(300_000),

  TRUST_PROXY: z
    .string()
    .trim()
    .regex(/^(true|false|\d+|loopback|linklocal|uniquelocal|[0-9a-fA-F:.\/, ]+)$/, {
      message: 'must be false, true, a number of proxies, loopback, or a comma-separated list of proxy addresses',
    })
    .default('false'),
  MAX_CHILDREN: positiveInt(20).default(6),
  REQUIRE_EMAIL_VERIFICATION: booleanWord.default(true),
  VERIFICATION_TTL_HOURS: positiveInt(24 * 14).default(48),
  PRIVACY_NOTICE_URL: httpUrl.optional(),
  // A parents' evening puts dozens of parents on the school's Wi-Fi, behind one address, within
  // the hour: the default lets them all through (the trade-off is in .env.example).
  FORM_RATE_LIMIT_PER_IP: positiveInt(100_000).default(100),
  FORM_RATE_LIMIT_PER_EMAIL: positiveInt(100_000).default(3),
  FORM_EMBED_ORIGINS: commaList.refine(
    (list) =>
      list.every((o) => {
        try {
          const u = new URL(o);
          return (u.protocol === 'https:' || u.protocol === 'http:') && u.origin === o.replace(/\/+$/, '');
        } catch {
          return false;
        }
      }),
    { message: 'must be a comma-separated list of origins such as https://www.example-school.org (no paths)' },
  ),

  // The school's guardian records (the MIS contact export): off, suggest matches to staff, or
  // approve full matches automatically; how old the records may be; which pupil id Moodle holds.
  GUARDIAN_MATCH: z.string().trim().toLowerCase().pipe(z.enum(['off', 'suggest', 'auto'], { message: 'must be off, suggest or auto' })).default('suggest'),
  GUARDIAN_RECORDS_MAX_AGE_DAYS: positiveInt(365).default(7),
  GUARDIAN_PUPIL_ID: z
    .string()
    .trim()
    .toLowerCase()
    .pipe(z.enum(['admission_number', 'upn'], { message: 'must be admission_number or upn (the pupil identifier Moodle keeps as idnumber)' }))
    .default('admission_number'),

  CYCLE_SCHEDULE: z.string().trim().min(1).default('*/15 * * * *'),
  CYCLE_LOCK_TTL_SECONDS: positiveInt(3600).default(300),
  SYNC_WAIT_WARN_MINUTES: positiveInt(7 * 24 * 60).default(120),
  RETRY_BASE_SECONDS: positiveInt(86_400).default(300),
  RETRY_MAX_SECONDS: positiveInt(7 * 86_400).default(86_400),

  // The reconcile run (the Moodle check): daily at 02:30 by default, after the MIS sync of the night.
  RECONCILE_SCHEDULE: z.string().trim().min(1).default('30 2 * * *'),
  PUPIL_LEFT_GRACE_DAYS: z
    .string()
    .trim()
    .toLowerCase()
    .refine((v) => v === 'off' || (/^\d+$/.test(v) && Number(v) <= 3650), { message: 'must be a number of days from 0 to 3650, or off' })
    .default('30'),
  RECONCILE_REASSERT: booleanWord.default(true),

  STAFF_SESSION_IDLE_MINUTES: positiveInt(24 * 60).default(30),
  STAFF_SESSION_MAX_HOURS: positiveInt(7 * 24).default(12),
  RETENTION_DAYS: positiveInt(3650).default(90),
  SUBMITTER_DETAILS_DAYS: positiveInt(3650).default(30),

  SMTP_URL: optionalText,
  MAIL_FROM: z.string().trim().min(3).default('Moodle Parent Provisioning <no-reply@localhost>'),
  STAFF_NOTIFY_EMAILS: commaList.refine((list) => list.every((e) => emailAddress.safeParse(e).success), {
    message: 'must be a comma-separated list of email addresses',
  }),

  // The old WordPress plugin's database, while a school moves from it (tvs-migrate, doctor).
  TVS_MIGRATE_FROM: optionalText,
  TVS_MIGRATE_PREFIX: z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9_]{0,40}$/, { message: 'must be letters, digits and underscores, like wp_' })
    .default('wp_'),
});

/** Every environment variable the service reads (kept in step with .env.example by a test). */
export const ENVIRONMENT_VARIABLES: readonly string[] = Object.keys(environmentSchema.shape);

export type DatabaseConfig =
  | { client: 'mysql'; url: string; display: string }
  | { client: 'sqlite'; filename: string; display: string };

function parseDatabaseUrl(raw: string | undefined, cwd: string): DatabaseConfig | string {
  if (raw === undefined) {
    const filename = path.resolve(cwd, DEFAULT_SQLITE_FILE);
    return { client: 'sqlite', filename, display: `sqlite:${DEFAULT_SQLITE_FILE}` };
  }
  if (raw.startsWith('sqlite:')) {
    const file = raw.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (file === '') return 'must name a file after sqlite:, for example sqlite:data/service.sqlite';
    if (file === ':memory:') return { client: 'sqlite', filename: ':memory:', display: raw };
    return { client: 'sqlite', filename: path.resolve(cwd, file), display: raw };
  }
  if (raw.startsWith('mysql://') || raw.startsWith('mariadb://')) {
    const mysql = parseMysqlUrl(raw);
    return typeof mysql === 'string' ? mysql : { client: 'mysql', ...mysql };
  }
  return 'must start with mysql:// (MySQL or MariaDB) or sqlite: (an embedded file)';
}

/**
 * A mysql:// (or mariadb://) address naming a database, with how to show it: the password is
 * never shown ("mysql://user:***@host:3306/db"). Returns a problem in words when it is not one.
 */
export function parseMysqlUrl(raw: string): { url: string; display: string } | string {
  if (!raw.startsWith('mysql://') && !raw.startsWith('mariadb://')) return 'must start with mysql:// (MySQL or MariaDB)';
  let url: URL;
  try {
    url = new URL(raw.replace(/^mariadb:/, 'mysql:'));
  } catch {
    return 'is not a valid address; expected mysql://user:password@host:3306/database';
  }
  if (url.pathname.length <= 1) return 'must name the database, as in mysql://user:password@host:3306/database';
  const display = `mysql://${url.username ? `${decodeURIComponent(url.username)}:***@` : ''}${url.host}${url.pathname}`;
  return { url: url.toString(), display };
}

export interface Config {
  env: 'development' | 'production' | 'test';
  host: string;
  port: number;
  baseUrl: string;
  database: DatabaseConfig;
  authTable: string;
  sessionSecret: string;
  /** True when the session secret was generated for this run (development only). */
  sessionSecretGenerated: boolean;
  schoolName: string;
  /** The school office's address and number for parents; each shown only when set. */
  schoolContact: { email: string | undefined; phone: string | undefined };
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** Stack traces on error pages and in API answers: a developer's switch, off whatever NODE_ENV is. */
  showErrorDetails: boolean;
  /** Bearer token for /metrics; undefined means /metrics answers 404. */
  metricsToken: string | undefined;
  dataDir: string;
  /** Express's "trust proxy" setting, for running behind the school's reverse proxy. */
  trustProxy: boolean | number | string;
  intake: {
    maxChildren: number;
    requireEmailVerification: boolean;
    verificationTtlMs: number;
    privacyNoticeUrl: string | undefined;
    rateLimitPerIpPerHour: number;
    rateLimitPerEmailPerDay: number;
    embedOrigins: string[];
  };
  guardianRecords: {
    /** off: records are kept but not used; suggest: matches shown to staff; auto: full matches approved. */
    match: 'off' | 'suggest' | 'auto';
    /** Records older than this are never used for an automatic approval or the "matches" tag. */
    maxAgeDays: number;
    /** Which pupil identifier of the records is Moodle's idnumber. */
    pupilIdField: 'admission_number' | 'upn';
  };
  cycle: {
    /** A cron expression, or undefined when scheduled cycles are off. */
    schedule: string | undefined;
    lockTtlMs: number;
    syncWaitWarnMs: number;
    retryBaseMs: number;
    retryMaxMs: number;
  };
  reconcile: {
    /** A cron expression, or undefined when scheduled reconcile runs are off. */
    schedule: string | undefined;
    /** Days a pupil's account may stay suspended before the link ends; null: only report (off). */
    pupilLeftGraceDays: number | null;
    /** Re-assert every active link's Parent role; false: report only. */
    reassert: boolean;
  };
  moodle: {
    url: string | undefined;
    token: string | undefined;
    parentRoleId: number | undefined;
    extraContextIds: number[];
    timeoutMs: number;
    retries: number;
    batchSize: number;
    /** How many batch calls the cycle and the Moodle check send to Moodle at once. */
    concurrency: number;
    syncCommand: string | undefined;
    passwordEmailCommand: string | undefined;
    commandTimeoutMs: number;
  };
  staff: {
    /** A staff session ends after this long without a request. */
    sessionIdleMs: number;
    /** …and in any case this long after sign-in. */
    sessionMaxMs: number;
  };
  privacy: {
    /** Denied, bogus and duplicate requests are erased this many days after the decision. */
    retentionDays: number;
    /** The address and browser a request was sent from are erased this many days after it was sent. */
    submitterDetailsDays: number;
  };
  /** The old WordPress plugin's database, set while a school moves from it; doctor then runs `tvs-migrate check`. */
  tvsMigration: {
    from: { url: string; display: string } | undefined;
    /** The WordPress table prefix (wp_ by default). */
    prefix: string;
  };
  mail: {
    smtpUrl: string | undefined;
    from: string;
    staffNotify: string[];
    outboxDir: string;
  };
}

export interface LoadOptions {
  /** Where relative paths (the SQLite file, data/) are resolved from. */
  cwd?: string;
}

/** Parses an environment object. Throws ConfigError naming every variable that is wrong. */
export function parseConfig(env: Record<string, string | undefined>, options: LoadOptions = {}): Readonly<Config> {
  const cwd = options.cwd ?? process.cwd();
  // An empty variable means "not set": a blank line in .env must not turn into a value.
  const cleaned: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) {
    if (value !== undefined && value.trim() !== '') cleaned[key] = value;
  }
  const result = environmentSchema.safeParse(cleaned);
  const problems: string[] = [];
  if (!result.success) {
    for (const issue of result.error.issues) {
      const name = issue.path.join('.') || '(environment)';
      problems.push(`${name} ${issue.message}`);
    }
    throw new ConfigError(problems);
  }
  const e = result.data;
  const database = parseDatabaseUrl(e.DATABASE_URL, cwd);
  if (typeof database === 'string') problems.push(`DATABASE_URL ${database}`);

  let sessionSecret = e.SESSION_SECRET;
  let sessionSecretGenerated = false;
  if (sessionSecret === undefined) {
    if (e.NODE_ENV === 'production') {
      problems.push('SESSION_SECRET is required when NODE_ENV=production (at least 32 random characters)');
    } else {
      // Development and tests: a fresh secret per run; sessions simply do not survive a restart.
      sessionSecret = cryptoRandom();
      sessionSecretGenerated = true;
    }
  }
  if (e.MOODLE_URL !== undefined && e.MOODLE_TOKEN === undefined) {
    problems.push('MOODLE_TOKEN is required when MOODLE_URL is set (the web service token for the service user)');
  }
  const schedule = e.CYCLE_SCHEDULE.toLowerCase() === 'off' ? undefined : e.CYCLE_SCHEDULE;
  if (schedule !== undefined && !cron.validate(schedule)) {
    problems.push('CYCLE_SCHEDULE must be a cron expression such as */15 * * * * (every 15 minutes), or off');
  }
  const reconcileSchedule = e.RECONCILE_SCHEDULE.toLowerCase() === 'off' ? undefined : e.RECONCILE_SCHEDULE;
  if (reconcileSchedule !== undefined && !cron.validate(reconcileSchedule)) {
    problems.push('RECONCILE_SCHEDULE must be a cron expression such as 30 2 * * * (every day at 02:30), or off');
  }
  if (e.RETRY_MAX_SECONDS < e.RETRY_BASE_SECONDS) problems.push('RETRY_MAX_SECONDS must not be smaller than RETRY_BASE_SECONDS');
  const tvsMigrateFrom = e.TVS_MIGRATE_FROM === undefined ? undefined : parseMysqlUrl(e.TVS_MIGRATE_FROM);
  if (typeof tvsMigrateFrom === 'string') problems.push(`TVS_MIGRATE_FROM ${tvsMigrateFrom}`);
  if (problems.length > 0) throw new ConfigError(problems);

  const baseUrl = e.BASE_URL ?? `http://${e.HOST === '0.0.0.0' || e.HOST === '::' ? 'localhost' : e.HOST}:${e.PORT}`;
  const dataDir = path.resolve(cwd, 'data');
  const config: Config = {
    env: e.NODE_ENV,
    host: e.HOST,
    port: e.PORT,
    baseUrl,
    database: database as DatabaseConfig,
    authTable: e.AUTH_TABLE,
    sessionSecret: sessionSecret as string,
    sessionSecretGenerated,
    schoolName: e.SCHOOL_NAME,
    schoolContact: { email: e.SCHOOL_CONTACT_EMAIL, phone: e.SCHOOL_CONTACT_PHONE },
    logLevel: e.LOG_LEVEL,
    showErrorDetails: e.SHOW_ERROR_DETAILS,
    metricsToken: e.METRICS_TOKEN,
    dataDir,
    trustProxy: parseTrustProxy(e.TRUST_PROXY),
    intake: {
      maxChildren: e.MAX_CHILDREN,
      requireEmailVerification: e.REQUIRE_EMAIL_VERIFICATION,
      verificationTtlMs: e.VERIFICATION_TTL_HOURS * 3_600_000,
      privacyNoticeUrl: e.PRIVACY_NOTICE_URL,
      rateLimitPerIpPerHour: e.FORM_RATE_LIMIT_PER_IP,
      rateLimitPerEmailPerDay: e.FORM_RATE_LIMIT_PER_EMAIL,
      embedOrigins: e.FORM_EMBED_ORIGINS.map((o) => new URL(o).origin),
    },
    guardianRecords: {
      match: e.GUARDIAN_MATCH,
      maxAgeDays: e.GUARDIAN_RECORDS_MAX_AGE_DAYS,
      pupilIdField: e.GUARDIAN_PUPIL_ID,
    },
    cycle: {
      schedule,
      lockTtlMs: e.CYCLE_LOCK_TTL_SECONDS * 1000,
      syncWaitWarnMs: e.SYNC_WAIT_WARN_MINUTES * 60_000,
      retryBaseMs: e.RETRY_BASE_SECONDS * 1000,
      retryMaxMs: e.RETRY_MAX_SECONDS * 1000,
    },
    reconcile: {
      schedule: reconcileSchedule,
      pupilLeftGraceDays: e.PUPIL_LEFT_GRACE_DAYS === 'off' ? null : Number(e.PUPIL_LEFT_GRACE_DAYS),
      reassert: e.RECONCILE_REASSERT,
    },
    moodle: {
      url: e.MOODLE_URL,
      token: e.MOODLE_TOKEN,
      parentRoleId: e.MOODLE_PARENT_ROLE_ID,
      extraContextIds: e.MOODLE_EXTRA_CONTEXT_IDS.map(Number),
      timeoutMs: e.MOODLE_TIMEOUT_MS,
      retries: e.MOODLE_RETRIES,
      batchSize: e.MOODLE_BATCH_SIZE,
      concurrency: e.MOODLE_CONCURRENCY,
      syncCommand: e.MOODLE_SYNC_COMMAND,
      passwordEmailCommand: e.MOODLE_PASSWORD_EMAIL_COMMAND,
      commandTimeoutMs: e.MOODLE_COMMAND_TIMEOUT_MS,
    },
    staff: {
      sessionIdleMs: e.STAFF_SESSION_IDLE_MINUTES * 60_000,
      sessionMaxMs: e.STAFF_SESSION_MAX_HOURS * 3_600_000,
    },
    privacy: {
      retentionDays: e.RETENTION_DAYS,
      submitterDetailsDays: e.SUBMITTER_DETAILS_DAYS,
    },
    tvsMigration: { from: typeof tvsMigrateFrom === 'string' ? undefined : tvsMigrateFrom, prefix: e.TVS_MIGRATE_PREFIX },
    mail: {
      smtpUrl: e.SMTP_URL,
      from: e.MAIL_FROM,
      staffNotify: e.STAFF_NOTIFY_EMAILS,
      outboxDir: path.join(dataDir, 'outbox'),
    },
  };
  return deepFreeze(config);
}

/** Reads process.env, with a .env file in the working directory filling in what is not set. */
export function loadConfig(options: LoadOptions = {}): Readonly<Config> {
  const cwd = options.cwd ?? process.cwd();
  const envFile = path.join(cwd, '.env');
  const fromFile = fs.existsSync(envFile) ? dotenv.parse(fs.readFileSync(envFile)) : {};
  return parseConfig({ ...fromFile, ...process.env }, { cwd });
}

/** The configuration as staff may see it: secrets masked. */
export function describeConfig(config: Readonly<Config>): Array<{ name: string; value: string }> {
  const mask = (v: string | undefined) => (v === undefined ? '(not set)' : '(set, hidden)');
  const show = (v: string | number | undefined) => (v === undefined ? '(not set)' : String(v));
  return [
    { name: 'NODE_ENV', value: config.env },
    { name: 'BASE_URL', value: config.baseUrl },
    { name: 'DATABASE_URL', value: config.database.display },
    { name: 'AUTH_TABLE', value: config.authTable },
    { name: 'SESSION_SECRET', value: config.sessionSecretGenerated ? '(generated for this run)' : '(set, hidden)' },
    { name: 'SCHOOL_NAME', value: config.schoolName },
    { name: 'SCHOOL_CONTACT_EMAIL', value: show(config.schoolContact.email) },
    { name: 'SCHOOL_CONTACT_PHONE', value: show(config.schoolContact.phone) },
    { name: 'SHOW_ERROR_DETAILS', value: String(config.showErrorDetails) },
    { name: 'METRICS_TOKEN', value: config.metricsToken === undefined ? '(not set: /metrics is off)' : '(set, hidden)' },
    { name: 'MOODLE_URL', value: show(config.moodle.url) },
    { name: 'MOODLE_TOKEN', value: mask(config.moodle.token) },
    { name: 'MOODLE_PARENT_ROLE_ID', value: show(config.moodle.parentRoleId) },
    { name: 'MOODLE_EXTRA_CONTEXT_IDS', value: config.moodle.extraContextIds.join(', ') || '(none)' },
    { name: 'MOODLE_TIMEOUT_MS', value: show(config.moodle.timeoutMs) },
    { name: 'MOODLE_RETRIES', value: show(config.moodle.retries) },
    { name: 'MOODLE_BATCH_SIZE', value: show(config.moodle.batchSize) },
    { name: 'MOODLE_CONCURRENCY', value: show(config.moodle.concurrency) },
    // The commands are operator-set, but they may embed host names or keys: show only whether set.
    { name: 'MOODLE_SYNC_COMMAND', value: mask(config.moodle.syncCommand) },
    { name: 'MOODLE_PASSWORD_EMAIL_COMMAND', value: mask(config.moodle.passwordEmailCommand) },
    { name: 'TRUST_PROXY', value: String(config.trustProxy) },
    { name: 'MAX_CHILDREN', value: show(config.intake.maxChildren) },
    { name: 'REQUIRE_EMAIL_VERIFICATION', value: String(config.intake.requireEmailVerification) },
    { name: 'VERIFICATION_TTL_HOURS', value: show(config.intake.verificationTtlMs / 3_600_000) },
    { name: 'PRIVACY_NOTICE_URL', value: config.intake.privacyNoticeUrl ?? '(not set: the form links to this service’s own short notice at /privacy)' },
    { name: 'FORM_RATE_LIMIT_PER_IP', value: `${config.intake.rateLimitPerIpPerHour} per hour` },
    { name: 'FORM_RATE_LIMIT_PER_EMAIL', value: `${config.intake.rateLimitPerEmailPerDay} per day` },
    { name: 'FORM_EMBED_ORIGINS', value: config.intake.embedOrigins.join(', ') || '(none: the form cannot be framed by another site)' },
    { name: 'GUARDIAN_MATCH', value: config.guardianRecords.match },
    { name: 'GUARDIAN_RECORDS_MAX_AGE_DAYS', value: String(config.guardianRecords.maxAgeDays) },
    { name: 'GUARDIAN_PUPIL_ID', value: config.guardianRecords.pupilIdField },
    { name: 'CYCLE_SCHEDULE', value: config.cycle.schedule ?? 'off' },
    { name: 'CYCLE_LOCK_TTL_SECONDS', value: show(config.cycle.lockTtlMs / 1000) },
    { name: 'SYNC_WAIT_WARN_MINUTES', value: show(config.cycle.syncWaitWarnMs / 60_000) },
    { name: 'RETRY_BASE_SECONDS', value: show(config.cycle.retryBaseMs / 1000) },
    { name: 'RETRY_MAX_SECONDS', value: show(config.cycle.retryMaxMs / 1000) },
    { name: 'RECONCILE_SCHEDULE', value: config.reconcile.schedule ?? 'off' },
    { name: 'PUPIL_LEFT_GRACE_DAYS', value: config.reconcile.pupilLeftGraceDays === null ? 'off (report only)' : String(config.reconcile.pupilLeftGraceDays) },
    { name: 'RECONCILE_REASSERT', value: String(config.reconcile.reassert) },
    { name: 'STAFF_SESSION_IDLE_MINUTES', value: show(config.staff.sessionIdleMs / 60_000) },
    { name: 'STAFF_SESSION_MAX_HOURS', value: show(config.staff.sessionMaxMs / 3_600_000) },
    { name: 'RETENTION_DAYS', value: show(config.privacy.retentionDays) },
    { name: 'SUBMITTER_DETAILS_DAYS', value: show(config.privacy.submitterDetailsDays) },
    { name: 'SMTP_URL', value: config.mail.smtpUrl === undefined ? '(not set: mail goes to data/outbox)' : redactUrl(config.mail.smtpUrl) },
    { name: 'MAIL_FROM', value: config.mail.from },
    { name: 'STAFF_NOTIFY_EMAILS', value: config.mail.staffNotify.join(', ') || '(none)' },
    { name: 'TVS_MIGRATE_FROM', value: config.tvsMigration.from?.display ?? '(not set)' },
    { name: 'TVS_MIGRATE_PREFIX', value: config.tvsMigration.prefix },
  ];
}

function parseTrustProxy(value: string): boolean | number | string {
  const v = value.trim().toLowerCase();
  if (v === 'true') return true;
  if (v === 'false') return false;
  if (/^\d+$/.test(v)) return Number(v);
  return value.trim();
}

function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(set, hidden)';
  }
}

function cryptoRandom(): string {
  return randomBytes(32).toString('base64url');
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}
