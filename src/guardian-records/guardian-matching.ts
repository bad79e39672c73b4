// Matching a confirmed request against the guardian records, in plain logic (no I/O): the email
// is a contact's, and each named child is a pupil of that contact (by pupil identifier when the
// parent gave one, else forename, surname and registration group), with parental responsibility,
// no court order, and the pupil found in Moodle by idnumber. Every child that does not match says
// why, in words for the school office; an address that differs by a typo is a reason, never a match.
import type { MoodleUser } from '../moodle/moodle-client';
import { pupilIdOf, type GuardianRecord, type PupilIdField } from './guardian-records-csv';

export interface ChildToMatch {
  id: number;
  firstName: string;
  lastName: string;
  tutorGroup: string;
  pupilIdentifier: string | null;
}

export interface RequestToMatch {
  id: number;
  email: string;
  children: ChildToMatch[];
}

export interface ChildMatchResult {
  childId: number;
  childName: string;
  matched: boolean;
  /** The Moodle pupil account, when matched. */
  moodleUserId: number | null;
  /** How staff recognise that account, when matched. */
  moodlePupil: { id: number; username: string; firstname: string; lastname: string; fullname: string; department: string; idnumber: string } | null;
  /** "Mrs Amira Haddad is a contact of Sami Haddad, 7B, ADM1042, mother, parental responsibility: yes" */
  evidence: string | null;
  /** Why this child does not match. */
  reason: string | null;
}

export interface MatchResult {
  state: 'full' | 'partial' | 'none';
  children: ChildMatchResult[];
  /** Pupils the contact is also linked to that the parent did not name: "Lina Haddad, 10R". */
  alsoContactOf: string[];
}

/** Where to look for a request's records, built once for many requests. */
export interface RecordIndex {
  byEmail: Map<string, GuardianRecord[]>;
  byIdentifier: Map<string, GuardianRecord[]>;
  bySurname: Map<string, GuardianRecord[]>;
}

/** Names compared without case, accents, spaces or punctuation. */
export function normaliseName(value: string): string {
  return value
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '');
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

export function buildRecordIndex(records: Iterable<GuardianRecord>): RecordIndex {
  const index: RecordIndex = { byEmail: new Map(), byIdentifier: new Map(), bySurname: new Map() };
  for (const record of records) {
    push(index.byEmail, record.contactEmail, record);
    if (record.admissionNumber) push(index.byIdentifier, normaliseName(record.admissionNumber), record);
    if (record.upn && normaliseName(record.upn) !== normaliseName(record.admissionNumber)) push(index.byIdentifier, normaliseName(record.upn), record);
    push(index.bySurname, normaliseName(record.pupilSurname), record);
  }
  return index;
}

function isChild(record: GuardianRecord, child: ChildToMatch): boolean {
  const identifier = child.pupilIdentifier?.trim() ?? '';
  if (identifier !== '') {
    const wanted = normaliseName(identifier);
    return wanted === normaliseName(record.admissionNumber) || (record.upn !== '' && wanted === normaliseName(record.upn));
  }
  const first = normaliseName(child.firstName);
  return (
    normaliseName(record.pupilSurname) === normaliseName(child.lastName) &&
    (normaliseName(record.pupilForename) === first || (record.pupilPreferredForename !== '' && normaliseName(record.pupilPreferredForename) === first)) &&
    normaliseName(record.registrationGroup) === normaliseName(child.tutorGroup)
  );
}

/** The records of this child's pupil, whoever the contact. */
function recordsOfChild(index: RecordIndex, child: ChildToMatch): GuardianRecord[] {
  const identifier = child.pupilIdentifier?.trim() ?? '';
  const pool = identifier !== '' ? (index.byIdentifier.get(normaliseName(identifier)) ?? []) : (index.bySurname.get(normaliseName(child.lastName)) ?? []);
  return pool.filter((r) => isChild(r, child));
}

export function describePupil(record: GuardianRecord, pupilIdField: PupilIdField): string {
  const name = `${record.pupilPreferredForename || record.pupilForename} ${record.pupilSurname}`;
  return [name, record.registrationGroup, pupilIdOf(record, pupilIdField)].filter((p) => p.trim() !== '').join(', ');
}

export function contactName(record: GuardianRecord): string {
  return [record.contactTitle, record.contactForename, record.contactSurname].filter((p) => p.trim() !== '').join(' ') || record.contactEmail;
}

/** Edit distance, giving up (returning limit + 1) once it is certainly more than limit. */
export function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    let best = i;
    for (let j = 1; j <= b.length; j += 1) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      const value = Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, (previous[j - 1] as number) + cost);
      current.push(value);
      if (value < best) best = value;
    }
    if (best > limit) return limit + 1;
    previous = current;
  }
  return previous[b.length] as number;
}

/** An address close enough to be the same one mistyped (two letters or fewer apart). */
const TYPO_DISTANCE = 2;

