// Replays every recorded Moodle request (shared/moodle-contract/rest) against the Moodle double and
// checks it answers as the real Moodle did; and checks the client sends exactly the recorded forms.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isDeletedAccount, MoodleClient, type MoodleParams, type RoleAssignment, type UserSearchCriterion } from '../../src/moodle/moodle-client';
import { MoodleError } from '../../src/moodle/moodle-error';
import {
  loadRestRecordings,
  mediaType,
  shapeDifferences,
  valueDifferences,
  type Recording,
} from '../support/moodle-contract';
import {
  DOUBLE_TOKENS,
  seedRecordedSite,
  seedSecondRecordedSite,
  startMoodleDouble,
  type DoubleTokenName,
  type MoodleDouble,
  type MoodleSiteState,
} from '../support/moodle-double';

const recordings = loadRestRecordings();

// Values that differ between any two Moodle sites, or from one second to the next.
const SITE_SPECIFIC = new Set(['siteurl', 'userpictureurl', 'profileimageurl', 'profileimageurlsmall', 'userprivateaccesskey', 'preferences']);

/** The recordings made on the second install (other ids; pupil.leaver, id 64, deleted in between). */
const SECOND_INSTALL = new Set([
  'users-by-field.readonly-token',
  'users-by-field.id-before-delete',
  'users-by-field.id-deleted-user',
  'assign.deleted-user-context',
]);
/** When pupil.leaver was deleted: its new username ends with this unix time (users-by-field.id-deleted-user). */
const LEAVER_DELETED_AT = 1796097350;

function siteFor(recording: Recording): MoodleSiteState {
  return SECOND_INSTALL.has(recording.case) ? seedSecondRecordedSite() : seedRecordedSite();
}

/** The state a recording was made in, where it is not the plain recorded site. */
function prepare(recording: Recording, double: MoodleDouble): void {
  switch (recording.case) {
    case 'users-by-field.id-deleted-user':
    case 'assign.deleted-user-context':
      double.state.deleteUser(64, LEAVER_DELETED_AT);
      break;
    case 'assign.repeat':
      double.state.addUserContextRole(9, 6, 3); // assign.ok came first
      break;
    case 'unassign.ok':
      double.state.addUserContextRole(9, 6, 4);
      break;
    case 'webservices-disabled':
      double.setFaults({ webServicesEnabled: false });
      break;
    default:
      break;
  }
}

function tokenFor(recording: Recording): string {
  const name = recording.request.token;
  assert.ok(name in DOUBLE_TOKENS, `${recording.file}: unknown token name ${name}`);
  return DOUBLE_TOKENS[name as DoubleTokenName];
}

test('the contract directory holds the recordings', () => {
  // A missing or moved directory must fail loudly, not make every check below vacuous.
  assert.ok(recordings.length >= 27, `found only ${recordings.length} recordings`);
});

