// A named lock in the database with a holder and an expiry, so only one provisioning cycle
// runs at a time across every app instance; a crashed holder's lock is taken over once expired.
import type { Database } from '../db/database';
import { isUniqueViolation } from '../db/database';

export const LOCKS_TABLE = 'locks';
export const CYCLE_LOCK = 'provisioning-cycle';
/**
 * A reconcile run (the Moodle check) takes the same lock as the cycle, so the two never change
 * Moodle or the same requests at once; its holder names start with this, to tell the two apart.
 */
export const RECONCILE_HOLDER_PREFIX = 'reconcile:';

export function heldByReconcile(holder: Pick<LockHolder, 'holder'>): boolean {
  return holder.holder.startsWith(RECONCILE_HOLDER_PREFIX);
}

export interface LockHolder {
  holder: string;
  cycleId: number | null;
  acquiredAt: number;
  expiresAt: number;
}

export type AcquireResult = { acquired: true; takenOverFrom: LockHolder | null } | { acquired: false; current: LockHolder };

export class DatabaseLock {
  constructor(
    private readonly db: Database,
    readonly name: string,
    private readonly now: () => number = Date.now,
  ) {}

  async acquire(holder: string, ttlMs: number): Promise<AcquireResult> {
    const now = this.now();
    try {
      await this.db(LOCKS_TABLE).insert({ name: this.name, holder, cycle_id: null, acquired_at: now, expires_at: now + ttlMs });
      return { acquired: true, takenOverFrom: null };
    } catch (error) {
      if (!isUniqueViolation(error)) throw error;
    }
    const current = await this.current();
    if (!current) return this.acquire(holder, ttlMs);
    if (current.expiresAt > now) return { acquired: false, current };
    // Expired: take it over, but only if nobody else did first (compare-and-set on holder and expiry).
    const changed = await this.db(LOCKS_TABLE)
      .where({ name: this.name, holder: current.holder, expires_at: current.expiresAt })
      .update({ holder, cycle_id: null, acquired_at: now, expires_at: now + ttlMs });
    if (Number(changed) === 1) return { acquired: true, takenOverFrom: current };
    const winner = await this.current();
    return winner ? { acquired: false, current: winner } : this.acquire(holder, ttlMs);
  }

  /** Extends the lock; false when it is no longer ours (expired and taken over). */
  async renew(holder: string, ttlMs: number, cycleId?: number): Promise<boolean> {
    const changed = await this.db(LOCKS_TABLE)
      .where({ name: this.name, holder })
      .update({ expires_at: this.now() + ttlMs, ...(cycleId !== undefined ? { cycle_id: cycleId } : {}) });
    return Number(changed) === 1;
  }

  async release(holder: string): Promise<void> {
    await this.db(LOCKS_TABLE).where({ name: this.name, holder }).delete();
  }

  async current(): Promise<LockHolder | undefined> {
    const row = (await this.db(LOCKS_TABLE).where({ name: this.name }).first()) as
      | { holder: string; cycle_id: number | null; acquired_at: number; expires_at: number }
      | undefined;
    if (!row) return undefined;
    return {
      holder: row.holder,
      cycleId: row.cycle_id === null ? null : Number(row.cycle_id),
      acquiredAt: Number(row.acquired_at),
      expiresAt: Number(row.expires_at),
    };
  }
}

/**
 * Renews a held lock every third of its time to live (well inside it, so one late timer tick never
 * lets it lapse) until stopped; lost() tells whether it expired and was taken over meanwhile.
 */
export function keepLockRenewed(
  lock: DatabaseLock,
  holder: string,
  ttlMs: number,
  options: { cycleId?: number; onError: (error: unknown) => void },
): { lost: () => boolean; stop: () => void } {
  let lost = false;
  const timer = setInterval(() => {
    lock.renew(holder, ttlMs, options.cycleId).then((ok) => {
      if (!ok) lost = true;
    }, options.onError);
  }, Math.max(100, Math.floor(ttlMs / 3)));
  timer.unref();
  return { lost: () => lost, stop: () => clearInterval(timer) };
}
