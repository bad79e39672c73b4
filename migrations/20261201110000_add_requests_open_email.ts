// One open request per email address, enforced by the database: open_email holds the address
// while a request is open (unverified or pending) and is NULL otherwise, and NULLs do not
// collide in a unique index on MySQL/MariaDB or SQLite. Two submissions for one address at
// the same moment cannot both open a request; the loser joins the winner's.
//
// Existing data may already hold two open requests for one address (made by such a race).
// The newest keeps the address; each older one stays open as it is, without it, and gets an
// audit event naming the newer request, so staff see it on the request page and can close
// it as a duplicate. Nothing is closed or merged here: that is a staff decision.
import type { Knex } from 'knex';

const OPEN_STATUSES = ['unverified', 'pending'];
const INDEX = 'requests_open_email_uq';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('requests', (t) => {
    t.string('open_email', 254).nullable();
  });
  const open = (await knex('requests')
    .whereIn('status', OPEN_STATUSES)
    .whereNot('email', '')
    .orderBy('id', 'desc')
    .select('id', 'email')) as Array<{ id: number; email: string }>;
  const newest = new Map<string, number>();
  const now = Date.now();
  for (const row of open) {
    // MySQL compares emails without case in this column's collation; match that everywhere.
    const key = String(row.email).toLowerCase();
    const kept = newest.get(key);
    if (kept === undefined) {
      newest.set(key, Number(row.id));
      await knex('requests').where({ id: row.id }).update({ open_email: key });
      continue;
    }
    await knex('audit_events').insert({
      created_at: now,
      actor_type: 'system',
      actor_id: null,
      request_id: row.id,
      action: 'open_request_duplicate',
      details: JSON.stringify({ duplicateOf: kept }),
    });
  }
  await knex.schema.alterTable('requests', (t) => {
    t.unique(['open_email'], { indexName: INDEX });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('requests', (t) => {
    t.dropUnique(['open_email'], INDEX);
  });
  await knex.schema.alterTable('requests', (t) => {
    t.dropColumn('open_email');
  });
}
