// What the guardian records said about each confirmed request: matched fully, partly, not at
// all, or not checked (Moodle could not be asked), with the evidence and the refusal reasons.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('guardian_matches', (t) => {
    t.integer('request_id').unsigned().primary();
    // full | partial | none | error
    t.string('state', 20).notNullable();
    t.integer('import_id').unsigned();
    // When the records matched against were imported: a full match on records older than
    // GUARDIAN_RECORDS_MAX_AGE_DAYS is not trusted for the list tag or automatic approval.
    t.bigInteger('records_imported_at');
    t.bigInteger('checked_at').notNullable();
    t.text('result_json', 'mediumtext').notNullable();
    t.index(['state', 'records_imported_at'], 'guardian_matches_state_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('guardian_matches');
}
