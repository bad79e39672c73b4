// The "School records" pages: the current guardian records (when, by whom, how many), an upload
// of the MIS contact export checked in a preview (every row's problem by line; nothing replaced
// yet), then made current once; and PUT /api/v1/guardian-records for the MIS's nightly push.
import express, { type Request, type Response, type Router } from 'express';
import { AppError, NotFoundError, ValidationError, type FieldProblem } from '../errors';
import { requireApiKey } from '../intake/api-key-auth';
import type { ApiKeyInfo } from '../intake/api-keys';
import type { Services } from '../services';
import { flash } from '../staff-auth/require-staff';
import type { StaffIdentity } from '../staff-auth/staff-accounts.service';
import { requirePermission } from '../staff-auth/staff-permissions';
import { checkGuardianRows, GUARDIAN_COLUMNS, GUARDIAN_FIELDS, MAX_GUARDIAN_ROWS, readGuardianFile, type GuardianInputRow } from './guardian-records-csv';
import { describeRecordsAge, type ImportOutcome } from './guardian-records.service';

const dateTime = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short', timeZone: 'Europe/London' });
const formatDate = (ms: number | null) => (ms === null ? '' : dateTime.format(new Date(ms)));
const SOURCE_WORDS = { upload: 'uploaded in the dashboard', api: 'pushed through the API', cli: 'imported from the command line' };
/** Problems listed on the preview page; the count says how many more. */
const PROBLEMS_SHOWN = 200;

function importIdParam(req: Request): number {
  const raw = String(req.params.importId ?? '');
  if (!/^\d{1,10}$/.test(raw) || Number(raw) <= 0) throw new NotFoundError('There is no such import of the school records.');
  return Number(raw);
}

function matchedWords(outcome: Extract<ImportOutcome, { ok: true }>): string {
  const m = outcome.matched;
  return (
    `Waiting requests checked again: ${m.full} match fully, ${m.partial} partly, ${m.none} not at all` +
    `${m.errors > 0 ? `, ${m.errors} could not be checked (Moodle could not be asked)` : ''}${m.approved > 0 ? `; ${m.approved} approved automatically` : ''}.`
  );
}

/** The staff pages, behind requireStaff. */
export function guardianRecordsRoutes(services: Services): Router {
  const router = express.Router();
  const guardians = services.guardianRecords;
  const settings = services.config.guardianRecords;

  router.use('/guardian-records/:importId', requirePermission('import'));

  async function renderIndex(res: Response, problems: FieldProblem[] = []) {
    const current = await guardians.currentImport();
    res.status(problems.length > 0 ? 400 : 200).render('guardian-records/index', {
      title: 'School records',
      problems,
      current,
      recent: await guardians.recentImports(),
      age: current ? describeRecordsAge(current.importedAt, Date.now()) : '',
      stale: current ? guardians.isStale(current.importedAt) : false,
      settings,
      columns: GUARDIAN_FIELDS.map((f) => GUARDIAN_COLUMNS[f]),
      sourceWords: SOURCE_WORDS,
      formatDate,
    });
  }

  router.get('/guardian-records', async (_req, res) => {
    await renderIndex(res);
  });

  router.post('/guardian-records/preview', requirePermission('import'), async (req, res) => {
    const staff = res.locals.staff as StaffIdentity;
    const refuse = (message: string) => renderIndex(res, [{ field: 'file', message }]);
    if (!req.file) return refuse('Choose the CSV file exported from the school’s MIS.');
    const read = readGuardianFile(req.file.buffer, settings.pupilIdField);
    if (!read.ok) return refuse(read.problem);
    const outcome = await guardians.stage(read, { source: 'upload', fileName: req.file.originalname ?? '', createdBy: staff.username });
    if (!outcome.ok) return refuse(outcome.problem);
    res.redirect(303, `/admin/guardian-records/${outcome.import.id}`);
  });

  router.get('/guardian-records/:importId', async (req, res) => {
    const entry = await guardians.findImport(importIdParam(req));
    if (!entry) throw new NotFoundError('There is no such import of the school records. It may have expired: upload the file again.');
    res.render('guardian-records/preview', {
      title: entry.state === 'staged' ? 'Check the school records' : 'School records import',
      problems: [],
      entry,
      shownProblems: entry.problems.slice(0, PROBLEMS_SHOWN),
      sourceWords: SOURCE_WORDS,
      formatDate,
    });
  });

  router.post('/guardian-records/:importId/commit', async (req, res) => {
    const id = importIdParam(req);
    const staff = res.locals.staff as StaffIdentity;
    const outcome = await guardians.commitStaged(id, { type: 'staff', id: staff.username });
    if (!outcome.ok) {
      flash(req, 'error', outcome.problem);
      return res.redirect(303, outcome.import ? `/admin/guardian-records/${id}` : '/admin/guardian-records');
    }
    flash(req, 'success', `The school records were replaced: ${outcome.import.keptCount} records of ${outcome.import.pupilCount} pupils. ${matchedWords(outcome)}`);
    res.redirect(303, '/admin/guardian-records');
  });

  return router;
}

