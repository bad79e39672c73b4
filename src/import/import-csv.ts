// Reading an import file: a CSV of pre-approved parents and children, one row per child, rows
// with the same email address making one request. Each row is checked with the request form's
// own rules (src/intake/request-form.ts), and every problem is said in words for the school
// office, naming the column, so the whole file can be put right in one go.
import { readCsvRecords, squashColumnName } from '../csv-file';
import type { z } from 'zod';
import { MAX_EMAIL, MAX_NAME, MAX_PUPIL_IDENTIFIER, MAX_TITLE, MAX_TUTOR_GROUP, requestSchema } from '../intake/request-form';
import { sameLetters } from '../moodle/pupil-candidates';
import { usernameFromEmail } from '../requests/username';

/** Rows beyond this are refused: split the file (each row may cost a Moodle look-up). */
export const MAX_IMPORT_ROWS = 5000;

export const IMPORT_FIELDS = [
  'parentTitle',
  'parentFirstName',
  'parentLastName',
  'email',
  'childFirstName',
  'childLastName',
  'tutorGroup',
  'pupilIdentifier',
] as const;
export type ImportField = (typeof IMPORT_FIELDS)[number];
export type ImportValues = Record<ImportField, string>;

/** The column names as staff see them (and as the export writes them), and other names accepted. */
export const IMPORT_COLUMNS: Record<ImportField, { label: string; aliases: string[]; required: boolean }> = {
  parentTitle: { label: 'Parent title', aliases: ['title'], required: false },
  parentFirstName: { label: 'Parent first name', aliases: ['parent forename'], required: true },
  parentLastName: { label: 'Parent last name', aliases: ['parent surname'], required: true },
  email: { label: 'Email', aliases: ['email address', 'parent email', 'parent email address'], required: true },
  childFirstName: { label: 'Child first name', aliases: ['child forename', 'pupil first name', 'pupil forename'], required: true },
  childLastName: { label: 'Child last name', aliases: ['child surname', 'pupil last name', 'pupil surname'], required: true },
  tutorGroup: { label: 'Tutor group', aliases: ['form', 'form group', 'registration group', 'reg group'], required: true },
  pupilIdentifier: { label: 'Pupil identifier', aliases: ['pupil id', 'admission number', 'admission no', 'idnumber'], required: false },
};

/** The Moodle pupil account a row's child was matched to. */
export interface ImportPupil {
  id: number;
  name: string;
  tutorGroup: string;
  identifier: string;
  matchedBy: 'pupil_identifier' | 'name_and_tutor_group' | 'name';
}

export interface ImportRow {
  /** Where the row starts in the file (the header is line 1). */
  line: number;
  values: ImportValues;
  problems: string[];
  pupil: ImportPupil | null;
}

export type ReadResult = { ok: true; rows: ImportRow[]; headerless: boolean } | { ok: false; problem: string };

const COLUMN_BY_NAME = new Map<string, ImportField>(
  IMPORT_FIELDS.flatMap((field) => [IMPORT_COLUMNS[field].label, field, ...IMPORT_COLUMNS[field].aliases].map((name) => [squashColumnName(name), field] as [string, ImportField])),
);

/** Parses the file into rows (values trimmed, nothing checked yet), or says why it cannot. */
export function readImportFile(buffer: Buffer): ReadResult {
  const read = readCsvRecords(buffer);
  if (!read.ok) return read;
  const records = read.records;
  const [first, ...rest] = records;
  if (!first) return { ok: false, problem: 'The file has no rows.' };

  const named = first.cells.map((cell) => COLUMN_BY_NAME.get(squashColumnName(cell)));
  const recognised = named.filter((f) => f !== undefined).length;
  let positions: Partial<Record<ImportField, number>>;
  let data: typeof records;
  let headerless = false;
  if (recognised >= 3) {
    positions = {};
    named.forEach((field, index) => {
      if (field !== undefined && positions[field] === undefined) positions[field] = index;
    });
    const missing = IMPORT_FIELDS.filter((f) => IMPORT_COLUMNS[f].required && positions[f] === undefined).map((f) => `“${IMPORT_COLUMNS[f].label}”`);
    if (missing.length > 0) {
      return { ok: false, problem: `The file has no ${missing.join(', ')} column${missing.length === 1 ? '' : 's'}. The first line must name the columns.` };
    }
    data = rest;
  } else if (first.cells.length === IMPORT_FIELDS.length) {
    // No header line: the eight columns in the documented order.
    positions = Object.fromEntries(IMPORT_FIELDS.map((f, i) => [f, i]));
    data = records;
    headerless = true;
  } else {
    return {
      ok: false,
      problem: `The first line must name the columns (${IMPORT_FIELDS.map((f) => IMPORT_COLUMNS[f].label).join(', ')}), or the file must have exactly these ${IMPORT_FIELDS.length} columns in this order.`,
    };
  }
  if (data.length === 0) return { ok: false, problem: 'The file has a header line but no rows to import.' };
  if (data.length > MAX_IMPORT_ROWS) {
    return { ok: false, problem: `The file has ${data.length} rows; at most ${MAX_IMPORT_ROWS} can be imported at once. Split it into smaller files.` };
  }
  const rows = data.map(({ cells, line }): ImportRow => {
    const values = {} as ImportValues;
    for (const f of IMPORT_FIELDS) values[f] = positions[f] === undefined ? '' : (cells[positions[f] as number] ?? '');
    return { line, values, problems: [], pupil: null };
  });
  return { ok: true, rows, headerless };
}

