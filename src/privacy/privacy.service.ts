// Privacy: erasing a request's personal data on demand, erasing closed requests once the
// retention period (RETENTION_DAYS) has passed, blanking the address and browser every request
// was sent from after SUBMITTER_DETAILS_DAYS, and the access history of one pupil.
import type { Knex } from 'knex';
import type { Database } from '../db/database';
import { AppError } from '../errors';
import { PeriodicTask } from '../periodic-task';
import { clearExpiredRateLimits } from '../web/rate-limit';
import type { Logger } from '../logger';
import type { MailOutbox } from '../mail/mail-outbox';
import type { Actor, LifecycleEvent, RequestLifecycle } from '../requests/request-lifecycle';
import type { RequestRecord, RequestRepository } from '../requests/request-repository';
import type { RequestStatus } from '../requests/request-states';
import { ImportBatchRepository } from '../import/import-batch.repository';
import { PrivacyRepository } from './privacy.repository';
import { buildPupilHistory, type PupilHistoryEntry } from './pupil-history';

/** Closed without access ever being given for long: kept only for RETENTION_DAYS after the decision. */
export const RETAINED_STATUSES: readonly RequestStatus[] = ['denied', 'bogus', 'duplicate'];

const DAY_MS = 86_400_000;

/** Requests blanked per transaction: a first run over years of requests never holds one long lock. */
const SUBMITTER_DETAILS_BATCH = 1000;

export interface RetentionResult {
  erased: number[];
  /** Requests the lifecycle refused to erase this time (tried again on the next run). */
  skipped: Array<{ requestId: number; reason: string }>;
  /** Requests whose submitter address and browser were blanked (sent more than SUBMITTER_DETAILS_DAYS ago). */
  submitterDetailsErased: number;
}

export interface PrivacyDependencies {
  db: Database;
  lifecycle: RequestLifecycle;
  mailOutbox: Pick<MailOutbox, 'purgeForRequest'>;
  retentionDays: number;
  /** The submitter's address and browser are kept this many days after the request was sent. */
  submitterDetailsDays: number;
  /** Writes the audit event of each blanking run. */
  requests: Pick<RequestRepository, 'insertAudit'>;
  logger: Pick<Logger, 'info' | 'warn' | 'error'>;
  now?: () => number;
}

export class PrivacyService {
  readonly repository = new PrivacyRepository();
  private readonly now: () => number;
  private readonly retention = new PeriodicTask(
    () => this.eraseExpired(this.now()),
    (error) => this.deps.logger.error({ err: error }, 'retention: could not erase expired requests'),
  );

  private readonly importBatches = new ImportBatchRepository();

  constructor(private readonly deps: PrivacyDependencies) {
    this.now = deps.now ?? Date.now;
  }

  /**
   * A lifecycle listener: when a request is erased, its mail (queued or sent, which holds the
   * parent's address and names) and the cycle reports' messages about it go in the same transaction.
   */
  readonly erasureListener = async (trx: Knex.Transaction, event: LifecycleEvent): Promise<void> => {
    if (event.type !== 'erased') return;
    await this.deps.mailOutbox.purgeForRequest(trx, event.request.id);
    await this.repository.scrubCycleReports(trx, event.request.id);
    if (event.request.importBatchId) await this.importBatches.scrubImportedRequest(trx, event.request.importBatchId, event.request.id);
  };

  eraseRequest(id: number, input: { expectedVersion?: number }, actor: Actor): Promise<RequestRecord> {
    return this.deps.lifecycle.eraseRequest(id, input, actor);
  }

  /** Erases the denied, bogus and duplicate requests decided more than RETENTION_DAYS before `now`. */
  async eraseExpired(now: number): Promise<RetentionResult> {
    // Expired rate-limit counters hold hashed addresses and nothing anyone needs.
    await clearExpiredRateLimits(this.deps.db, now);
    const cutoff = now - this.deps.retentionDays * DAY_MS;
    const ids = await this.repository.decidedBefore(this.deps.db, RETAINED_STATUSES, cutoff);
    const result: RetentionResult = { erased: [], skipped: [], submitterDetailsErased: await this.eraseSubmitterDetails(now) };
    const actor: Actor = { type: 'system', id: 'retention' };
    for (const id of ids) {
      try {
        await this.deps.lifecycle.eraseRequest(id, {}, actor);
        result.erased.push(id);
      } catch (error) {
        // One request the lifecycle refuses (a Moodle unlink still due) must not stop the rest.
        if (!(error instanceof AppError)) throw error;
        result.skipped.push({ requestId: id, reason: error.message });
      }
    }
    if (result.erased.length > 0 || result.skipped.length > 0) {
      this.deps.logger.info({ erased: result.erased.length, skipped: result.skipped.length, retentionDays: this.deps.retentionDays }, 'retention: erased expired requests');
    }
    return result;
  }

  /**
   * Blanks the address and browser of every request sent more than SUBMITTER_DETAILS_DAYS before
   * `now`, whatever its status: they are kept only to deal with misuse of the form. Each batch is
   * one transaction with one audit event saying how many requests (not which), so the trail
   * does not become a list of everyone who asked.
   */
  async eraseSubmitterDetails(now: number): Promise<number> {
    const days = this.deps.submitterDetailsDays;
    const cutoff = now - days * DAY_MS;
    let total = 0;
    for (;;) {
      const blanked = await this.deps.db.transaction(async (trx) => {
        const count = await this.repository.eraseSubmitterDetailsBefore(trx, cutoff, SUBMITTER_DETAILS_BATCH);
        if (count === 0) return 0;
        await this.deps.requests.insertAudit(trx, now, [
          { actorType: 'system', actorId: 'retention', requestId: null, action: 'submitter_details_erased', details: { requests: count, olderThanDays: days } },
        ]);
        return count;
      });
      total += blanked;
      if (blanked < SUBMITTER_DETAILS_BATCH) break;
    }
    await this.repository.eraseHeldSubmitterDetailsBefore(this.deps.db, cutoff);
    if (total > 0) this.deps.logger.info({ requests: total, submitterDetailsDays: days }, 'retention: erased submitter addresses and browsers');
    return total;
  }

  /** Runs eraseExpired now and then every intervalMs (never two runs at once here) until stop(). */
  startRetention(intervalMs = DAY_MS): void {
    this.retention.start(intervalMs);
  }

  /** Stops the daily run and waits for one in progress, so shutdown never cuts an erasure short. */
  stop(): Promise<void> {
    return this.retention.stop();
  }

  /** Everyone who was ever linked (or matched) to this Moodle pupil account, oldest first. */
  async pupilHistory(moodleUserId: number): Promise<PupilHistoryEntry[]> {
    const links = await this.repository.linksOfPupil(this.deps.db, moodleUserId);
    const audit = await this.repository.auditOfRequests(this.deps.db, [...new Set(links.map((l) => l.request.id))]);
    return buildPupilHistory(links, audit);
  }
}
