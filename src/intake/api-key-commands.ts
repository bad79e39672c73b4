// `api-keys create <name> | list | revoke <id>`: managing the intake API's keys from the CLI.
import type { Services } from '../services';
import { API_KEY_SCOPES, type ApiKeyScope } from './api-key-repository';
import { createApiKey, listApiKeys, revokeApiKey } from './api-keys';

export interface ApiKeyCommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

export const API_KEY_USAGE = `  api-keys create <name> [--scope requests|guardian-records]
                                  create an API key (shown once); the scope is what it may
                                  call: requests (default, the intake API) or guardian-records
  api-keys list                   list keys (never the keys themselves)
  api-keys revoke <id>            stop a key working`;

const when = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString().slice(0, 16).replace('T', ' '));

/** Returns the exit code: 0 done, 1 refused, 2 wrong usage. */
export async function runApiKeyCommand(services: Pick<Services, 'db'>, args: string[], io: ApiKeyCommandIo): Promise<number> {
  const [action, ...rest] = args;
  if (action === 'create') {
    const scopes: ApiKeyScope[] = [];
    const words: string[] = [];
    for (let i = 0; i < rest.length; i += 1) {
      if (rest[i] !== '--scope') {
        words.push(rest[i] as string);
        continue;
      }
      const scope = rest[i + 1] ?? '';
      if (!(API_KEY_SCOPES as readonly string[]).includes(scope)) {
        io.err(`The scope must be one of: ${API_KEY_SCOPES.join(', ')} (got "${scope}").\n${API_KEY_USAGE}`);
        return 2;
      }
      scopes.push(scope as ApiKeyScope);
      i += 1;
    }
    const name = words.join(' ').trim();
    if (!name) {
      io.err(`Give the key a name, for example: api-keys create wordpress\n${API_KEY_USAGE}`);
      return 2;
    }
    const { key, apiKey } = await createApiKey(services.db, name, Date.now(), scopes.length > 0 ? [...new Set(scopes)] : ['requests']);
    io.out(`Created API key ${apiKey.id} "${apiKey.name}" (may call: ${apiKey.scopes.join(', ')}).`);
    io.out(`Key (shown only now; store it in the website's webhook settings):\n\n  ${key}\n`);
    io.out('Send it as "Authorization: Bearer <key>" (or "X-Api-Key: <key>").');
    return 0;
  }
  if (action === 'list' && rest.length === 0) {
    const keys = await listApiKeys(services.db);
    if (keys.length === 0) {
      io.out('No API keys.');
      return 0;
    }
    io.out('    id  prefix        created           last used         state    scopes                     name');
    for (const k of keys) {
      io.out(
        `${String(k.id).padStart(6)}  ${k.keyPrefix.padEnd(12)}  ${when(k.createdAt).padEnd(16)}  ${when(k.lastUsedAt).padEnd(16)}  ${(k.revokedAt === null ? 'active' : 'revoked').padEnd(7)}  ${k.scopes.join(',').padEnd(25)}  ${k.name}`,
      );
    }
    return 0;
  }
  if (action === 'revoke' && rest.length === 1) {
    const id = rest[0] as string;
    if (!/^\d+$/.test(id) || Number(id) <= 0) {
      io.err(`The key id must be a positive whole number (got ${id}); "api-keys list" shows them.`);
      return 2;
    }
    if (!(await revokeApiKey(services.db, Number(id)))) {
      io.err(`There is no active API key ${id}; "api-keys list" shows them.`);
      return 1;
    }
    io.out(`API key ${id} is revoked: calls with it are refused from now on.`);
    return 0;
  }
  io.err(`Usage:\n${API_KEY_USAGE}`);
  return 2;
}
