// Keys for the intake API (the school website's form webhook). Only a hash of each key is kept.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('api_keys', (t) => {
    t.increments('id').primary();
    t.string('name', 100).notNullable();
    // The first characters of the key, to find its row without scanning every hash.
    t.string('key_prefix', 16).notNullable().unique();
    t.string('key_hash', 255).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('last_used_at');
    t.bigInteger('revoked_at');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('api_keys');
}
