// Every migration runs from empty and rolls back, on SQLite and MariaDB.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { migrateToLatest, migrationStatus, rollbackAll } from '../../src/db/migrator';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import * as moveImportRows from '../../migrations/20261207200100_move_import_rows_to_import_batch_rows';

const TABLES = ['requests', 'request_children', TEST_AUTH_TABLE, 'audit_events', 'provisioning_cycles', 'cycle_outcomes', 'staff_users', 'sessions', 'locks', 'api_keys', 'mail_outbox', 'rate_limits', 'guardian_record_imports', 'guardian_records', 'guardian_matches', 'import_batches', 'import_batch_rows'];

for (const dialect of DIALECTS) {
  describe(`migrations on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    before(async () => {
      if (!skip) t = await createTestDatabase(dialect, { migrate: false });
    });
    after(async () => t?.destroy());

    it('runs every migration from empty, creates every table, then rolls all back', { skip }, async () => {
      const before = await migrationStatus(t.db, { authTable: TEST_AUTH_TABLE });
      assert.equal(before.applied.length, 0);
      assert.ok(before.pending.length >= TABLES.length);

      const applied = await migrateToLatest(t.db, { authTable: TEST_AUTH_TABLE });
      assert.equal(applied.length, before.pending.length);
      for (const table of TABLES) assert.equal(await t.db.schema.hasTable(table), true, `${table} exists`);
      const status = await migrationStatus(t.db, { authTable: TEST_AUTH_TABLE });
      assert.deepEqual(status.pending, []);
      // Names are stored without an extension, so the compiled build sees the same migrations.
      for (const name of status.applied) assert.match(name, /^\d{14}_[a-z_]+$/);

      assert.deepEqual(await migrateToLatest(t.db, { authTable: TEST_AUTH_TABLE }), [], 'a second run does nothing');

      const reverted = await rollbackAll(t.db, { authTable: TEST_AUTH_TABLE });
      assert.equal(reverted.length, applied.length);
      for (const table of TABLES) assert.equal(await t.db.schema.hasTable(table), false, `${table} dropped`);

      await migrateToLatest(t.db, { authTable: TEST_AUTH_TABLE });
      assert.equal(await t.db.schema.hasTable('requests'), true, 'migrates again after a rollback');
    });

    it('moves the report of a cycle from before cycle_outcomes into it, and back on a rollback', { skip }, async () => {
      await migrateToLatest(t.db, { authTable: TEST_AUTH_TABLE });
      type Migration = { up(knex: unknown): Promise<void>; down(knex: unknown): Promise<void> };
      /* eslint-disable @typescript-eslint/no-require-imports */
      const move = require('../../migrations/20261207100100_move_cycle_reports_to_cycle_outcomes') as Migration;
      const dropLog = require('../../migrations/20261207100200_drop_provisioning_cycles_log') as Migration;
      /* eslint-enable @typescript-eslint/no-require-imports */
      await dropLog.down(t.db);
      const report = [
        { requestId: 7, outcome: 'failed', message: 'The pupil’s Moodle account was deleted.', children: [{ childId: 70, outcome: 'failed', error: 'deleted' }] },
        { requestId: 8, outcome: 'provisioned', message: null, children: [{ childId: 80, outcome: 'linked' }] },
      ];
      const [withReport] = await t.db('provisioning_cycles').insert({ trigger: 'manual', state: 'problems', started_at: 1, log: JSON.stringify(report) });
      const [damaged] = await t.db('provisioning_cycles').insert({ trigger: 'schedule', state: 'succeeded', started_at: 2, log: '[{"requestId": 9,' });
      await move.up(t.db);
      await dropLog.up(t.db);

      const rows = (await t.db('cycle_outcomes').orderBy('id').select('cycle_id', 'request_id', 'outcome', 'message', 'children')) as Array<Record<string, unknown>>;
      assert.deepEqual(
        rows.map((r) => [Number(r.cycle_id), Number(r.request_id), r.outcome, r.message, JSON.parse(String(r.children))]),
        report.map((e) => [Number(withReport), e.requestId, e.outcome, e.message, e.children]),
        'each entry is a row; a report that cannot be read moves nothing',
      );
      assert.equal(await t.db.schema.hasColumn('provisioning_cycles', 'log'), false);
      assert.ok(await t.db('provisioning_cycles').where({ id: damaged }).first(), 'the cycle itself stays');

      await dropLog.down(t.db);
      await move.down(t.db);
      const restored = (await t.db('provisioning_cycles').where({ id: withReport }).first('log')) as { log: string };
      assert.deepEqual(JSON.parse(restored.log), report);
      assert.equal(Number(((await t.db('cycle_outcomes').count({ n: '*' }).first()) as { n: number | string }).n), 0);
      await move.up(t.db);
      await dropLog.up(t.db);
      await t.db('cycle_outcomes').delete();
      await t.db('provisioning_cycles').delete();
    });

    it('enforces a unique username and a unique request id in the auth table', { skip }, async () => {
      const now = Date.now();
      const base = { status: 'approved', request_type: 'new_account', parent_first_name: 'A', parent_last_name: 'B', created_at: now, updated_at: now };
      await t.db('requests').insert([{ ...base, public_id: 'p1', email: 'a@x.org' }, { ...base, public_id: 'p2', email: 'b@x.org' }]);
      const [r1, r2] = (await t.db('requests').orderBy('id').select('id')).map((r: { id: number }) => r.id);
      await t.db(TEST_AUTH_TABLE).insert({ username: 'a@x.org', firstname: 'A', lastname: 'B', email: 'a@x.org', request_id: r1 });
      await assert.rejects(t.db(TEST_AUTH_TABLE).insert({ username: 'a@x.org', firstname: 'A', lastname: 'B', email: 'a@x.org', request_id: r2 }));
      await assert.rejects(t.db(TEST_AUTH_TABLE).insert({ username: 'b@x.org', firstname: 'A', lastname: 'B', email: 'b@x.org', request_id: r1 }));
    });

    it('moves the rows of existing import batches out of rows_json and back, keeping them', { skip }, async () => {
      const rows = [
        {
          line: 2,
          values: { parentTitle: 'Ms', parentFirstName: 'Ann', parentLastName: 'Mover', email: 'ann.mover@example.org', childFirstName: 'Cat', childLastName: 'Mover', tutorGroup: '7B', pupilIdentifier: 'M1' },
          problems: [],
          pupil: { id: 41, name: 'Cat Mover', tutorGroup: '7B', identifier: 'M1', matchedBy: 'pupil_identifier' },
        },
        {
          line: 3,
          values: { parentTitle: '', parentFirstName: 'Bo', parentLastName: 'Mover', email: 'not-an-email', childFirstName: 'Dee', childLastName: 'Mover', tutorGroup: '7B', pupilIdentifier: '' },
          problems: ['Email “not-an-email” is not an email address.'],
          pupil: null,
        },
        {
          line: 4,
          values: { parentTitle: 'Ms', parentFirstName: 'Ann', parentLastName: 'Mover', email: 'ann.mover@example.org', childFirstName: 'Eve', childLastName: 'Mover', tutorGroup: '8C', pupilIdentifier: '' },
          problems: [],
          pupil: { id: 42, name: 'Eve Mover', tutorGroup: '8C', identifier: '', matchedBy: 'name_and_tutor_group' },
        },
      ];
      // Each in a transaction, as the migrator runs it (where SQLite cannot turn foreign keys off).
      const up = () => t.db.transaction((trx) => moveImportRows.up(trx));
      const down = () => t.db.transaction((trx) => moveImportRows.down(trx));
      // As the schema was before: the rows as one JSON value of their batch.
      await down();
      await t.db('import_batches').insert({ public_id: 'moved-batch', state: 'previewed', file_name: 'f.csv', created_by: 'office', created_at: 1, row_count: 3, valid_row_count: 2, rows_json: JSON.stringify(rows) });
      const { id } = (await t.db('import_batches').where({ public_id: 'moved-batch' }).first('id')) as { id: number };

      await up();
      assert.equal(await t.db.schema.hasColumn('import_batches', 'rows_json'), false);
      const moved = (await t.db('import_batch_rows').where({ batch_id: id }).orderBy('line')) as Array<Record<string, unknown>>;
      assert.deepEqual(
        moved.map((r) => [Number(r.line), r.email, r.parent_key, JSON.parse(String(r.problems_json)).length, r.pupil_id === null ? null : Number(r.pupil_id), r.parent_number === null ? null : Number(r.parent_number)]),
        [
          [2, 'ann.mover@example.org', 'ann.mover@example.org', 0, 41, 0],
          [3, 'not-an-email', 'not-an-email', 1, null, null],
          [4, 'ann.mover@example.org', 'ann.mover@example.org', 0, 42, 0],
        ],
        'every row kept (SQLite drops the column without copying the table, which would cascade to the rows)',
      );

      await down();
      const back = (await t.db('import_batches').where({ id }).first('rows_json')) as { rows_json: string };
      assert.deepEqual(JSON.parse(back.rows_json), rows, 'the same rows back in rows_json');
      assert.equal((await t.db('import_batch_rows').where({ batch_id: id })).length, 0);
      await up();
      await t.db('import_batches').where({ id }).delete();
    });

    it('uses the auth table name it is given', { skip }, async () => {
      const other = await createTestDatabase(dialect, { migrate: false });
      try {
        await migrateToLatest(other.db, { authTable: 'school_parents' });
        assert.equal(await other.db.schema.hasTable('school_parents'), true);
        assert.equal(await other.db.schema.hasTable(TEST_AUTH_TABLE), false);
        await rollbackAll(other.db, { authTable: 'school_parents' });
        assert.equal(await other.db.schema.hasTable('school_parents'), false);
      } finally {
        await other.destroy();
      }
    });
  });
}
