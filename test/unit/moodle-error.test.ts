// Plain-words explanations of Moodle failures, and the token kept out of every part of an error.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  MoodleError,
  capabilityFromMessage,
  concernsOneItem,
  explainMoodleError,
  scrubSecrets,
} from '../../src/moodle/moodle-error';

describe('explainMoodleError', () => {
  test('accessexception names the missing function and where to add it', () => {
    const e = explainMoodleError('accessexception', 'core_role_assign_roles', 'Access control exception');
    assert.equal(e.message, 'The Moodle web service is missing the function core_role_assign_roles.');
    assert.match(e.help, /^Add it under Site administration > Server > Web services > External services > \(your service\) > Functions\./);
  });

  test('invalidtoken says where tokens are made', () => {
    const e = explainMoodleError('invalidtoken', 'core_webservice_get_site_info', 'Invalid token - token not found');
    assert.match(e.message, /token \(MOODLE_TOKEN\): it is wrong, has expired or was deleted/);
    assert.match(e.help, /Site administration > Server > Web services > Manage tokens/);
  });

  test('nopermissions names the capability from Moodle\'s message', () => {
    const e = explainMoodleError(
      'nopermissions',
      'core_role_assign_roles',
      'Sorry, but you do not currently have permissions to do that (Assign roles to users).',
    );
    assert.equal(e.message, 'The Moodle service user is not allowed to do this: its role lacks the capability moodle/role:assign.');
    assert.match(e.help, /Allow moodle\/role:assign for the service user's role/);
    const unnamed = explainMoodleError('nopermissions', 'core_user_get_users', 'Sorry, but you do not currently have permissions to do that.');
    assert.match(unnamed.message, /lacks a capability it needs/);
  });

  test('invalidparameter on the role functions is about the Parent role and the accounts', () => {
    for (const fn of ['core_role_assign_roles', 'core_role_unassign_roles']) {
      const e = explainMoodleError('invalidparameter', fn, 'Invalid parameter value detected');
      assert.match(e.message, /the Parent role cannot be assigned in this user context, or the pupil or parent account does not exist\.$/);
      assert.match(e.help, /Site administration > Users > Permissions > Define roles > Parent > Context types where this role may be assigned: User/);
      assert.match(e.help, /Allow role assignments/);
    }
  });

  test('codingerror "User ID does not exist" means the account is gone; other coding errors are internal', () => {
    const gone = explainMoodleError(
      'codingerror',
      'core_role_assign_roles',
      'Coding error detected, it must be fixed by a programmer: User ID does not exist or is deleted!',
    );
    assert.equal(gone.message, 'The Moodle account no longer exists (it was deleted in Moodle).');
    const other = explainMoodleError('codingerror', 'core_user_get_users_by_field', 'Coding error detected, it must be fixed by a programmer: invalid field parameter');
    assert.match(other.message, /internal error in core_user_get_users_by_field/);
    assert.match(other.help, /invalid field parameter/);
  });

  test('invalidrecordunknown, 403, unreachable, timeout and a non-Moodle answer', () => {
    assert.equal(explainMoodleError('invalidrecordunknown', 'local_x', undefined).message, 'This Moodle does not know the web service function local_x.');
    const off = explainMoodleError('webservicesdisabled', 'core_webservice_get_site_info', undefined);
    assert.equal(off.message, 'Web services are switched off in Moodle.');
    assert.match(off.help, /Site administration > Advanced features > Enable web services/);
    assert.match(off.help, /Server > Web services > Manage protocols/);
    const down = explainMoodleError('unreachable', 'x', 'ECONNREFUSED: connect ECONNREFUSED', { url: 'https://moodle.school.test' });
    assert.equal(down.message, 'Moodle could not be reached at https://moodle.school.test.');
    assert.match(down.help, /MOODLE_URL/);
    assert.match(explainMoodleError('timeout', 'x', undefined, { url: 'https://m.test' }).message, /did not answer in time/);
    assert.match(explainMoodleError('badresponse', 'x', undefined).message, /^The address in MOODLE_URL does not look like a Moodle site/);
  });

  test('an errorcode nobody foresaw still gives Moodle\'s words', () => {
    const e = explainMoodleError('somethingnew', 'core_user_get_users', 'Something new went wrong');
    assert.match(e.message, /\(somethingnew\)/);
    assert.match(e.help, /Something new went wrong/);
  });
});

describe('capabilityFromMessage', () => {
  test('by description or by name', () => {
    assert.equal(capabilityFromMessage('... permissions to do that (Assign roles to users).'), 'moodle/role:assign');
    assert.equal(capabilityFromMessage('... permissions to do that (Use REST protocol).'), 'webservice/rest:use');
    assert.equal(capabilityFromMessage('missing moodle/user:viewdetails here'), 'moodle/user:viewdetails');
    assert.equal(capabilityFromMessage('... to do that (Something else).'), '"Something else"');
    assert.equal(capabilityFromMessage('no capability here'), undefined);
  });
});

describe('the token never appears', () => {
  const token = '0123456789abcdef+/=token';

  test('scrubSecrets hides the plain and the URL-encoded form', () => {
    const text = `a ${token} b ${encodeURIComponent(token)} c`;
    assert.equal(scrubSecrets(text, [token]), 'a [hidden] b [hidden] c');
  });

  test('a MoodleError built from text holding the token keeps none of it', () => {
    const cause = new TypeError(`fetch failed for ${token}`, { cause: Object.assign(new Error(`socket ${token}`), { code: 'ECONNRESET' }) });
    const error = new MoodleError({
      errorcode: 'unreachable',
      wsfunction: 'core_webservice_get_site_info',
      moodleMessage: `connect refused ?wstoken=${token}`,
      url: `https://moodle.test/?t=${encodeURIComponent(token)}`,
      details: { body: `wstoken=${encodeURIComponent(token)}`, nested: [{ deep: token }] },
      cause,
      secrets: [token],
    });
    const everything = JSON.stringify({
      message: error.message,
      help: error.help,
      details: error.details,
      moodleMessage: error.moodleMessage,
      cause: String(error.cause),
      stack: error.stack,
    });
    assert.equal(everything.includes(token), false);
    assert.equal(everything.includes(encodeURIComponent(token)), false);
    assert.match(String(error.cause), /ECONNRESET/);
    assert.equal(error.transient, true);
    assert.equal(error.status, 502);
  });

  test('concernsOneItem: only answers about one item are worth splitting a batch for', () => {
    const make = (errorcode: string) => new MoodleError({ errorcode });
    assert.equal(concernsOneItem(make('invalidparameter')), true);
    assert.equal(concernsOneItem(make('codingerror')), true);
    for (const code of ['invalidtoken', 'accessexception', 'nopermissions', 'webservicesdisabled', 'unreachable', 'timeout', 'httperror']) {
      assert.equal(concernsOneItem(make(code)), false, code);
    }
    assert.equal(concernsOneItem(new Error('x')), false);
  });
});
