// The dashboard's search turns each matching child into its request's id. With request_id in the
// child name and tutor group indexes, that is read from the index alone; without it, every match
// costs a look-up of the child's row (about 3,700 for one tutor group at 100,000 requests, a third
// of the search's time; see the dashboard benchmark). Same index names, one more column each.
import type { Knex } from 'knex';

// MySQL/MariaDB: the indexes of create_request_children and add_child_search_indexes.
const MYSQL_INDEXES = [
  { name: 'request_children_name_idx', before: ['last_name', 'first_name'] },
  { name: 'request_children_first_name_idx', before: ['first_name'] },
  { name: 'request_children_tutor_group_idx', before: ['tutor_group'] },
] as const;

// SQLite's search goes through its NOCASE indexes (add_child_search_indexes).
const SQLITE_INDEXES = [
  { name: 'request_children_last_name_nocase_idx', column: 'last_name' },
  { name: 'request_children_first_name_idx', column: 'first_name' },
  { name: 'request_children_tutor_group_idx', column: 'tutor_group' },
] as const;

const isSqlite = (knex: Knex) => knex.client.dialect === 'sqlite3';

async function rebuild(knex: Knex, withRequestId: boolean): Promise<void> {
  const extra = withRequestId ? ['request_id'] : [];
  if (isSqlite(knex)) {
    for (const index of SQLITE_INDEXES) {
      await knex.raw(`DROP INDEX "${index.name}"`);
      const columns = [`"${index.column}" COLLATE NOCASE`, ...extra.map((c) => `"${c}"`)];
      await knex.raw(`CREATE INDEX "${index.name}" ON "request_children" (${columns.join(', ')})`);
    }
    return;
  }
  // Dropped and added in one statement, so the search is never without the index (knex's
  // alterTable would send two).
  for (const index of MYSQL_INDEXES) {
    const columns = [...index.before, ...extra];
    await knex.raw(`ALTER TABLE ?? DROP INDEX ??, ADD INDEX ?? (${columns.map(() => '??').join(', ')})`, ['request_children', index.name, index.name, ...columns]);
  }
}

export async function up(knex: Knex): Promise<void> {
  await rebuild(knex, true);
}

export async function down(knex: Knex): Promise<void> {
  await rebuild(knex, false);
}
