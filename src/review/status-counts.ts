// The request list's tab counts (and the overview's) without counting every request on every
// page view: at 100,000 requests that count is most of a page's time. Kept for a few seconds;
// any change this instance makes through the lifecycle forgets it at once (and again when that
// change commits), so staff see their own actions counted straight away. Changes made by
// another instance show within STATUS_COUNTS_MAX_AGE_MS.
import type { Knex } from 'knex';
import type { RequestStatus } from '../requests/request-states';

export const STATUS_COUNTS_MAX_AGE_MS = 5_000;

export type StatusCounts = Record<RequestStatus, number>;

export class StatusCountsCache {
  private cached: { value: StatusCounts; at: number } | undefined;
  /** Bumped by every change, so a count read while something changed is not kept. */
  private generation = 0;

  constructor(
    private readonly load: () => Promise<StatusCounts>,
    private readonly now: () => number = Date.now,
    private readonly maxAgeMs = STATUS_COUNTS_MAX_AGE_MS,
  ) {}

  async get(): Promise<StatusCounts> {
    if (this.cached && this.now() - this.cached.at < this.maxAgeMs) return this.cached.value;
    const generation = this.generation;
    const value = await this.load();
    if (generation === this.generation) this.cached = { value, at: this.now() };
    return value;
  }

  forget(): void {
    this.cached = undefined;
    this.generation += 1;
  }

  /**
   * A lifecycle listener: forgets the counts now, and once more when the change commits. Many
   * events of one transaction (a cycle's outcomes) need that only once, not a commit callback each.
   */
  readonly listener = Object.assign(async (trx: Knex.Transaction): Promise<void> => this.forgetUntilCommit(trx), {
    many: async (trx: Knex.Transaction): Promise<void> => this.forgetUntilCommit(trx),
  });

  private forgetUntilCommit(trx: Knex.Transaction): void {
    this.forget();
    trx.executionPromise.then(
      () => this.forget(),
      () => undefined,
    );
  }
}
