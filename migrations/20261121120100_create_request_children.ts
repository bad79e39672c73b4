// The children named in a request, each with its own link to a Moodle pupil account.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('request_children', (t) => {
    t.increments('id').primary();
    t.integer('request_id').unsigned().notNullable().references('id').inTable('requests').onDelete('CASCADE');
    t.integer('position').notNullable();
    t.string('first_name', 100).notNullable();
    t.string('last_name', 100).notNullable();
    t.string('tutor_group', 50).notNullable().defaultTo('');
    t.string('pupil_identifier', 50);
    t.integer('moodle_user_id');
    t.string('link_state', 20).notNullable().defaultTo('unmatched');
    t.bigInteger('linked_at');
    t.bigInteger('revoked_at');
    // A revoked child whose Parent role may still be assigned in Moodle: the cycle unassigns it.
    t.boolean('unassign_pending').notNullable().defaultTo(false);
    t.integer('attempts').notNullable().defaultTo(0);
    t.text('last_error');
    t.bigInteger('next_attempt_at');
    t.bigInteger('updated_at').notNullable();
    t.unique(['request_id', 'position'], { indexName: 'request_children_request_position_uq' });
    t.index(['moodle_user_id'], 'request_children_moodle_user_idx');
    t.index(['unassign_pending'], 'request_children_unassign_pending_idx');
    t.index(['last_name', 'first_name'], 'request_children_name_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('request_children');
}
