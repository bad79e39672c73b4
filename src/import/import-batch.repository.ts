// The only code that reads and writes the import_batches and import_batch_rows tables: CSV
// imports waiting for staff to commit them, their rows (one database row per row of the file,
// written and read a chunk or a page at a time), and what each commit did.
import { nullableNumber, nullableString } from '../db/columns';
import type { Queryable } from '../requests/request-repository';
import { IMPORT_FIELDS, type ImportField, type ImportPupil, type ImportRow } from './import-csv';

export const IMPORT_BATCHES_TABLE = 'import_batches';
export const IMPORT_BATCH_ROWS_TABLE = 'import_batch_rows';

/** Rows written in one INSERT (each has 17 values; SQLite allows 32,766 per statement). */
const ROWS_PER_INSERT = 200;

export type ImportBatchState = 'previewed' | 'committing' | 'committed';

/** What committing did for one parent (one group of rows with the same email address). */
export interface ImportedParent {
  email: string;
  parentName: string;
  lines: number[];
  outcome: 'approved' | 'left_pending' | 'skipped';
  requestId: number | null;
  message: string;
}

export interface ImportResult {
  parents: ImportedParent[];
  approved: number;
  leftPending: number;
  skipped: number;
}

export interface ImportBatchSummary {
  id: number;
  publicId: string;
  state: ImportBatchState;
  fileName: string;
  createdBy: string;
  createdAt: number;
  rowCount: number;
  validRowCount: number;
  committedBy: string | null;
  committingSince: number | null;
  committedAt: number | null;
}

export interface ImportBatchRecord extends ImportBatchSummary {
  result: ImportResult | null;
}

/** A row to store: the row as the preview checked it, and its parent's place in the commit. */
export interface ImportRowToStore {
  row: ImportRow;
  /** The parent's place (0, 1, …) among the parents to import, in the order they first appear; null when the row will not be imported. */
  parentNumber: number | null;
}

/** One parent's rows as the commit reads them, with the parent's number (which keys their request). */
export interface ParentToImport {
  number: number;
  rows: ImportRow[];
}

const CELL_COLUMNS: Record<ImportField, string> = {
  parentTitle: 'parent_title',
  parentFirstName: 'parent_first_name',
  parentLastName: 'parent_last_name',
  email: 'email',
  childFirstName: 'child_first_name',
  childLastName: 'child_last_name',
  tutorGroup: 'tutor_group',
  pupilIdentifier: 'pupil_identifier',
};

/** The email as the rows of one parent share it (as parentKey in import-csv). */
const parentKeyOf = (row: ImportRow) => row.values.email.trim().toLowerCase();

type Row = Record<string, unknown>;

const SUMMARY_COLUMNS = [
  'id',
  'public_id',
  'state',
  'file_name',
  'created_by',
  'created_at',
  'row_count',
  'valid_row_count',
  'committed_by',
  'committing_since',
  'committed_at',
];

function summaryFromRow(r: Row): ImportBatchSummary {
  return {
    id: Number(r.id),
    publicId: String(r.public_id),
    state: r.state as ImportBatchState,
    fileName: String(r.file_name ?? ''),
    createdBy: String(r.created_by),
    createdAt: Number(r.created_at),
    rowCount: Number(r.row_count),
    validRowCount: Number(r.valid_row_count),
    committedBy: nullableString(r.committed_by),
    committingSince: nullableNumber(r.committing_since),
    committedAt: nullableNumber(r.committed_at),
  };
}

function toRowRecord(batchId: number, { row, parentNumber }: ImportRowToStore): Row {
  const record: Row = { batch_id: batchId, line: row.line };
  for (const field of IMPORT_FIELDS) record[CELL_COLUMNS[field]] = row.values[field];
  record.parent_key = parentKeyOf(row);
  record.problems_json = JSON.stringify(row.problems);
  record.pupil_id = row.pupil?.id ?? null;
  record.pupil_name = row.pupil?.name ?? null;
  record.pupil_tutor_group = row.pupil?.tutorGroup ?? null;
  record.pupil_identifier_in_moodle = row.pupil?.identifier ?? null;
  record.pupil_matched_by = row.pupil?.matchedBy ?? null;
  record.parent_number = parentNumber;
  return record;
}

