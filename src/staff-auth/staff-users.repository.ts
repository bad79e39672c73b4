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
  /** Raised by a password reset or a disable: sessions carrying an older number have ended. */
  sessionGeneration: number;
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
    sessionGeneration: Number(r.session_generation ?? 0),
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
    sessionGeneration: 'session_generation',
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

  async insert(q: Queryable, user: Omit<StaffUserRecord, 'id' | 'lastLoginAt' | 'disabled' | 'sessionGeneration'>): Promise<number> {
    const inserted = await q(STAFF_USERS_TABLE).insert(toRow({ ...user, disabled: false }));
    return Number(inserted[0]);
  }

  async update(q: Queryable, id: number, patch: Partial<Omit<StaffUserRecord, 'id'>>): Promise<void> {
    await q(STAFF_USERS_TABLE).where({ id }).update(toRow(patch));
  }

  /**
   * Ends every session of the account (they carry the old generation), in the same statement as
   * the change that calls for it, so no instance can accept an old session after the change.
   */
  async updateEndingSessions(q: Queryable, id: number, patch: Partial<Omit<StaffUserRecord, 'id' | 'sessionGeneration'>>): Promise<void> {
    await q(STAFF_USERS_TABLE)
      .where({ id })
      .update({ ...toRow(patch), session_generation: q.raw('session_generation + 1') });
  }
}
