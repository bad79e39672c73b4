// Earlier cycles kept their report as one JSON array in provisioning_cycles.log: its entries move
// to cycle_outcomes, one row each, so every cycle's report is read the same way.
import type { Knex } from 'knex';

interface Entry {
  requestId: number;
  outcome: string;
  message: string | null;
  children: unknown[];
}

const INSERT_BATCH = 200;

function entriesOf(log: unknown): Entry[] {
  if (log === null || log === undefined || log === '') return [];
  try {
    const parsed: unknown = JSON.parse(String(log));
    if (!Array.isArray(parsed)) return [];
    return parsed.filter((e): e is Entry => typeof e === 'object' && e !== null && Number.isSafeInteger((e as Entry).requestId) && typeof (e as Entry).outcome === 'string');
  } catch {
    return [];
  }
}

export async function up(knex: Knex): Promise<void> {
  const cycles = (await knex('provisioning_cycles').whereNotNull('log').select('id')) as Array<{ id: number }>;
  for (const { id } of cycles) {
    const row = (await knex('provisioning_cycles').where({ id }).first('log')) as { log: unknown } | undefined;
    // One entry per request, as the cycle wrote them; a repeated one keeps its last outcome.
    const byRequest = new Map(entriesOf(row?.log).map((e) => [e.requestId, e]));
    const rows = [...byRequest.values()].map((e) => ({
      cycle_id: id,
      request_id: e.requestId,
      outcome: e.outcome.slice(0, 20),
      message: typeof e.message === 'string' ? e.message : null,
      children: JSON.stringify(Array.isArray(e.children) ? e.children : []),
    }));
    for (let i = 0; i < rows.length; i += INSERT_BATCH) await knex('cycle_outcomes').insert(rows.slice(i, i + INSERT_BATCH));
    await knex('provisioning_cycles').where({ id }).update({ log: null });
  }
}

export async function down(knex: Knex): Promise<void> {
  const cycles = (await knex('cycle_outcomes').distinct('cycle_id')) as Array<{ cycle_id: number }>;
  for (const { cycle_id: id } of cycles) {
    const rows = (await knex('cycle_outcomes').where({ cycle_id: id }).orderBy('id').select('request_id', 'outcome', 'message', 'children')) as Array<Record<string, unknown>>;
    const report = rows.map((r) => ({ requestId: Number(r.request_id), outcome: r.outcome, message: r.message ?? null, children: JSON.parse(String(r.children)) as unknown }));
    await knex('provisioning_cycles').where({ id }).update({ log: JSON.stringify(report) });
    await knex('cycle_outcomes').where({ cycle_id: id }).delete();
  }
}
