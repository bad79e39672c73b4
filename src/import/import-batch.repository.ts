// The only code that reads and writes the import_batches table: CSV imports waiting for staff
// to commit them, and what each commit did.
import { nullableNumber, nullableString } from '../db/columns';
import type { Queryable } from '../requests/request-repository';
import type { ImportRow } from './import-csv';

export const IMPORT_BATCHES_TABLE = 'import_batches';

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
  rows: ImportRow[];
  result: ImportResult | null;
}

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

function parseJson<T>(value: unknown, fallback: T): T {
  if (value === null || value === undefined) return fallback;
  try {
    return JSON.parse(String(value)) as T;
  } catch {
    return fallback;
  }
}

export class ImportBatchRepository {
  async insert(
    q: Queryable,
    batch: { publicId: string; fileName: string; createdBy: string; createdAt: number; rows: ImportRow[]; validRowCount: number },
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
      rows_json: JSON.stringify(batch.rows),
    });
    // What was stored, without reading its rows back (5,000 of them are megabytes of JSON).
    return {
      id: Number(id),
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
      rows: batch.rows,
      result: null,
    };
  }

  async findByPublicId(q: Queryable, publicId: string): Promise<ImportBatchRecord | undefined> {
    const row = (await q(IMPORT_BATCHES_TABLE).where({ public_id: publicId }).first()) as Row | undefined;
    if (!row) return undefined;
    return { ...summaryFromRow(row), rows: parseJson<ImportRow[]>(row.rows_json, []), result: parseJson<ImportResult | null>(row.result_json, null) };
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
    const row = (await q(IMPORT_BATCHES_TABLE).where({ public_id: publicId }).first('rows_json', 'result_json')) as Row | undefined;
    if (!row) return;
    const rows = parseJson<ImportRow[]>(row.rows_json, []);
    const result = parseJson<ImportResult | null>(row.result_json, null);
    const parent = result?.parents.find((p) => p.requestId === requestId);
    if (!result || !parent) return;
    const email = parent.email.toLowerCase();
    const keptRows = rows.filter((r) => !parent.lines.includes(r.line) && r.values.email.trim().toLowerCase() !== email);
    const parents = result.parents.map((p) => (p === parent ? { ...p, email: '', parentName: '(personal data erased)', message: '' } : p));
    await q(IMPORT_BATCHES_TABLE)
      .where({ public_id: publicId })
      .update({ rows_json: JSON.stringify(keptRows), result_json: JSON.stringify({ ...result, parents }) });
  }

  /** Previews nobody committed hold personal data for no purpose: they go after a while. */
  async deletePreviewsOlderThan(q: Queryable, before: number): Promise<number> {
    return Number(await q(IMPORT_BATCHES_TABLE).where({ state: 'previewed' }).andWhere('created_at', '<', before).delete());
  }
}
