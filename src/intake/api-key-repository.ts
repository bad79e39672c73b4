// The only code that reads and writes the api_keys table.
import type { Queryable } from '../requests/request-repository';
import { nullableNumber } from '../db/columns';

export const API_KEYS_TABLE = 'api_keys';

/** What a key may call: sending requests (the website's form), pushing guardian records (the MIS). */
export const API_KEY_SCOPES = ['requests', 'guardian-records'] as const;
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number];

export interface ApiKeyRecord {
  id: number;
  name: string;
  scopes: ApiKeyScope[];
  keyPrefix: string;
  keyHash: string;
  createdAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}

type Row = Record<string, unknown>;

function fromRow(r: Row): ApiKeyRecord {
  return {
    id: Number(r.id),
    name: String(r.name),
    scopes: String(r.scopes ?? 'requests')
      .split(',')
      .filter((scope): scope is ApiKeyScope => (API_KEY_SCOPES as readonly string[]).includes(scope)),
    keyPrefix: String(r.key_prefix),
    keyHash: String(r.key_hash),
    createdAt: Number(r.created_at),
    lastUsedAt: nullableNumber(r.last_used_at),
    revokedAt: nullableNumber(r.revoked_at),
  };
}

export class ApiKeyRepository {
  async insert(q: Queryable, key: Omit<ApiKeyRecord, 'id' | 'lastUsedAt' | 'revokedAt'>): Promise<number> {
    const inserted = await q(API_KEYS_TABLE).insert({
      name: key.name,
      scopes: key.scopes.join(','),
      key_prefix: key.keyPrefix,
      key_hash: key.keyHash,
      created_at: key.createdAt,
    });
    return Number(inserted[0]);
  }

  async findByPrefix(q: Queryable, keyPrefix: string): Promise<ApiKeyRecord | undefined> {
    const row = (await q(API_KEYS_TABLE).where({ key_prefix: keyPrefix }).first()) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  async list(q: Queryable): Promise<ApiKeyRecord[]> {
    return ((await q(API_KEYS_TABLE).orderBy('id')) as Row[]).map(fromRow);
  }

  /** Marks a key revoked; false when there is no such key or it was revoked already. */
  async revoke(q: Queryable, id: number, now: number): Promise<boolean> {
    return Number(await q(API_KEYS_TABLE).where({ id }).whereNull('revoked_at').update({ revoked_at: now })) === 1;
  }

  async touch(q: Queryable, id: number, now: number): Promise<void> {
    await q(API_KEYS_TABLE).where({ id }).update({ last_used_at: now });
  }
}
