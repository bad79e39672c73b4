// A number on each staff account that every session of the account carries: a password reset
// or a disable raises it, so every session signed in before ends at its next request, on every
// instance (the check reads the database, not the instance's memory).
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('staff_users', (t) => {
    t.integer('session_generation').notNullable().defaultTo(0);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('staff_users', (t) => {
    t.dropColumn('session_generation');
  });
}
