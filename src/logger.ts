// Structured JSON logs (pino). Secrets are redacted by path wherever they might appear;
// personal data stays out of log lines by habit: log ids, not names or addresses.
import pino, { type Logger } from 'pino';
import type { Config } from './config';

export type { Logger };

export const REDACT_PATHS = [
  'token',
  '*.token',
  'wstoken',
  '*.wstoken',
  'password',
  '*.password',
  'secret',
  '*.secret',
  'authorization',
  '*.authorization',
  'cookie',
  '*.cookie',
  'headers.cookie',
  'headers.authorization',
  'req.headers.cookie',
  'req.headers.authorization',
];

export function createLogger(config: Pick<Config, 'logLevel' | 'env'>, destination?: pino.DestinationStream): Logger {
  const level = config.env === 'test' && !process.env.LOG_LEVEL ? 'silent' : config.logLevel;
  return pino(
    {
      level,
      base: { service: 'moodle-parent-provisioning' },
      redact: { paths: REDACT_PATHS, censor: '[hidden]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
