// The baseline of the intake benchmark, in its own process: a node:http server that reads the
// same form as POST /request and stores it with one INSERT through mysql2, and nothing else.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import mysql from 'mysql2/promise';
import { runWorker, serveHttpWorker } from '../support/worker';

const INSERT =
  'INSERT INTO requests (public_id, status, request_type, source, parent_title, parent_first_name, parent_last_name, email, parent_comment, created_at, updated_at) ' +
  'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';

async function main(): Promise<void> {
  const url = process.env.BENCH_DATABASE_URL;
  if (!url) throw new Error('BENCH_DATABASE_URL is not set');
  // The same pool size as the service's knex pool (src/db/database.ts), so only the work differs.
  const pool = mysql.createPool({ uri: url, connectionLimit: 10, charset: 'utf8mb4' });
  const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/request') {
      res.writeHead(404).end();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
      const now = Date.now();
      pool
        .query(INSERT, [
          randomBytes(16).toString('base64url'),
          'unverified',
          form.get('requestType') ?? '',
          'form',
          form.get('title') ?? '',
          form.get('firstName') ?? '',
          form.get('lastName') ?? '',
          (form.get('email') ?? '').trim().toLowerCase(),
          form.get('comment') ?? null,
          now,
          now,
        ])
        .then(
          () => {
            res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
            res.end('<!DOCTYPE html><p>Thank you</p>');
          },
          (error: unknown) => {
            process.stderr.write(`bare insert failed: ${String(error)}\n`);
            res.writeHead(500).end();
          },
        );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  serveHttpWorker(server, {}, () => pool.end());
}

runWorker(main);
