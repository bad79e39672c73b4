// `guardians import <file.csv>`: for a nightly job that picks up the MIS's scheduled contact
// export. The file replaces the current guardian records in one transaction (or nothing changes);
// every waiting request is then matched again. Exit 0 only when the records were imported.
// `guardians status`: the current records and what they were matched to.
import fs from 'node:fs';
import path from 'node:path';
import type { Actor } from '../requests/request-lifecycle';
import type { Services } from '../services';
import { readGuardianFile } from './guardian-records-csv';

export const GUARDIANS_USAGE = `  guardians import <file.csv>     replace the school's guardian records with this MIS contact
                                  export (problems listed; exit 0 only when imported), then
                                  match every waiting request against them
  guardians status                when the current records were imported, and how many`;

export interface GuardianCommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

const PROBLEMS_SHOWN = 20;

/** Returns the exit code: 0 imported, 1 refused (nothing changed), 2 wrong usage. */
export async function runGuardianCommand(services: Pick<Services, 'guardianRecords' | 'config'>, args: string[], io: GuardianCommandIo, actor: Actor): Promise<number> {
  const [action, ...rest] = args;
  const guardians = services.guardianRecords;
  if (action === 'status' && rest.length === 0) {
    const current = await guardians.currentImport();
    if (!current) {
      io.out('No guardian records have been imported.');
      return 0;
    }
    const stale = guardians.isStale(current.importedAt) ? ` (older than ${services.config.guardianRecords.maxAgeDays} days: not used for automatic approval)` : '';
    io.out(`Guardian records imported ${new Date(current.importedAt ?? 0).toISOString()} by ${current.createdBy} from ${current.source}${stale}.`);
    io.out(`${current.keptCount} records: ${current.pupilCount} pupils, ${current.contactCount} contact addresses. Matching: ${services.config.guardianRecords.match}.`);
    return 0;
  }
  if (action !== 'import' || rest.length !== 1) {
    io.err(`Usage:\n${GUARDIANS_USAGE}`);
    return 2;
  }
  const file = rest[0] as string;
  let buffer: Buffer;
  try {
    buffer = fs.readFileSync(file);
  } catch (error) {
    io.err(`Could not read ${file}: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'there is no such file' : (error as Error).message}. Nothing was imported.`);
    return 1;
  }
  const read = readGuardianFile(buffer, services.config.guardianRecords.pupilIdField);
  if (!read.ok) {
    io.err(`${read.problem} Nothing was imported.`);
    return 1;
  }
  for (const p of read.problems.slice(0, PROBLEMS_SHOWN)) io.err(`line ${p.line}: ${p.message} (left out)`);
  if (read.problems.length > PROBLEMS_SHOWN) io.err(`… and ${read.problems.length - PROBLEMS_SHOWN} more rows left out.`);
  const outcome = await guardians.importSnapshot(read, { source: 'cli', fileName: path.basename(file), actor });
  if (!outcome.ok) {
    io.err(outcome.problem);
    return 1;
  }
  const i = outcome.import;
  const m = outcome.matched;
  io.out(
    `Imported ${i.keptCount} guardian records (${i.pupilCount} pupils, ${i.contactCount} contact addresses) from ${i.rowCount} rows; ` +
      `${read.problems.length} left out with problems, ${read.withoutEmail} without an email address, ${read.repeated} repeated. They replace the previous records.`,
  );
  io.out(
    `Waiting requests matched again: ${m.checked} checked, ${m.full} match fully, ${m.partial} partly, ${m.none} not at all` +
      `${m.errors > 0 ? `, ${m.errors} not checked (Moodle could not be asked; tried again after the next cycle)` : ''}${m.approved > 0 ? `; ${m.approved} approved automatically` : ''}.`,
  );
  return 0;
}
