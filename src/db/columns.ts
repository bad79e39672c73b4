// Reading column values the same way on MySQL and SQLite: nullable numbers and strings, and
// booleans (MySQL tinyint and SQLite integer both come back as 0/1).

export const nullableNumber = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
export const nullableString = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
export const booleanColumn = (v: unknown): boolean => v === true || v === 1 || v === '1';
