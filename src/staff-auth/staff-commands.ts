// `staff add | list | reset-password | disable | enable`: managing dashboard accounts from the
// CLI. Passwords are read from the terminal (not echoed) or from standard input, never from
// the command line, where other users of the machine could see them.
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import type { Services } from '../services';
import { PASSWORD_MIN_LENGTH } from './staff-accounts.service';

export interface StaffCommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
  /** Asks for a password; the CLI reads the terminal without echo, or one line of piped input. */
  readPassword?: (prompt: string) => Promise<string>;
}

export const STAFF_USAGE = `  staff add <username> --name "Full Name" [--email E] [--admin]
                                  add a dashboard account (password asked for, or one line on stdin)
  staff list                      list dashboard accounts
  staff reset-password <username> set a new password (ends the account's sessions and sign-in locks)
  staff disable <username>        stop an account signing in (open sessions end too)
  staff enable <username>`;

const when = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString().slice(0, 16).replace('T', ' '));

/** Reads a password from the terminal without echoing it, or the first line of piped input. */
export function readPasswordFromStdin(prompt: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: stdin, output: stdin.isTTY ? process.stderr : undefined, terminal: Boolean(stdin.isTTY) });
    if (stdin.isTTY) {
      process.stderr.write(prompt);
      // Print nothing of what is typed.
      (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => undefined;
    }
    let answered = false;
    rl.once('line', (line) => {
      answered = true;
      if (stdin.isTTY) process.stderr.write('\n');
      rl.close();
      resolve(line);
    });
    rl.once('close', () => {
      if (!answered) reject(new Error('No password was given (standard input ended).'));
    });
  });
}

async function askForNewPassword(io: StaffCommandIo): Promise<string> {
  const read = io.readPassword ?? readPasswordFromStdin;
  const password = await read(`New password (at least ${PASSWORD_MIN_LENGTH} characters): `);
  if (process.stdin.isTTY && !io.readPassword) {
    const again = await read('The same password again: ');
    if (again !== password) throw new Error('The two passwords are not the same; nothing was changed.');
  }
  return password;
}

/** Returns the exit code: 0 done, 1 refused, 2 wrong usage. */
export async function runStaffCommand(services: Pick<Services, 'staffAccounts'>, args: string[], io: StaffCommandIo): Promise<number> {
  const [action, ...rest] = args;
  const accounts = services.staffAccounts;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { name: { type: 'string' }, email: { type: 'string' }, admin: { type: 'boolean' } },
  });
  const username = positionals[0];
  const needsUsername = action !== 'list';
  if (!action || (needsUsername && (!username || positionals.length > 1)) || (!needsUsername && positionals.length > 0)) {
    io.err(`${action ? `Say which account, once: staff ${action} <username>` : 'Say what to do with staff accounts.'}\n${STAFF_USAGE}`);
    return 2;
  }
  switch (action) {
    case 'add': {
      if (!values.name) {
        io.err(`Give the person's name with --name "Full Name".\n${STAFF_USAGE}`);
        return 2;
      }
      const password = await askForNewPassword(io);
      const user = await accounts.addStaff({
        username: username as string,
        displayName: values.name,
        ...(values.email ? { email: values.email } : {}),
        password,
        role: values.admin ? 'admin' : 'staff',
      });
      io.out(`Added ${user.role === 'admin' ? 'administrator' : 'staff'} account "${user.username}" (${user.displayName}).`);
      return 0;
    }
    case 'list': {
      const users = await accounts.list();
      if (users.length === 0) {
        io.out('No staff accounts yet. Start the service and open /admin/setup, or use "staff add".');
        return 0;
      }
      io.out('username                        role   state     last sign-in      name');
      for (const u of users) {
        const state = u.disabled ? 'disabled' : 'active';
        io.out(`${u.username.padEnd(30)}  ${u.role.padEnd(5)}  ${state.padEnd(8)}  ${when(u.lastLoginAt).padEnd(16)}  ${u.displayName}`);
      }
      return 0;
    }
    case 'reset-password': {
      const password = await askForNewPassword(io);
      const user = await accounts.resetPassword(username as string, password);
      io.out(`The password of "${user.username}" has been changed. Every session of the account has ended, and any sign-in lock on it is lifted.`);
      return 0;
    }
    case 'disable':
    case 'enable': {
      const user = await accounts.setDisabled(username as string, action === 'disable');
      io.out(`The account "${user.username}" is now ${action === 'disable' ? 'disabled: it cannot sign in' : 'enabled'}.`);
      return 0;
    }
    default:
      io.err(`Unknown staff command "${action}".\n${STAFF_USAGE}`);
      return 2;
  }
}
