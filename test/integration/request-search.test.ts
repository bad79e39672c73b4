// The request list's searched pages on real databases: one pass over the matches gives the same
// tab counts and the same pages as counting and paging separately, and both are what the data
// says, for every tab, every sort, several words, pages forwards and back. A search matching more
// requests than the count limit gives no counts and the same pages, walked through the sort's
// index (with a small limit here, and at the real limit of 1,000 with requests written in bulk).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createLifecycle, insertApprovedRequests, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, type TestDatabase } from '../support/databases';
import { REQUEST_STATUSES, type RequestStatus } from '../../src/requests/request-states';
import { LIST_SORTS, RequestSearchRepository, SEARCH_COUNT_LIMIT, type ListCursor, type ListSort, type StatusFilter } from '../../src/review/request-search.repository';

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
      assert.ok(none.counts && Object.values(none.counts).every((n) => n === 0));
    });

    /** Every page of the search in every tab and sort, forwards then back, checked against the data and against paging separately. */
    async function pageThroughEverything(searching: RequestSearchRepository, expectCounts: (q: string) => boolean): Promise<void> {
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
              const { page, counts } = await searching.searchPage(t.db, filter, sort, PAGE, cursor);
              assert.equal(counts !== null, expectCounts(q), `${label}: counted or not`);
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
              const { page } = await searching.searchPage(t.db, filter, sort, PAGE, previous);
              back.unshift(page.rows.map((r) => r.id));
              previous = page.previous;
            }
            assert.deepEqual([...back, pages[pages.length - 1]].flat(), pages.length > 1 ? expected : pages.flat(), `${label}: backwards`);
          }
        }
      }
    }

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
      await pageThroughEverything(repository, () => true);
    });

    it('beyond the count limit gives no counts and the same pages, forwards and back, in every tab and sort', { skip }, async () => {
      // Each search above matches 10 requests or more: with a limit of 9, none is counted.
      await pageThroughEverything(new RequestSearchRepository({ countLimit: 9 }), () => false);
    });

    it('counts a search matching exactly as many requests as the limit, and not one matching one more', { skip }, async () => {
      const matching = (q: string) => made.filter((m) => searches.find((s) => s.q === q)?.matches(m));
      for (const { q } of searches) {
        const n = matching(q).length;
        const atLimit = await new RequestSearchRepository({ countLimit: n }).searchPage(t.db, { status: 'all', search: q }, 'newest', PAGE, null);
        assert.equal(Object.values(atLimit.counts ?? {}).reduce((a, b) => a + b, 0), n, `${q}: ${n} matches with a limit of ${n}`);
        const beyond = await new RequestSearchRepository({ countLimit: n - 1 }).searchPage(t.db, { status: 'all', search: q }, 'newest', PAGE, null);
        assert.equal(beyond.counts, null, `${q}: ${n} matches with a limit of ${n - 1}`);
        assert.deepEqual(beyond.page, atLimit.page, `${q}: the same first page either way`);
      }
    });
  });

  describe(`a search beyond the real count limit on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    const repository = new RequestSearchRepository();
    let ids: number[] = [];

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      // As many requests as the limit whose addresses start "limit", then one more.
      ids = [...(await insertApprovedRequests(t.db, SEARCH_COUNT_LIMIT, { emailPrefix: 'limit', childrenEach: 1 })), ...(await insertApprovedRequests(t.db, 1, { emailPrefix: 'limitplus', childrenEach: 1 }))].map((r) => r.id);
      // Test data only: a few statuses and times, newest first not the same as by id.
      await t.db('requests').whereIn('id', ids.filter((_, i) => i % 7 === 0)).update({ status: 'denied' });
      for (const [i, id] of ids.entries()) if (i % 50 === 0) await t.db('requests').where({ id }).update({ created_at: Date.UTC(2025, 0, 1) + i });
    });
    after(async () => {
      if (skip) return;
      await t.destroy();
    });

    const newestFirst = async (which: number[]) =>
      ((await t.db('requests').whereIn('id', which).orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }]).select('id')) as Array<{ id: number }>).map((r) => Number(r.id));

    it(`counts ${SEARCH_COUNT_LIMIT} matches, not ${SEARCH_COUNT_LIMIT + 1}, and pages through both exactly`, { skip }, async () => {
      const atLimit = ids.slice(0, SEARCH_COUNT_LIMIT);
      const counted = await repository.searchPage(t.db, { status: 'all', search: 'limit.' }, 'newest', 50, null);
      const denied = atLimit.filter((_, i) => i % 7 === 0).length;
      assert.deepEqual(counted.counts && { approved: counted.counts.approved, denied: counted.counts.denied }, { approved: SEARCH_COUNT_LIMIT - denied, denied });
      assert.deepEqual(
        counted.page.rows.map((r) => r.id),
        (await newestFirst(atLimit)).slice(0, 50),
      );

      const expected = await newestFirst(ids);
      const seen: number[] = [];
      let cursor: ListCursor | null = null;
      do {
        const { counts, page } = await repository.searchPage(t.db, { status: 'all', search: 'limit' }, 'newest', 50, cursor);
        assert.equal(counts, null, `${SEARCH_COUNT_LIMIT + 1} matches are not counted`);
        seen.push(...page.rows.map((r) => r.id));
        cursor = page.next;
      } while (cursor);
      assert.deepEqual(seen, expected);
      // A tab of the broad search: every denied one, newest first, two pages of 50 then the rest.
      const { counts, page } = await repository.searchPage(t.db, { status: 'denied', search: 'limit' }, 'newest', 100, null);
      assert.equal(counts, null);
      assert.deepEqual(
        page.rows.map((r) => r.id),
        (await newestFirst(ids.filter((_, i) => i % 7 === 0))).slice(0, 100),
      );
    });
  });
}
