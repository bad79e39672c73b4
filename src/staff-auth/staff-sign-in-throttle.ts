// Sign-in throttling that an attacker cannot turn against staff (OWASP Authentication Cheat
// Sheet, "Protect against automated attacks"): failures are counted per username *and* address,
// so guessing from one address slows, then locks, only that address for that username; an
// address is also capped on failures over all usernames (password spraying). A sign-in from
// anywhere else is never held up. rate-limiter-flexible keeps the counters in the shared
// `rate_limits` table, so every instance sees the same counts.
import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Database } from '../db/database';
import { createLimiter, RateLimitedError, storedKey } from '../web/rate-limit';

/** Failures for one username from one address that pass without any wait. */
export const FREE_FAILURES = 2;
/** The failure (per username and address) that locks that username for that address. */
export const LOCK_AFTER_FAILURES = 10;
/** How long such a lock lasts. */
export const LOCK_SECONDS = 15 * 60;
/** Failures are forgotten this long after the first one, and at a successful sign-in. */
export const FAILURE_WINDOW_SECONDS = 60 * 60;
/** Failed sign-ins from one address, whatever the usernames, before it must wait. */
export const ADDRESS_FAILURES = 30;
export const ADDRESS_WINDOW_SECONDS = 15 * 60;

/**
 * The wait after the n-th failure for a username from an address: none for the first
 * FREE_FAILURES, then 15 seconds, doubling, at most 5 minutes.
 */
export function waitAfterFailure(failures: number): number {
  if (failures <= FREE_FAILURES) return 0;
  return Math.min(15 * 2 ** (failures - FREE_FAILURES - 1), 300);
}

/** A wait in plain words, rounded up: "15 seconds", "1 minute", "4 minutes". */
export function waitInWords(seconds: number): string {
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 60) return `${s} second${s === 1 ? '' : 's'}`;
  const minutes = Math.ceil(s / 60);
  return `${minutes} minute${minutes === 1 ? '' : 's'}`;
}

/** What a locked username (for this address) is told. */
export function lockedMessage(seconds: number): string {
  return `Too many failed sign-ins for this username from this address. Try again in ${waitInWords(seconds)}, or ask an administrator to reset the password.`;
}

export interface FailureOutcome {
  /** Seconds before this username may be tried again from this address (0: at once). */
  waitSeconds: number;
  /** True when this failure locked the username for this address. */
  locked: boolean;
}

export class SignInThrottle {
  private readonly perAddress: RateLimiterAbstract;
  private readonly failures: RateLimiterAbstract;
  private readonly wait: RateLimiterAbstract;

  constructor(db: Database) {
    this.perAddress = createLimiter(db, { keyPrefix: 'signin_ip', points: ADDRESS_FAILURES, durationSeconds: ADDRESS_WINDOW_SECONDS });
    // Points are the failures allowed before the lock; the one after blocks the key for LOCK_SECONDS.
    this.failures = createLimiter(db, {
      keyPrefix: 'signin_failures',
      points: LOCK_AFTER_FAILURES - 1,
      durationSeconds: FAILURE_WINDOW_SECONDS,
      blockDurationSeconds: LOCK_SECONDS,
    });
    // One point: a key is either free or blocked for the current wait.
    this.wait = createLimiter(db, { keyPrefix: 'signin_wait', points: 1, durationSeconds: 1 });
  }

  /**
   * Before the password is checked: refuses (RateLimitedError, with the wait in words) when
   * this address, or this username from this address, must wait. `account` is the same for a
   * username whether or not an account has it, so the answer tells nothing about which exist.
   */
  async beforeAttempt(account: string, address: string): Promise<void> {
    const pair = storedKey(`${account}\n${address}`);
    const [byAddress, lock, wait] = await Promise.all([
      this.perAddress.get(storedKey(address)),
      this.failures.get(pair),
      this.wait.get(pair),
    ]);
    if (isOver(byAddress, ADDRESS_FAILURES - 1)) {
      throw refusal(byAddress, (words) => `Too many failed sign-ins from this address. Try again in ${words}.`);
    }
    if (isOver(lock, LOCK_AFTER_FAILURES - 1)) throw new RateLimitedError(lock.msBeforeNext / 1000, lockedMessage(lock.msBeforeNext / 1000));
    if (isOver(wait, 1)) throw refusal(wait, (words) => `Too many failed sign-ins for this username. Try again in ${words}.`);
  }

  /** Counts a failed sign-in and sets the wait (or the lock) it earns. */
  async failed(account: string, address: string): Promise<FailureOutcome> {
    const pair = storedKey(`${account}\n${address}`);
    await this.perAddress.penalty(storedKey(address));
    let failures: number;
    try {
      failures = (await this.failures.consume(pair)).consumedPoints;
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) throw rejection;
      return { waitSeconds: Math.ceil(rejection.msBeforeNext / 1000), locked: true };
    }
    const waitSeconds = waitAfterFailure(failures);
    if (waitSeconds > 0) await this.wait.block(pair, waitSeconds);
    return { waitSeconds, locked: false };
  }

  /** A successful sign-in forgets the failures for this username from this address. */
  async succeeded(account: string, address: string): Promise<void> {
    const pair = storedKey(`${account}\n${address}`);
    await Promise.all([this.failures.delete(pair), this.wait.delete(pair)]);
  }
}

function isOver(res: RateLimiterRes | null, allowed: number): res is RateLimiterRes {
  return res !== null && res.consumedPoints > allowed && res.msBeforeNext > 0;
}

function refusal(res: RateLimiterRes, message: (words: string) => string): RateLimitedError {
  const seconds = res.msBeforeNext / 1000;
  return new RateLimitedError(seconds, message(waitInWords(seconds)));
}
