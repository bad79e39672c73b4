// Staff sessions are kept by connect-session-knex, which reads and writes an `expired` date
// column; the first sessions table (expires_at in epoch ms) never held a session, so it is
// replaced by the layout that store expects.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.dropTable('sessions');
  await knex.schema.createTable('sessions', (t) => {
    t.string('sid', 255).primary();
    t.text('sess').notNullable();
    // DATETIME on MySQL/MariaDB (no time zone conversion), TIMESTAMP text on SQLite: as the store writes them.
    if (knex.client.dialect === 'sqlite3') t.timestamp('expired').notNullable();
    else t.dateTime('expired').notNullable();
    t.index(['expired'], 'sessions_expired_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('sessions');
  await knex.schema.createTable('sessions', (t) => {
    t.string('sid', 255).primary();
    t.text('sess').notNullable();
    t.bigInteger('expires_at').notNullable();
    t.index(['expires_at'], 'sessions_expires_idx');
  });
}
