// Mail waiting to be sent. A message is written in the same transaction as the change that
// causes it, so a crash or an SMTP failure never loses it; the sender retries with backoff.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('mail_outbox', (t) => {
    t.increments('id').primary();
    t.string('kind', 40).notNullable();
    t.integer('request_id');
    t.string('recipient', 254).notNullable();
    t.text('payload').notNullable();
    t.string('state', 20).notNullable().defaultTo('pending');
    t.integer('attempts').notNullable().defaultTo(0);
    t.bigInteger('next_attempt_at').notNullable();
    t.text('last_error');
    t.bigInteger('created_at').notNullable();
    t.bigInteger('sent_at');
    t.index(['state', 'next_attempt_at'], 'mail_outbox_due_idx');
    t.index(['request_id'], 'mail_outbox_request_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('mail_outbox');
}
