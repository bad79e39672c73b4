// requests.decided_by holds "<actor type>:<id>", e.g. "staff:" and a staff username of up to
// 100 characters: 106 characters did not fit its 100, and MariaDB refused the decision.
// SQLite does not enforce VARCHAR widths (and rebuilding the table there would touch the
// children's foreign keys), so only MySQL/MariaDB changes.
import type { Knex } from 'knex';

const isSqlite = (knex: Knex) => knex.client.dialect === 'sqlite3';

export async function up(knex: Knex): Promise<void> {
  if (isSqlite(knex)) return;
  await knex.raw('ALTER TABLE ?? MODIFY ?? VARCHAR(255) NULL', ['requests', 'decided_by']);
}

export async function down(knex: Knex): Promise<void> {
  if (isSqlite(knex)) return;
  // Fails (rather than cutting names short) if a longer value has been stored since.
  await knex.raw('ALTER TABLE ?? MODIFY ?? VARCHAR(100) NULL', ['requests', 'decided_by']);
}
