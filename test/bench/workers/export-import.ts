// The process under test in the export and import memory benchmark: the service's own CSV export
// (streamed to a sink that only counts) or CSV import (preview, then commit), from createServices
// with the configuration in BENCH_SERVICE_ENV. One call per process, so its peak RSS is that work's.
import os from 'node:os';
import { Writable } from 'node:stream';
import { parseConfig } from '../../../src/config';
import { RequestSearchRepository } from '../../../src/review/request-search.repository';
import { streamRequestsCsv } from '../../../src/review/requests-csv-export';
import { createServices } from '../../../src/services';
import type { StaffIdentity } from '../../../src/staff-auth/staff-accounts.service';
import { peakRssBytes, runWorker, serveWorker } from '../support/worker';

export interface ExportRun {
  requests: number;
  lines: number;
  bytes: number;
  wallMs: number;
  peakRssBytes: number;
}

export interface ImportRun {
  rows: number;
  validRows: number;
  approved: number;
  wallMs: number;
  peakRssBytes: number;
}

async function main(): Promise<void> {
  const env = JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>;
  const services = createServices(parseConfig(env, { cwd: os.tmpdir() }));
  serveWorker(
    {
      export: async (): Promise<ExportRun> => {
        let bytes = 0;
        let lines = 0;
        // A client reading as fast as loopback allows: every chunk counted and dropped.
        const sink = new Writable({
          write(chunk: Buffer, _encoding, done) {
            bytes += chunk.length;
            for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines += 1;
            done();
          },
        });
        const started = performance.now();
        const requests = await streamRequestsCsv(sink, services.db, new RequestSearchRepository(), { status: 'all', search: '' });
        return { requests, lines, bytes, wallMs: performance.now() - started, peakRssBytes: peakRssBytes() };
      },
      import: async (params: { csv: string }): Promise<ImportRun> => {
        const imports = services.imports;
        const staff: StaffIdentity = { id: 1, username: 'bench', displayName: 'Bench', role: 'admin' };
        const started = performance.now();
        // The upload as the route gets it: the whole file in one buffer (multer's memory storage).
        const preview = await imports.preview({ buffer: Buffer.from(params.csv, 'utf8'), name: 'bench.csv' }, staff);
        if (!preview.ok) throw new Error(`the preview refused the file: ${preview.problem}`);
        // What the preview's page then reads: the batch, its parents and its first page of rows.
        const batch = await imports.get(preview.batch.publicId);
        if (!batch) throw new Error('the previewed batch was not stored');
        const parents = await imports.parentCount(batch);
        const refused = (await imports.rowsPage(batch, 1)).find((r) => r.problems.length > 0 || r.pupil === null);
        if (refused) throw new Error(`line ${refused.line} of the file was not accepted: ${refused.problems.join(' ') || 'no pupil matched'}`);
        if (parents === 0) throw new Error('the preview found no parent to import');
        const committed = await imports.commit(preview.batch.publicId, staff);
        if (!committed.ok) throw new Error(`the commit refused the batch: ${committed.message}`);
        return {
          rows: preview.batch.rowCount,
          validRows: preview.batch.validRowCount,
          approved: committed.batch.result?.approved ?? 0,
          wallMs: performance.now() - started,
          peakRssBytes: peakRssBytes(),
        };
      },
    },
    () => services.close(),
  );
}

runWorker(main);
