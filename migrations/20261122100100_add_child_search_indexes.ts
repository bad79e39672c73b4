// The dashboard's request search finds requests by the start of a child's first name, last name
// or tutor group. MySQL/MariaDB's existing (last_name, first_name) index serves last names; the
// other two need their own. SQLite's LIKE ignores case only through NOCASE indexes, so there all
// three are declared with that collation.
import type { Knex } from 'knex';

const MYSQL_INDEXES = [
  { name: 'request_children_first_name_idx', column: 'first_name' },
  { name: 'request_children_tutor_group_idx', column: 'tutor_group' },
] as const;

const SQLITE_INDEXES = [
  { name: 'request_children_last_name_nocase_idx', column: 'last_name' },
  ...MYSQL_INDEXES,
] as const;

const isSqlite = (knex: Knex) => knex.client.dialect === 'sqlite3';

export async function up(knex: Knex): Promise<void> {
  if (isSqlite(knex)) {
    for (const index of SQLITE_INDEXES) {
      await knex.raw(`CREATE INDEX "${index.name}" ON "request_children" ("${index.column}" COLLATE NOCASE)`);
    }
    return;
  }
  await knex.schema.alterTable('request_children', (t) => {
    for (const index of MYSQL_INDEXES) t.index([index.column], index.name);
  });
}

export async function down(knex: Knex): Promise<void> {
  if (isSqlite(knex)) {
    for (const index of SQLITE_INDEXES) await knex.raw(`DROP INDEX "${index.name}"`);
    return;
  }
  await knex.schema.alterTable('request_children', (t) => {
    for (const index of MYSQL_INDEXES) t.dropIndex([index.column], index.name);
  });
}
