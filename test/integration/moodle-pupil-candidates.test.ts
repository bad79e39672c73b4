// Matching a parent's child to Moodle pupil accounts, against the Moodle double over HTTP.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { MoodleClient } from '../../src/moodle/moodle-client';
import { findPupilCandidates, searchPupils } from '../../src/moodle/pupil-candidates';
import { DOUBLE_TOKENS, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';

let double: MoodleDouble;
let client: MoodleClient;
beforeEach(async () => {
  double = await startMoodleDouble();
  client = new MoodleClient({ url: double.url, token: DOUBLE_TOKENS.ws, timeoutMs: 2_000, retries: 0, batchSize: 100 });
});
afterEach(async () => {
  await double.close();
});

const ids = (match: { candidates: Array<{ id: number }> }) => match.candidates.map((c) => c.id);

/** The search keys sent to core_user_get_users: never one Moodle ignores (such as department). */
function searchKeysSent(): string[] {
  return double.requests
    .filter((r) => r.wsfunction === 'core_user_get_users')
    .flatMap((r) => [...new URLSearchParams(r.form)].filter(([k]) => /^criteria\[\d+\]\[key\]$/.test(k)).map(([, v]) => v));
}

describe('findPupilCandidates', () => {
  test('by pupil identifier (Moodle idnumber)', async () => {
    const match = await findPupilCandidates(client, { firstName: 'Bob', lastName: 'Pupil', pupilIdentifier: ' ADM1002 ' });
    assert.equal(match.kind, 'exact');
    assert.equal(match.matchedBy, 'pupil_identifier');
    assert.deepEqual(match.candidates, [
      { id: 4, username: 'pupil.b', firstname: 'Bob', lastname: 'Pupil', fullname: 'Bob Pupil', department: '9C', idnumber: 'ADM1002' },
    ]);
    assert.equal(double.calls('core_user_get_users'), 0);
  });

  test('Ann Pupil in 7B is exactly pupil.a (id 3)', async () => {
    const match = await findPupilCandidates(client, { firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B' });
    assert.equal(match.kind, 'exact');
    assert.equal(match.matchedBy, 'name_and_tutor_group');
    assert.deepEqual(ids(match), [3]);
    assert.deepEqual(searchKeysSent(), ['firstname', 'lastname']);
  });

  test('case and spacing of names and tutor group do not matter', async () => {
    const match = await findPupilCandidates(client, { firstName: ' ann', lastName: 'PUPIL ', tutorGroup: '10 a' });
    assert.equal(match.kind, 'exact');
    assert.deepEqual(ids(match), [9]);
  });

  test('the same name without a tutor group is ambiguous', async () => {
    const match = await findPupilCandidates(client, { firstName: 'Ann', lastName: 'Pupil' });
    assert.equal(match.kind, 'ambiguous');
    assert.deepEqual(ids(match), [3, 9]);
  });

  test('a tutor group no namesake is in: the name matches are shown for staff to choose', async () => {
    const match = await findPupilCandidates(client, { firstName: 'Ann', lastName: 'Pupil', tutorGroup: '8Z' });
    assert.equal(match.kind, 'ambiguous');
    assert.deepEqual(ids(match), [3, 9]);
    assert.match(match.note ?? '', /tutor group 8Z/);
  });

  test('a single name match without tutor group is exact', async () => {
    const match = await findPupilCandidates(client, { firstName: 'Bob', lastName: 'Pupil' });
    assert.equal(match.kind, 'exact');
    assert.deepEqual(ids(match), [4]);
  });

  test('nobody of that name', async () => {
    const match = await findPupilCandidates(client, { firstName: 'Nobody', lastName: 'Here', tutorGroup: '7B' });
    assert.deepEqual(match, { kind: 'not_found', candidates: [], matchedBy: 'none' });
  });

  test('suspended and deleted pupils are never offered', async () => {
    double.state.addUser({ username: 'pupil.b.old', firstname: 'Bob', lastname: 'Pupil', department: '9C', idnumber: 'ADM0002', suspended: true });
    const gone = double.state.addUser({ username: 'pupil.b.gone', firstname: 'Bob', lastname: 'Pupil', department: '9C' });
    double.state.deleteUser(gone.id);
    const byName = await findPupilCandidates(client, { firstName: 'Bob', lastName: 'Pupil', tutorGroup: '9C' });
    assert.equal(byName.kind, 'exact');
    assert.deepEqual(ids(byName), [4]);
    const byIdentifier = await findPupilCandidates(client, { firstName: 'Bob', lastName: 'Pupil', pupilIdentifier: 'ADM0002' });
    assert.notEqual(byIdentifier.matchedBy, 'pupil_identifier');
    assert.deepEqual(ids(byIdentifier), [4]);
  });

  test('an identifier Moodle does not know falls back to the name, but never preselects', async () => {
    const match = await findPupilCandidates(client, { firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: 'ADM9999' });
    assert.equal(match.kind, 'ambiguous');
    assert.deepEqual(ids(match), [3]);
    assert.match(match.note ?? '', /ADM9999 is not in Moodle/);
  });

  test('a % in a name does not widen the match', async () => {
    const match = await findPupilCandidates(client, { firstName: 'A%', lastName: 'Pupil' });
    assert.equal(match.kind, 'not_found');
  });
});

describe('searchPupils (staff search box)', () => {
  test('one word is a username, lower-cased', async () => {
    assert.deepEqual((await searchPupils(client, 'PUPIL.A')).map((c) => c.id), [3]);
  });

  test('one word that is no username is taken as a surname', async () => {
    assert.deepEqual((await searchPupils(client, 'Pupil')).map((c) => c.id), [3, 4, 9]);
  });

  test('"first last"', async () => {
    assert.deepEqual((await searchPupils(client, '  Ann   Pupil ')).map((c) => c.id), [3, 9]);
  });

  test('several first names', async () => {
    double.state.addUser({ username: 'pupil.mae', firstname: 'Mary Ann', lastname: 'Evans', department: '8A' });
    assert.deepEqual((await searchPupils(client, 'Mary Ann Evans')).map((c) => c.username), ['pupil.mae']);
  });

  test('suspended accounts are left out; an empty query asks nothing', async () => {
    assert.deepEqual(await searchPupils(client, 'parent.three'), []);
    double.resetCounts();
    assert.deepEqual(await searchPupils(client, '   '), []);
    assert.equal(double.calls(), 0);
  });
});
