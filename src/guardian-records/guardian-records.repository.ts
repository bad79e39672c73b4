// The only code that reads and writes the guardian records tables: the imports (staged, current,
// replaced), the records of each, and what matching said about each confirmed request.
import { booleanColumn, nullableNumber } from '../db/columns';
import { isMysql } from '../db/database';
import { REQUESTS_TABLE, type Queryable } from '../requests/request-repository';
import type { GuardianRecord, GuardianRowProblem } from './guardian-records-csv';

export const GUARDIAN_IMPORTS_TABLE = 'guardian_record_imports';
export const GUARDIAN_RECORDS_TABLE = 'guardian_records';
export const GUARDIAN_MATCHES_TABLE = 'guardian_matches';

/** Rows written per INSERT: well under SQLite's and MariaDB's limits on bound values. */
const INSERT_CHUNK = 500;
/** Values per WHERE … IN (…). */
const LOOKUP_CHUNK = 500;

export type GuardianImportState = 'staged' | 'current' | 'replaced';
export type GuardianImportSource = 'upload' | 'api' | 'cli';

export interface GuardianImport {
  id: number;
  state: GuardianImportState;
  source: GuardianImportSource;
  fileName: string;
  createdBy: string;
  createdAt: number;
  importedAt: number | null;
  rowCount: number;
  keptCount: number;
  pupilCount: number;
  contactCount: number;
  problems: GuardianRowProblem[];
}

export type NewGuardianImport = Omit<GuardianImport, 'id' | 'importedAt'> & { importedAt?: number | null };

export type MatchState = 'full' | 'partial' | 'none' | 'error';

export interface StoredMatch {
  requestId: number;
  state: MatchState;
  importId: number | null;
  recordsImportedAt: number | null;
  checkedAt: number;
  result: unknown;
}

type Row = Record<string, unknown>;

function importFromRow(r: Row): GuardianImport {
  let problems: GuardianRowProblem[] = [];
  try {
    problems = r.problems_json ? (JSON.parse(String(r.problems_json)) as GuardianRowProblem[]) : [];
  } catch {
    problems = [];
  }
  return {
    id: Number(r.id),
    state: r.state as GuardianImportState,
    source: r.source as GuardianImportSource,
    fileName: String(r.file_name ?? ''),
    createdBy: String(r.created_by),
    createdAt: Number(r.created_at),
    importedAt: nullableNumber(r.imported_at),
    rowCount: Number(r.row_count),
    keptCount: Number(r.kept_count),
    pupilCount: Number(r.pupil_count),
    contactCount: Number(r.contact_count),
    problems,
  };
}

function recordToRow(importId: number, g: GuardianRecord): Row {
  return {
    import_id: importId,
    pupil_admission_number: g.admissionNumber,
    pupil_upn: g.upn,
    pupil_forename: g.pupilForename,
    pupil_preferred_forename: g.pupilPreferredForename,
    pupil_surname: g.pupilSurname,
    registration_group: g.registrationGroup,
    contact_title: g.contactTitle,
    contact_forename: g.contactForename,
    contact_surname: g.contactSurname,
    contact_email: g.contactEmail,
    relationship: g.relationship,
    parental_responsibility: g.parentalResponsibility,
    contact_priority: g.contactPriority,
    court_order: g.courtOrder,
  };
}

function recordFromRow(r: Row): GuardianRecord {
  return {
    admissionNumber: String(r.pupil_admission_number ?? ''),
    upn: String(r.pupil_upn ?? ''),
    pupilForename: String(r.pupil_forename ?? ''),
    pupilPreferredForename: String(r.pupil_preferred_forename ?? ''),
    pupilSurname: String(r.pupil_surname ?? ''),
    registrationGroup: String(r.registration_group ?? ''),
    contactTitle: String(r.contact_title ?? ''),
    contactForename: String(r.contact_forename ?? ''),
    contactSurname: String(r.contact_surname ?? ''),
    contactEmail: String(r.contact_email ?? ''),
    relationship: String(r.relationship ?? ''),
    parentalResponsibility: booleanColumn(r.parental_responsibility),
    contactPriority: nullableNumber(r.contact_priority),
    courtOrder: booleanColumn(r.court_order),
  };
}

