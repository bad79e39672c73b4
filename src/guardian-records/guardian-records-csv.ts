// Reading the MIS "pupil contacts" export (one row per pupil and contact) into guardian records:
// the columns under the names SIMS, Arbor, Bromcom, iSAMS and others give them, each row's values
// checked and every problem said in words with its line, so the preview can show them all.
import { readCsvRecords, squashColumnName } from '../csv-file';

/** A snapshot bigger than this is refused: no school has this many pupil contacts. */
export const MAX_GUARDIAN_ROWS = 100_000;

export const GUARDIAN_FIELDS = [
  'admissionNumber',
  'upn',
  'pupilForename',
  'pupilPreferredForename',
  'pupilSurname',
  'registrationGroup',
  'contactTitle',
  'contactForename',
  'contactSurname',
  'contactEmail',
  'relationship',
  'parentalResponsibility',
  'contactPriority',
  'courtOrder',
] as const;
export type GuardianField = (typeof GUARDIAN_FIELDS)[number];

/** Which pupil identifier Moodle's idnumber holds (GUARDIAN_PUPIL_ID). */
export type PupilIdField = 'admission_number' | 'upn';

interface ColumnSpec {
  label: string;
  aliases: string[];
  maxLength: number;
}

/** The column names as the documentation gives them, and the names the MIS products write. */
export const GUARDIAN_COLUMNS: Record<GuardianField, ColumnSpec> = {
  admissionNumber: {
    label: 'Admission number',
    aliases: ['adno', 'adm no', 'admission no', 'pupil admission number', 'student admission number', 'admission no.', 'pupil adno'],
    maxLength: 50,
  },
  upn: { label: 'UPN', aliases: ['unique pupil number', 'pupil upn', 'student upn'], maxLength: 20 },
  pupilForename: {
    label: 'Pupil forename',
    aliases: ['legal forename', 'forename', 'pupil legal forename', 'pupil first name', 'student forename', 'student first name', 'student legal first name', 'legal first name'],
    maxLength: 100,
  },
  pupilPreferredForename: {
    label: 'Preferred forename',
    aliases: ['pupil preferred forename', 'student preferred first name', 'preferred first name', 'student preferred forename', 'chosen forename'],
    maxLength: 100,
  },
  pupilSurname: {
    label: 'Pupil surname',
    aliases: ['legal surname', 'surname', 'pupil legal surname', 'pupil last name', 'student surname', 'student last name', 'student legal last name', 'legal last name'],
    maxLength: 100,
  },
  registrationGroup: {
    label: 'Registration group',
    aliases: ['reg group', 'reg', 'registration', 'form', 'form group', 'tutor group', 'registration form', 'reg form', 'student registration form'],
    maxLength: 50,
  },
  contactTitle: { label: 'Contact title', aliases: ['guardian title', 'parent title', 'title'], maxLength: 35 },
  contactForename: {
    label: 'Contact forename',
    aliases: ['contact first name', 'guardian first name', 'guardian forename', 'parent forename', 'parent first name'],
    maxLength: 100,
  },
  contactSurname: {
    label: 'Contact surname',
    aliases: ['contact last name', 'guardian last name', 'guardian surname', 'parent surname', 'parent last name'],
    maxLength: 100,
  },
  contactEmail: {
    label: 'Contact email',
    aliases: ['email', 'email address', 'contact email address', 'guardian email', 'guardian email address', 'parent email', 'primary email', 'contact main email'],
    maxLength: 254,
  },
  relationship: { label: 'Relationship', aliases: ['relationship to pupil', 'relationship to student', 'relation', 'contact relationship', 'contact relation'], maxLength: 50 },
  parentalResponsibility: {
    label: 'Parental responsibility',
    aliases: ['has parental responsibility', 'pr', 'parental resp', 'parental resp.', 'parental responsibility flag'],
    maxLength: 10,
  },
  contactPriority: { label: 'Contact priority', aliases: ['priority', 'contact order', 'priority order', 'contact priority order'], maxLength: 5 },
  courtOrder: {
    label: 'Court order',
    aliases: ['court order flag', 'no contact', 'legal restriction', 'legal restrictions', 'court order or no contact', 'no contact flag', 'court order / no contact'],
    maxLength: 10,
  },
};

