// Idempotency keys of the intake API, each belonging to the API key that sent it, with a hash
// of the request it stood for: the same key from another API key is another request, and the
// same key with a different body is refused instead of answered with someone else's request.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('api_idempotency_keys', (t) => {
    t.increments('id').primary();
    t.integer('api_key_id').unsigned().notNullable().references('id').inTable('api_keys').onDelete('CASCADE');
    t.string('idempotency_key', 100).notNullable();
    // SHA-256 (hex) of the validated request the key was first sent with.
    t.string('body_hash', 64).notNullable();
    // Null between the key being claimed and the request being stored.
    t.integer('request_id').unsigned().references('id').inTable('requests').onDelete('CASCADE');
    t.bigInteger('created_at').notNullable();
    t.unique(['api_key_id', 'idempotency_key'], { indexName: 'api_idempotency_keys_key_unique' });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('api_idempotency_keys');
}
