// Keys for the intake API (the school website's form webhook). A key is shown once, when it
// is created; only its SHA-256 hash is kept, found through a short non-secret prefix.
//
// Why SHA-256 and not argon2: argon2's slowness protects low-entropy secrets (passwords) from
// guessing. These keys carry 256 random bits, so guessing the input from the hash is already
// out of reach, and a fast hash keeps every API call cheap.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Database } from '../db/database';
import { ValidationError } from '../errors';
import { ApiKeyRepository, type ApiKeyRecord, type ApiKeyScope } from './api-key-repository';

const repository = new ApiKeyRepository();
const KEY_PATTERN = /^(mpp_[A-Za-z0-9_-]{8})\.([A-Za-z0-9_-]{43})$/;

export interface ApiKeyInfo {
  id: number;
  name: string;
  scopes: ApiKeyScope[];
  keyPrefix: string;
  createdAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}

function hashKey(rawKey: string): string {
  return createHash('sha256').update(rawKey).digest('hex');
}

function info(record: ApiKeyRecord): ApiKeyInfo {
  const { keyHash: _hidden, ...rest } = record;
  return rest;
}

/** Creates a key; the raw key is in the answer and nowhere else, ever. */
export async function createApiKey(
  db: Database,
  name: string,
  now = Date.now(),
  scopes: ApiKeyScope[] = ['requests'],
): Promise<{ key: string; apiKey: ApiKeyInfo }> {
  const trimmed = name.trim();
  if (trimmed === '' || trimmed.length > 100) {
    throw new ValidationError('Give the key a name of 1 to 100 characters, such as "wordpress".', [{ field: 'name', message: 'Give the key a name.' }]);
  }
  const keyPrefix = `mpp_${randomBytes(6).toString('base64url')}`;
  const key = `${keyPrefix}.${randomBytes(32).toString('base64url')}`;
  const id = await repository.insert(db, { name: trimmed, scopes, keyPrefix, keyHash: hashKey(key), createdAt: now });
  return { key, apiKey: { id, name: trimmed, scopes, keyPrefix, createdAt: now, lastUsedAt: null, revokedAt: null } };
}

export async function listApiKeys(db: Database): Promise<ApiKeyInfo[]> {
  return (await repository.list(db)).map(info);
}

/** Revokes a key; false when there is no such key or it was already revoked. */
export async function revokeApiKey(db: Database, id: number, now = Date.now()): Promise<boolean> {
  return repository.revoke(db, id, now);
}

/** The key's record when the raw key is genuine and not revoked; otherwise undefined. */
export async function verifyApiKey(db: Database, rawKey: string, now = Date.now()): Promise<ApiKeyInfo | undefined> {
  const match = KEY_PATTERN.exec(rawKey.trim());
  if (!match) return undefined;
  const record = await repository.findByPrefix(db, match[1] as string);
  if (!record || record.revokedAt !== null) return undefined;
  const expected = Buffer.from(record.keyHash, 'hex');
  const actual = Buffer.from(hashKey(rawKey.trim()), 'hex');
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) return undefined;
  await repository.touch(db, record.id, now);
  return info({ ...record, lastUsedAt: now });
}
