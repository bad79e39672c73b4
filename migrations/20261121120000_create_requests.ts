// Parents' requests: one row per request, its status and the decisions made on it.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('requests', (t) => {
    t.increments('id').primary();
    t.string('public_id', 32).notNullable().unique();
    t.string('status', 20).notNullable();
    t.string('request_type', 30).notNullable();
    t.string('source', 20).notNullable().defaultTo('form');
    t.string('parent_title', 20).notNullable().defaultTo('');
    t.string('parent_first_name', 100).notNullable();
    t.string('parent_last_name', 100).notNullable();
    t.string('email', 254).notNullable();
    t.text('parent_comment');
    t.text('staff_comment');
    t.string('moodle_username', 100);
    t.integer('moodle_user_id');
    t.boolean('link_existing_account').notNullable().defaultTo(false);
    t.string('verification_token_hash', 64);
    t.bigInteger('verification_expires_at');
    t.bigInteger('verified_at');
    t.bigInteger('decided_at');
    t.string('decided_by', 100);
    t.text('decision_reason');
    t.bigInteger('provisioned_at');
    t.integer('attempts').notNullable().defaultTo(0);
    t.text('last_error');
    t.bigInteger('next_attempt_at');
    t.bigInteger('waiting_since');
    t.integer('version').notNullable().defaultTo(1);
    t.string('submitter_ip', 64);
    t.string('submitter_agent', 255);
    t.string('idempotency_key', 100).unique();
    t.string('import_batch_id', 40);
    t.bigInteger('erased_at');
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    // The dashboard lists by status, newest first; the intake looks up open requests by email;
    // the cycle picks approved requests that are due.
    t.index(['status', 'created_at'], 'requests_status_created_idx');
    t.index(['email'], 'requests_email_idx');
    t.index(['created_at'], 'requests_created_idx');
    t.index(['status', 'next_attempt_at'], 'requests_status_next_attempt_idx');
    t.index(['verification_token_hash'], 'requests_verification_token_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('requests');
}
