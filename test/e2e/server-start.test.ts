// The first-run promise: with no configuration at all the service starts on an embedded SQLite
// file under data/, prints where it listens, and answers there.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices } from '../../src/services';

const ROOT = path.resolve(__dirname, '..', '..');

describe('starting the service', () => {
  it('starts with no configuration, creates data/, prints its URL and the one-time setup code, and the URL answers', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpp-start-'));
    const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? dir, PORT: '0' };
    const child = spawn(path.join(ROOT, 'node_modules', '.bin', 'tsx'), [path.join(ROOT, 'src/server.ts')], { cwd: dir, env });
    let out = '';
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let err = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /running at (http:\/\/\S+)/.exec(out);
          if (m) resolve(m[1]!);
        });
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('exit', (code) => reject(new Error(`server exited with ${code}: ${err}`)));
      });
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const home = await fetch(url);
      assert.equal(home.status, 200);
      assert.match(await home.text(), /Moodle accounts for parents/);
      const health = await fetch(`${url}/healthz`);
      assert.deepEqual(await health.json(), { status: 'ok' });
      assert.ok(fs.existsSync(path.join(dir, 'data', 'moodle-parent-provisioning.sqlite')), 'SQLite file created under data/');
      // No staff account yet: the dashboard leads to setup, and the log carries the code it needs.
      const admin = await fetch(`${url}/admin`, { redirect: 'manual' });
      assert.equal(admin.status, 303);
      assert.equal(admin.headers.get('location'), '/admin/setup');
      for (let i = 0; i < 50 && !/"setupCode"/.test(out); i += 1) await new Promise((r) => setTimeout(r, 100));
      assert.match(out, /"setupCode":"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}"/, 'the setup code is in the log');
      const code = /"setupCode":"([A-Z0-9-]+)"/.exec(out)?.[1];
      assert.ok(out.includes(`Staff dashboard: open ${url}/admin/setup with the one-time setup code ${code}`), 'and printed beside the address');
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to start with a bad configuration, naming the variable', async () => {
    const child = spawn(path.join(ROOT, 'node_modules', '.bin', 'tsx'), [path.join(ROOT, 'src/server.ts')], {
      cwd: os.tmpdir(),
      env: { PATH: process.env.PATH ?? '', NODE_ENV: 'production' },
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    assert.equal(code, 1);
    assert.match(err, /SESSION_SECRET is required when NODE_ENV=production/);
  });
});

describe('the web app', () => {
  const services = createServices(parseConfig({ NODE_ENV: 'test', DATABASE_URL: 'sqlite::memory:' }));
  const app = createApp(services);
  after(() => services.close());

  it('sends security headers: a CSP without inline script, a request id, no x-powered-by', async () => {
    const res = await request(app).get('/').expect(200);
    const csp = String(res.headers['content-security-policy']);
    assert.match(csp, /script-src 'self'/);
    assert.equal(csp.includes('unsafe-inline'), false);
    assert.match(String(res.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    assert.equal(res.headers['x-powered-by'], undefined);
    assert.equal(res.headers['strict-transport-security'], undefined, 'no HSTS over plain http');
  });

  it('serves its own stylesheet and a plain 404 page', async () => {
    await request(app).get('/assets/app.css').expect(200).expect('content-type', /text\/css/);
    await request(app).get('/favicon.ico').expect(204);
    const res = await request(app).get('/no/such/page').set('accept', 'text/html').expect(404);
    assert.match(res.text, /There is no page at this address/);
    const json = await request(app).get('/api/v1/nothing').expect(404);
    assert.equal(json.body.error.code, 'not_found');
  });
});
