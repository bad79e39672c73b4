// The rows of every import batch move from the batch's one JSON value (rows_json) to
// import_batch_rows, and rows_json goes: a preview of 5,000 rows was megabytes of JSON, built,
// escaped and sent as one value, and read back whole by every page view and the commit.
import type { Knex } from 'knex';

interface StoredRow {
  line: number;
  values: Record<string, string>;
  problems: string[];
  pupil: { id: number; name: string; tutorGroup: string; identifier: string; matchedBy: string } | null;
}

const CELLS: Array<[string, string]> = [
  ['parentTitle', 'parent_title'],
  ['parentFirstName', 'parent_first_name'],
  ['parentLastName', 'parent_last_name'],
  ['email', 'email'],
  ['childFirstName', 'child_first_name'],
  ['childLastName', 'child_last_name'],
  ['tutorGroup', 'tutor_group'],
  ['pupilIdentifier', 'pupil_identifier'],
];
const INSERT_CHUNK = 100;
const isSqlite = (knex: Knex) => knex.client.dialect === 'sqlite3';

function parseRows(value: unknown): StoredRow[] {
  try {
    const rows = JSON.parse(String(value ?? '[]')) as unknown;
    return Array.isArray(rows) ? (rows as StoredRow[]) : [];
  } catch {
    return [];
  }
}

const keyOf = (row: StoredRow) => String(row.values?.email ?? '').trim().toLowerCase();

export async function up(knex: Knex): Promise<void> {
  const batches = (await knex('import_batches').select('id').orderBy('id')) as Array<{ id: number }>;
  for (const { id } of batches) {
    const batch = (await knex('import_batches').where({ id }).first('rows_json')) as { rows_json: unknown } | undefined;
    const rows = parseRows(batch?.rows_json);
    // The commit's order of parents: those whose rows all import, in the order they first appear.
    const parentNumbers = new Map<string, number>();
    for (const row of rows) {
      if ((row.problems ?? []).length === 0 && row.pupil && !parentNumbers.has(keyOf(row))) parentNumbers.set(keyOf(row), parentNumbers.size);
    }
    const records = rows.map((row) => {
      const importable = (row.problems ?? []).length === 0 && row.pupil !== null && row.pupil !== undefined;
      return {
        batch_id: id,
        line: row.line,
        ...Object.fromEntries(CELLS.map(([field, column]) => [column, String(row.values?.[field] ?? '')])),
        parent_key: keyOf(row),
        problems_json: JSON.stringify(row.problems ?? []),
        pupil_id: row.pupil?.id ?? null,
        pupil_name: row.pupil?.name ?? null,
        pupil_tutor_group: row.pupil?.tutorGroup ?? null,
        pupil_identifier_in_moodle: row.pupil?.identifier ?? null,
        pupil_matched_by: row.pupil?.matchedBy ?? null,
        parent_number: importable ? (parentNumbers.get(keyOf(row)) ?? null) : null,
      };
    });
    for (let first = 0; first < records.length; first += INSERT_CHUNK) await knex('import_batch_rows').insert(records.slice(first, first + INSERT_CHUNK));
  }
  // knex drops a SQLite column by copying the table into a new one and dropping the old, and
  // dropping import_batches would cascade to the rows just copied: SQLite's own DROP COLUMN does not.
  if (isSqlite(knex)) await knex.raw('ALTER TABLE import_batches DROP COLUMN rows_json');
  else {
    await knex.schema.alterTable('import_batches', (t) => {
      t.dropColumn('rows_json');
    });
  }
}

/** rows_json comes back filled from import_batch_rows, but nullable: a column added to a table with rows cannot be NOT NULL without a default on every dialect. */
export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('import_batches', (t) => {
    t.text('rows_json', 'mediumtext');
  });
  const batches = (await knex('import_batches').select('id').orderBy('id')) as Array<{ id: number }>;
  for (const { id } of batches) {
    const stored = (await knex('import_batch_rows').where({ batch_id: id }).orderBy('line')) as Array<Record<string, unknown>>;
    const rows: StoredRow[] = stored.map((r) => ({
      line: Number(r.line),
      values: Object.fromEntries(CELLS.map(([field, column]) => [field, String(r[column] ?? '')])),
      problems: parseRows(r.problems_json) as unknown as string[],
      pupil:
        r.pupil_id === null || r.pupil_id === undefined
          ? null
          : {
              id: Number(r.pupil_id),
              name: String(r.pupil_name ?? ''),
              tutorGroup: String(r.pupil_tutor_group ?? ''),
              identifier: String(r.pupil_identifier_in_moodle ?? ''),
              matchedBy: String(r.pupil_matched_by ?? ''),
            },
    }));
    await knex('import_batches').where({ id }).update({ rows_json: JSON.stringify(rows) });
  }
  await knex('import_batch_rows').delete();
}