function rowFromRecord(r: Row): ImportRow {
  const values = {} as Record<ImportField, string>;
  for (const field of IMPORT_FIELDS) values[field] = String(r[CELL_COLUMNS[field]] ?? '');
  const pupil: ImportPupil | null =
    r.pupil_id === null || r.pupil_id === undefined
      ? null
      : {
          id: Number(r.pupil_id),
          name: String(r.pupil_name ?? ''),
          tutorGroup: String(r.pupil_tutor_group ?? ''),
          identifier: String(r.pupil_identifier_in_moodle ?? ''),
          matchedBy: r.pupil_matched_by as ImportPupil['matchedBy'],
        };
  return { line: Number(r.line), values, problems: parseJson<string[]>(r.problems_json, []), pupil };
}

function parseJson<T>(value: unknown, fallback: T): T {
  if (value === null || value === undefined) return fallback;
  try {
    return JSON.parse(String(value)) as T;
  } catch {
    return fallback;
  }
}

export class ImportBatchRepository {
  /** Stores a previewed batch and its rows, all or nothing; pass a transaction. */
  async insert(
    q: Queryable,
    batch: { publicId: string; fileName: string; createdBy: string; createdAt: number; rows: readonly ImportRowToStore[]; validRowCount: number },
  ): Promise<ImportBatchRecord> {
    const fileName = batch.fileName.slice(0, 255);
    const createdBy = batch.createdBy.slice(0, 100);
    const [id] = await q(IMPORT_BATCHES_TABLE).insert({
      public_id: batch.publicId,
      state: 'previewed',
      file_name: fileName,
      created_by: createdBy,
      created_at: batch.createdAt,
      row_count: batch.rows.length,
      valid_row_count: batch.validRowCount,
    });
    const batchId = Number(id);
    // A chunk at a time: one statement of 5,000 rows is megabytes of SQL built, escaped and sent at once.
    for (let first = 0; first < batch.rows.length; first += ROWS_PER_INSERT) {
      await q(IMPORT_BATCH_ROWS_TABLE).insert(batch.rows.slice(first, first + ROWS_PER_INSERT).map((r) => toRowRecord(batchId, r)));
    }
    return {
      id: batchId,
      publicId: batch.publicId,
      state: 'previewed',
      fileName,
      createdBy,
      createdAt: batch.createdAt,
      rowCount: batch.rows.length,
      validRowCount: batch.validRowCount,
      committedBy: null,
      committingSince: null,
      committedAt: null,
      result: null,
    };
  }

  async findByPublicId(q: Queryable, publicId: string): Promise<ImportBatchRecord | undefined> {
    const row = (await q(IMPORT_BATCHES_TABLE).where({ public_id: publicId }).first([...SUMMARY_COLUMNS, 'result_json'])) as Row | undefined;
    if (!row) return undefined;
    return { ...summaryFromRow(row), result: parseJson<ImportResult | null>(row.result_json, null) };
  }

  /** The batch's rows in the order of the file, `limit` from `offset`: a page of the preview. */
  async rowsPage(q: Queryable, batchId: number, offset: number, limit: number): Promise<ImportRow[]> {
    const rows = (await q(IMPORT_BATCH_ROWS_TABLE).where({ batch_id: batchId }).orderBy('line').offset(offset).limit(limit)) as Row[];
    return rows.map(rowFromRecord);
  }

  /** How many parents the commit will import: those numbered by the preview. */
  async parentCount(q: Queryable, batchId: number): Promise<number> {
    const row = (await q(IMPORT_BATCH_ROWS_TABLE).where({ batch_id: batchId }).whereNotNull('parent_number').max({ last: 'parent_number' }).first()) as Row | undefined;
    return row?.last === null || row?.last === undefined ? 0 : Number(row.last) + 1;
  }

