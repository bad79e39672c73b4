// Each import of the school's guardian records (the MIS "pupil contacts" export): staged for a
// preview, then made current in one transaction, which marks the previous one replaced. The
// rows themselves are in guardian_records; this table keeps who imported what, when, and counts.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('guardian_record_imports', (t) => {
    t.increments('id').primary();
    // staged → current → replaced; only one import is current at a time.
    t.string('state', 20).notNullable();
    // upload (the dashboard), api (PUT /api/v1/guardian-records) or cli.
    t.string('source', 20).notNullable();
    t.string('file_name', 255).notNullable().defaultTo('');
    t.string('created_by', 100).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('imported_at');
    t.integer('row_count').notNullable().defaultTo(0);
    t.integer('kept_count').notNullable().defaultTo(0);
    t.integer('pupil_count').notNullable().defaultTo(0);
    t.integer('contact_count').notNullable().defaultTo(0);
    // The preview's problems (line and column); emptied once the import is current or dropped.
    t.text('problems_json', 'mediumtext');
    t.index(['state', 'created_at'], 'guardian_record_imports_state_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('guardian_record_imports');
}
