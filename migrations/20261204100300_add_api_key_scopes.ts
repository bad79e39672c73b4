// API keys get scopes: what each key may call. Keys made before keep what they could do
// (sending requests); a key for the nightly guardian records push is given its own scope.
import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('api_keys', (t) => {
    t.string('scopes', 200).notNullable().defaultTo('requests');
  });
  await knex('api_keys').update({ scopes: 'requests' });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('api_keys', (t) => {
    t.dropColumn('scopes');
  });
}
