// One row per reconcile run (the Moodle check): who or what started it, how it ended, its counts
// and everything it found, for the "Moodle check" page, the staff mail and the metrics.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('reconcile_runs', (t) => {
    t.increments('id').primary();
    t.string('trigger', 20).notNullable();
    t.string('triggered_by', 100);
    t.string('state', 20).notNullable();
    t.bigInteger('started_at').notNullable();
    t.bigInteger('finished_at');
    t.text('counts');
    t.text('error');
    // Thousands of findings on a first run over a school with years of drift outgrow TEXT (64 KB).
    t.text('findings', 'mediumtext');
    t.index(['started_at'], 'reconcile_runs_started_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('reconcile_runs');
}
