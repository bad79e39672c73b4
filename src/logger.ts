// Structured JSON logs (pino). Secrets and addresses are redacted by key wherever they might
// appear, and any email address left in a line (inside an error message, say) is masked on
// the way out: log lines carry ids, never names, addresses or tokens.
import pino, { type Logger } from 'pino';
import type { Config } from './config';

export type { Logger };

/** Keys whose values never reach a log line, at the top level and one or two levels down. */
const SECRET_KEYS = [
  'token',
  'wstoken',
  'verificationToken',
  'password',
  'pass',
  'secret',
  'sessionSecret',
  'apiKey',
  'api_key',
  'authorization',
  'cookie',
  'smtpUrl',
  // Personal data: not secret, but no business of a log file.
  'email',
  'recipient',
];
const SECRET_HEADERS = ['authorization', 'cookie', 'set-cookie', 'x-api-key', 'proxy-authorization'];

export const REDACT_PATHS: string[] = [
  ...SECRET_KEYS.flatMap((key) => [key, `*.${key}`, `*.*.${key}`]),
  ...SECRET_HEADERS.flatMap((header) => [`headers["${header}"]`, `*.headers["${header}"]`]),
];

export const HIDDEN = '[hidden]';
export const EMAIL_MASK = '[email]';

// What an address may be made of: everything the request form's email check lets through (no
// spaces, control characters or <>()[]\,;:" ), so no part of an address the service can
// store is left beside the mask. Halves of surrogate pairs (emoji) count as part of it too.
// A slash is not: it keeps file paths of scoped packages (node_modules/@types/…) readable.
const ADDRESS_CHARACTER = /[^\s\p{C}@<>()[\]\\,;:"/]|[\uD800-\uDFFF]/u;

/**
 * Replaces every email address in a line with a mask. A scan outward from each "@" rather than
 * one regular expression, so a long line cannot make it slow.
 */
export function maskEmailAddresses(line: string): string {
  if (!line.includes('@')) return line;
  let out = '';
  let copiedUpTo = 0;
  let at = line.indexOf('@');
  while (at !== -1) {
    let start = at;
    while (start > copiedUpTo && ADDRESS_CHARACTER.test(line[start - 1] as string)) start -= 1;
    let end = at + 1;
    while (end < line.length && ADDRESS_CHARACTER.test(line[end] as string)) end += 1;
    // A trailing dot ends a sentence, not a domain.
    while (end > at + 1 && line[end - 1] === '.') end -= 1;
    const domain = line.slice(at + 1, end);
    // A dot with something after it: "user@localhost" and "@ 10:00" are not addresses.
    if (start < at && /\.[^.]/.test(domain)) {
      out += line.slice(copiedUpTo, start) + EMAIL_MASK;
      copiedUpTo = end;
    }
    at = line.indexOf('@', Math.max(at + 1, copiedUpTo));
  }
  return out + line.slice(copiedUpTo);
}

export function createLogger(config: Pick<Config, 'logLevel' | 'env'>, destination?: pino.DestinationStream): Logger {
  const level = config.env === 'test' && !process.env.LOG_LEVEL ? 'silent' : config.logLevel;
  return pino(
    {
      level,
      base: { service: 'moodle-parent-provisioning' },
      redact: { paths: REDACT_PATHS, censor: HIDDEN },
      hooks: { streamWrite: maskEmailAddresses },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    // Written asynchronously: a synchronous write per log line held up every request. pino
    // flushes what is buffered when the process exits.
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
