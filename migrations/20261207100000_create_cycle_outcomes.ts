// What a provisioning cycle did for each request it worked on, one row per request, written a
// chunk at a time as the cycle goes: the report no longer waits in memory for the cycle's end, and
// its page reads one page of it.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('cycle_outcomes', (t) => {
    t.increments('id').primary();
    // No foreign key: on SQLite, altering provisioning_cycles rebuilds it, and a cascade would empty this table.
    t.integer('cycle_id').unsigned().notNullable();
    t.integer('request_id').notNullable();
    t.string('outcome', 20).notNullable();
    t.text('message');
    // Each child's outcome, as JSON: [{ childId, outcome, error? }].
    t.text('children').notNullable();
    t.unique(['cycle_id', 'request_id'], { indexName: 'cycle_outcomes_cycle_request_uq' });
    t.index(['request_id'], 'cycle_outcomes_request_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('cycle_outcomes');
}
