// Requests imported from the old WordPress plugin keep the plugin's request id, so a second
// `tvs-migrate run` recognises them and imports nothing twice. NULL for every other request
// (NULLs never collide in a unique index, on MySQL/MariaDB or SQLite). The plugin's ids are
// BIGINT, as in its own table.
import type { Knex } from 'knex';

const INDEX = 'requests_wp_request_id_uq';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('requests', (t) => {
    t.bigInteger('wp_request_id').nullable();
  });
  await knex.schema.alterTable('requests', (t) => {
    t.unique(['wp_request_id'], { indexName: INDEX });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('requests', (t) => {
    t.dropUnique(['wp_request_id'], INDEX);
  });
  await knex.schema.alterTable('requests', (t) => {
    t.dropColumn('wp_request_id');
  });
}