const pupilKey = (record: GuardianRecord, pupilIdField: PupilIdField) => normaliseName(pupilIdOf(record, pupilIdField));

/**
 * Matches one request. moodleByIdnumber holds the Moodle accounts found for the records' pupil
 * identifiers (keyed by the identifier lower-cased); a pupil not in it is not in Moodle.
 */
export function matchRequest(request: RequestToMatch, index: RecordIndex, moodleByIdnumber: ReadonlyMap<string, MoodleUser[]>, pupilIdField: PupilIdField): MatchResult {
  const email = request.email.trim().toLowerCase();
  const contactRows = index.byEmail.get(email) ?? [];
  const usedPupils = new Map<string, string>();
  const children: ChildMatchResult[] = request.children.map((child) => {
    const childName = `${child.firstName} ${child.lastName}`.trim();
    const refused = (reason: string): ChildMatchResult => ({ childId: child.id, childName, matched: false, moodleUserId: null, moodlePupil: null, evidence: null, reason });
    const how = child.pupilIdentifier?.trim() ? `with pupil identifier ${child.pupilIdentifier.trim()}` : `called ${childName} in ${child.tutorGroup || 'no registration group'}`;
    const rows = contactRows.filter((r) => isChild(r, child));
    const pupils = new Set(rows.map((r) => pupilKey(r, pupilIdField)));
    if (rows.length === 0) {
      const ofChild = recordsOfChild(index, child);
      if (ofChild.length === 0) return refused(`No pupil ${how} is in the school records.`);
      const close = ofChild.find((r) => editDistance(r.contactEmail, email, TYPO_DISTANCE) <= TYPO_DISTANCE);
      const pupil = describePupil(ofChild[0] as GuardianRecord, pupilIdField);
      if (close) {
        return refused(
          `A contact of ${pupil} (${contactName(close)}) has the address ${close.contactEmail}, close to the request’s address ${email} but not the same. Check with the parent which is right.`,
        );
      }
      return refused(`${pupil} is in the school records, but no contact of that pupil has the address ${email}.`);
    }
    if (pupils.size > 1) return refused(`More than one pupil ${how} has this contact in the school records. Match this child by hand.`);
    const record = [...rows].sort((a, b) => (a.contactPriority ?? 99) - (b.contactPriority ?? 99))[0] as GuardianRecord;
    const pupil = describePupil(record, pupilIdField);
    const who = contactName(record);
    const evidence = `${who} is a contact of ${pupil}${record.relationship ? `, ${record.relationship.toLowerCase()}` : ''}, parental responsibility: ${record.parentalResponsibility ? 'yes' : 'no'}`;
    const key = pupilKey(record, pupilIdField);
    const twin = usedPupils.get(key);
    if (twin !== undefined) return { ...refused(`${childName} is the same pupil in the school records as ${twin}.`), evidence };
    usedPupils.set(key, childName);
    if (record.courtOrder) return { ...refused(`The school records have a court order or no-contact flag for ${who} and ${pupil}.`), evidence };
    if (!record.parentalResponsibility) return { ...refused(`${who} is a contact of ${pupil}, but without parental responsibility in the school records.`), evidence };
    const identifier = pupilIdOf(record, pupilIdField);
    const accounts = (moodleByIdnumber.get(identifier.toLowerCase()) ?? []).filter((u) => u.idnumber.toLowerCase() === identifier.toLowerCase());
    if (accounts.length === 0) return { ...refused(`No pupil in Moodle has the idnumber ${identifier}.`), evidence };
    if (accounts.length > 1) return { ...refused(`More than one Moodle account has the idnumber ${identifier}.`), evidence };
    const account = accounts[0] as MoodleUser;
    if (account.suspended) return { ...refused(`The Moodle account of ${pupil} (${account.username}) is suspended.`), evidence };
    const moodlePupil = { id: account.id, username: account.username, firstname: account.firstname, lastname: account.lastname, fullname: account.fullname, department: account.department, idnumber: account.idnumber };
    return { childId: child.id, childName, matched: true, moodleUserId: account.id, moodlePupil, evidence, reason: null };
  });

  const named = new Set(usedPupils.keys());
  const also = new Map<string, string>();
  for (const record of contactRows) {
    const key = pupilKey(record, pupilIdField);
    if (named.has(key) || also.has(key)) continue;
    if (request.children.some((c) => isChild(record, c))) continue;
    also.set(key, `${record.pupilPreferredForename || record.pupilForename} ${record.pupilSurname}${record.registrationGroup ? `, ${record.registrationGroup}` : ''}`);
  }
  const matched = children.filter((c) => c.matched).length;
  return {
    state: matched === children.length && matched > 0 ? 'full' : matched > 0 ? 'partial' : 'none',
    children,
    alsoContactOf: [...also.values()],
  };
}
