// `doctor`'s check while a school moves from the WordPress plugin (TVS_MIGRATE_FROM set): the
// same comparison as `tvs-migrate check`, as one line that is a problem unless nobody would be
// suspended or newly let in by re-pointing Moodle's auth_db.
import { openPluginDatabase, withoutPassword } from './plugin-tables.repository';
import type { TvsMigration } from './tvs-migration.service';

/** The shape of a doctor check (diagnostics/doctor.ts), kept here so this folder does not depend on that one. */
export interface TvsDoctorCheck {
  id: string;
  label: string;
  ok: boolean;
  message: string;
  help?: string;
}

const LABEL = 'Moving from the WordPress plugin';
const HELP = 'Run "npm run cli -- tvs-migrate check" for the list, and "tvs-migrate run" to import what is missing (docs/migrating-from-wordpress-plugin.md).';

export async function tvsMigrationDoctorCheck(migration: TvsMigration, from: { url: string; display: string }, prefix: string): Promise<TvsDoctorCheck> {
  const source = { db: openPluginDatabase(from.url), prefix, display: from.display };
  try {
    const result = await migration.check(source);
    if (result.ok) {
      return { id: 'tvs_migration', label: LABEL, ok: true, message: `Re-pointing Moodle's auth_db from the plugin (${source.display}) to this service would suspend nobody and let nobody new in.` };
    }
    const parts = [
      result.moodleProblem ? `Moodle could not be compared: ${result.moodleProblem}` : undefined,
      result.wouldBeSuspended.length > 0 ? `${result.wouldBeSuspended.length} parent(s) would be suspended` : undefined,
      result.wouldNewlyLogIn.length > 0 ? `${result.wouldNewlyLogIn.length} would newly be able to log in` : undefined,
    ].filter((p): p is string => p !== undefined);
    return { id: 'tvs_migration', label: LABEL, ok: false, message: `Re-pointing Moodle's auth_db is not safe yet: ${parts.join('; ')}.`, help: HELP };
  } catch (error) {
    const message = withoutPassword((error as Error).message, from.url);
    return { id: 'tvs_migration', label: LABEL, ok: false, message: `The WordPress plugin's tables (${source.display}) could not be compared: ${message}`, help: 'Check TVS_MIGRATE_FROM and TVS_MIGRATE_PREFIX.' };
  } finally {
    await source.db.destroy();
  }
}
