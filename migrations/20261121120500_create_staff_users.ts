// School staff who sign in to the dashboard.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('staff_users', (t) => {
    t.increments('id').primary();
    t.string('username', 100).notNullable().unique();
    t.string('display_name', 200).notNullable();
    t.string('email', 254);
    t.string('password_hash', 255).notNullable();
    t.string('role', 20).notNullable().defaultTo('staff');
    t.boolean('disabled').notNullable().defaultTo(false);
    t.integer('failed_logins').notNullable().defaultTo(0);
    t.bigInteger('locked_until');
    t.bigInteger('last_login_at');
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('staff_users');
}
