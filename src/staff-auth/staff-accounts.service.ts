// Staff accounts: the first-run setup, adding staff, passwords (argon2id) and signing in with
// throttling per username and address. Routes and the CLI both go through this service.
import { createHmac, timingSafeEqual } from 'node:crypto';
import argon2 from 'argon2';
import { z } from 'zod';
import type { Database } from '../db/database';
import { isUniqueViolation } from '../db/database';
import { AppError, ConflictError, NotFoundError, ValidationError, type FieldProblem } from '../errors';
import type { Logger } from '../logger';
import { RateLimitedError } from '../web/rate-limit';
import { lockedMessage, waitInWords, type SignInThrottle } from './staff-sign-in-throttle';
import { StaffUserRepository, type StaffRole, type StaffUserRecord } from './staff-users.repository';

export const PASSWORD_MIN_LENGTH = 12;
const SIGN_IN_FAILED = 'That username and password do not match an active staff account.';

const passwordSchema = z
  .string({ message: 'Enter a password.' })
  .min(PASSWORD_MIN_LENGTH, { message: `The password must be at least ${PASSWORD_MIN_LENGTH} characters long.` })
  .max(200, { message: 'The password must be at most 200 characters long.' });

const staffInputSchema = z.object({
  username: z
    .string({ message: 'Enter a username.' })
    .trim()
    .toLowerCase()
    .regex(/^[a-z0-9._@-]{3,100}$/, { message: 'The username must be 3 to 100 letters, digits or . _ @ -' }),
  displayName: z.string({ message: 'Enter a name.' }).trim().min(1, { message: 'Enter the name shown to other staff.' }).max(200, { message: 'The name must be at most 200 characters.' }),
  email: z
    .string()
    .trim()
    .max(254)
    .optional()
    .transform((v) => (v ? v.toLowerCase() : undefined))
    .refine((v) => v === undefined || z.string().email().safeParse(v).success, { message: 'Enter a valid email address, or leave it empty.' }),
  password: passwordSchema,
});

export type StaffInput = z.input<typeof staffInputSchema>;

/** What a page may know about the signed-in person (never the password hash). */
export interface StaffIdentity {
  id: number;
  username: string;
  displayName: string;
  role: StaffRole;
}

export function identityOf(user: StaffUserRecord): StaffIdentity {
  return { id: user.id, username: user.username, displayName: user.displayName, role: user.role };
}

function fieldProblems(error: z.ZodError): FieldProblem[] {
  return error.issues.map((issue) => ({ field: String(issue.path[0] ?? 'form'), message: issue.message }));
}

function parseStaffInput(input: StaffInput) {
  const parsed = staffInputSchema.safeParse(input);
  if (!parsed.success) throw new ValidationError('Some details need changing.', fieldProblems(parsed.error));
  return parsed.data;
}

function parsePassword(password: string): string {
  const parsed = passwordSchema.safeParse(password);
  if (!parsed.success) throw new ValidationError('The password cannot be used.', fieldProblems(parsed.error).map((p) => ({ ...p, field: 'password' })));
  return parsed.data;
}

const CODE_ALPHABET = 'ABCDEFGHJKMNPQRSTVWXYZ23456789';
const normaliseCode = (code: string) => code.toUpperCase().replace(/[^A-Z0-9]/g, '');

export class StaffAccounts {
  private readonly repository = new StaffUserRepository();
  private readonly now: () => number;
  private dummyHash: Promise<string> | undefined;

  constructor(
    private readonly db: Database,
    private readonly throttle: SignInThrottle,
    private readonly options: { sessionSecret: string; now?: () => number },
  ) {
    this.now = options.now ?? Date.now;
  }

  /**
   * The one-time code that lets the first administrator be created. Derived from the session
   * secret, so every instance behind a load balancer accepts the same code; it stops working
   * once any staff account exists.
   */
  setupCode(): string {
    const digest = createHmac('sha256', this.options.sessionSecret).update('moodle-parent-provisioning first-run setup').digest();
    const chars = [...digest.subarray(0, 12)].map((b) => CODE_ALPHABET[b % CODE_ALPHABET.length]).join('');
    return chars.match(/.{4}/g)!.join('-');
  }

