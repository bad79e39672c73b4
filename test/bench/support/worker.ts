// The service under test runs in its own process: the load generator and the Moodle double stay
// off its event loop (and on the other core), and its peak RSS is its own. Parent and worker
// talk by IPC: the parent calls named methods, the worker answers.
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { megabytes } from './format';

type Message =
  | { type: 'ready' }
  | { type: 'result'; id: number; ok: true; value: unknown }
  | { type: 'result'; id: number; ok: false; error: string };

type Call = { type: 'call'; id: number; method: string; params: unknown };

export interface WorkerHandle {
  pid: number;
  call<T>(method: string, params?: unknown): Promise<T>;
  /** Asks the worker to close its resources and exit; kills it if it does not. */
  stop(): Promise<void>;
}

const STDERR_TAIL = 4000;

/**
 * The Node flags `npm start` runs the service with (package.json's start script, between "node" and
 * the script), so a process under test runs as the service does in production.
 */
export const START_NODE_FLAGS: readonly string[] = (() => {
  const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { scripts?: { start?: string } };
  const [node, ...rest] = (pkg.scripts?.start ?? '').trim().split(/\s+/);
  if (node !== 'node') throw new Error(`package.json's start script does not start with "node": ${pkg.scripts?.start}`);
  const script = rest.findIndex((word) => !word.startsWith('--'));
  return rest.slice(0, script === -1 ? rest.length : script);
})();

export interface StartWorkerOptions {
  env?: Record<string, string>;
  /** Node flags of the process: START_NODE_FLAGS for the service, none for a baseline. */
  nodeFlags?: readonly string[];
  /** Show the worker's stdout (the service's log lines). Otherwise it goes to /dev/null: logging still costs what it costs. */
  verbose?: boolean;
}

/** Starts a TypeScript worker module (under test/bench/workers) and waits until it says ready. */
export async function startWorker(entry: string, options: StartWorkerOptions = {}): Promise<WorkerHandle> {
  const child: ChildProcess = fork(path.resolve(__dirname, '..', 'workers', entry), [], {
    // BENCH_CPU_PROF_DIR: a V8 CPU profile of every worker, to find where a miss comes from.
    execArgv: ['--import', 'tsx', ...(options.nodeFlags ?? []), ...(process.env.BENCH_CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF_DIR}`] : [])],
    env: { ...process.env, ...options.env },
    stdio: ['ignore', options.verbose ? 'inherit' : 'ignore', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString('utf8')).slice(-STDERR_TAIL);
    if (options.verbose) process.stderr.write(chunk);
  });

  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let exited: Error | undefined;
  const failAll = (error: Error) => {
    exited = error;
    for (const p of pending.values()) p.reject(error);
    pending.clear();
  };

  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (raw: unknown) => {
      const message = raw as Message;
      if (message.type === 'ready') resolve();
      else if (message.type === 'result') {
        const p = pending.get(message.id);
        if (!p) return;
        pending.delete(message.id);
        if (message.ok) p.resolve(message.value);
        else p.reject(new Error(message.error));
      }
    });
    child.on('exit', (code, signal) => {
      const error = new Error(`worker ${entry} exited (${signal ?? `code ${code}`})${stderr ? `:\n${stderr}` : ''}`);
      reject(error);
      failAll(error);
    });
  });
  await ready;

  return {
    pid: child.pid ?? -1,
    call<T>(method: string, params?: unknown): Promise<T> {
      if (exited) return Promise.reject(exited);
      const id = nextId++;
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        const call: Call = { type: 'call', id, method, params };
        child.send(call);
      });
    },
    async stop() {
      if (exited || child.exitCode !== null) return;
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.send({ type: 'call', id: 0, method: 'exit', params: null } satisfies Call);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    },
  };
}

type Handlers = Record<string, (params: never) => unknown>;

/**
 * The worker side: answers calls with the handlers. 'exit' runs the optional close function
 * and ends the process. Call this once the worker's setup is done: it announces "ready".
 */
export function serveWorker(handlers: Handlers, close?: () => Promise<void>): void {
  const send = (message: Message) => process.send?.(message);
  process.on('message', (raw: unknown) => {
    const call = raw as Call;
    if (call.type !== 'call') return;
    if (call.method === 'exit') {
      void (close ? close() : Promise.resolve()).finally(() => process.exit(0));
      return;
    }
    const handler = handlers[call.method];
    if (!handler) {
      send({ type: 'result', id: call.id, ok: false, error: `unknown method ${call.method}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(call.params as never))
      .then(
        (value) => send({ type: 'result', id: call.id, ok: true, value }),
        (error: unknown) => send({ type: 'result', id: call.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
      );
  });
  // The parent going away must not leave a server running.
  process.on('disconnect', () => process.exit(1));
  send({ type: 'ready' });
}

/** Peak resident set size of this process so far, from the kernel (ru_maxrss). */
export function peakRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

/**
 * Of runs of the same work, each in a fresh process, the one whose peak RSS is the median (the
 * middle one of three): from run to run the same work peaks up to 10–20 MiB apart, as V8 collects
 * at different moments, and one run alone would make that noise a figure.
 */
export function medianByPeakRss<T extends { peakRssBytes: number }>(runs: T[]): T {
  const sorted = [...runs].sort((a, b) => a.peakRssBytes - b.peakRssBytes);
  return sorted[Math.floor((sorted.length - 1) / 2)] as T;
}

/** "124 MiB – 128 MiB" over the runs; empty for a single run. */
export function peakRssRange(runs: Array<{ peakRssBytes: number }>): string {
  const values = runs.map((r) => r.peakRssBytes);
  return runs.length < 2 ? '' : `${megabytes(Math.min(...values))} – ${megabytes(Math.max(...values))}`;
}

/**
 * serveWorker for a worker that runs an HTTP server: it also answers where the server listens,
 * its peak memory and its CPU time, and on exit closes the server before `close`.
 */
export function serveHttpWorker(server: Server, handlers: Handlers, close: () => Promise<void>): void {
  serveWorker(
    {
      address: () => ({ port: (server.address() as AddressInfo).port }),
      memory: () => ({ peakRssBytes: peakRssBytes() }),
      cpu: () => process.cpuUsage(),
      ...handlers,
    },
    async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await close();
    },
  );
}

/** Runs a worker's setup; a failure ends the process with the error on stderr, which the parent reports. */
export function runWorker(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
