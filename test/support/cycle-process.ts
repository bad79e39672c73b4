// Runs the real command line (`cycle`) as a child process against a test database and the Moodle
// test double, for the tests that crash it, race two of them, or stop a server with a signal.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestDatabase } from './databases';
import { TEST_AUTH_TABLE } from './databases';
import type { MoodleDouble } from './moodle-double';

export const ROOT = path.resolve(__dirname, '..', '..');
/** tsx's loader by path: `--import tsx` would be resolved from the child's working directory. */
export const TSX_LOADER = path.join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs');
export const PARENT_ROLE = 9;

export function databaseUrl(t: TestDatabase): string {
  return t.config.client === 'sqlite' ? `sqlite:${t.config.filename}` : t.config.url;
}

/** The environment of a service process pointed at this database and this Moodle. */
export function serviceEnv(t: TestDatabase, moodle: MoodleDouble, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? os.tmpdir(),
    NODE_ENV: 'test',
    LOG_LEVEL: 'warn',
    DATABASE_URL: databaseUrl(t),
    AUTH_TABLE: TEST_AUTH_TABLE,
    MOODLE_URL: moodle.url,
    MOODLE_TOKEN: moodle.tokens.ws,
    MOODLE_PARENT_ROLE_ID: String(PARENT_ROLE),
    MOODLE_RETRIES: '0',
    MOODLE_TIMEOUT_MS: '30000',
    CYCLE_SCHEDULE: 'off',
    ...extra,
  };
}

export interface ServiceProcess {
  child: ChildProcess;
  pid: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): { stdout: string; stderr: string };
}

/** Starts `src/<entry>` with tsx in an empty working directory (so no .env of the project is read). */
export function startServiceProcess(entry: 'cli.ts' | 'server.ts', args: string[], env: Record<string, string>): ServiceProcess {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-proc-'));
  const child = spawn(process.execPath, ['--import', TSX_LOADER, path.join(ROOT, 'src', entry), ...args], {
    cwd,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      fs.rmSync(cwd, { recursive: true, force: true });
      resolve({ code, signal });
    });
  });
  if (child.pid === undefined) throw new Error(`could not start ${entry}`);
  return { child, pid: child.pid, exited, output: () => ({ stdout, stderr }) };
}

export function startCliCycle(env: Record<string, string>): ServiceProcess {
  return startServiceProcess('cli.ts', ['cycle'], env);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Waits until check() gives a value, checking every intervalMs; fails with `what` after limitMs. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, limitMs = 30_000, intervalMs = 25): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`Gave up waiting for ${what}`);
    await sleep(intervalMs);
  }
}
