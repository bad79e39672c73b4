// The Moodle diagnostics against the Moodle double: all good, and each thing that can be wrong.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, test } from 'node:test';
import { MoodleClient } from '../../src/moodle/moodle-client';
import { checkMoodle, REQUIRED_MOODLE_FUNCTIONS, type CheckResult } from '../../src/moodle/moodle-checks';
import { DOUBLE_TOKENS, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';

let double: MoodleDouble;
beforeEach(async () => {
  double = await startMoodleDouble();
});
afterEach(async () => {
  await double.close();
});

function clientFor(url: string, token: string): MoodleClient {
  return new MoodleClient({ url, token, timeoutMs: 2_000, retries: 0, batchSize: 100 });
}

async function run(token: string = DOUBLE_TOKENS.ws, url = double.url, parentRoleId: number | undefined = 9, knownUserIds: number[] = []): Promise<CheckResult[]> {
  return checkMoodle(clientFor(url, token), { url, token, parentRoleId, requiredFunctions: REQUIRED_MOODLE_FUNCTIONS, knownUserIds });
}

/** id → ok / failed / skipped, in order. */
const summary = (results: CheckResult[]) => results.map((r) => `${r.id}:${r.skipped === true ? 'skipped' : r.ok ? 'ok' : 'failed'}`);
const find = (results: CheckResult[], id: string) => results.find((r) => r.id === id) as CheckResult;

test('all good', async () => {
  const results = await run();
  assert.deepEqual(summary(results), [
    'moodle-url:ok',
    'moodle-webservices:ok',
    'moodle-token:ok',
    'moodle-functions:ok',
    'moodle-user-visibility:skipped',
    'moodle-parent-role:ok',
  ]);
  assert.match(find(results, 'moodle-token').message, /WS Provisioner \(wsprov\)/);
  assert.match(find(results, 'moodle-url').message, /Test School Moodle/);
  for (const r of results) assert.ok(r.label.length > 0);
});

test('invalid token', async () => {
  const results = await run(DOUBLE_TOKENS.invalid);
  assert.deepEqual(summary(results), [
    'moodle-url:ok',
    'moodle-webservices:ok',
    'moodle-token:failed',
    'moodle-functions:skipped',
    'moodle-user-visibility:skipped',
    'moodle-parent-role:ok',
  ]);
  assert.match(find(results, 'moodle-token').help ?? '', /Manage tokens/);
});

test('a missing function is named', async () => {
  double.state.removeServiceFunction('core_role_unassign_roles');
  double.state.removeServiceFunction('core_user_get_users');
  const results = await run();
  const functions = find(results, 'moodle-functions');
  assert.equal(functions.ok, false);
  assert.equal(functions.message, 'The Moodle web service is missing the functions core_user_get_users, core_role_unassign_roles.');
  assert.match(functions.help ?? '', /External services > \(your service\) > Functions/);
});

test('the site-info function itself missing from the service', async () => {
  double.state.removeServiceFunction('core_webservice_get_site_info');
  const results = await run();
  assert.deepEqual(summary(results).slice(0, 4), ['moodle-url:ok', 'moodle-webservices:ok', 'moodle-token:ok', 'moodle-functions:failed']);
  assert.match(find(results, 'moodle-functions').message, /core_webservice_get_site_info/);
});

test('Moodle down (nothing listens at the address)', async () => {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const results = await run(DOUBLE_TOKENS.ws, url);
  assert.deepEqual(summary(results), [
    'moodle-url:failed',
    'moodle-webservices:skipped',
    'moodle-token:skipped',
    'moodle-functions:skipped',
    'moodle-user-visibility:skipped',
    'moodle-parent-role:ok',
  ]);
  assert.equal(find(results, 'moodle-url').message, `Moodle could not be reached at ${url}.`);
});

test('web services switched off', async () => {
  double.setFaults({ webServicesEnabled: false });
  const results = await run();
  assert.deepEqual(summary(results), [
    'moodle-url:ok',
    'moodle-webservices:failed',
    'moodle-token:skipped',
    'moodle-functions:skipped',
    'moodle-user-visibility:skipped',
    'moodle-parent-role:ok',
  ]);
  assert.match(find(results, 'moodle-webservices').help ?? '', /Enable web services/);
});

test('not configured, and no parent role', async () => {
  const results = await checkMoodle(undefined, { url: undefined, token: undefined, parentRoleId: undefined });
  assert.deepEqual(summary(results), [
    'moodle-url:failed',
    'moodle-webservices:skipped',
    'moodle-token:skipped',
    'moodle-functions:skipped',
    'moodle-user-visibility:skipped',
    'moodle-parent-role:failed',
  ]);
  assert.equal(find(results, 'moodle-url').message, 'MOODLE_URL is not set.');
  assert.match(find(results, 'moodle-parent-role').help ?? '', /MOODLE_PARENT_ROLE_ID/);
});

test('a site administrator token works but is flagged', async () => {
  const results = await run(DOUBLE_TOKENS.admin);
  const token = find(results, 'moodle-token');
  assert.equal(token.ok, true);
  assert.match(token.help ?? '', /site administrator/);
});

test('a token that can see other users is proven so with a known pupil account', async () => {
  const results = await run(DOUBLE_TOKENS.ws, double.url, 9, [3, 4]);
  const visibility = find(results, 'moodle-user-visibility');
  assert.equal(visibility.ok, true);
  assert.match(visibility.message, /can see other Moodle accounts/);
});

test('a token whose user lacks moodle/user:viewdetails is named, not taken for "no such account"', async () => {
  // The read-only token's own id (10) is no proof: it always sees itself.
  const results = await run(DOUBLE_TOKENS.readonly, double.url, 9, [10, 3, 4]);
  const visibility = find(results, 'moodle-user-visibility');
  assert.equal(visibility.ok, false);
  assert.equal(visibility.skipped, undefined);
  assert.match(visibility.message, /the web service user lacks moodle\/user:viewdetails/);
  assert.match(visibility.help ?? '', /Define roles/);
});

test('with no pupil matched yet, it says what it could not prove', async () => {
  const results = await run(DOUBLE_TOKENS.readonly);
  const visibility = find(results, 'moodle-user-visibility');
  assert.equal(visibility.skipped, true);
  assert.match(visibility.message, /Not proven: no pupil has been matched/);
  assert.match(visibility.message, /moodle\/user:viewdetails/);
});
