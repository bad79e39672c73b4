// Details sent with the form for an address that already has an open request. They are held
// here, not written to that request, until someone opens the single-use link mailed to the
// address; only then are they added to the request (through the lifecycle, with an audit event).
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('request_held_details', (t) => {
    t.increments('id').primary();
    t.integer('request_id').unsigned().notNullable().references('id').inTable('requests').onDelete('CASCADE');
    // SHA-256 of the mailed token; the token itself is never stored.
    t.string('token_hash', 64).notNullable().unique();
    t.bigInteger('expires_at').notNullable();
    // The children as sent (JSON) and the comment; the rest of the form is the request's own.
    t.text('children_json').notNullable();
    t.text('comment');
    t.string('source', 20).notNullable();
    t.string('actor_type', 20).notNullable();
    t.string('actor_id', 100);
    t.string('submitter_ip', 64);
    t.string('submitter_agent', 255);
    // A retried API call with the same key is answered as a replay, not held twice.
    t.string('idempotency_key', 100).unique();
    t.bigInteger('created_at').notNullable();
    t.index(['request_id'], 'request_held_details_request_idx');
    t.index(['expires_at'], 'request_held_details_expires_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('request_held_details');
}