// The request form's rules for each column (the same zod schemas the form and the API use).
const formSchema = requestSchema(1);
const childShape = formSchema.shape.children.element.shape;
const RULES: Record<ImportField, z.ZodType> = {
  parentTitle: formSchema.shape.title,
  parentFirstName: formSchema.shape.firstName,
  parentLastName: formSchema.shape.lastName,
  email: formSchema.shape.email,
  childFirstName: childShape.firstName,
  childLastName: childShape.lastName,
  tutorGroup: childShape.tutorGroup,
  pupilIdentifier: childShape.pupilIdentifier,
};

const LIMITS: Record<ImportField, number> = {
  parentTitle: MAX_TITLE,
  parentFirstName: MAX_NAME,
  parentLastName: MAX_NAME,
  email: MAX_EMAIL,
  childFirstName: MAX_NAME,
  childLastName: MAX_NAME,
  tutorGroup: MAX_TUTOR_GROUP,
  pupilIdentifier: MAX_PUPIL_IDENTIFIER,
};

const NAME_CHARACTERS = 'letters, spaces, hyphens, apostrophes and full stops';
const ALLOWED: Record<ImportField, string> = {
  parentTitle: 'letters, spaces, hyphens and full stops',
  parentFirstName: NAME_CHARACTERS,
  parentLastName: NAME_CHARACTERS,
  email: '',
  childFirstName: NAME_CHARACTERS,
  childLastName: NAME_CHARACTERS,
  tutorGroup: 'letters, numbers, spaces, hyphens, full stops and slashes',
  pupilIdentifier: 'letters, numbers, spaces, hyphens, full stops, slashes and underscores',
};

function problemWith(field: ImportField, raw: string, issue: z.core.$ZodIssue): string {
  const label = IMPORT_COLUMNS[field].label;
  if (issue.code === 'too_small') return `${label} is empty.`;
  if (issue.code === 'too_big') return `${label} is longer than ${LIMITS[field]} characters.`;
  if (field === 'email') return `Email “${raw}” is not an email address.`;
  return `${label} “${raw}” can only contain ${ALLOWED[field]}.`;
}

/** Checks one row's cells; sets its values to what would be stored (trimmed, email lower-cased). */
function checkCells(row: ImportRow): void {
  // In place: each cell is read before it is replaced, and a copy per row is garbage of every row.
  const values = row.values;
  let emailValid = true;
  for (const field of IMPORT_FIELDS) {
    const raw = row.values[field];
    const result = RULES[field].safeParse(raw);
    if (!result.success) {
      const issue = result.error.issues[0];
      if (issue) row.problems.push(problemWith(field, raw, issue));
      if (field === 'email') emailValid = false;
      continue;
    }
    values[field] = typeof result.data === 'string' ? result.data : '';
  }
  if (emailValid) {
    const username = usernameFromEmail(values.email);
    if (!username.ok) row.problems.push(username.reason);
  }
}

/** The key rows of one parent share: their email address as it will be stored. */
export const parentKey = (row: ImportRow) => row.values.email.trim().toLowerCase();

/**
 * Checks every row's cells, then the rows of each parent together: one name per email address,
 * no child twice, at most maxChildren children.
 */
export function checkRows(rows: ImportRow[], maxChildren: number): void {
  for (const row of rows) checkCells(row);
  for (const group of groupByParent(rows)) {
    const [first] = group;
    if (!first) continue;
    group.forEach((row, index) => {
      if (index > 0) {
        const v = row.values;
        const f = first.values;
        if (!sameLetters(v.parentTitle, f.parentTitle) || !sameLetters(v.parentFirstName, f.parentFirstName) || !sameLetters(v.parentLastName, f.parentLastName)) {
          row.problems.push(`The parent’s title or name is not the same as on line ${first.line}, which has the same email address.`);
        }
        const twin = group
          .slice(0, index)
          .find(
            (other) =>
              (v.pupilIdentifier !== '' && sameLetters(other.values.pupilIdentifier, v.pupilIdentifier)) ||
              (sameLetters(other.values.childFirstName, v.childFirstName) && sameLetters(other.values.childLastName, v.childLastName)),
          );
        if (twin) row.problems.push(`This child is already on line ${twin.line} for the same parent.`);
      }
      if (index >= maxChildren) {
        row.problems.push(`More than ${maxChildren} children have this email address; a request can name at most ${maxChildren}.`);
      }
    });
  }
}

/** Rows grouped by parent (email address), in the order each parent first appears. */
export function groupByParent(rows: ImportRow[]): ImportRow[][] {
  const groups = new Map<string, ImportRow[]>();
  for (const row of rows) {
    const key = parentKey(row);
    const group = groups.get(key) ?? [];
    group.push(row);
    groups.set(key, group);
  }
  return [...groups.values()];
}

/**
 * A parent is imported whole or not at all: when any of their rows has a problem, the others
 * are not imported either (a half-imported parent would block the rest being imported later).
 */
export function holdBackIncompleteParents(rows: ImportRow[]): void {
  for (const group of groupByParent(rows)) {
    const bad = group.filter((r) => r.problems.length > 0);
    if (bad.length === 0) continue;
    const lines = bad.map((r) => r.line).join(', ');
    for (const row of group) {
      if (row.problems.length === 0) row.problems.push(`Not imported, because line${bad.length === 1 ? '' : 's'} ${lines} for the same parent ${bad.length === 1 ? 'has a problem' : 'have problems'}.`);
    }
  }
}
