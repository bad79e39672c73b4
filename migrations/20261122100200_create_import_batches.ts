// CSV imports checked by staff before anything is written: the parsed rows, each with its
// problems and the Moodle pupil found for it, wait here until staff commit the batch (once).
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('import_batches', (t) => {
    t.increments('id').primary();
    t.string('public_id', 32).notNullable().unique();
    // previewed → committing → committed; the state change is what stops a second commit.
    t.string('state', 20).notNullable().defaultTo('previewed');
    t.string('file_name', 255).notNullable().defaultTo('');
    t.string('created_by', 100).notNullable();
    t.bigInteger('created_at').notNullable();
    t.integer('row_count').notNullable().defaultTo(0);
    t.integer('valid_row_count').notNullable().defaultTo(0);
    // Thousands of rows as JSON outgrow MySQL's TEXT (64 KB); MEDIUMTEXT holds 16 MB.
    t.text('rows_json', 'mediumtext').notNullable();
    t.string('committed_by', 100);
    t.bigInteger('committing_since');
    t.bigInteger('committed_at');
    t.text('result_json', 'mediumtext');
    t.index(['state', 'created_at'], 'import_batches_state_created_idx');
    t.index(['created_at'], 'import_batches_created_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('import_batches');
}
