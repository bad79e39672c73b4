// The request list's searched pages on real databases: one pass over the matches gives the same
// tab counts and the same pages as counting and paging separately, and both are what the data
// says, for every tab, every sort, several words, pages forwards and back.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createLifecycle, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, type TestDatabase } from '../support/databases';
import { REQUEST_STATUSES, type RequestStatus } from '../../src/requests/request-states';
import { LIST_SORTS, RequestSearchRepository, type ListCursor, type ListSort, type StatusFilter } from '../../src/review/request-search.repository';

const PAGE = 4;
const STATUSES_USED: RequestStatus[] = ['pending', 'unverified', 'approved', 'provisioned', 'denied', 'revoked'];

interface Made {
  id: number;
  status: RequestStatus;
  createdAt: number;
  lastName: string;
  firstName: string;
  tutorGroup: string;
}

for (const dialect of DIALECTS) {
  describe(`searched request list pages on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    const made: Made[] = [];
    const repository = new RequestSearchRepository();

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      const lifecycle = createLifecycle(t.db);
      const base = Date.UTC(2026, 2, 1);
      // 40 requests: tutor groups 10X and 10Y, two surnames in mixed case, statuses spread, and
      // pairs created at the same moment so the id decides the order between them.
      for (let i = 0; i < 40; i += 1) {
        const lastName = i % 3 === 0 ? `searchson${String(i).padStart(2, '0')}` : `Searchby${String(39 - i).padStart(2, '0')}`;
        const firstName = i % 2 === 0 ? 'Alma' : 'Bert';
        const tutorGroup = i % 4 === 0 ? '10Y' : '10X';
        const { request } = await lifecycle.submitRequest(
          submission({ parentFirstName: firstName, parentLastName: lastName, children: [{ firstName: 'Kid', lastName, tutorGroup, pupilIdentifier: null }] }),
          { type: 'parent' },
        );
        const status = STATUSES_USED[i % STATUSES_USED.length] as RequestStatus;
        const createdAt = base + Math.floor(i / 2) * 60_000;
        // Test data only: the statuses and times the list is read in, without the lifecycle's steps.
        await t.db('requests').where({ id: request.id }).update({ status, created_at: createdAt });
        made.push({ id: request.id, status, createdAt, lastName, firstName, tutorGroup });
      }
      // One that no search below finds.
      await lifecycle.submitRequest(submission({ parentLastName: 'Elsewhere', children: [{ firstName: 'Zed', lastName: 'Elsewhere', tutorGroup: '7Z', pupilIdentifier: null }] }), { type: 'parent' });
    });
    after(async () => {
      if (skip) return;
      await t.destroy();
    });

    const rank = (s: RequestStatus) => REQUEST_STATUSES.indexOf(s);
    const orders: Record<ListSort, (a: Made, b: Made) => number> = {
      newest: (a, b) => b.createdAt - a.createdAt || b.id - a.id,
      oldest: (a, b) => a.createdAt - b.createdAt || a.id - b.id,
      name: (a, b) => a.lastName.toLowerCase().localeCompare(b.lastName.toLowerCase()) || a.firstName.localeCompare(b.firstName) || a.id - b.id,
      status: (a, b) => rank(a.status) - rank(b.status) || b.createdAt - a.createdAt || b.id - a.id,
    };
    const searches: Array<{ q: string; matches: (m: Made) => boolean }> = [
      { q: '10', matches: () => true },
      { q: '10y', matches: (m) => m.tutorGroup === '10Y' },
      { q: 'SEARCHSON', matches: (m) => m.lastName.startsWith('searchson') },
      { q: 'Bert 10X', matches: (m) => m.firstName === 'Bert' && m.tutorGroup === '10X' },
    ];

    it('gives the tab counts of the search, in every status', { skip }, async () => {
      for (const { q, matches } of searches) {
        const { counts } = await repository.searchPage(t.db, { status: 'pending', search: q }, 'newest', PAGE, null);
        const expected = Object.fromEntries(REQUEST_STATUSES.map((s) => [s, made.filter((m) => matches(m) && m.status === s).length]));
        assert.deepEqual(counts, expected, q);
        assert.deepEqual(counts, await repository.countByStatus(t.db, q), `${q}: as the separate count`);
      }
      const none = await repository.searchPage(t.db, { status: 'all', search: 'Nobodyatall' }, 'newest', PAGE, null);
      assert.deepEqual(none.page.rows, []);
      assert.ok(Object.values(none.counts).every((n) => n === 0));
    });

    it('without a search, sorted by status, pages back across the statuses to where it started', { skip }, async () => {
      // "Previous page" once read a status before the cursor's from its newest rows, not its oldest.
      const all = ((await t.db('requests').select('id', 'status', 'created_at')) as Array<{ id: number; status: RequestStatus; created_at: number }>)
        .sort((a, b) => rank(a.status) - rank(b.status) || Number(b.created_at) - Number(a.created_at) || b.id - a.id)
        .map((r) => Number(r.id));
      const pages: number[][] = [];
      let cursor: ListCursor | null = null;
      let last;
      do {
        last = await repository.page(t.db, { status: 'all', search: '' }, 'status', PAGE, cursor);
        pages.push(last.rows.map((r) => r.id));
        cursor = last.next;
      } while (cursor);
      assert.deepEqual(pages.flat(), all);
      const back: number[][] = [];
      for (let previous = last.previous; previous; ) {
        const page = await repository.page(t.db, { status: 'all', search: '' }, 'status', PAGE, previous);
        back.unshift(page.rows.map((r) => r.id));
        previous = page.previous;
      }
      assert.deepEqual(back, pages.slice(0, -1));
    });

    it('pages through every tab in every sort, forwards and back, as paging separately does', { skip }, async () => {
      for (const { q, matches } of searches) {
        for (const status of ['all', 'pending', 'provisioned', 'revoked', 'duplicate'] as StatusFilter[]) {
          for (const sort of LIST_SORTS) {
            const label = `${q} in ${status} by ${sort}`;
            const effective = sort === 'status' && status !== 'all' ? 'newest' : sort;
            const expected = made.filter((m) => matches(m) && (status === 'all' || m.status === status)).sort(orders[effective]).map((m) => m.id);
            const filter = { status, search: q };
            const pages: number[][] = [];
            let cursor: ListCursor | null = null;
            let last;
            do {
              const { page } = await repository.searchPage(t.db, filter, sort, PAGE, cursor);
              const separately = await repository.page(t.db, filter, sort, PAGE, cursor);
              assert.deepEqual(page, separately, `${label}: page ${pages.length + 1} as paged separately`);
              pages.push(page.rows.map((r) => r.id));
              assert.ok(pages.length <= 11, label);
              last = page;
              cursor = page.next;
            } while (cursor);
            assert.deepEqual(pages.flat(), expected, label);
            // And back from the last page to the first.
            const back: number[][] = [];
            for (let previous = last.previous; previous; ) {
              const { page } = await repository.searchPage(t.db, filter, sort, PAGE, previous);
              back.unshift(page.rows.map((r) => r.id));
              previous = page.previous;
            }
            assert.deepEqual([...back, pages[pages.length - 1]].flat(), pages.length > 1 ? expected : pages.flat(), `${label}: backwards`);
          }
        }
      }
    });
  });
}
