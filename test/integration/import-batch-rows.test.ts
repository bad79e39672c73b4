// An import's rows stored one by one (import_batch_rows), on real databases: a preview of many
// rows is shown a page at a time (links that work without JavaScript), its parents are grouped
// across the whole file however far apart their rows are, the commit reads them a chunk of
// parents at a time and imports every parent with all their children, and an expired preview
// takes its rows with it.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { ImportBatchRepository } from '../../src/import/import-batch.repository';
import { ROWS_PER_PAGE } from '../../src/import/import.service';
import { MoodleClient } from '../../src/moodle/moodle-client';
import { createServices, type Services } from '../../src/services';
import { assertAuthInvariant } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { htmlText } from '../support/http';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, StaffSession } from '../support/staff';

const SECRET = 'a-test-session-secret-that-is-long-enough-0123456789';
const HEADER = 'Parent title,Parent first name,Parent last name,Email,Child first name,Child last name,Tutor group,Pupil identifier';
/** Parents of the file; each has two children, the first in the first half of the file, the second in the second. */
const PARENTS = 230;

/** Letters only (names take no digits): 0 → Aa, 1 → Ab, … */
const letters = (n: number) => String.fromCharCode(65 + Math.floor(n / 26)) + String.fromCharCode(97 + (n % 26));

