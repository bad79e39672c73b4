// One row per provisioning cycle: who or what started it, its progress and its report.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('provisioning_cycles', (t) => {
    t.increments('id').primary();
    t.string('trigger', 20).notNullable();
    t.string('triggered_by', 100);
    t.string('state', 20).notNullable();
    t.string('step', 40);
    t.integer('progress_done').notNullable().defaultTo(0);
    t.integer('progress_total').notNullable().defaultTo(0);
    t.bigInteger('started_at').notNullable();
    t.bigInteger('finished_at');
    t.text('counts');
    t.text('error');
    t.text('sync_output', 'mediumtext');
    t.text('log', 'mediumtext');
    t.index(['started_at'], 'provisioning_cycles_started_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('provisioning_cycles');
}
