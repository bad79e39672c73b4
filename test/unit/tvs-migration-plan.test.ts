// What the migration from the WordPress plugin decides from its two tables alone: which request
// carries each username, which auth rows are one, what becomes a request of its own, and what
// is skipped.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PluginAuthRow, PluginRequestRow } from '../../src/tvs-migration/plugin-tables.repository';
import { planMigration, requestTypeOf } from '../../src/tvs-migration/tvs-migration-plan';

function request(id: number, status: string, fields: Partial<PluginRequestRow> = {}): PluginRequestRow {
  return {
    id,
    parentTitle: 'Mrs',
    parentFirstName: 'Pat',
    parentLastName: `P${id}`,
    parentEmail: `p${id}@example.org`,
    children: [{ firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B' }],
    status,
    parentComment: '',
    staffComment: '',
    systemComment: '',
    dateCreated: null,
    dateUpdated: null,
    dateApproved: null,
    provisionedUsername: '',
    requestType: '',
    ...fields,
  };
}

function auth(id: number, username: string, requestId: number): PluginAuthRow {
  return { id, username, parentTitle: 'Mrs', parentFirstName: 'Pat', parentLastName: 'P', parentEmail: `${username}@example.org`, description: '', requestId };
}

describe('planning the move from the WordPress plugin', () => {
  it('gives each username to the approved or provisioned request its auth row names, and keeps it as written', () => {
    const plan = planMigration([request(1, 'provisioned', { provisionedUsername: 'Pat.P' })], [auth(10, 'Pat.P', 1)]);
    assert.equal(plan.requests.length, 1);
    assert.equal(plan.requests[0]?.status, 'provisioned');
    assert.equal(plan.requests[0]?.authRow?.username, 'Pat.P');
    assert.deepEqual([...plan.pluginUsernames], ['Pat.P']);
  });

  it('makes one auth row of two with the same username, also in other letter case', () => {
    const plan = planMigration([request(1, 'approved', { provisionedUsername: 'pat' })], [auth(10, 'pat', 1), auth(11, 'pat', 1), auth(12, 'PAT', 1)]);
    assert.deepEqual(plan.mergedAuthRows.map((m) => [m.row.id, m.keptAuthRowId]), [[11, 10], [12, 10]]);
    assert.deepEqual([...plan.pluginUsernames], ['pat']);
  });

  it('turns a second request with the same account into a duplicate whose new children join the first', () => {
    const plan = planMigration(
      [
        request(1, 'provisioned', { provisionedUsername: 'pat' }),
        request(2, 'provisioned', { provisionedUsername: 'pat', children: [{ firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B' }, { firstName: 'Bob', lastName: 'Pupil', tutorGroup: '9C' }] }),
      ],
      [auth(10, 'pat', 1)],
    );
    const [first, second] = plan.requests;
    assert.equal(first?.status, 'provisioned');
    assert.deepEqual(first?.children.map((c) => c.firstName), ['Ann', 'Bob']);
    assert.equal(second?.status, 'duplicate');
    assert.equal(second?.duplicateOfWpRequestId, 1);
    assert.equal(second?.authRow, null);
  });

  it('keeps the access of an auth row without a request, or naming a rejected one, as a request of its own', () => {
    const plan = planMigration([request(1, 'rejected')], [auth(10, 'by.hand', 0), auth(11, 'left.behind', 1)]);
    const own = plan.requests.filter((p) => p.request === null);
    assert.deepEqual(own.map((p) => [p.status, p.authRow?.username]), [['provisioned', 'by.hand'], ['provisioned', 'left.behind']]);
    assert.equal(plan.requests.find((p) => p.request?.id === 1)?.status, 'denied');
  });

  it('imports an approved or provisioned request without an auth row as access removed', () => {
    const plan = planMigration([request(1, 'provisioned', { provisionedUsername: 'gone' })], []);
    assert.equal(plan.requests[0]?.status, 'revoked');
    assert.match(plan.requests[0]?.notes.join(' ') ?? '', /cannot log in today/);
  });

  it('skips deleting requests, statuses the plugin never used, and usernames Moodle cannot have', () => {
    const plan = planMigration([request(1, 'deleting'), request(2, 'archived'), request(3, 'unknown')], [auth(10, '', 0), auth(11, 'x'.repeat(101), 0)]);
    assert.deepEqual(plan.skipped.map((s) => [s.table, s.id]), [['auth', 10], ['auth', 11], ['requests', 1], ['requests', 2]]);
    assert.equal(plan.requests.length, 1);
    assert.equal(plan.requests[0]?.status, 'pending');
    assert.equal(plan.pluginUsernames.size, 0);
  });

  it('reads the plugin form’s sentences as request types', () => {
    assert.equal(requestTypeOf('I have a Moodle account, but cannot log in.'), 'cannot_log_in');
    assert.equal(requestTypeOf('One or more of my children is not linked correctly to my account (please provide details below).'), 'child_not_linked');
    assert.equal(requestTypeOf('I do not currently have a Moodle Account.'), 'new_account');
    assert.equal(requestTypeOf(''), 'new_account');
  });
});
