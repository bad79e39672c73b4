// The "Import and export" page: upload a CSV of pre-approved parents, check every row in a
// preview (nothing is written but the batch), then commit it once; and download the requests.
import express, { type Request, type Response, type Router } from 'express';
import type { FieldProblem } from '../errors';
import { NotFoundError } from '../errors';
import { REQUEST_STATUSES, STATUS_LABELS } from '../requests/request-states';
import type { Services } from '../services';
import { flash } from '../staff-auth/require-staff';
import { requirePermission } from '../staff-auth/staff-permissions';
import { IMPORT_COLUMNS, IMPORT_FIELDS, MAX_IMPORT_ROWS } from './import-csv';
import type { ImportBatchRecord } from './import-batch.repository';
import { PREVIEW_VALID_MS, ROWS_PER_PAGE } from './import.service';
import type { StaffIdentity } from '../staff-auth/staff-accounts.service';

const BATCH_ID = /^[A-Za-z0-9_-]{16,32}$/;
const dateTime = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'Europe/London' });
const formatDate = (ms: number) => dateTime.format(new Date(ms));

const MATCHED_BY: Record<string, string> = {
  pupil_identifier: 'by pupil identifier',
  name_and_tutor_group: 'by name and tutor group',
  name: 'by name',
};

export function importRoutes(services: Services): Router {
  const router = express.Router();
  const imports = services.imports;

  async function renderImportPage(res: Response, problems: FieldProblem[] = [], status = 200) {
    res.status(status).render('import/index', {
      title: 'Import and export',
      problems,
      columns: IMPORT_FIELDS.map((f) => IMPORT_COLUMNS[f]),
      maxRows: MAX_IMPORT_ROWS,
      recent: await imports.recent(),
      statuses: REQUEST_STATUSES.map((s) => ({ value: s, label: STATUS_LABELS[s] })),
      moodleConfigured: services.moodle !== undefined,
      formatDate,
    });
  }

  /** The batch's summary and one page of its rows (5,000 rows on one page would be megabytes of HTML). */
  async function renderBatch(res: Response, batch: ImportBatchRecord, requestedPage: number, problems: FieldProblem[] = [], status = 200) {
    const pageCount = Math.max(1, Math.ceil(batch.rowCount / ROWS_PER_PAGE));
    const page = Math.min(Math.max(1, requestedPage), pageCount);
    const rows = await imports.rowsPage(batch, page);
    const pageHref = (n: number) => `/admin/import/${batch.publicId}${n === 1 ? '' : `?page=${n}`}#rows`;
    res.status(status).render('import/batch', {
      title: batch.state === 'committed' ? 'Import committed' : 'Check the import',
      batch,
      problems,
      rows,
      rowPages: {
        page,
        count: pageCount,
        perPage: ROWS_PER_PAGE,
        first: (page - 1) * ROWS_PER_PAGE + 1,
        last: (page - 1) * ROWS_PER_PAGE + rows.length,
        links: Array.from({ length: pageCount }, (_, i) => ({ number: i + 1, href: pageHref(i + 1), current: i + 1 === page })),
        previousHref: page > 1 ? pageHref(page - 1) : null,
        nextHref: page < pageCount ? pageHref(page + 1) : null,
      },
      validRowCount: batch.validRowCount,
      parents: await imports.parentCount(batch),
      problemRowCount: batch.rowCount - batch.validRowCount,
      canCommit: batch.state === 'previewed' && batch.validRowCount > 0 && batch.createdAt >= Date.now() - PREVIEW_VALID_MS,
      expired: batch.state === 'previewed' && batch.createdAt < Date.now() - PREVIEW_VALID_MS,
      matchedBy: MATCHED_BY,
      formatDate,
    });
  }

  async function batchFrom(req: Request): Promise<ImportBatchRecord> {
    const id = String(req.params.batchId ?? '');
    const batch = BATCH_ID.test(id) ? await imports.get(id) : undefined;
    if (!batch) throw new NotFoundError('There is no such import. It may have expired: upload the file again.');
    return batch;
  }

  // Everything under /import/… (preview, a batch, commit) imports; the page itself also exports.
  router.use('/import/:batchId', requirePermission('import'));

  router.get('/import', async (_req, res) => {
    await renderImportPage(res);
  });

  router.post('/import/preview', async (req, res) => {
    const file = req.file;
    if (!file) return renderImportPage(res, [{ field: 'file', message: 'Choose a CSV file to upload.' }], 400);
    const outcome = await imports.preview({ buffer: file.buffer, name: file.originalname ?? '' }, res.locals.staff as StaffIdentity);
    if (!outcome.ok) return renderImportPage(res, [{ field: 'file', message: outcome.problem }], 400);
    res.redirect(303, `/admin/import/${outcome.batch.publicId}`);
  });

  router.get('/import/:batchId', async (req, res) => {
    // ?page=N of the rows; anything else shows the first page.
    const page = /^[1-9][0-9]{0,5}$/.test(String(req.query.page ?? '')) ? Number(req.query.page) : 1;
    await renderBatch(res, await batchFrom(req), page);
  });

  router.post('/import/:batchId/commit', async (req, res) => {
    const batch = await batchFrom(req);
    const outcome = await imports.commit(batch.publicId, res.locals.staff as StaffIdentity);
    if (!outcome.ok) return renderBatch(res, outcome.batch ?? batch, 1, [{ field: 'import-summary', message: outcome.message }], 409);
    const result = outcome.batch.result;
    const approved = result?.approved ?? 0;
    flash(
      req,
      'success',
      `Imported: ${approved} ${approved === 1 ? 'request' : 'requests'} created and approved` +
        `${result?.leftPending ? `, ${result.leftPending} left waiting for review` : ''}${result?.skipped ? `, ${result.skipped} not imported` : ''}.`,
    );
    res.redirect(303, `/admin/import/${outcome.batch.publicId}`);
  });

  return router;
}