/**
 * PUT /api/v1/guardian-records: the whole snapshot as JSON ({"records": [{…}, …]}, the fields
 * named as in docs/guardian-records.md), replacing the current records when at least one row is
 * usable. A key with the guardian-records scope is needed.
 */
export function guardianRecordsApiRoutes(services: Services): Router {
  const router = express.Router();
  const settings = services.config.guardianRecords;
  router.put(
    '/guardian-records',
    requireApiKey(services.db, 'guardian-records'),
    (req, _res, next) => {
      if (!req.is('application/json')) throw new AppError('Send the records as JSON (Content-Type: application/json).', 415, 'unsupported_media_type');
      next();
    },
    express.json({ limit: '40mb', strict: true }),
    async (req, res) => {
      const body = req.body as { records?: unknown };
      if (!body || typeof body !== 'object' || !Array.isArray(body.records)) {
        throw new ValidationError('Send {"records": [ … ]}: one object per pupil and contact.', [{ field: 'records', message: 'A list of records is needed.' }]);
      }
      if (body.records.length > MAX_GUARDIAN_ROWS) {
        throw new ValidationError(`At most ${MAX_GUARDIAN_ROWS} records can be sent at once.`, [{ field: 'records', message: 'Too many records.' }]);
      }
      const rows = body.records.map((value: unknown, index: number) => ({
        line: index + 1,
        values: (value && typeof value === 'object' && !Array.isArray(value) ? pickFields(value as Record<string, unknown>) : {}) as GuardianInputRow,
      }));
      const read = checkGuardianRows(rows, settings.pupilIdField);
      const apiKey = res.locals.apiKey as ApiKeyInfo;
      const outcome = await services.guardianRecords.importSnapshot(read, { source: 'api', fileName: '', actor: { type: 'api', id: apiKey.name } });
      if (!outcome.ok) {
        res.status(422).json({ error: { code: 'not_imported', message: outcome.problem, problems: read.problems.map((p) => ({ record: p.line, message: p.message })) } });
        return;
      }
      res.status(200).json({
        imported: outcome.import.keptCount,
        pupils: outcome.import.pupilCount,
        contacts: outcome.import.contactCount,
        withoutEmail: read.withoutEmail,
        repeated: read.repeated,
        problems: read.problems.map((p) => ({ record: p.line, message: p.message })),
        matched: outcome.matched,
      });
    },
  );
  return router;
}

/** Only the known fields of a record are read (nothing else is kept). */
function pickFields(value: Record<string, unknown>): GuardianInputRow {
  const out: GuardianInputRow = {};
  for (const field of GUARDIAN_FIELDS) {
    const v = value[field];
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[field] = v;
  }
  return out;
}