  async needsSetup(): Promise<boolean> {
    return (await this.repository.count(this.db)) === 0;
  }

  /** Writes the setup code to the log when no staff account exists yet. */
  async announceSetup(logger: Logger, baseUrl: string): Promise<void> {
    if (!(await this.needsSetup())) return;
    logger.warn(
      { setupCode: this.setupCode(), setupUrl: `${baseUrl}/admin/setup` },
      'No staff account exists yet: open the setup page and enter this one-time setup code to create the first administrator',
    );
  }

  /**
   * What is wrong with a typed setup code, in words that help find the right one without giving
   * it away (its length and alphabet are no secret: the log shows the code to whoever may see it).
   */
  setupCodeProblem(code: string): string | undefined {
    const expected = Buffer.from(normaliseCode(this.setupCode()));
    const typed = normaliseCode(code);
    if (typed === '') return 'Enter the setup code. It is in the service log, on the line “No staff account exists yet”.';
    const foreign = [...new Set(typed.split('').filter((c) => !CODE_ALPHABET.includes(c)))];
    if (foreign.length > 0) {
      return `The setup code never has the letters I, L, O or U, nor the digits 0 or 1, but you typed ${foreign.join(', ')}. Copy the code again from the service log.`;
    }
    if (typed.length !== expected.length) {
      return `The setup code has ${expected.length} letters and digits, such as ABCD-EFGH-JKLM, but you typed ${typed.length}. Copy the code again from the service log.`;
    }
    if (!timingSafeEqual(Buffer.from(typed), expected)) {
      return 'This is not the setup code that this service printed in its log when it started. Copy the code again from the line “No staff account exists yet”, from the latest start.';
    }
    return undefined;
  }

  /** Every problem with a first-run setup form at once: the setup code and the account's details. */
  firstAdminProblems(code: string, input: StaffInput): FieldProblem[] {
    const codeProblem = this.setupCodeProblem(code);
    const parsed = staffInputSchema.safeParse(input);
    return [...(codeProblem ? [{ field: 'setupCode', message: codeProblem }] : []), ...(parsed.success ? [] : fieldProblems(parsed.error))];
  }

  async createFirstAdmin(code: string, input: StaffInput): Promise<StaffUserRecord> {
    const codeProblem = this.setupCodeProblem(code);
    if (codeProblem) throw new ValidationError('The setup code is not right.', [{ field: 'setupCode', message: codeProblem }]);
    const data = parseStaffInput(input);
    const passwordHash = await argon2.hash(data.password);
    return this.db.transaction(async (trx) => {
      // Closed as soon as one account exists, even if two people submit the page at once.
      if ((await this.repository.count(trx)) > 0) throw new ConflictError('The first administrator has already been created. Sign in instead.', 'setup_done');
      return this.insert(trx, { ...data, passwordHash, role: 'admin' });
    });
  }

  async addStaff(input: StaffInput & { role?: StaffRole }): Promise<StaffUserRecord> {
    const data = parseStaffInput(input);
    const passwordHash = await argon2.hash(data.password);
    return this.insert(this.db, { ...data, passwordHash, role: input.role ?? 'staff' });
  }

  private async insert(
    q: Parameters<StaffUserRepository['insert']>[0],
    data: { username: string; displayName: string; email?: string | undefined; passwordHash: string; role: StaffRole },
  ): Promise<StaffUserRecord> {
    const now = this.now();
    try {
      const id = await this.repository.insert(q, {
        username: data.username,
        displayName: data.displayName,
        email: data.email ?? null,
        passwordHash: data.passwordHash,
        role: data.role,
        createdAt: now,
        updatedAt: now,
      });
      return (await this.repository.findById(q, id)) as StaffUserRecord;
    } catch (error) {
      if (isUniqueViolation(error)) {
        throw new ValidationError('That username is taken.', [{ field: 'username', message: 'A staff account with this username already exists.' }]);
      }
      throw error;
    }
  }

