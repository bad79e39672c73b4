// The guardian records themselves: one row per pupil and contact, only the columns the matching
// needs. Rows belong to one import; making an import current deletes the rows of the one before.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('guardian_records', (t) => {
    t.increments('id').primary();
    t.integer('import_id').unsigned().notNullable();
    t.string('pupil_admission_number', 50).notNullable().defaultTo('');
    t.string('pupil_upn', 20).notNullable().defaultTo('');
    t.string('pupil_forename', 100).notNullable().defaultTo('');
    t.string('pupil_preferred_forename', 100).notNullable().defaultTo('');
    t.string('pupil_surname', 100).notNullable().defaultTo('');
    t.string('registration_group', 50).notNullable().defaultTo('');
    t.string('contact_title', 35).notNullable().defaultTo('');
    t.string('contact_forename', 100).notNullable().defaultTo('');
    t.string('contact_surname', 100).notNullable().defaultTo('');
    // Trimmed and lower-cased, as requests keep theirs.
    t.string('contact_email', 254).notNullable().defaultTo('');
    t.string('relationship', 50).notNullable().defaultTo('');
    t.boolean('parental_responsibility').notNullable().defaultTo(false);
    t.integer('contact_priority');
    t.boolean('court_order').notNullable().defaultTo(false);
    t.index(['import_id', 'contact_email'], 'guardian_records_email_idx');
    t.index(['import_id', 'pupil_admission_number'], 'guardian_records_admission_idx');
    t.index(['import_id', 'pupil_upn'], 'guardian_records_upn_idx');
    t.index(['import_id', 'pupil_surname'], 'guardian_records_surname_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('guardian_records');
}