const COLUMN_BY_NAME = new Map<string, GuardianField>(
  GUARDIAN_FIELDS.flatMap((field) => [GUARDIAN_COLUMNS[field].label, field, ...GUARDIAN_COLUMNS[field].aliases].map((name) => [squashColumnName(name), field] as [string, GuardianField])),
);

/** One guardian record as it is kept. */
export interface GuardianRecord {
  admissionNumber: string;
  upn: string;
  pupilForename: string;
  pupilPreferredForename: string;
  pupilSurname: string;
  registrationGroup: string;
  contactTitle: string;
  contactForename: string;
  contactSurname: string;
  /** Trimmed and lower-cased. */
  contactEmail: string;
  relationship: string;
  parentalResponsibility: boolean;
  contactPriority: number | null;
  courtOrder: boolean;
}

/** A problem with one row: the row is left out of the snapshot. */
export interface GuardianRowProblem {
  line: number;
  message: string;
}

export interface GuardianSnapshotRead {
  records: GuardianRecord[];
  problems: GuardianRowProblem[];
  /** Rows of the file (the header not counted). */
  rowCount: number;
  /** Contacts without an email address: they cannot match a request, so they are not kept. */
  withoutEmail: number;
  /** The same contact for the same pupil again: kept once. */
  repeated: number;
}

export type GuardianReadResult = ({ ok: true } & GuardianSnapshotRead) | { ok: false; problem: string };

const YES = new Set(['y', 'yes', 'true', '1', 't']);
const NO = new Set(['n', 'no', 'false', '0', 'f', '']);
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

function yesNo(raw: string): boolean | undefined {
  const v = raw.trim().toLowerCase();
  if (YES.has(v)) return true;
  if (NO.has(v)) return false;
  return undefined;
}

/** Values as the API sends them: strings, booleans or numbers. */
export type GuardianInputRow = Partial<Record<GuardianField, string | number | boolean | null>>;

/**
 * Checks one row (from a file or the API) and makes it a record, or says what is wrong; undefined
 * when the contact has no email address (nothing to match, nothing to keep).
 */
export function toGuardianRecord(input: GuardianInputRow, pupilIdField: PupilIdField): { record: GuardianRecord } | { problem: string } | undefined {
  const text = (field: GuardianField) => {
    const v = input[field];
    return v === null || v === undefined ? '' : String(v).trim();
  };
  for (const field of GUARDIAN_FIELDS) {
    if (text(field).length > GUARDIAN_COLUMNS[field].maxLength) return { problem: `${GUARDIAN_COLUMNS[field].label} is longer than ${GUARDIAN_COLUMNS[field].maxLength} characters.` };
  }
  const email = text('contactEmail').toLowerCase();
  if (email === '') return undefined;
  if (!EMAIL.test(email)) return { problem: `Contact email “${text('contactEmail')}” is not an email address.` };
  const idField: GuardianField = pupilIdField === 'upn' ? 'upn' : 'admissionNumber';
  if (text(idField) === '') return { problem: `${GUARDIAN_COLUMNS[idField].label} is empty, so the pupil cannot be found in Moodle.` };
  if (text('pupilForename') === '' && text('pupilPreferredForename') === '') return { problem: 'Pupil forename is empty.' };
  if (text('pupilSurname') === '') return { problem: 'Pupil surname is empty.' };
  const flag = (field: 'parentalResponsibility' | 'courtOrder'): boolean | string => {
    const raw = input[field];
    if (typeof raw === 'boolean') return raw;
    const value = yesNo(text(field));
    return value ?? `${GUARDIAN_COLUMNS[field].label} “${text(field)}” is not Yes or No (Y/N, Yes/No, True/False).`;
  };
  const responsibility = flag('parentalResponsibility');
  if (typeof responsibility === 'string') return { problem: responsibility };
  const courtOrder = flag('courtOrder');
  if (typeof courtOrder === 'string') return { problem: courtOrder };
  const priorityText = text('contactPriority');
  if (priorityText !== '' && !/^\d{1,4}$/.test(priorityText)) return { problem: `Contact priority “${priorityText}” is not a whole number.` };
  return {
    record: {
      admissionNumber: text('admissionNumber'),
      upn: text('upn').toUpperCase(),
      pupilForename: text('pupilForename') || text('pupilPreferredForename'),
      pupilPreferredForename: text('pupilPreferredForename'),
      pupilSurname: text('pupilSurname'),
      registrationGroup: text('registrationGroup'),
      contactTitle: text('contactTitle'),
      contactForename: text('contactForename'),
      contactSurname: text('contactSurname'),
      contactEmail: email,
      relationship: text('relationship'),
      parentalResponsibility: responsibility,
      contactPriority: priorityText === '' ? null : Number(priorityText),
      courtOrder,
    },
  };
}

