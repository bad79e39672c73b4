// Guardian records for tests: an MIS contact export as SIMS writes it, and the Moodle pupils the
// records name (added to the Moodle double with their idnumber).
import { MoodleClient } from '../../src/moodle/moodle-client';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble, type MoodleSiteState } from './moodle-double';

export const GUARDIAN_HEADER =
  'Adno,UPN,Legal Forename,Legal Surname,Preferred Forename,Reg Group,Contact Title,Contact Forename,Contact Surname,Contact Email,Relationship,Parental Responsibility,Priority,Court Order';

/** One row of the export, in GUARDIAN_HEADER's order. */
export interface GuardianRowInput {
  adno: string;
  upn?: string;
  forename: string;
  surname: string;
  preferred?: string;
  group: string;
  title?: string;
  contactForename: string;
  contactSurname: string;
  email: string;
  relationship?: string;
  responsibility?: string;
  priority?: string;
  courtOrder?: string;
}

export function guardianRow(r: GuardianRowInput): string {
  return [
    r.adno,
    r.upn ?? '',
    r.forename,
    r.surname,
    r.preferred ?? '',
    r.group,
    r.title ?? '',
    r.contactForename,
    r.contactSurname,
    r.email,
    r.relationship ?? 'Mother',
    r.responsibility ?? 'Y',
    r.priority ?? '1',
    r.courtOrder ?? 'N',
  ].join(',');
}

export function guardianCsv(rows: GuardianRowInput[]): string {
  return [GUARDIAN_HEADER, ...rows.map(guardianRow)].join('\r\n') + '\r\n';
}

/** The Haddad family and others, as the tests' MIS has them. */
export const FAMILY_ROWS: GuardianRowInput[] = [
  { adno: 'ADM1042', forename: 'Sami', surname: 'Haddad', group: '7B', title: 'Mrs', contactForename: 'Amira', contactSurname: 'Haddad', email: 'amira.haddad@example.org' },
  { adno: 'ADM1043', forename: 'Lina', surname: 'Haddad', group: '10R', title: 'Mrs', contactForename: 'Amira', contactSurname: 'Haddad', email: 'amira.haddad@example.org' },
  { adno: 'ADM1042', forename: 'Sami', surname: 'Haddad', group: '7B', title: 'Mr', contactForename: 'Omar', contactSurname: 'Haddad', email: 'omar.haddad@example.org', relationship: 'Father', priority: '2' },
  { adno: 'ADM1001', forename: 'Ann', surname: 'Pupil', group: '7B', title: 'Mr', contactForename: 'Carl', contactSurname: 'Pupil', email: 'carl.pupil@example.org', relationship: 'Step-father', responsibility: 'No' },
  { adno: 'ADM1002', forename: 'Bob', surname: 'Pupil', group: '9C', title: 'Ms', contactForename: 'Dana', contactSurname: 'Other', email: 'dana.other@example.org', responsibility: 'Yes', courtOrder: 'Yes' },
  { adno: 'ADM1044', forename: 'Noor', surname: 'Haddad', group: '8A', title: 'Mrs', contactForename: 'Rania', contactSurname: 'Haddad', email: 'rania.haddad@example.org' },
];

/** Adds the pupils of FAMILY_ROWS that the recorded site lacks (Ann and Bob Pupil are there). */
export function addGuardianPupils(state: MoodleSiteState): void {
  state.addUser({ id: 42, username: 'sami.haddad', firstname: 'Sami', lastname: 'Haddad', email: 'sami@example.com', department: '7B', idnumber: 'ADM1042' });
  state.addUser({ id: 43, username: 'lina.haddad', firstname: 'Lina', lastname: 'Haddad', email: 'lina@example.com', department: '10R', idnumber: 'ADM1043' });
  state.addUser({ id: 44, username: 'noor.haddad', firstname: 'Noor', lastname: 'Haddad', email: 'noor@example.com', department: '8A', idnumber: 'ADM1044' });
}

/** The Moodle double with the recorded site and the guardian pupils, and a client for it. */
export async function startGuardianMoodle(): Promise<{ moodle: MoodleDouble; client: MoodleClient }> {
  const state = seedRecordedSite();
  addGuardianPupils(state);
  const moodle = await startMoodleDouble({ state });
  const client = new MoodleClient({ url: moodle.url, token: moodle.tokens.ws, timeoutMs: 2000, retries: 0, retryDelayMs: 1, batchSize: 100 });
  return { moodle, client };
}
