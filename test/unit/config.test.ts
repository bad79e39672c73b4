// The configuration: defaults with nothing set, every variable checked, problems named.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import fs from 'node:fs';
import { describeConfig, ENVIRONMENT_VARIABLES, parseConfig } from '../../src/config';
import { ConfigError } from '../../src/errors';

function problems(env: Record<string, string>): string[] {
  try {
    parseConfig(env, { cwd: '/srv/app' });
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems;
  }
  assert.fail('expected a ConfigError');
}

describe('configuration', () => {
  it('needs nothing set: embedded SQLite under data/, port 3000, a generated session secret', () => {
    const config = parseConfig({}, { cwd: '/srv/app' });
    assert.deepEqual(config.database, { client: 'sqlite', filename: path.resolve('/srv/app/data/moodle-parent-provisioning.sqlite'), display: 'sqlite:data/moodle-parent-provisioning.sqlite' });
    assert.equal(config.port, 3000);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.baseUrl, 'http://127.0.0.1:3000');
    assert.equal(config.authTable, 'moodle_auth_users');
    assert.equal(config.sessionSecretGenerated, true);
    assert.ok(config.sessionSecret.length >= 32);
    assert.equal(config.mail.outboxDir, path.resolve('/srv/app/data/outbox'));
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.moodle), 'frozen');
  });

  it('reads MySQL and SQLite database URLs', () => {
    const mysql = parseConfig({ DATABASE_URL: 'mysql://svc:s3cret@db.school.local:3306/parents' });
    assert.equal(mysql.database.client, 'mysql');
    assert.equal(mysql.database.display, 'mysql://svc:***@db.school.local:3306/parents', 'password hidden in the display form');
    const sqlite = parseConfig({ DATABASE_URL: 'sqlite:var/x.sqlite' }, { cwd: '/srv/app' });
    assert.deepEqual(sqlite.database, { client: 'sqlite', filename: '/srv/app/var/x.sqlite', display: 'sqlite:var/x.sqlite' });
  });

  it('names each wrong variable and says what is wrong', () => {
    const found = problems({ DATABASE_URL: 'postgres://x/y', PORT: 'eighty', AUTH_TABLE: 'users; drop', MOODLE_PARENT_ROLE_ID: '0', MOODLE_URL: 'moodle.school', STAFF_NOTIFY_EMAILS: 'office@school.org, nope' });
    const text = found.join('\n');
    for (const name of ['PORT', 'AUTH_TABLE', 'MOODLE_PARENT_ROLE_ID', 'MOODLE_URL', 'STAFF_NOTIFY_EMAILS']) assert.match(text, new RegExp(`^${name} `, 'm'), `${name} named`);
    assert.match(text, /MOODLE_URL must be a full http:\/\/ or https:\/\/ address/);
  });

  it('names the database URL when it is not mysql or sqlite', () => {
    assert.deepEqual(problems({ DATABASE_URL: 'postgres://x/y' }), ['DATABASE_URL must start with mysql:// (MySQL or MariaDB) or sqlite: (an embedded file)']);
    assert.match(problems({ DATABASE_URL: 'mysql://root@localhost' })[0]!, /must name the database/);
  });

  it('stops a production start without a session secret, and refuses a short one', () => {
    assert.deepEqual(problems({ NODE_ENV: 'production' }), ['SESSION_SECRET is required when NODE_ENV=production (at least 32 random characters)']);
    assert.match(problems({ SESSION_SECRET: 'short' })[0]!, /^SESSION_SECRET must be at least 32 characters/);
    const ok = parseConfig({ NODE_ENV: 'production', SESSION_SECRET: 'x'.repeat(40) });
    assert.equal(ok.sessionSecretGenerated, false);
  });

  it('reads the Moodle check settings: a daily schedule, 30 days of grace and re-assertion by default; off for each', () => {
    const defaults = parseConfig({});
    assert.deepEqual({ ...defaults.reconcile }, { schedule: '30 2 * * *', pupilLeftGraceDays: 30, reassert: true });
    const changed = parseConfig({ RECONCILE_SCHEDULE: 'off', PUPIL_LEFT_GRACE_DAYS: 'OFF', RECONCILE_REASSERT: 'false' });
    assert.deepEqual({ ...changed.reconcile }, { schedule: undefined, pupilLeftGraceDays: null, reassert: false });
    assert.equal(parseConfig({ PUPIL_LEFT_GRACE_DAYS: '0' }).reconcile.pupilLeftGraceDays, 0);
    assert.deepEqual(problems({ RECONCILE_SCHEDULE: 'daily' }), ['RECONCILE_SCHEDULE must be a cron expression such as 30 2 * * * (every day at 02:30), or off']);
    const found = problems({ PUPIL_LEFT_GRACE_DAYS: 'a month', RECONCILE_REASSERT: 'sometimes' }).join('\n');
    assert.match(found, /^PUPIL_LEFT_GRACE_DAYS must be a number of days from 0 to 3650, or off/m);
    assert.match(found, /^RECONCILE_REASSERT must be true or false/m);
  });

  it('needs a token when a Moodle URL is given', () => {
    assert.deepEqual(problems({ MOODLE_URL: 'https://moodle.school.org' }), ['MOODLE_TOKEN is required when MOODLE_URL is set (the web service token for the service user)']);
    const config = parseConfig({ MOODLE_URL: 'https://moodle.school.org/', MOODLE_TOKEN: 't0k', MOODLE_EXTRA_CONTEXT_IDS: '12, 40' });
    assert.equal(config.moodle.url, 'https://moodle.school.org', 'trailing slash removed');
    assert.deepEqual(config.moodle.extraContextIds, [12, 40]);
  });

  it('reads the form and cycle settings, with off for no schedule', () => {
    const config = parseConfig({ MAX_CHILDREN: '3', REQUIRE_EMAIL_VERIFICATION: 'false', VERIFICATION_TTL_HOURS: '24', FORM_EMBED_ORIGINS: 'https://www.school.org, https://school.org', CYCLE_SCHEDULE: 'off', TRUST_PROXY: '1' });
    assert.equal(config.intake.maxChildren, 3);
    assert.equal(config.intake.requireEmailVerification, false);
    assert.equal(config.intake.verificationTtlMs, 86_400_000);
    assert.deepEqual(config.intake.embedOrigins, ['https://www.school.org', 'https://school.org']);
    assert.equal(config.cycle.schedule, undefined);
    assert.equal(config.trustProxy, 1);
    const defaults = parseConfig({});
    assert.equal(defaults.cycle.schedule, '*/15 * * * *');
    assert.equal(defaults.intake.requireEmailVerification, true);
    assert.equal(defaults.trustProxy, false);
  });

  it('refuses a schedule that is not a cron expression, and origins with paths', () => {
    assert.match(problems({ CYCLE_SCHEDULE: 'every morning' }).join(), /^CYCLE_SCHEDULE must be a cron expression/);
    assert.match(problems({ FORM_EMBED_ORIGINS: 'https://school.org/parents' }).join(), /^FORM_EMBED_ORIGINS must be/);
    assert.match(problems({ REQUIRE_EMAIL_VERIFICATION: 'maybe' }).join(), /^REQUIRE_EMAIL_VERIFICATION must be true or false/);
  });

  it('treats an empty variable as not set', () => {
    const config = parseConfig({ DATABASE_URL: '', PORT: ' ', MOODLE_URL: '' });
    assert.equal(config.database.client, 'sqlite');
    assert.equal(config.port, 3000);
    assert.equal(config.moodle.url, undefined);
  });

  it('never shows a secret in the configuration shown to staff', () => {
    const config = parseConfig({ SESSION_SECRET: 'S'.repeat(40), MOODLE_URL: 'https://m.school', MOODLE_TOKEN: 'tok-secret-123', DATABASE_URL: 'mysql://u:dbpass@h/d', SMTP_URL: 'smtp://mailer:mailpass@smtp.school:587', MOODLE_SYNC_COMMAND: 'ssh -i /keys/k moodle php sync' });
    const shown = JSON.stringify(describeConfig(config));
    for (const secret of ['SSSSSSSS', 'tok-secret-123', 'dbpass', 'mailpass', '/keys/k']) assert.equal(shown.includes(secret), false, `${secret} hidden`);
    assert.ok(shown.includes('smtp.school'));
  });

  it('.env.example lists exactly the variables the service reads, each with a comment, and parses', () => {
    const text = fs.readFileSync(path.resolve(__dirname, '../../.env.example'), 'utf8');
    const lines = text.split('\n');
    const listed = lines.filter((l) => /^[A-Z_]+=/.test(l)).map((l) => l.split('=')[0]!);
    assert.deepEqual([...listed].sort(), [...ENVIRONMENT_VARIABLES].sort());
    for (const name of listed) {
      const i = lines.findIndex((l) => l.startsWith(`${name}=`));
      const above = lines.slice(Math.max(0, i - 4), i).filter((l) => l.startsWith('#'));
      assert.ok(above.length > 0 || /^[A-Z_]+=/.test(lines[i - 1] ?? ''), `${name} has a comment above it (or shares one with the line above)`);
    }
    const values = Object.fromEntries(lines.filter((l) => /^[A-Z_]+=/.test(l)).map((l) => [l.split('=')[0]!, l.slice(l.indexOf('=') + 1)]));
    assert.doesNotThrow(() => parseConfig({ ...values, MOODLE_TOKEN: 'example', SESSION_SECRET: 'x'.repeat(40) }), 'the examples are valid values');
  });
});