function matchFromRow(r: Row): StoredMatch {
  let result: unknown = null;
  try {
    result = JSON.parse(String(r.result_json));
  } catch {
    result = null;
  }
  return {
    requestId: Number(r.request_id),
    state: r.state as MatchState,
    importId: nullableNumber(r.import_id),
    recordsImportedAt: nullableNumber(r.records_imported_at),
    checkedAt: Number(r.checked_at),
    result,
  };
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export class GuardianRecordsRepository {
  async insertImport(q: Queryable, entry: NewGuardianImport): Promise<number> {
    const inserted = await q(GUARDIAN_IMPORTS_TABLE).insert({
      state: entry.state,
      source: entry.source,
      file_name: entry.fileName.slice(0, 255),
      created_by: entry.createdBy.slice(0, 100),
      created_at: entry.createdAt,
      imported_at: entry.importedAt ?? null,
      row_count: entry.rowCount,
      kept_count: entry.keptCount,
      pupil_count: entry.pupilCount,
      contact_count: entry.contactCount,
      problems_json: entry.problems.length > 0 ? JSON.stringify(entry.problems) : null,
    });
    return Number(inserted[0]);
  }

  /** Writes the records of one import, a chunk at a time (the caller's transaction makes it all or nothing). */
  async insertRecords(q: Queryable, importId: number, records: readonly GuardianRecord[]): Promise<void> {
    for (const chunk of chunks(records, INSERT_CHUNK)) await q(GUARDIAN_RECORDS_TABLE).insert(chunk.map((g) => recordToRow(importId, g)));
  }

  async findImport(q: Queryable, id: number): Promise<GuardianImport | undefined> {
    const row = (await q(GUARDIAN_IMPORTS_TABLE).where({ id }).first()) as Row | undefined;
    return row ? importFromRow(row) : undefined;
  }

  async currentImport(q: Queryable): Promise<GuardianImport | undefined> {
    const row = (await q(GUARDIAN_IMPORTS_TABLE).where({ state: 'current' }).orderBy('id', 'desc').first()) as Row | undefined;
    return row ? importFromRow(row) : undefined;
  }

  async recentImports(q: Queryable, limit: number): Promise<GuardianImport[]> {
    const rows = (await q(GUARDIAN_IMPORTS_TABLE).whereNot({ state: 'staged' }).orderBy('id', 'desc').limit(limit)) as Row[];
    return rows.map(importFromRow);
  }

  /**
   * Makes an import current: the one before is marked replaced and its records deleted, and the
   * preview's problems (which quote the file) are dropped. False when the import is not staged
   * (already made current by another commit, or dropped).
   */
  async makeCurrent(q: Queryable, id: number, now: number, fromState: GuardianImportState = 'staged'): Promise<boolean> {
    const changed = Number(await q(GUARDIAN_IMPORTS_TABLE).where({ id, state: fromState }).update({ state: 'current', imported_at: now, problems_json: null }));
    if (changed !== 1) return false;
    // A locking read: two imports made current at the same moment on MariaDB each see the other's
    // commit, so exactly one import stays current (SQLite runs one writer at a time anyway).
    const others = q(GUARDIAN_IMPORTS_TABLE).where({ state: 'current' }).whereNot({ id }).pluck('id');
    if (isMysql(q)) others.forUpdate();
    const previous = (await others) as number[];
    if (previous.length > 0) {
      await q(GUARDIAN_RECORDS_TABLE).whereIn('import_id', previous).delete();
      await q(GUARDIAN_IMPORTS_TABLE).whereIn('id', previous).update({ state: 'replaced' });
    }
    return true;
  }

  /** Staged imports nobody made current hold personal data for no purpose: they go. */
  async deleteStagedBefore(q: Queryable, before: number): Promise<number> {
    const ids = (await q(GUARDIAN_IMPORTS_TABLE).where({ state: 'staged' }).andWhere('created_at', '<', before).pluck('id')) as number[];
    if (ids.length === 0) return 0;
    await q(GUARDIAN_RECORDS_TABLE).whereIn('import_id', ids).delete();
    await q(GUARDIAN_IMPORTS_TABLE).whereIn('id', ids).delete();
    return ids.length;
  }

  async countRecords(q: Queryable, importId: number): Promise<number> {
    const row = (await q(GUARDIAN_RECORDS_TABLE).where({ import_id: importId }).count({ n: '*' }).first()) as Row | undefined;
    return Number(row?.n ?? 0);
  }

  async recordsByEmails(q: Queryable, importId: number, emails: readonly string[]): Promise<GuardianRecord[]> {
    const out: GuardianRecord[] = [];
    for (const chunk of chunks([...new Set(emails)], LOOKUP_CHUNK)) {
      const rows = (await q(GUARDIAN_RECORDS_TABLE).where({ import_id: importId }).whereIn('contact_email', chunk)) as Row[];
      out.push(...rows.map(recordFromRow));
    }
    return out;
  }

  /** The records of pupils with one of these identifiers (admission number or UPN) or surnames. */
  async recordsForPupils(q: Queryable, importId: number, pupils: { identifiers: readonly string[]; surnames: readonly string[] }): Promise<GuardianRecord[]> {
    const found = new Map<number, GuardianRecord>();
    const collect = async (column: string, values: readonly string[]) => {
      for (const chunk of chunks([...new Set(values)], LOOKUP_CHUNK)) {
        const rows = (await q(GUARDIAN_RECORDS_TABLE).where({ import_id: importId }).whereIn(column, chunk)) as Row[];
        for (const row of rows) found.set(Number(row.id), recordFromRow(row));
      }
    };
    await collect('pupil_admission_number', pupils.identifiers);
    await collect('pupil_upn', pupils.identifiers.map((i) => i.toUpperCase()));
    await collect('pupil_surname', pupils.surnames);
    return [...found.values()];
  }

  /** Deletes every record with this contact email address, in any import (erasure). */
  async deleteRecordsWithEmail(q: Queryable, email: string): Promise<number> {
    if (email.trim() === '') return 0;
    return Number(await q(GUARDIAN_RECORDS_TABLE).where({ contact_email: email.trim().toLowerCase() }).delete());
  }

  async countRecordsWithEmail(q: Queryable, email: string): Promise<number> {
    const row = (await q(GUARDIAN_RECORDS_TABLE).where({ contact_email: email.trim().toLowerCase() }).count({ n: '*' }).first()) as Row | undefined;
    return Number(row?.n ?? 0);
  }

  // --- matches ---

  async saveMatches(q: Queryable, matches: readonly StoredMatch[]): Promise<void> {
    for (const chunk of chunks(matches, INSERT_CHUNK)) {
      await q(GUARDIAN_MATCHES_TABLE).whereIn('request_id', chunk.map((m) => m.requestId)).delete();
      await q(GUARDIAN_MATCHES_TABLE).insert(
        chunk.map((m) => ({
          request_id: m.requestId,
          state: m.state,
          import_id: m.importId,
          records_imported_at: m.recordsImportedAt,
          checked_at: m.checkedAt,
          result_json: JSON.stringify(m.result),
        })),
      );
    }
  }

  async matchesFor(q: Queryable, requestIds: readonly number[]): Promise<Map<number, StoredMatch>> {
    const out = new Map<number, StoredMatch>();
    for (const chunk of chunks([...new Set(requestIds)], LOOKUP_CHUNK)) {
      const rows = (await q(GUARDIAN_MATCHES_TABLE).whereIn('request_id', chunk)) as Row[];
      for (const row of rows) out.set(Number(row.request_id), matchFromRow(row));
    }
    return out;
  }

  async deleteMatch(q: Queryable, requestId: number): Promise<void> {
    await q(GUARDIAN_MATCHES_TABLE).where({ request_id: requestId }).delete();
  }

  /** Matches of requests no longer waiting for review: what they said is no longer needed. */
  async deleteMatchesNotPending(q: Queryable): Promise<number> {
    return Number(
      await q(GUARDIAN_MATCHES_TABLE)
        .whereNotIn('request_id', q(REQUESTS_TABLE).select('id').where({ status: 'pending' }))
        .delete(),
    );
  }

  /** Requests waiting for review (confirmed), for matching again after an import. */
  async pendingRequestIds(q: Queryable): Promise<number[]> {
    return ((await q(REQUESTS_TABLE).where({ status: 'pending' }).whereNull('erased_at').orderBy('id').pluck('id')) as unknown[]).map(Number);
  }

  /** Pending requests whose last match could not be made (Moodle down): tried again. */
  async requestIdsWithMatchErrors(q: Queryable): Promise<number[]> {
    return ((await q(GUARDIAN_MATCHES_TABLE).where({ state: 'error' }).pluck('request_id')) as unknown[]).map(Number);
  }
}

