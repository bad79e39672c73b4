// Named locks with a holder and an expiry: the provisioning cycle runs on one instance at a time,
// and a crashed holder's lock can be taken over once it has expired.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('locks', (t) => {
    t.string('name', 100).primary();
    t.string('holder', 200).notNullable();
    t.integer('cycle_id');
    t.bigInteger('acquired_at').notNullable();
    t.bigInteger('expires_at').notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('locks');
}
