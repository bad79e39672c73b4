// Finds the Moodle pupil accounts a parent's child may be, for staff to confirm: by pupil identifier
// (Moodle idnumber) when given, else by name narrowed by tutor group (Moodle department).
import type { MoodleClient, MoodleUser } from './moodle-client';

export interface ChildToMatch {
  firstName: string;
  lastName: string;
  tutorGroup?: string | null | undefined;
  pupilIdentifier?: string | null | undefined;
}

export interface PupilCandidate {
  id: number;
  username: string;
  firstname: string;
  lastname: string;
  fullname: string;
  /** The tutor group. */
  department: string;
  /** The pupil identifier; '' when not set. */
  idnumber: string;
}

export type PupilMatchKind = 'exact' | 'ambiguous' | 'not_found';

export interface PupilMatch {
  kind: PupilMatchKind;
  candidates: PupilCandidate[];
  /** How the candidates were found. */
  matchedBy: 'pupil_identifier' | 'name_and_tutor_group' | 'name' | 'none';
  /** A plain-words note for staff when the match needs their judgement. */
  note?: string;
}

/** Only the look-ups the matching needs, so staff pages and tests can pass any client. */
export type PupilLookupClient = Pick<MoodleClient, 'getUsersByField' | 'getUsers'>;

function toCandidate(user: MoodleUser): PupilCandidate {
  return {
    id: user.id,
    username: user.username,
    firstname: user.firstname,
    lastname: user.lastname,
    fullname: user.fullname,
    department: user.department,
    idnumber: user.idnumber,
  };
}

// Moodle's get-users calls leave out deleted users; suspended ones must never be offered.
function offerable(users: MoodleUser[]): MoodleUser[] {
  return users.filter((u) => !u.suspended);
}

// One collator for every comparison: a.localeCompare(b, undefined, options) builds a new ICU
// collator on each call (about 1 KB of native memory, freed only when V8 collects it), which for a
// file of 5,000 rows piled up to 12 MiB (heaptrack). Same answers: localeCompare is defined as this.
const BASE_LETTERS = new Intl.Collator(undefined, { sensitivity: 'base' });

/** Same letters, ignoring case and accents: how a school office reads two names. */
export function sameLetters(a: string, b: string): boolean {
  return BASE_LETTERS.compare(a, b) === 0;
}

/** Same letters once the spaces around them are set aside. */
export function sameName(a: string, b: string): boolean {
  return sameLetters(a.trim(), b.trim());
}

/** "7 b" and "7B" are the same tutor group. */
function sameTutorGroup(a: string, b: string): boolean {
  const squash = (s: string) => s.replace(/\s+/g, '').toLowerCase();
  return squash(a) === squash(b);
}

function kindOf(candidates: PupilCandidate[]): PupilMatchKind {
  if (candidates.length === 0) return 'not_found';
  return candidates.length === 1 ? 'exact' : 'ambiguous';
}

async function usersByName(client: PupilLookupClient, firstName: string, lastName: string): Promise<MoodleUser[]> {
  const users = await client.getUsers([
    { key: 'firstname', value: firstName },
    { key: 'lastname', value: lastName },
  ]);
  // Moodle matches with SQL LIKE, so a % or _ in a name would widen the search: keep true matches only.
  return offerable(users).filter((u) => sameName(u.firstname, firstName) && sameName(u.lastname, lastName));
}

export async function findPupilCandidates(client: PupilLookupClient, child: ChildToMatch): Promise<PupilMatch> {
  const identifier = child.pupilIdentifier?.trim() ?? '';
  let identifierMissed = false;
  if (identifier !== '') {
    const byIdentifier = offerable(await client.getUsersByField('idnumber', [identifier])).map(toCandidate);
    if (byIdentifier.length > 0) {
      return { kind: kindOf(byIdentifier), candidates: byIdentifier, matchedBy: 'pupil_identifier' };
    }
    identifierMissed = true;
  }

  const firstName = child.firstName.trim();
  const lastName = child.lastName.trim();
  if (firstName === '' || lastName === '') {
    return { kind: 'not_found', candidates: [], matchedBy: 'none' };
  }
  const byName = (await usersByName(client, firstName, lastName)).map(toCandidate);
  const tutorGroup = child.tutorGroup?.trim() ?? '';
  let match: PupilMatch;
  if (byName.length === 0) {
    match = { kind: 'not_found', candidates: [], matchedBy: 'none' };
  } else if (tutorGroup === '') {
    match = { kind: kindOf(byName), candidates: byName, matchedBy: 'name' };
  } else {
    // core_user_get_users cannot search by department: narrow the name matches here.
    const inGroup = byName.filter((c) => sameTutorGroup(c.department, tutorGroup));
    match =
      inGroup.length > 0
        ? { kind: kindOf(inGroup), candidates: inGroup, matchedBy: 'name_and_tutor_group' }
        : {
            kind: 'ambiguous',
            candidates: byName,
            matchedBy: 'name',
            note: `No pupil with this name is in tutor group ${tutorGroup} in Moodle; these have the same name.`,
          };
  }
  if (identifierMissed) {
    // A pupil identifier that Moodle does not know may be a typing slip or a different child:
    // never preselect a name match against it.
    const note = `The pupil identifier ${identifier} is not in Moodle.`;
    if (match.kind === 'not_found') return { ...match, note };
    return { ...match, kind: 'ambiguous', note: match.note === undefined ? `${note} These match by name.` : `${note} ${match.note}` };
  }
  return match;
}

/**
 * Staff's manual search box: one word is taken as a username (exact, lower-cased), falling back to a
 * surname; several words as "first last" (or, failing that, "first names" + last word as surname).
 */
export async function searchPupils(client: PupilLookupClient, query: string): Promise<PupilCandidate[]> {
  const words = query.trim().split(/\s+/).filter((w) => w !== '');
  const [first] = words;
  if (first === undefined) return [];
  if (words.length === 1) {
    const byUsername = offerable(await client.getUsersByField('username', [first]));
    if (byUsername.length > 0) return byUsername.map(toCandidate);
    return offerable(await client.getUsers([{ key: 'lastname', value: first }])).map(toCandidate);
  }
  const splits: Array<[string, string]> = [[first, words.slice(1).join(' ')]];
  if (words.length > 2) splits.push([words.slice(0, -1).join(' '), words[words.length - 1] ?? '']);
  for (const [firstName, lastName] of splits) {
    const users = offerable(
      await client.getUsers([
        { key: 'firstname', value: firstName },
        { key: 'lastname', value: lastName },
      ]),
    );
    if (users.length > 0) return users.map(toCandidate);
  }
  return [];
}
