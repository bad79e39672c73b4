// `privacy erase-expired`: erases the denied, bogus and duplicate requests decided more than
// RETENTION_DAYS ago, and the address and browser of requests sent more than
// SUBMITTER_DETAILS_DAYS ago, as the running service does once a day (for a cron job, or to check now).
import { parseArgs } from 'node:util';
import type { Services } from '../services';

export const PRIVACY_USAGE = `  privacy erase-expired [--json]  erase denied, bogus and duplicate requests decided more than
                                  RETENTION_DAYS ago, and the address and browser of requests sent
                                  more than SUBMITTER_DETAILS_DAYS ago (the running service does this daily)`;

export interface PrivacyCommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

/** Exit 0 when everything due was erased, 1 when some were refused (tried again next run), 2 for wrong usage. */
export async function runPrivacyCommand(services: Services, args: string[], io: PrivacyCommandIo): Promise<number> {
  const [action, ...rest] = args;
  if (action !== 'erase-expired') {
    io.err(`${action ? `Unknown privacy command "${action}".` : 'Say what to do.'}\n\nUsage:\n${PRIVACY_USAGE}`);
    return 2;
  }
  const { values } = parseArgs({ args: rest, options: { json: { type: 'boolean' } } });
  const result = await services.privacy.eraseExpired(Date.now());
  if (values.json) {
    io.out(JSON.stringify({ retentionDays: services.config.privacy.retentionDays, submitterDetailsDays: services.config.privacy.submitterDetailsDays, ...result }, null, 2));
  } else {
    const days = services.config.privacy.retentionDays;
    io.out(
      result.erased.length === 0
        ? `No denied, bogus or duplicate request was decided more than ${days} days ago and still holds personal data.`
        : `Erased the personal data of ${result.erased.length} request(s) decided more than ${days} days ago: ${result.erased.join(', ')}.`,
    );
    const detailsDays = services.config.privacy.submitterDetailsDays;
    if (result.submitterDetailsErased > 0) {
      io.out(`Erased the address and browser of ${result.submitterDetailsErased} request(s) sent more than ${detailsDays} days ago.`);
    }
    for (const s of result.skipped) io.err(`Request ${s.requestId} was not erased: ${s.reason}`);
  }
  return result.skipped.length > 0 ? 1 : 0;
}