for (const dialect of DIALECTS) {
  describe(`import rows stored one by one on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let services: Services;
    let app: Express;
    let browser: StaffSession;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      const client = new MoodleClient({ url: moodle.url, token: moodle.tokens.ws, timeoutMs: 2000, retries: 1, retryDelayMs: 1, batchSize: 100 });
      services = createServices(parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SESSION_SECRET: SECRET }), { db: t.db, moodle: client });
      app = createApp(services);
      browser = await StaffSession.signIn(app, await createStaffUser(services, { role: 'admin' }));
    });
    after(async () => {
      if (skip) return;
      await assertAuthInvariant(t.db);
      await services.close();
      await moodle.close();
      await t.destroy();
    });

    async function upload(content: string) {
      await browser.open('/admin/import');
      const res = await browser.agent
        .post('/admin/import/preview')
        .field('_csrf', browser.csrfToken)
        .attach('file', Buffer.from(content, 'utf8'), { filename: 'rows.csv', contentType: 'text/csv' });
      assert.equal(res.status, 303, htmlText(res.text).slice(0, 500));
      return res.headers.location as string;
    }

    it('shows a preview of many rows a page at a time, and commits every parent with all their children', { skip }, async () => {
      const email = (p: number) => `rows.parent${p}@example.org`;
      const surname = (p: number) => `Rows${letters(p)}`;
      const lines = [HEADER];
      for (const [c, first] of ['Ann', 'Bob'].entries()) {
        for (let p = 0; p < PARENTS; p++) {
          moodle.state.addUser({ id: 800_000 + p * 2 + c, username: `rows.pupil.${p}.${c}`, firstname: first, lastname: surname(p), department: '8C', idnumber: `ROW${p}-${c}` });
          lines.push(`Ms,Pat,${surname(p)},${email(p)},${first},${surname(p)},8C,ROW${p}-${c}`);
        }
      }
      // One parent whose second row has a problem: both of their rows are held back.
      lines.push('Mr,Held,Back,held.back@example.org,Ann,Pupil,7B,ADM1001', 'Mr,Held,Back,held.back@example.org,R2D2,Pupil,7B,');
      const rows = PARENTS * 2 + 2;
      const location = await upload(`${lines.join('\r\n')}\r\n`);
      const batchId = location.split('/').pop() as string;
      const stored = await services.imports.get(batchId);
      assert.ok(stored);
      assert.equal(Number((await t.db('import_batch_rows').where({ batch_id: stored.id }).count({ n: '*' }).first())?.n), rows, 'one database row per row of the file');

      // The first page: its rows, the counts of the whole file, and links to every page.
      const pages = Math.ceil(rows / ROWS_PER_PAGE);
      const first = await browser.open(location);
      const text = htmlText(first.text);
      assert.match(text, new RegExp(`<strong>${rows}</strong> rows read`));
      assert.match(text, new RegExp(`<strong>${PARENTS * 2}</strong> rows \\(${PARENTS} parents\\) can be imported`));
      assert.match(text, /<strong>2<\/strong> rows have problems/);
      assert.match(first.text, new RegExp(`Import ${PARENTS} parents and approve`));
      assert.match(text, new RegExp(`page 1 of ${pages}: rows 1 to ${ROWS_PER_PAGE} of ${rows}`));
      const shownLines = (html: string) => [...html.matchAll(/<th scope="row">(\d+)<\/th>/g)].map((m) => Number(m[1]));
      assert.deepEqual(shownLines(first.text), Array.from({ length: ROWS_PER_PAGE }, (_, i) => i + 2), 'the first rows of the file, in its order');
      assert.match(first.text, /<nav class="pagination import-pages" aria-label="Pages of rows">/);
      assert.match(first.text, new RegExp(`<a href="/admin/import/${batchId}#rows" aria-current="page"><span class="visually-hidden">Page </span>1</a>`));
      assert.match(first.text, new RegExp(`<a href="/admin/import/${batchId}\\?page=2#rows" rel="next">Next page</a>`));
      assert.doesNotMatch(first.text, /rel="prev"/);

      // The last page, reached by its link: the rest of the rows, the held-back parent's among them.
      const last = await browser.open(`/admin/import/${batchId}?page=${pages}`);
      const lastLines = shownLines(last.text);
      assert.deepEqual(lastLines, Array.from({ length: rows - (pages - 1) * ROWS_PER_PAGE }, (_, i) => (pages - 1) * ROWS_PER_PAGE + i + 2));
      assert.match(htmlText(last.text), /Not imported, because line \d+ for the same parent has a problem/);
      assert.match(last.text, /rel="prev">Previous page/);
      assert.doesNotMatch(last.text, /rel="next"/);
      // A page past the end shows the last; anything that is not a page number, the first.
      assert.deepEqual(shownLines((await browser.open(`/admin/import/${batchId}?page=999`)).text), lastLines);
      assert.deepEqual(shownLines((await browser.open(`/admin/import/${batchId}?page=x`)).text), shownLines(first.text));

      // The commit reads a chunk of parents at a time; each parent's two rows (230 rows apart) make one request.
      assert.equal((await browser.post(`${location}/commit`)).status, 303);
      const page = htmlText((await browser.open(location)).text);
      assert.match(page, new RegExp(`Imported: ${PARENTS} requests created and approved`));
      const made = (await t.db('requests').where({ import_batch_id: batchId }).select('id', 'email', 'status', 'idempotency_key')) as Array<{ id: number; email: string; status: string; idempotency_key: string }>;
      assert.equal(made.length, PARENTS);
      const byEmail = new Map(made.map((r) => [r.email, r]));
      for (const p of [0, 99, 100, 229]) {
        const request = byEmail.get(email(p));
        assert.ok(request, `parent ${p} imported`);
        assert.equal(request.status, 'approved');
        assert.equal(request.idempotency_key, `import:${batchId}:${p}`, 'parents numbered in the order they first appear');
        const children = (await t.db('request_children').where({ request_id: request.id }).orderBy('position')) as Array<{ first_name: string; moodle_user_id: number }>;
        assert.deepEqual(
          children.map((c) => [c.first_name, Number(c.moodle_user_id)]),
          [
            ['Ann', 800_000 + p * 2],
            ['Bob', 800_000 + p * 2 + 1],
          ],
        );
      }
      assert.equal((await t.db('requests').where({ email: 'held.back@example.org' })).length, 0);
      // The committed batch still shows its rows a page at a time.
      assert.deepEqual(shownLines((await browser.open(`/admin/import/${batchId}?page=2`)).text), Array.from({ length: ROWS_PER_PAGE }, (_, i) => ROWS_PER_PAGE + i + 2));
    });

    it('a preview nobody committed goes with its rows once it has expired', { skip }, async () => {
      const location = await upload(`${HEADER}\r\nMrs,Old,Preview,old.preview@example.org,Ann,Pupil,7B,ADM1001\r\n`);
      const batch = await services.imports.get(location.split('/').pop() as string);
      assert.ok(batch);
      assert.equal((await t.db('import_batch_rows').where({ batch_id: batch.id })).length, 1);
      const deleted = await new ImportBatchRepository().deletePreviewsOlderThan(t.db, batch.createdAt + 1);
      assert.ok(deleted >= 1);
      assert.equal((await t.db('import_batches').where({ id: batch.id })).length, 0);
      assert.equal((await t.db('import_batch_rows').where({ batch_id: batch.id })).length, 0, 'no personal data left behind');
    });
  });
}
