// The rows of an import batch, one database row per row of the file: the preview writes them a
// chunk at a time, its page reads them a page at a time, and the commit reads one chunk of parents
// at a time, so no step holds (or sends to the database) the whole file as one value.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('import_batch_rows', (t) => {
    t.integer('batch_id').unsigned().notNullable().references('id').inTable('import_batches').onDelete('CASCADE');
    // Where the row starts in the file (the header is line 1): unique within a file.
    t.integer('line').notNullable();
    // The cells as checked (trimmed; the email lower-cased when valid). A cell can be as long as the
    // upload allows, so MEDIUMTEXT on MySQL, as the rows' JSON was before.
    for (const column of ['parent_title', 'parent_first_name', 'parent_last_name', 'email', 'child_first_name', 'child_last_name', 'tutor_group', 'pupil_identifier']) {
      t.text(column, 'mediumtext').notNullable();
    }
    // The email as the rows of one parent share it (trimmed, lower-cased): erasure removes by it.
    t.text('parent_key', 'mediumtext').notNullable();
    // A JSON array of the row's problems in plain words; [] when it can be imported.
    t.text('problems_json', 'mediumtext').notNullable();
    // The Moodle pupil account its child was matched to, if any.
    t.integer('pupil_id');
    t.string('pupil_name', 255);
    t.string('pupil_tutor_group', 255);
    t.string('pupil_identifier_in_moodle', 255);
    t.string('pupil_matched_by', 30);
    // Rows that will be imported: their parent's place (0, 1, …) in the order parents first
    // appear in the file; the commit reads a chunk of parents by it. Null for rows with problems.
    t.integer('parent_number');
    t.primary(['batch_id', 'line']);
    t.index(['batch_id', 'parent_number'], 'import_batch_rows_parent_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('import_batch_rows');
}
