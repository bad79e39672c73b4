// Cycle reports live in cycle_outcomes now; the JSON column that held them goes.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('provisioning_cycles', (t) => {
    t.dropColumn('log');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('provisioning_cycles', (t) => {
    t.text('log', 'mediumtext');
  });
}
