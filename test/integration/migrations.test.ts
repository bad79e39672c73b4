// Every migration runs from empty and rolls back, on SQLite and MariaDB.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { migrateToLatest, migrationStatus, rollbackAll } from '../../src/db/migrator';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';

const TABLES = ['requests', 'request_children', TEST_AUTH_TABLE, 'audit_events', 'provisioning_cycles', 'staff_users', 'sessions', 'locks', 'api_keys', 'mail_outbox', 'rate_limits', 'guardian_record_imports', 'guardian_records', 'guardian_matches'];

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

    it('enforces a unique username and a unique request id in the auth table', { skip }, async () => {
      const now = Date.now();
      const base = { status: 'approved', request_type: 'new_account', parent_first_name: 'A', parent_last_name: 'B', created_at: now, updated_at: now };
      await t.db('requests').insert([{ ...base, public_id: 'p1', email: 'a@x.org' }, { ...base, public_id: 'p2', email: 'b@x.org' }]);
      const [r1, r2] = (await t.db('requests').orderBy('id').select('id')).map((r: { id: number }) => r.id);
      await t.db(TEST_AUTH_TABLE).insert({ username: 'a@x.org', firstname: 'A', lastname: 'B', email: 'a@x.org', request_id: r1 });
      await assert.rejects(t.db(TEST_AUTH_TABLE).insert({ username: 'a@x.org', firstname: 'A', lastname: 'B', email: 'a@x.org', request_id: r2 }));
      await assert.rejects(t.db(TEST_AUTH_TABLE).insert({ username: 'b@x.org', firstname: 'A', lastname: 'B', email: 'b@x.org', request_id: r1 }));
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