describe('the Moodle double answers every recorded request like Moodle 5.1', () => {
  for (const recording of recordings) {
    test(`${recording.case}: ${recording.note}`, async () => {
      const double = await startMoodleDouble({ state: siteFor(recording) });
      try {
        prepare(recording, double);
        const form = recording.request.form.replace('REDACTED', encodeURIComponent(tokenFor(recording)));
        const response = await fetch(`${double.url}${recording.request.path}`, {
          method: recording.request.method,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: form,
        });
        const text = await response.text();
        assert.equal(response.status, recording.response.status, 'HTTP status');
        assert.equal(mediaType(response.headers.get('content-type')), mediaType(recording.response.contentType), 'media type');
        const expected = recording.response.body;
        if (expected === '') {
          assert.equal(text, '', 'an empty body');
          return;
        }
        const actual: unknown = JSON.parse(text);
        assert.deepEqual(shapeDifferences(expected, actual), [], 'JSON structure');
        assert.deepEqual(valueDifferences(expected, actual, SITE_SPECIFIC), [], 'JSON values');
        if (expected !== null && typeof expected === 'object' && 'errorcode' in expected) {
          assert.equal((actual as { errorcode?: unknown }).errorcode, (expected as { errorcode: unknown }).errorcode);
        }
      } finally {
        await double.close();
      }
    });
  }

  test('assign.batch-one-bad rolls back the good assignment too', async () => {
    const double = await startMoodleDouble();
    try {
      const recording = recordings.find((r) => r.case === 'assign.batch-one-bad');
      assert.ok(recording);
      await fetch(`${double.url}/webservice/rest/server.php`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: recording.request.form.replace('REDACTED', DOUBLE_TOKENS.ws),
      });
      assert.equal(double.state.hasUserContextRole(9, 7, 9), false);
      assert.equal(double.state.assignments.length, 0);
    } finally {
      await double.close();
    }
  });

  test('assign.ok and unassign.ok change the role assignments', async () => {
    const double = await startMoodleDouble();
    try {
      const post = (r: Recording) =>
        fetch(`${double.url}/webservice/rest/server.php`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: r.request.form.replace('REDACTED', DOUBLE_TOKENS.ws),
        }).then((res) => res.text());
      const byCase = (name: string) => recordings.find((r) => r.case === name) as Recording;
      await post(byCase('assign.ok'));
      assert.equal(double.state.hasUserContextRole(9, 6, 3), true);
      await post(byCase('assign.batch-ok'));
      assert.equal(double.state.hasUserContextRole(9, 6, 4), true);
      assert.equal(double.state.hasUserContextRole(9, 7, 4), true);
      await post(byCase('unassign.ok'));
      assert.equal(double.state.hasUserContextRole(9, 6, 4), false);
      assert.equal(double.state.hasUserContextRole(9, 7, 4), true);
    } finally {
      await double.close();
    }
  });

  test('assign.deleted-user-context writes the role assignment in the deleted pupil\'s context', async () => {
    const double = await startMoodleDouble({ state: seedSecondRecordedSite() });
    try {
      const recording = recordings.find((r) => r.case === 'assign.deleted-user-context');
      assert.ok(recording);
      double.state.deleteUser(64, LEAVER_DELETED_AT);
      const response = await fetch(`${double.url}/webservice/rest/server.php`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: recording.request.form.replace('REDACTED', DOUBLE_TOKENS.ws),
      });
      assert.equal(await response.text(), 'null');
      assert.equal(double.state.hasUserContextRole(9, 9, 64), true);
    } finally {
      await double.close();
    }
  });

  test('a deleted user is not found by its old username, idnumber or email, only by id (renamed)', async () => {
    const double = await startMoodleDouble({ state: seedSecondRecordedSite() });
    try {
      double.state.deleteUser(64, LEAVER_DELETED_AT);
      const lookUp = async (field: string, value: string) => {
        const form = new URLSearchParams({ wstoken: DOUBLE_TOKENS.ws, wsfunction: 'core_user_get_users_by_field', moodlewsrestformat: 'json', field, 'values[0]': value });
        const response = await fetch(`${double.url}/webservice/rest/server.php`, { method: 'POST', body: form });
        return (await response.json()) as Array<{ id: number; username: string }>;
      };
      assert.deepEqual(await lookUp('username', 'pupil.leaver'), []);
      assert.deepEqual(await lookUp('idnumber', 'ADM9498'), []);
      assert.deepEqual(await lookUp('email', 'pupil.leaver@example.org'), []);
      assert.deepEqual((await lookUp('id', '64')).map((u) => u.username), [`pupil.leaver@example.org.${LEAVER_DELETED_AT}`]);
    } finally {
      await double.close();
    }
  });

  test('the read-only token sees itself but no other user, by any field', async () => {
    const double = await startMoodleDouble();
    try {
      const lookUp = async (field: string, values: string[]) => {
        const form = new URLSearchParams({ wstoken: DOUBLE_TOKENS.readonly, wsfunction: 'core_user_get_users_by_field', moodlewsrestformat: 'json', field });
        values.forEach((v, i) => form.append(`values[${i}]`, v));
        const response = await fetch(`${double.url}/webservice/rest/server.php`, { method: 'POST', body: form });
        return ((await response.json()) as Array<{ id: number }>).map((u) => u.id);
      };
      assert.deepEqual(await lookUp('id', ['3', '6', '10']), [10]);
      assert.deepEqual(await lookUp('username', ['pupil.a', 'parent.one']), []);
    } finally {
      await double.close();
    }
  });

  test('a JSON body is not understood (no token, no format: an XML invalidtoken)', async () => {
    const double = await startMoodleDouble();
    try {
      const response = await fetch(`${double.url}/webservice/rest/server.php`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ wstoken: DOUBLE_TOKENS.ws, wsfunction: 'core_webservice_get_site_info', moodlewsrestformat: 'json' }),
      });
      const text = await response.text();
      assert.equal(mediaType(response.headers.get('content-type')), 'application/xml');
      assert.match(text, /<ERRORCODE>invalidtoken<\/ERRORCODE>/);
    } finally {
      await double.close();
    }
  });
});

/** A fetch that answers with the recorded response and keeps the body the client sent. */
function replayingFetch(recording: Recording, sent: string[]): typeof fetch {
  return async (_input, init) => {
    sent.push(String(init?.body));
    const { status, contentType, body } = recording.response;
    return new Response(body === '' ? '' : JSON.stringify(body), { status, headers: { 'content-type': contentType } });
  };
}

const SECRET = 'client-secret-token-3c5e7a9b1d';

function clientFor(recording: Recording, sent: string[]): MoodleClient {
  return new MoodleClient({
    url: 'http://moodle.test',
    token: SECRET,
    timeoutMs: 1_000,
    retries: 0,
    batchSize: 100,
    fetch: replayingFetch(recording, sent),
  });
}