  private async existing(username: string): Promise<StaffUserRecord> {
    const user = await this.repository.findByUsername(this.db, username.trim().toLowerCase());
    if (!user) throw new NotFoundError(`There is no staff account "${username}".`);
    return user;
  }

  /**
   * Sets a new password, which also lifts any sign-in lock on the username. Every session of
   * the account ends, on every instance: whoever knew the old password may have signed in.
   */
  async resetPassword(username: string, password: string): Promise<StaffUserRecord> {
    const user = await this.existing(username);
    const passwordHash = await argon2.hash(parsePassword(password));
    await this.repository.updateEndingSessions(this.db, user.id, { passwordHash, updatedAt: this.now() });
    return (await this.repository.findById(this.db, user.id)) as StaffUserRecord;
  }

  /**
   * A disabled account cannot sign in, and every session it has ends for good: enabling the
   * account again does not bring an old session back.
   */
  async setDisabled(username: string, disabled: boolean): Promise<StaffUserRecord> {
    const user = await this.existing(username);
    if (disabled) await this.repository.updateEndingSessions(this.db, user.id, { disabled, updatedAt: this.now() });
    else await this.repository.update(this.db, user.id, { disabled, updatedAt: this.now() });
    return (await this.repository.findById(this.db, user.id)) as StaffUserRecord;
  }

  list(): Promise<StaffUserRecord[]> {
    return this.repository.list(this.db);
  }

  /**
   * The account behind a session, if the session may still be used: the account is active and
   * has not had its password reset or been disabled since the session began. Read from the
   * database at every request, so a change made on one instance ends the session on all.
   */
  async accountForSession(id: number, sessionGeneration: number | undefined): Promise<StaffUserRecord | undefined> {
    const user = await this.repository.findById(this.db, id);
    // Sessions from before generations existed carry none; they count as generation 0.
    return user && !user.disabled && user.sessionGeneration === (sessionGeneration ?? 0) ? user : undefined;
  }

  /**
   * Checks a sign-in. Failures are throttled per username and address (see SignInThrottle), so
   * an attacker's guesses never lock staff out from their own computers. Every attempt that is
   * not refused costs one password check, whether or not the account exists, and a username no
   * account has is throttled exactly like one that exists: neither the answers nor their timing
   * tell which usernames exist.
   */
  async authenticate(usernameInput: string, password: string, ip: string): Promise<StaffUserRecord> {
    const username = usernameInput.trim().toLowerCase();
    const user = username ? await this.repository.findByUsername(this.db, username) : undefined;
    // A password reset starts the account's counts afresh (the generation changes with it).
    const account = user ? `${user.username}#${user.sessionGeneration}` : username || '(empty)';
    await this.throttle.beforeAttempt(account, ip);
    const passwordMatches = await this.verify(user?.passwordHash, password);
    const now = this.now();

    if (!user || !passwordMatches || user.disabled) {
      const outcome = await this.throttle.failed(account, ip);
      if (outcome.locked) throw new RateLimitedError(outcome.waitSeconds, lockedMessage(outcome.waitSeconds));
      const wait = outcome.waitSeconds > 0 ? ` Wait ${waitInWords(outcome.waitSeconds)} before you try again.` : '';
      throw new AppError(`${SIGN_IN_FAILED}${wait}`, 401, 'sign_in_failed');
    }
    await this.throttle.succeeded(account, ip);
    await this.repository.update(this.db, user.id, { lastLoginAt: now, updatedAt: now });
    return { ...user, lastLoginAt: now };
  }

  private async verify(hash: string | undefined, password: string): Promise<boolean> {
    this.dummyHash ??= argon2.hash('no account has this password');
    try {
      const ok = await argon2.verify(hash ?? (await this.dummyHash), password.slice(0, 1000));
      return hash !== undefined && ok;
    } catch {
      return false;
    }
  }
}
