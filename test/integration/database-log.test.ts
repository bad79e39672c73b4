// knex's own warnings (a lost MySQL connection, say) go to the service's JSON log, not the console.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { createDatabase } from '../../src/db/database';

describe('database warnings', () => {
  it('are written through the given logger', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-dblog-'));
    const lines: Array<{ level: string; fields: object; message: string }> = [];
    const logger = {
      warn: (fields: object, message: string) => lines.push({ level: 'warn', fields, message }),
      error: (fields: object, message: string) => lines.push({ level: 'error', fields, message }),
      debug: (fields: object, message: string) => lines.push({ level: 'debug', fields, message }),
    };
    const db = createDatabase({ client: 'sqlite', filename: path.join(dir, 'x.sqlite'), display: 'x' }, { logger });
    try {
      (db.client as unknown as { logger: { warn(message: string): void } }).logger.warn('Connection Error: lost');
      assert.deepEqual(lines, [{ level: 'warn', fields: { knex: 'Connection Error: lost' }, message: 'database warning' }]);
    } finally {
      await db.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
