// The staff permission table and the sign-in waits in words: pure logic, no I/O.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { can, PERMISSIONS, permissionTable } from '../../src/staff-auth/staff-permissions';
import { FREE_FAILURES, LOCK_AFTER_FAILURES, waitAfterFailure, waitInWords } from '../../src/staff-auth/staff-sign-in-throttle';

describe('staff permissions', () => {
  it('office staff review, decide, comment, provision and export; administrators may do everything', () => {
    assert.deepEqual(
      PERMISSIONS.filter((p) => can('staff', p)),
      ['review', 'decide', 'comment', 'provision', 'export'],
    );
    assert.deepEqual(PERMISSIONS.filter((p) => !can('staff', p)), ['import', 'erase', 'see_submitter_details', 'run_sync', 'manage_staff']);
    for (const p of PERMISSIONS) assert.equal(can('admin', p), true, p);
    assert.equal(permissionTable().length, PERMISSIONS.length);
  });
});

describe('sign-in waits', () => {
  it('grow after the free failures, up to five minutes, before the lock', () => {
    const waits = Array.from({ length: LOCK_AFTER_FAILURES - 1 }, (_, i) => waitAfterFailure(i + 1));
    assert.deepEqual(waits.slice(0, FREE_FAILURES), Array(FREE_FAILURES).fill(0));
    assert.deepEqual(waits.slice(FREE_FAILURES), [15, 30, 60, 120, 240, 300, 300]);
  });

  it('are said in plain words, rounded up', () => {
    assert.equal(waitInWords(1), '1 second');
    assert.equal(waitInWords(14.2), '15 seconds');
    assert.equal(waitInWords(60), '1 minute');
    assert.equal(waitInWords(61), '2 minutes');
    assert.equal(waitInWords(239.5), '4 minutes');
    assert.equal(waitInWords(900), '15 minutes');
  });
});
