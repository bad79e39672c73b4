// The table Moodle's External database auth plugin (auth_db) reads: a row means
// "this parent may log in". Its name comes from AUTH_TABLE (passed as a knex user param).
import type { Knex } from 'knex';

function authTableName(knex: Knex): string {
  const name = (knex.userParams as { authTable?: string }).authTable ?? 'moodle_auth_users';
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(name)) throw new Error(`Invalid auth table name: ${name}`);
  return name;
}

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable(authTableName(knex), (t) => {
    t.increments('id').primary();
    // Moodle usernames are at most 100 characters.
    t.string('username', 100).notNullable().unique();
    t.string('firstname', 100).notNullable();
    t.string('lastname', 100).notNullable();
    t.string('email', 100).notNullable();
    t.integer('request_id').unsigned().notNullable().unique().references('id').inTable('requests');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable(authTableName(knex));
}
