// Builds the Moodle client from the configuration, or nothing when Moodle is not configured.
import type { Config } from '../config';
import { MoodleClient, type MoodleCallListener, type MoodleLogger } from './moodle-client';

export function createMoodleClient(
  moodle: Readonly<Config['moodle']>,
  options: { logger?: MoodleLogger; onCall?: MoodleCallListener; fetch?: typeof fetch } = {},
): MoodleClient | undefined {
  if (!moodle.url || !moodle.token) return undefined;
  return new MoodleClient({
    url: moodle.url,
    token: moodle.token,
    timeoutMs: moodle.timeoutMs,
    retries: moodle.retries,
    batchSize: moodle.batchSize,
    concurrency: moodle.concurrency,
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.onCall ? { onCall: options.onCall } : {}),
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
}
