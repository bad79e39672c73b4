// The dashboard's request list sorts by parent name within a status tab and searches by the
// start of a parent's name or email address; these indexes keep both fast at 100,000 requests.
// SQLite's LIKE and the list's name order ignore case only through NOCASE indexes, so there the
// indexes are declared with that collation (MySQL/MariaDB columns already compare without case).
import type { Knex } from 'knex';

const INDEXES = [
  { name: 'requests_status_parent_name_idx', columns: ['status', 'parent_last_name', 'parent_first_name'], nocase: ['parent_last_name', 'parent_first_name'] },
  { name: 'requests_parent_name_idx', columns: ['parent_last_name', 'parent_first_name'], nocase: ['parent_last_name', 'parent_first_name'] },
  { name: 'requests_parent_first_name_idx', columns: ['parent_first_name'], nocase: ['parent_first_name'] },
] as const;

// MySQL's existing requests_email_idx already serves a prefix search; SQLite needs a NOCASE one.
const SQLITE_EMAIL_INDEX = 'requests_email_nocase_idx';

const isSqlite = (knex: Knex) => knex.client.dialect === 'sqlite3';

export async function up(knex: Knex): Promise<void> {
  if (isSqlite(knex)) {
    for (const index of INDEXES) {
      const columns = index.columns.map((c) => ((index.nocase as readonly string[]).includes(c) ? `"${c}" COLLATE NOCASE` : `"${c}"`));
      await knex.raw(`CREATE INDEX "${index.name}" ON "requests" (${columns.join(', ')})`);
    }
    await knex.raw(`CREATE INDEX "${SQLITE_EMAIL_INDEX}" ON "requests" ("email" COLLATE NOCASE)`);
    return;
  }
  await knex.schema.alterTable('requests', (t) => {
    for (const index of INDEXES) t.index([...index.columns], index.name);
  });
}

export async function down(knex: Knex): Promise<void> {
  if (isSqlite(knex)) {
    for (const index of INDEXES) await knex.raw(`DROP INDEX "${index.name}"`);
    await knex.raw(`DROP INDEX "${SQLITE_EMAIL_INDEX}"`);
    return;
  }
  await knex.schema.alterTable('requests', (t) => {
    for (const index of INDEXES) t.dropIndex([...index.columns], index.name);
  });
}
