// What happened to each request and who did it; the access history of every pupil comes from here.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('audit_events', (t) => {
    t.increments('id').primary();
    t.bigInteger('created_at').notNullable();
    t.string('actor_type', 20).notNullable();
    t.string('actor_id', 100);
    // No foreign key: the trail outlives an erased request's personal data.
    t.integer('request_id');
    t.string('action', 50).notNullable();
    t.text('details');
    t.index(['request_id', 'created_at'], 'audit_events_request_idx');
    t.index(['created_at'], 'audit_events_created_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('audit_events');
}
