// Where a server process's CPU went, by cause, from a V8 CPU profile (node:inspector's
// Profiler.stop): every sample is put under the nearest frame of its stack that belongs to a
// package or to the service's own code (Node's own frames, such as a socket write, count for
// whoever called them), and that frame's package or folder names the cause.

export interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string }; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
}

export interface CpuCause {
  cause: string;
  ms: number;
}

/** Packages of the database path: query building (knex), the driver and its helpers. */
const DATABASE_PACKAGES = new Set(['knex', 'mysql2', 'sql-escaper', 'tarn', 'lodash', 'denque', 'lru.min', 'named-placeholders', 'iconv-lite', 'long', 'generate-function', 'seq-queue']);
const LOGGING_PACKAGES = new Set(['pino', '@pinojs/redact', 'pino-std-serializers', 'sonic-boom', 'pino-http', 'quick-format-unescaped', 'safe-stable-stringify', 'thread-stream']);

export const CAUSES = {
  database: 'database: knex and mysql2 (building each statement, reading its answer)',
  databaseWrites: 'database: sending each statement (the socket write, in which the kernel also delivers it to MariaDB over loopback)',
  http: 'HTTP and Express (parsing, routing, body, cookies, CSRF, security headers, sending)',
  node: 'Node itself outside any package (HTTP parser, sockets, timers, promises)',
  gc: 'garbage collection',
  logging: 'request logging',
  validation: 'validating the form',
  page: 'rendering the thank-you page (ejs)',
  mail: 'building the confirmation email (ejs and the message)',
  service: 'the service’s own logic (intake, lifecycle, repository, rate limits)',
  other: 'other',
} as const;

/** V8's names for the native calls that write to a socket. */
const SOCKET_WRITES = new Set(['writeBuffer', 'writev', 'writeUtf8String', 'writeLatin1String', 'writeAsciiString']);

function packageOf(url: string): string | undefined {
  return /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1];
}

function causeOf(frames: Array<{ functionName: string; url: string }>): string | undefined {
  const leaf = frames[0];
  if (leaf?.functionName === '(idle)') return undefined;
  if (leaf?.functionName === '(garbage collector)') return CAUSES.gc;
  if (leaf?.functionName === '(program)') return CAUSES.other;
  const inMail = frames.some((f) => f.url.includes('/src/mail/'));
  for (const { url } of frames) {
    if (!url) continue;
    const pkg = packageOf(url);
    if (pkg === 'ejs') return inMail ? CAUSES.mail : CAUSES.page;
    if (pkg && DATABASE_PACKAGES.has(pkg)) return SOCKET_WRITES.has(leaf?.functionName ?? '') ? CAUSES.databaseWrites : CAUSES.database;
    if (pkg && LOGGING_PACKAGES.has(pkg)) return CAUSES.logging;
    if (pkg === 'zod') return CAUSES.validation;
    if (pkg) return CAUSES.http;
    const own = /\/src\/(.+)$/.exec(url)?.[1];
    if (own) {
      if (own.startsWith('intake/request-form')) return CAUSES.validation;
      if (own.startsWith('web/request-logging') || own.startsWith('logger')) return CAUSES.logging;
      if (own.startsWith('mail/')) return CAUSES.mail;
      return CAUSES.service;
    }
  }
  return CAUSES.node;
}

/** CPU time by cause, most first; idle time is left out. */
export function cpuByCause(profile: CpuProfile): CpuCause[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const child of n.children ?? []) parent.set(child, n.id);
  const causeOfNode = new Map<number, string | undefined>();
  const totals = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    if (!causeOfNode.has(id)) {
      const frames: Array<{ functionName: string; url: string }> = [];
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
        const node = byId.get(at);
        if (node) frames.push(node.callFrame);
      }
      causeOfNode.set(id, causeOf(frames));
    }
    const cause = causeOfNode.get(id);
    if (cause !== undefined) totals.set(cause, (totals.get(cause) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  });
  return [...totals].map(([cause, ms]) => ({ cause, ms })).sort((a, b) => b.ms - a.ms);
}
