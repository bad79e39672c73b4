// "Who can log in": the auth table a page at a time, and for the rows on the page what Moodle
// says about each account (looked up in batches), so staff see who cannot actually log in.
import type { Database } from '../db/database';
import { AppError } from '../errors';
import type { Logger } from '../logger';
import type { MoodleClient, MoodleUser } from '../moodle/moodle-client';
import { STATUS_LABELS } from '../requests/request-states';
import { AccountsRepository, type LoginAccountRow } from './login-accounts.repository';
import { paginate } from '../provisioning/provisioning-format';

export const ACCOUNTS_PAGE_SIZE = 50;

/** What Moodle says about one auth-table row. `unknown`: Moodle was not asked or did not answer. */
export type MoodleAccountState = 'active' | 'missing' | 'suspended' | 'other_sign_in' | 'unknown';

export interface LoginAccountView extends LoginAccountRow {
  name: string;
  requestStatusLabel: string;
  moodleState: MoodleAccountState;
  /** Plain words on the Moodle state; empty when all is well or unknown. */
  moodleNote: string;
  moodleUserId: number | null;
}

export interface MoodleNotice {
  message: string;
  help: string | null;
}

const STATE_LABELS: Record<MoodleAccountState, string> = {
  active: 'Can log in',
  missing: 'No Moodle account',
  suspended: 'Suspended in Moodle',
  other_sign_in: 'Username taken in Moodle',
  unknown: 'Not checked',
};

export function moodleStateLabel(state: MoodleAccountState): string {
  return STATE_LABELS[state];
}

function judge(row: LoginAccountRow, user: MoodleUser | undefined): { state: MoodleAccountState; note: string } {
  if (user === undefined) {
    return row.requestStatus === 'approved'
      ? { state: 'missing', note: "Not created in Moodle yet: Moodle's next user sync creates it." }
      : { state: 'missing', note: 'Moodle has no account with this username: it was deleted or renamed in Moodle. The next user sync creates it again.' };
  }
  if (user.auth !== undefined && user.auth !== 'db') {
    return {
      state: 'other_sign_in',
      note: `Moodle already has an account with this username that does not sign in through this service (it uses “${user.auth}”), so this parent cannot log in with it.`,
    };
  }
  if (user.suspended) {
    return { state: 'suspended', note: "Suspended in Moodle, so this parent cannot log in. Moodle's next user sync should reactivate it; if not, check the account in Moodle." };
  }
  return { state: 'active', note: '' };
}

export class WhoCanLogIn {
  private readonly repository: AccountsRepository;

  constructor(private readonly deps: { db: Database; authTable: string; moodle: MoodleClient | undefined; logger: Logger }) {
    this.repository = new AccountsRepository(deps.authTable);
  }

  async page(page: number, search: string | undefined) {
    const pagination = paginate(await this.repository.count(this.deps.db, search), page, ACCOUNTS_PAGE_SIZE);
    const rows = await this.repository.page(this.deps.db, { limit: pagination.pageSize, offset: pagination.offset, ...(search ? { search } : {}) });
    let moodleNotice: MoodleNotice | null = null;
    let found: Map<string, MoodleUser> | undefined;
    if (!this.deps.moodle) {
      moodleNotice = {
        message: 'Moodle is not set up in this service, so whether these parents have a working Moodle account is not shown.',
        help: 'Set MOODLE_URL and MOODLE_TOKEN; the diagnostics page checks them.',
      };
    } else if (rows.length > 0) {
      try {
        const users = await this.deps.moodle.getUsersByField('username', rows.map((r) => r.username));
        found = new Map(users.map((u) => [u.username, u]));
      } catch (error) {
        if (!(error instanceof AppError)) throw error;
        this.deps.logger.warn({ err: error }, 'could not look up parents in Moodle for the accounts page');
        moodleNotice = { message: `Moodle could not be asked about these accounts just now. ${error.message}`, help: error.help ?? null };
      }
    }
    const accounts: LoginAccountView[] = rows.map((row) => {
      const user = found?.get(row.username.toLowerCase());
      const verdict = found ? judge(row, user) : { state: 'unknown' as const, note: '' };
      return {
        ...row,
        name: `${row.firstname} ${row.lastname}`.trim(),
        requestStatusLabel: row.requestStatus ? STATUS_LABELS[row.requestStatus] : 'Request not found',
        moodleState: verdict.state,
        moodleNote: verdict.note,
        moodleUserId: user?.id ?? null,
      };
    });
    const tally = { active: 0, missing: 0, suspended: 0, other_sign_in: 0, unknown: 0 } as Record<MoodleAccountState, number>;
    for (const a of accounts) tally[a.moodleState] += 1;
    return { accounts, pagination, moodleNotice, checked: found !== undefined, tally };
  }
}