  /**
   * The rows of parents numbered from `first` to `first + count - 1`, grouped by parent in that
   * order, each group in the order of the file: one chunk of the commit.
   */
  async parentsToImport(q: Queryable, batchId: number, first: number, count: number): Promise<ParentToImport[]> {
    const rows = (await q(IMPORT_BATCH_ROWS_TABLE)
      .where({ batch_id: batchId })
      .whereBetween('parent_number', [first, first + count - 1])
      .orderBy('parent_number')
      .orderBy('line')) as Row[];
    const parents: ParentToImport[] = [];
    for (const record of rows) {
      const number = Number(record.parent_number);
      const last = parents[parents.length - 1];
      if (last?.number === number) last.rows.push(rowFromRecord(record));
      else parents.push({ number, rows: [rowFromRecord(record)] });
    }
    return parents;
  }

  async recent(q: Queryable, limit: number): Promise<ImportBatchSummary[]> {
    const rows = (await q(IMPORT_BATCHES_TABLE).select(SUMMARY_COLUMNS).orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit)) as Row[];
    return rows.map(summaryFromRow);
  }

  /**
   * Takes the batch for committing, atomically: only one of two commits at the same moment gets
   * it, and a committed batch never again. A commit cut short (the server stopped) leaves the
   * batch "committing"; after staleBefore it may be taken again.
   */
  async claimForCommit(q: Queryable, publicId: string, by: string, now: number, staleBefore: number): Promise<boolean> {
    const changed = await q(IMPORT_BATCHES_TABLE)
      .where({ public_id: publicId })
      .andWhere((w) => w.where({ state: 'previewed' }).orWhere((s) => s.where({ state: 'committing' }).andWhere('committing_since', '<', staleBefore)))
      .update({ state: 'committing', committing_since: now, committed_by: by.slice(0, 100) });
    return Number(changed) === 1;
  }

  async markCommitted(q: Queryable, publicId: string, result: ImportResult, now: number): Promise<void> {
    await q(IMPORT_BATCHES_TABLE).where({ public_id: publicId, state: 'committing' }).update({ state: 'committed', committed_at: now, result_json: JSON.stringify(result) });
  }

  /**
   * Removes one imported parent from a committed batch's record (their lines of the file and
   * their name and email in the result), when their request's personal data is erased: the
   * batch must not keep a copy of what the erasure removed.
   */
  async scrubImportedRequest(q: Queryable, publicId: string, requestId: number): Promise<void> {
    const row = (await q(IMPORT_BATCHES_TABLE).where({ public_id: publicId }).first('id', 'result_json')) as Row | undefined;
    if (!row) return;
    const result = parseJson<ImportResult | null>(row.result_json, null);
    const parent = result?.parents.find((p) => p.requestId === requestId);
    if (!result || !parent) return;
    const email = parent.email.toLowerCase();
    await q(IMPORT_BATCH_ROWS_TABLE)
      .where({ batch_id: Number(row.id) })
      .andWhere((w) => (parent.lines.length > 0 ? w.whereIn('line', parent.lines).orWhere({ parent_key: email }) : w.where({ parent_key: email })))
      .delete();
    const parents = result.parents.map((p) => (p === parent ? { ...p, email: '', parentName: '(personal data erased)', message: '' } : p));
    await q(IMPORT_BATCHES_TABLE)
      .where({ public_id: publicId })
      .update({ result_json: JSON.stringify({ ...result, parents }) });
  }

  /** Previews nobody committed hold personal data for no purpose: they go after a while, with their rows. */
  async deletePreviewsOlderThan(q: Queryable, before: number): Promise<number> {
    const old = q(IMPORT_BATCHES_TABLE).select('id').where({ state: 'previewed' }).andWhere('created_at', '<', before);
    // The foreign key cascades too; deleting the rows first does not depend on it being enforced.
    await q(IMPORT_BATCH_ROWS_TABLE).whereIn('batch_id', old).delete();
    return Number(await q(IMPORT_BATCHES_TABLE).where({ state: 'previewed' }).andWhere('created_at', '<', before).delete());
  }
}
