// What the cycle and reconcile benchmarks share: the environment of a service process pointed at
// a bench database and the Moodle double, the double's call counts, and a watch over a run that
// reports progress and measures the double's CPU (this process's).
import { randomBytes } from 'node:crypto';
import type { MoodleDouble } from '../../support/moodle-double';
import { BENCH_AUTH_TABLE, type BenchDatabase } from './bench-database';
import { integer } from './format';
import type { BenchContext } from './scenario';

export const PARENT_ROLE_ID = 9;

const FUNCTIONS = { check: 'core_webservice_get_site_info', lookUp: 'core_user_get_users_by_field', assign: 'core_role_assign_roles' } as const;

export interface CallCounts {
  check: number;
  lookUp: number;
  assign: number;
  total: number;
}

export function callCounts(moodle: MoodleDouble): CallCounts {
  return { check: moodle.calls(FUNCTIONS.check), lookUp: moodle.calls(FUNCTIONS.lookUp), assign: moodle.calls(FUNCTIONS.assign), total: moodle.calls() };
}

export function parentRoleAssignments(moodle: MoodleDouble): number {
  return moodle.state.assignments.filter((a) => a.roleid === PARENT_ROLE_ID).length;
}

/** A production configuration on the bench database and the double, with no schedule running. */
export function serviceEnvironment(bench: BenchDatabase, moodle: MoodleDouble): Record<string, string> {
  return {
    NODE_ENV: 'production',
    SESSION_SECRET: randomBytes(32).toString('base64url'),
    DATABASE_URL: bench.url,
    AUTH_TABLE: BENCH_AUTH_TABLE,
    MOODLE_URL: moodle.url,
    MOODLE_TOKEN: moodle.tokens.ws,
    MOODLE_PARENT_ROLE_ID: String(PARENT_ROLE_ID),
    CYCLE_SCHEDULE: 'off',
    RECONCILE_SCHEDULE: 'off',
    LOG_LEVEL: 'info',
  };
}

/** Runs fn while printing the double's call count every 10 s, and measures this process's CPU (the double's work). */
export async function watchDouble<T>(context: BenchContext, label: string, moodle: MoodleDouble, fn: () => Promise<T>): Promise<{ value: T; doubleCpuMs: number }> {
  const timer = setInterval(() => context.log(`${label}: ${integer(moodle.calls())} Moodle calls so far`), 10_000);
  const cpu = process.cpuUsage();
  try {
    const value = await fn();
    const used = process.cpuUsage(cpu);
    return { value, doubleCpuMs: (used.user + used.system) / 1000 };
  } finally {
    clearInterval(timer);
  }
}