/** The typed client method that makes this recorded request, where there is one. */
function typedCall(recording: Recording, client: MoodleClient): (() => Promise<unknown>) | undefined {
  const params = recording.request.params;
  switch (recording.request.wsfunction) {
    case 'core_webservice_get_site_info':
      return () => client.getSiteInfo();
    case 'core_user_get_users_by_field': {
      const field = params.field;
      if (field !== 'id' && field !== 'idnumber' && field !== 'username' && field !== 'email') return undefined;
      const values = params.values as string[];
      // The client sends usernames lower-cased, so the recorded upper-case one cannot be its request.
      if (field === 'username' && values.some((v) => v !== v.toLowerCase())) return undefined;
      return () => client.getUsersByField(field, values);
    }
    case 'core_user_get_users': {
      const criteria = params.criteria as UserSearchCriterion[];
      if (criteria.some((c) => !['id', 'idnumber', 'username', 'email', 'auth', 'firstname', 'lastname'].includes(c.key))) return undefined;
      return () => client.getUsers(criteria);
    }
    case 'core_role_assign_roles':
    case 'core_role_unassign_roles': {
      const list = (params.assignments ?? params.unassignments) as RoleAssignment[];
      if (list.some((a) => 'contextlevel' in a && typeof a.contextlevel !== 'string')) return undefined;
      return recording.request.wsfunction === 'core_role_assign_roles' ? () => client.assignRoles(list) : () => client.unassignRoles(list);
    }
    default:
      return undefined;
  }
}

async function settle(run: () => Promise<unknown>): Promise<{ value?: unknown; error?: unknown }> {
  try {
    return { value: await run() };
  } catch (error) {
    return { error };
  }
}

describe('the Moodle client sends exactly the recorded form and reads the recorded answer', () => {
  for (const recording of recordings) {
    test(recording.case, async () => {
      const expectedForm = recording.request.form.replace('REDACTED', encodeURIComponent(SECRET));
      const expectedError =
        recording.response.status === 403
          ? 'webservicesdisabled'
          : (recording.response.body as { errorcode?: string } | null)?.errorcode;

      const sent: string[] = [];
      const generic = await settle(() => clientFor(recording, sent).call(recording.request.wsfunction, recording.request.params as MoodleParams));
      assert.deepEqual(sent, [expectedForm], 'client.call form');
      if (expectedError === undefined) {
        assert.equal(generic.error, undefined);
        assert.deepEqual(generic.value, recording.response.body);
      } else {
        assert.ok(generic.error instanceof MoodleError);
        assert.equal(generic.error.errorcode, expectedError);
      }

      const typedSent: string[] = [];
      const typed = typedCall(recording, clientFor(recording, typedSent));
      if (typed === undefined) return;
      const outcome = await settle(typed);
      assert.deepEqual(typedSent, [expectedForm], 'typed method form');
      // The typed method reads the recorded answer cleanly, or fails with the recorded errorcode.
      if (expectedError === undefined) assert.equal(outcome.error, undefined);
      else assert.equal((outcome.error as MoodleError).errorcode, expectedError);
    });
  }

  test('an upper-case username is sent lower-cased, never as recorded in users-by-field.uppercase-value', async () => {
    const recording = recordings.find((r) => r.case === 'users-by-field.uppercase-value');
    assert.ok(recording);
    const sent: string[] = [];
    const ok = recordings.find((r) => r.case === 'users-by-field.username') as Recording;
    await clientFor(ok, sent).getUsersByField('username', recording.request.params.values as string[]);
    const expected = recording.request.form.replace('REDACTED', encodeURIComponent(SECRET)).replace('Parent.Two', 'parent.two');
    assert.deepEqual(sent, [expected]);
  });

  test('a deleted user returned by an id look-up is recognised by delete_user()\'s signature (users-by-field.id-deleted-user)', async () => {
    const lookUp = async (name: string) => {
      const recording = recordings.find((r) => r.case === name) as Recording;
      return clientFor(recording, []).getUsersByField('id', recording.request.params.values as string[]);
    };
    const before = await lookUp('users-by-field.id-before-delete');
    assert.deepEqual(before.map((u) => [u.id, isDeletedAccount(u)]), [[6, false], [64, false]]);
    const after = await lookUp('users-by-field.id-deleted-user');
    assert.deepEqual(after.map((u) => [u.id, isDeletedAccount(u)]), [[6, false], [64, true]]);
    // Without the email (hidden from the service user) the renamed username still tells.
    assert.equal(isDeletedAccount({ ...after[1]!, email: undefined }), true);
    assert.equal(isDeletedAccount({ ...before[1]!, email: undefined }), false);
  });

  test('the numeric context level of assign.numeric-contextlevel is not what the typed client sends', async () => {
    const recording = recordings.find((r) => r.case === 'assign.numeric-contextlevel');
    assert.ok(recording);
    const sent: string[] = [];
    await clientFor(recordings.find((r) => r.case === 'assign.ok') as Recording, sent).assignRoles([
      { roleid: 9, userid: 6, contextlevel: 'user', instanceid: 3 },
    ]);
    assert.ok(sent[0]?.includes('assignments%5B0%5D%5Bcontextlevel%5D=user&'));
    assert.notEqual(sent[0], recording.request.form.replace('REDACTED', encodeURIComponent(SECRET)));
  });
});
