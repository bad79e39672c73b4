// The guardian records' pure parts: the MIS column names as the products write them, the yes/no
// flags, which rows are kept, and the matching rules (preferred names, UPN as the pupil id, a
// typo in the address is a reason and never a match, two children as one pupil).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildRecordIndex, editDistance, matchRequest, type RequestToMatch } from '../../src/guardian-records/guardian-matching';
import { readGuardianFile, type GuardianRecord } from '../../src/guardian-records/guardian-records-csv';
import type { MoodleUser } from '../../src/moodle/moodle-client';

const ARBOR = [
  'Student Admission Number,Student UPN,Student First Name,Student Preferred First Name,Student Last Name,Registration Form,Guardian Title,Guardian First Name,Guardian Last Name,Guardian Email,Relationship,Parental Responsibility,Priority,Legal Restrictions,Medical Notes',
  'ADM1042,A123456789012,Samir,Sami,Haddad,7B,Mrs,Amira,Haddad, Amira.Haddad@Example.org ,Mother,True,1,False,asthma',
  'ADM1043,B123456789012,Lina,,Haddad,10R,Mrs,Amira,Haddad,amira.haddad@example.org,Mother,yes,1,,',
  'ADM1044,C123456789012,Noor,,Haddad,8A,Mr,Omar,Haddad,,Father,Y,2,N,',
  'ADM1045,D123456789012,Zed,,Haddad,8A,Mr,Omar,Haddad,omar@example.org,Father,Perhaps,2,N,',
].join('\n');

function user(id: number, idnumber: string, extra: Partial<MoodleUser> = {}): MoodleUser {
  return { id, username: `u${id}`, firstname: 'F', lastname: 'L', fullname: 'F L', email: undefined, department: '', idnumber, auth: 'manual', suspended: false, ...extra };
}

function moodleOf(users: MoodleUser[]): Map<string, MoodleUser[]> {
  const map = new Map<string, MoodleUser[]>();
  for (const u of users) map.set(u.idnumber.toLowerCase(), [...(map.get(u.idnumber.toLowerCase()) ?? []), u]);
  return map;
}

describe('reading the MIS contact export', () => {
  it('understands Arbor’s column names, keeps only the known columns, and lists each row left out by line', () => {
    const read = readGuardianFile(Buffer.from(ARBOR), 'admission_number');
    assert.ok(read.ok);
    assert.equal(read.rowCount, 4);
    assert.equal(read.records.length, 2);
    assert.equal(read.withoutEmail, 1);
    assert.deepEqual(read.problems, [{ line: 5, message: 'Parental responsibility “Perhaps” is not Yes or No (Y/N, Yes/No, True/False).' }]);
    const [sami] = read.records as [GuardianRecord];
    assert.equal(sami.contactEmail, 'amira.haddad@example.org');
    assert.equal(sami.pupilPreferredForename, 'Sami');
    assert.equal(sami.parentalResponsibility, true);
    assert.equal(sami.courtOrder, false);
    assert.equal(JSON.stringify(read.records).includes('asthma'), false, 'a column not listed is not kept');
  });

  it('with the UPN as the pupil id, a file without a UPN column is refused whole', () => {
    const read = readGuardianFile(Buffer.from('Adno,Forename,Surname,Reg Group,Email,PR\nADM1,A,B,7B,a@example.org,Y\n'), 'upn');
    assert.equal(read.ok, false);
    assert.match(read.ok ? '' : read.problem, /has no “UPN” column/);
  });
});

describe('matching a request against the records', () => {
  const read = readGuardianFile(Buffer.from(ARBOR), 'admission_number');
  assert.ok(read.ok);
  const index = buildRecordIndex(read.records);
  const request = (email: string, children: RequestToMatch['children']): RequestToMatch => ({ id: 1, email, children });

  it('matches a child by the preferred forename, surname and registration group, and names the pupils not asked for', () => {
    const result = matchRequest(request('amira.haddad@example.org', [{ id: 10, firstName: 'Sami', lastName: 'Haddad', tutorGroup: '7b', pupilIdentifier: null }]), index, moodleOf([user(42, 'ADM1042')]), 'admission_number');
    assert.equal(result.state, 'full');
    assert.equal(result.children[0]?.moodleUserId, 42);
    assert.deepEqual(result.alsoContactOf, ['Lina Haddad, 10R']);
  });

  it('finds the pupil in Moodle by UPN when Moodle keeps the UPN', () => {
    const upnIndex = buildRecordIndex(read.records);
    const result = matchRequest(request('amira.haddad@example.org', [{ id: 10, firstName: 'Lina', lastName: 'Haddad', tutorGroup: '10R', pupilIdentifier: null }]), upnIndex, moodleOf([user(43, 'B123456789012')]), 'upn');
    assert.equal(result.state, 'full');
    assert.match(result.children[0]?.evidence ?? '', /Lina Haddad, 10R, B123456789012/);
  });

  it('an address one letter off is a reason naming both addresses, never a match', () => {
    const result = matchRequest(request('amira.hadad@example.org', [{ id: 10, firstName: 'Lina', lastName: 'Haddad', tutorGroup: '10R', pupilIdentifier: 'ADM1043' }]), index, moodleOf([user(43, 'ADM1043')]), 'admission_number');
    assert.equal(result.state, 'none');
    assert.match(result.children[0]?.reason ?? '', /has the address amira\.haddad@example\.org, close to the request’s address amira\.hadad@example\.org/);
  });

  it('a pupil missing from Moodle, or named twice, is a reason', () => {
    const twice = matchRequest(
      request('amira.haddad@example.org', [
        { id: 10, firstName: 'Sami', lastName: 'Haddad', tutorGroup: '7B', pupilIdentifier: null },
        { id: 11, firstName: 'Samir', lastName: 'Haddad', tutorGroup: '7B', pupilIdentifier: 'ADM1042' },
        { id: 12, firstName: 'Lina', lastName: 'Haddad', tutorGroup: '10R', pupilIdentifier: null },
      ]),
      index,
      moodleOf([user(42, 'ADM1042')]),
      'admission_number',
    );
    assert.equal(twice.state, 'partial');
    assert.match(twice.children[1]?.reason ?? '', /Samir Haddad is the same pupil in the school records as Sami Haddad/);
    assert.match(twice.children[2]?.reason ?? '', /No pupil in Moodle has the idnumber ADM1043/);
  });

  it('edit distance stops early past its limit', () => {
    assert.equal(editDistance('amira.haddad@example.org', 'amira.hadad@example.org', 2), 1);
    assert.equal(editDistance('someone@example.org', 'other@example.net', 2), 3);
  });
});
