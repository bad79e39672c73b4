// The diagnostics page: the same checks as the CLI's `doctor`, the configuration in force with
// its secrets masked, and (for administrators) the staff accounts, never their password hashes.
import { describeConfig, type Config } from '../config';
import type { DoctorCheck } from './doctor';
import type { StaffAccounts } from '../staff-auth/staff-accounts.service';
import { formatTime } from '../provisioning/provisioning-format';
import { ROLE_LABELS } from '../staff-auth/staff-permissions';
import type { StaffRole } from '../staff-auth/staff-users.repository';

export type CheckOutcome = 'ok' | 'warning' | 'problem' | 'skipped';

export interface CheckView {
  id: string;
  label: string;
  outcome: CheckOutcome;
  outcomeLabel: string;
  message: string;
  help: string | null;
  output: string | null;
}

export interface StaffAccountView {
  username: string;
  displayName: string;
  role: StaffRole;
  roleLabel: string;
  state: string;
  lastSignIn: string;
}

const OUTCOME_LABELS: Record<CheckOutcome, string> = { ok: 'Working', warning: 'Warning', problem: 'Problem', skipped: 'Not checked' };

export class DiagnosticsPage {
  constructor(
    private readonly deps: {
      config: Readonly<Config>;
      doctor: (runSync: boolean) => Promise<DoctorCheck[]>;
      staffAccounts: StaffAccounts;
      now?: () => number;
    },
  ) {}

  async checks(runSync: boolean) {
    const checks: CheckView[] = (await this.deps.doctor(runSync)).map((c) => {
      const outcome: CheckOutcome = c.skipped ? 'skipped' : !c.ok ? 'problem' : c.warning ? 'warning' : 'ok';
      return {
        id: c.id,
        label: c.label,
        outcome,
        outcomeLabel: OUTCOME_LABELS[outcome],
        // The doctor speaks to the command line here; on this page the button below runs the sync.
        message: c.id === 'sync-command' && !runSync ? c.message.replace(/; use --run-sync to run it now/, ': the button below runs it') : c.message,
        help: c.help ?? null,
        output: c.output ?? null,
      };
    });
    return {
      checks,
      problems: checks.filter((c) => c.outcome === 'problem').length,
      warnings: checks.filter((c) => c.outcome === 'warning').length,
      ranSync: runSync,
      syncCommandSet: this.deps.config.moodle.syncCommand !== undefined,
      checkedAt: formatTime((this.deps.now ?? Date.now)()),
      configuration: describeConfig(this.deps.config),
    };
  }

  /** Only the fields a page may show: the password hash never leaves the accounts service here. */
  async staffList(): Promise<StaffAccountView[]> {
    return (await this.deps.staffAccounts.list()).map((u) => ({
      username: u.username,
      displayName: u.displayName,
      role: u.role,
      roleLabel: ROLE_LABELS[u.role],
      state: u.disabled ? 'Disabled' : 'Active',
      lastSignIn: u.lastLoginAt === null ? 'Never' : formatTime(u.lastLoginAt),
    }));
  }
}
