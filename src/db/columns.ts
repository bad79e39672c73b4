// Reading column values the same way on MySQL and SQLite: nullable numbers and strings, and
// booleans (MySQL tinyint and SQLite integer both come back as 0/1).

export const nullableNumber = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
export const nullableString = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
export const booleanColumn = (v: unknown): boolean => v === true || v === 1 || v === '1';

/** A JSON text column read back, or the fallback when it is empty or not JSON. */
export function parseJsonColumn<T>(text: unknown, fallback: T): T {
  if (typeof text !== 'string' || text === '') return fallback;
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}

// ------------------------------------------------------------------ what each column can hold
// MariaDB in strict mode refuses a value that does not fit its column (a 500 if nothing checked
// it first); SQLite stores anything. So every value a staff form, the CLI or the API sends is
// checked against these before it is written, with a message saying what fits.

/** The largest id an INT column holds (request ids, Moodle user ids, versions). Moodle's own ids are BIGINT. */
export const MAX_INT_ID = 2_147_483_647;

/** A TEXT column on MySQL/MariaDB holds 65,535 bytes of UTF-8 (a character takes 1 to 4). */
export const TEXT_COLUMN_BYTES = 65_535;

/**
 * The longest a reason or a staff comment may be, in characters: room for any characters
 * (4 bytes each) in a TEXT column, and long enough for anything an office writes.
 */
export const MAX_STAFF_TEXT = 4_000;

/** Widths of the string columns that staff and API input reach (characters, as in the migrations). */
export const COLUMN_WIDTHS = {
  /** requests.decided_by: "<actor type>:<staff username, API key name or CLI user>". */
  decidedBy: 255,
  /** requests.moodle_username and the auth table's username. */
  moodleUsername: 100,
  /** staff_users.username, audit_events.actor_id, import_batches.created_by, provisioning_cycles.triggered_by. */
  actorId: 100,
} as const;

/** True when the id fits an INT column: a positive whole number up to MAX_INT_ID. */
export function isIntId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0 && value <= MAX_INT_ID;
}

/** True when the text fits a TEXT column on MySQL/MariaDB. */
export function fitsTextColumn(text: string): boolean {
  return Buffer.byteLength(text, 'utf8') <= TEXT_COLUMN_BYTES;
}
