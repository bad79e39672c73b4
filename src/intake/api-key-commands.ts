// `api-keys create <name> | list | revoke <id>`: managing the intake API's keys from the CLI.
import type { Services } from '../services';
import { createApiKey, listApiKeys, revokeApiKey } from './api-keys';

export interface ApiKeyCommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

export const API_KEY_USAGE = `  api-keys create <name>          create a key for the intake API (shown once)
  api-keys list                   list keys (never the keys themselves)
  api-keys revoke <id>            stop a key working`;

const when = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString().slice(0, 16).replace('T', ' '));

/** Returns the exit code: 0 done, 1 refused, 2 wrong usage. */
export async function runApiKeyCommand(services: Pick<Services, 'db'>, args: string[], io: ApiKeyCommandIo): Promise<number> {
  const [action, ...rest] = args;
  if (action === 'create') {
    const name = rest.join(' ').trim();
    if (!name) {
      io.err(`Give the key a name, for example: api-keys create wordpress\n${API_KEY_USAGE}`);
      return 2;
    }
    const { key, apiKey } = await createApiKey(services.db, name);
    io.out(`Created API key ${apiKey.id} "${apiKey.name}".`);
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
    io.out('    id  prefix        created           last used         state    name');
    for (const k of keys) {
      io.out(
        `${String(k.id).padStart(6)}  ${k.keyPrefix.padEnd(12)}  ${when(k.createdAt).padEnd(16)}  ${when(k.lastUsedAt).padEnd(16)}  ${(k.revokedAt === null ? 'active' : 'revoked').padEnd(7)}  ${k.name}`,
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
