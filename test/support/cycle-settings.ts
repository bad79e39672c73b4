// The provisioning cycle's settings for tests that build a cycle (or a preview) by hand: the
// recorded site's Parent role, no sync command, a long lock, retries an hour apart at most.
import type { CycleSettings } from '../../src/provisioning/provisioning-cycle';

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
