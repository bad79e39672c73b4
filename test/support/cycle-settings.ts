// The provisioning cycle's settings for tests that build a cycle (or a preview) by hand: the
// recorded site's Parent role, no sync command, a long lock, retries an hour apart at most.
import { parseConfig } from '../../src/config';
import type { CycleSettings } from '../../src/provisioning/provisioning-cycle';
import { TEST_AUTH_TABLE } from './databases';

export const TEST_CYCLE_SETTINGS: Readonly<CycleSettings> = Object.freeze({
  parentRoleId: 9,
  extraContextIds: [],
  syncCommand: undefined,
  passwordEmailCommand: undefined,
  commandTimeoutMs: 10_000,
  lockTtlMs: 60_000,
  syncWaitWarnMs: 3_600_000,
  retryBaseMs: 60_000,
  retryMaxMs: 3_600_000,
});

/**
 * The service's configuration for a test that wires createServices to the Moodle double: the test
 * database's auth table, the double's address and web service token, the recorded Parent role,
 * no retries, and staff told at one address.
 */
export function configForDouble(moodle: { url: string; tokens: { ws: string } }, extra: Record<string, string> = {}) {
  return parseConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'silent',
    DATABASE_URL: 'sqlite::memory:',
    AUTH_TABLE: TEST_AUTH_TABLE,
    MOODLE_URL: moodle.url,
    MOODLE_TOKEN: moodle.tokens.ws,
    MOODLE_PARENT_ROLE_ID: String(TEST_CYCLE_SETTINGS.parentRoleId),
    MOODLE_RETRIES: '0',
    STAFF_NOTIFY_EMAILS: 'office@example-school.org',
    ...extra,
  });
}
