// The only code that reads and writes the staff_users table.
import { booleanColumn, nullableNumber, nullableString } from '../db/columns';
import type { Queryable } from '../requests/request-repository';

export const STAFF_USERS_TABLE = 'staff_users';

export type StaffRole = 'admin' | 'staff';

export interface StaffUserRecord {
  id: number;
  username: string;
  displayName: string;
  email: string | null;
  passwordHash: string;
  role: StaffRole;
  disabled: boolean;
  failedLogins: number;
  lockedUntil: number | null;
  lastLoginAt: number | null;
  createdAt: number;
  updatedAt: number;
}

type Row = Record<string, unknown>;

function fromRow(r: Row): StaffUserRecord {
  return {
    id: Number(r.id),
    username: String(r.username),
    displayName: String(r.display_name),
    email: nullableString(r.email),
    passwordHash: String(r.password_hash),
    role: r.role === 'admin' ? 'admin' : 'staff',
    disabled: booleanColumn(r.disabled),
    failedLogins: Number(r.failed_logins),
    lockedUntil: nullableNumber(r.locked_until),
    lastLoginAt: nullableNumber(r.last_login_at),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

function toRow(patch: Partial<StaffUserRecord>): Row {
  const columns: Record<keyof StaffUserRecord, string> = {
    id: 'id',
    username: 'username',
    displayName: 'display_name',
    email: 'email',
    passwordHash: 'password_hash',
    role: 'role',
    disabled: 'disabled',
    failedLogins: 'failed_logins',
    lockedUntil: 'locked_until',
    lastLoginAt: 'last_login_at',
    createdAt: 'created_at',
    updatedAt: 'updated_at',
  };
  const row: Row = {};
  for (const [key, value] of Object.entries(patch)) {
    if (value !== undefined) row[columns[key as keyof StaffUserRecord]] = value;
  }
  return row;
}

export class StaffUserRepository {
  async count(q: Queryable): Promise<number> {
    const [row] = await q(STAFF_USERS_TABLE).count({ n: '*' });
    return Number(row?.n ?? 0);
  }

  async findByUsername(q: Queryable, username: string): Promise<StaffUserRecord | undefined> {
    const row = await q(STAFF_USERS_TABLE).where({ username }).first();
    return row ? fromRow(row) : undefined;
  }

  async findById(q: Queryable, id: number): Promise<StaffUserRecord | undefined> {
    const row = await q(STAFF_USERS_TABLE).where({ id }).first();
    return row ? fromRow(row) : undefined;
  }

  async list(q: Queryable): Promise<StaffUserRecord[]> {
    return (await q(STAFF_USERS_TABLE).orderBy('username')).map(fromRow);
  }

  async insert(q: Queryable, user: Omit<StaffUserRecord, 'id' | 'failedLogins' | 'lockedUntil' | 'lastLoginAt' | 'disabled'>): Promise<number> {
    const inserted = await q(STAFF_USERS_TABLE).insert(toRow({ ...user, disabled: false, failedLogins: 0 }));
    return Number(inserted[0]);
  }

  async update(q: Queryable, id: number, patch: Partial<Omit<StaffUserRecord, 'id'>>): Promise<void> {
    await q(STAFF_USERS_TABLE).where({ id }).update(toRow(patch));
  }

  /** Counts one failed sign-in atomically (two instances may count at once) and returns the new count. */
  async recordFailedLogin(q: Queryable, id: number, now: number): Promise<number> {
    await q(STAFF_USERS_TABLE).where({ id }).update({ failed_logins: q.raw('failed_logins + 1'), updated_at: now });
    const row = await q(STAFF_USERS_TABLE).where({ id }).first('failed_logins');
    return Number(row?.failed_logins ?? 0);
  }
}