/** The pupil identifier Moodle knows the record's pupil by. */
export function pupilIdOf(record: Pick<GuardianRecord, 'admissionNumber' | 'upn'>, pupilIdField: PupilIdField): string {
  return pupilIdField === 'upn' ? record.upn : record.admissionNumber;
}

/** Checks every row, keeping each pupil and contact once. */
export function checkGuardianRows(rows: Array<{ line: number; values: GuardianInputRow }>, pupilIdField: PupilIdField): GuardianSnapshotRead {
  const records: GuardianRecord[] = [];
  const problems: GuardianRowProblem[] = [];
  const seen = new Set<string>();
  let withoutEmail = 0;
  let repeated = 0;
  for (const row of rows) {
    const checked = toGuardianRecord(row.values, pupilIdField);
    if (checked === undefined) withoutEmail += 1;
    else if ('problem' in checked) problems.push({ line: row.line, message: checked.problem });
    else {
      const key = `${pupilIdOf(checked.record, pupilIdField).toLowerCase()}\u0000${checked.record.contactEmail}`;
      if (seen.has(key)) repeated += 1;
      else {
        seen.add(key);
        records.push(checked.record);
      }
    }
  }
  return { records, problems, rowCount: rows.length, withoutEmail, repeated };
}

/** Reads the export file; refuses it whole only when it cannot be read or lacks a needed column. */
export function readGuardianFile(buffer: Buffer, pupilIdField: PupilIdField): GuardianReadResult {
  const read = readCsvRecords(buffer);
  if (!read.ok) return read;
  const [header, ...data] = read.records;
  if (!header) return { ok: false, problem: 'The file has no rows.' };
  const positions: Partial<Record<GuardianField, number>> = {};
  header.cells.forEach((cell, index) => {
    const field = COLUMN_BY_NAME.get(squashColumnName(cell));
    if (field !== undefined && positions[field] === undefined) positions[field] = index;
  });
  const idField: GuardianField = pupilIdField === 'upn' ? 'upn' : 'admissionNumber';
  const required: GuardianField[] = [idField, 'pupilSurname', 'registrationGroup', 'contactEmail', 'parentalResponsibility'];
  const missing = required.filter((f) => positions[f] === undefined);
  if (positions.pupilForename === undefined && positions.pupilPreferredForename === undefined) missing.splice(1, 0, 'pupilForename');
  if (missing.length > 0) {
    const names = missing.map((f) => `“${GUARDIAN_COLUMNS[f].label}”`).join(', ');
    return { ok: false, problem: `The file has no ${names} column${missing.length === 1 ? '' : 's'}. The first line must name the columns; docs/guardian-records.md lists the names understood.` };
  }
  if (data.length === 0) return { ok: false, problem: 'The file has a header line but no rows.' };
  if (data.length > MAX_GUARDIAN_ROWS) return { ok: false, problem: `The file has ${data.length} rows; at most ${MAX_GUARDIAN_ROWS} can be imported.` };
  const rows = data.map(({ cells, line }) => ({
    line,
    values: Object.fromEntries(GUARDIAN_FIELDS.map((f) => [f, positions[f] === undefined ? '' : (cells[positions[f] as number] ?? '')])) as GuardianInputRow,
  }));
  return { ok: true, ...checkGuardianRows(rows, pupilIdField) };
}
