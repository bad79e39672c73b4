// Erasing an imported request also removes the parent from the import batch's own record
// (their lines of the file and their entry in the result), leaving the other parents as they were.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { ImportBatchRepository } from '../../src/import/import-batch.repository';
import type { ImportRow } from '../../src/import/import-csv';
import { staff, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';

function row(line: number, email: string, firstName: string): ImportRow {
  return {
    line,
    values: { parentTitle: 'Mx', parentFirstName: firstName, parentLastName: 'Imported', email, childFirstName: 'Ann', childLastName: 'Imported', tutorGroup: '7B', pupilIdentifier: '' },
    problems: [],
    pupil: null,
  } as unknown as ImportRow;
}

for (const dialect of DIALECTS) {
  describe(`erasing an imported request on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE }), { db: t.db, moodle: null });
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await t.destroy();
    });

    it('scrubs that parent from the batch and keeps the others', { skip }, async () => {
      const batches = new ImportBatchRepository();
      const erasedEmail = `erase.me.${process.pid}@example.org`;
      const keptEmail = `keep.me.${process.pid}@example.org`;
      const gone = await services.lifecycle.submitRequest(submission({ email: erasedEmail, parentFirstName: 'Gwendolyn', source: 'import', importBatchId: 'batch-1' }), staff);
      const kept = await services.lifecycle.submitRequest(submission({ email: keptEmail, parentFirstName: 'Keeper', source: 'import', importBatchId: 'batch-1' }), staff);
      const stored = await batches.insert(t.db, {
        publicId: 'batch-1',
        fileName: 'parents.csv',
        createdBy: 'office',
        createdAt: 1,
        // Gwendolyn's second row (line 4) has a problem: not in the result's lines, but hers by email.
        rows: [
          { row: row(2, erasedEmail, 'Gwendolyn'), parentNumber: 0 },
          { row: row(3, keptEmail, 'Keeper'), parentNumber: 1 },
          { row: { ...row(4, ` ${erasedEmail.toUpperCase()}`, 'Gwendolyn'), problems: ['Tutor group is empty.'] }, parentNumber: null },
        ],
        validRowCount: 2,
      });
      await batches.claimForCommit(t.db, 'batch-1', 'office', 2, 0);
      await batches.markCommitted(
        t.db,
        'batch-1',
        {
          parents: [
            { email: erasedEmail, parentName: 'Mx Gwendolyn Imported', lines: [2], outcome: 'left_pending', requestId: gone.request.id, message: 'needs matching' },
            { email: keptEmail, parentName: 'Mx Keeper Imported', lines: [3], outcome: 'left_pending', requestId: kept.request.id, message: 'needs matching' },
          ],
          approved: 0,
          leftPending: 2,
          skipped: 0,
        },
        3,
      );
      await services.privacy.eraseRequest(gone.request.id, {}, staff);
      const remaining = JSON.stringify([await t.db('import_batches').where({ public_id: 'batch-1' }).first(), await t.db('import_batch_rows').where({ batch_id: stored.id })]);
      assert.ok(!remaining.toLowerCase().includes(erasedEmail) && !remaining.includes('Gwendolyn'), 'the erased parent is gone from the batch and its rows');
      assert.ok(remaining.includes(keptEmail) && remaining.includes('Keeper'), 'the other parent is kept');
      const batch = await batches.findByPublicId(t.db, 'batch-1');
      assert.deepEqual((await batches.rowsPage(t.db, stored.id, 0, 10)).map((r) => r.line), [3]);
      assert.equal(batch?.result?.parents.length, 2, 'the result still counts both parents');
    });
  });
}
