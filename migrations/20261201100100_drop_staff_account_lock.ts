// Sign-in failures are no longer counted on the account (five failures from anywhere locked
// it, so anyone could lock any member of staff out): they are counted per username and address
// in `rate_limits`. The account's own counter and lock go.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('staff_users', (t) => {
    t.dropColumn('failed_logins');
    t.dropColumn('locked_until');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('staff_users', (t) => {
    t.integer('failed_logins').notNullable().defaultTo(0);
    t.bigInteger('locked_until');
  });
}
