// When a reconcile run first saw each linked pupil's Moodle account suspended: the grace period
// before the link ends (PUPIL_LEFT_GRACE_DAYS) counts from here. A pupil active again loses its row.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('pupil_suspensions', (t) => {
    t.integer('moodle_user_id').primary();
    t.bigInteger('first_seen_at').notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('pupil_suspensions');
}
