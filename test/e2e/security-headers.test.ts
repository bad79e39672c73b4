// The security sweep over HTTP: the content security policy (and that no page relies on inline
// script or style it would block), framing, HSTS, nosniff, the CSRF cookie's flags, and how
// TRUST_PROXY decides whose address a rate limit counts and whether a request came over https.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { FormSession, validFields, without } from '../support/http';

const SCHOOL_SITE = 'https://www.example-school.org';

interface Site {
  t: TestDatabase;
  services: Services;
  app: Express;
  /** Raw confirmation tokens, by public id, as the mailer receives them. */
  tokens: Map<string, string>;
  close(): Promise<void>;
}

async function openSite(env: Record<string, string> = {}): Promise<Site> {
  const t = await createTestDatabase('sqlite');
  const config = parseConfig({
    NODE_ENV: 'test',
    AUTH_TABLE: TEST_AUTH_TABLE,
    FORM_RATE_LIMIT_PER_IP: '1000',
    FORM_RATE_LIMIT_PER_EMAIL: '1000',
    ...env,
  });
  const services = createServices(config, { db: t.db, moodle: null });
  const tokens = new Map<string, string>();
  services.lifecycle.addListener(async (_trx, event) => {
    const token = event.details.verificationToken;
    if (typeof token === 'string') tokens.set(event.request.publicId, token);
  });
  return {
    t,
    services,
    app: createApp(services),
    tokens,
    async close() {
      await services.close();
      await t.destroy();
    },
  };
}

/** The directives of a Content-Security-Policy header, by name. */
function cspDirectives(header: unknown): Map<string, string[]> {
  assert.equal(typeof header, 'string', 'a Content-Security-Policy header is sent');
  const directives = new Map<string, string[]>();
  for (const part of (header as string).split(';')) {
    const [name, ...values] = part.trim().split(/\s+/);
    if (name) directives.set(name.toLowerCase(), values);
  }
  return directives;
}

function assertScriptPolicy(header: unknown, where: string): void {
  const csp = cspDirectives(header);
  const scriptSrc = csp.get('script-src') ?? csp.get('default-src');
  assert.ok(scriptSrc, `${where}: the CSP restricts scripts`);
  for (const forbidden of ["'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", '*', 'data:', 'http:', 'https:']) {
    assert.equal(scriptSrc.includes(forbidden), false, `${where}: script-src must not allow ${forbidden}`);
  }
  assert.deepEqual(csp.get('object-src'), ["'none'"], `${where}: no plugins`);
  assert.ok(csp.has('base-uri'), `${where}: base-uri is restricted`);
  const styleSrc = csp.get('style-src') ?? csp.get('default-src') ?? [];
  assert.equal(styleSrc.includes("'unsafe-inline'"), false, `${where}: style-src must not allow inline style`);
}

/**
 * A page must not rely on anything the CSP blocks: inline <script>, inline event handlers,
 * javascript: links, or inline style (blocked by style-src 'self', so it would silently not apply).
 */
function assertNoInlineCode(html: string, where: string): void {
  const tags = html.match(/<[a-zA-Z][^>]*>/g) ?? [];
  assert.ok(tags.length > 5, `${where}: is an HTML page`);
  for (const tag of tags) {
    if (/^<script\b/i.test(tag)) assert.match(tag, /\ssrc="\/[^"]+"/, `${where}: inline script ${tag}`);
    assert.doesNotMatch(tag, /\son[a-z]+\s*=/i, `${where}: inline event handler in ${tag}`);
    assert.doesNotMatch(tag, /\sstyle\s*=/i, `${where}: inline style in ${tag}`);
    assert.doesNotMatch(tag, /=\s*["']?\s*javascript:/i, `${where}: javascript: address in ${tag}`);
  }
  assert.doesNotMatch(html, /<style\b/i, `${where}: <style> element`);
  for (const script of html.match(/<script\b[^>]*>[\s\S]*?<\/script>/gi) ?? []) {
    assert.match(script, /^<script\b[^>]*>\s*<\/script>$/i, `${where}: script element with a body`);
  }
}

function frameAncestors(header: unknown): string[] {
  return cspDirectives(header).get('frame-ancestors') ?? [];
}

/** The Set-Cookie line for a cookie, by name. */
function setCookie(res: request.Response, name: string): string {
  const lines = ([] as string[]).concat((res.headers['set-cookie'] as unknown as string[] | undefined) ?? []);
  const line = lines.find((l) => l.startsWith(`${name}=`));
  assert.ok(line, `a ${name} cookie is set (got ${lines.join(' | ') || 'none'})`);
  return line;
}

function cookieAttributes(line: string): Map<string, string> {
  const attributes = new Map<string, string>();
  for (const part of line.split(';').slice(1)) {
    const [key, ...value] = part.trim().split('=');
    attributes.set((key as string).toLowerCase(), value.join('='));
  }
  return attributes;
}

describe('content security policy and the pages under / and /request', () => {
  let site: Site;
  before(async () => {
    site = await openSite({ FORM_EMBED_ORIGINS: SCHOOL_SITE, MAX_CHILDREN: '3' });
  });
  after(() => site.close());

  /** Every kind of page a parent can meet, fetched as a browser would, with its address. */
  async function everyParentPage(): Promise<Array<{ where: string; res: request.Response }>> {
    const { app } = site;
    const pages: Array<{ where: string; res: request.Response }> = [];
    const add = (where: string, res: request.Response) => pages.push({ where, res });

    add('/', await request(app).get('/').expect(200));
    const session = new FormSession(app);
    add('/request', await session.open());
    add('/request (with errors)', await session.post('/request', without(validFields(), 'firstName', 'privacyAccepted')).expect(400));
    add('/request (child added without JavaScript)', await session.post('/request', { ...validFields(), action: 'add-child' }).expect(200));
    const fields = validFields();
    add('/request (thank you)', await session.post('/request', fields).expect(200));
    const row = (await site.t.db('requests').where({ email: fields.email }).first()) as { public_id: string };
    add('/request/status (unverified)', await request(app).get(`/request/status/${row.public_id}`).expect(200));
    const token = site.tokens.get(row.public_id)!;
    const confirming = new FormSession(app);
    add('/request/verify (confirm button)', await confirming.open(`/request/verify/${token}`));
    add('/request/verify (confirmed)', await confirming.post(`/request/verify/${token}`, {}).expect(200));
    add('/request/verify (already confirmed)', await request(app).get(`/request/verify/${token}`).expect(200));
    add('/request/status (pending)', await request(app).get(`/request/status/${row.public_id}`).expect(200));
    add('/request/verify (bad link)', await request(app).get(`/request/verify/${'x'.repeat(43)}`).expect(404));
    add('/request/status (unknown)', await request(app).get(`/request/status/${'y'.repeat(22)}`).set('accept', 'text/html').expect(404));
    add('/request (no CSRF token)', await new FormSession(app).post('/request', validFields(), { csrf: false }).expect(403));
    add('/request (too large)', await session.post('/request', { ...validFields(), comment: 'x'.repeat(30_000) }).expect(413));
    add('404 page', await request(app).get('/no/such/page').set('accept', 'text/html').expect(404));
    return pages;
  }

  it('no page allows inline script, and no page contains any', async () => {
    const pages = await everyParentPage();
    for (const { where, res } of pages) {
      assert.match(String(res.headers['content-type']), /^text\/html/, `${where} is HTML`);
      assertScriptPolicy(res.headers['content-security-policy'], where);
      assertNoInlineCode(res.text, where);
    }
    const script = await request(site.app).get('/assets/request-form.js').expect(200);
    assert.match(String(script.headers['content-type']), /javascript/);
  });

  it('the check above notices an inline script, an event handler and inline style', () => {
    assert.throws(() => assertNoInlineCode('<html><head><title>x</title></head><body><p>a</p><p>b</p><script>alert(1)</script></body></html>', 'sample'));
    assert.throws(() => assertNoInlineCode('<html><head><title>x</title></head><body><p>a</p><p>b</p><button onclick="go()">x</button></body></html>', 'sample'));
    assert.throws(() => assertNoInlineCode('<html><head><title>x</title></head><body><p>a</p><p style="color:red">b</p><i>c</i></body></html>', 'sample'));
    assert.throws(() => assertScriptPolicy("default-src 'self'; script-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'self'", 'sample'));
  });

  it('only /request pages may be framed, and only by the school site; every other page by nobody', async () => {
    const { app } = site;
    for (const path of ['/request', '/request/status/' + 'y'.repeat(22), '/request/verify/' + 'x'.repeat(43)]) {
      const res = await request(app).get(path).set('accept', 'text/html');
      assert.deepEqual(frameAncestors(res.headers['content-security-policy']), ["'self'", SCHOOL_SITE], path);
      assert.equal(res.headers['x-frame-options'], undefined, `${path}: X-Frame-Options would forbid the school site`);
    }
    for (const path of ['/', '/healthz', '/no/such/page', '/assets/app.css', '/requests', '/request-form']) {
      const res = await request(app).get(path).set('accept', 'text/html');
      assert.deepEqual(frameAncestors(res.headers['content-security-policy']), ["'none'"], path);
      assert.equal(res.headers['x-frame-options'], 'DENY', path);
    }
    const api = await request(app).post('/api/v1/requests').send({});
    assert.deepEqual(frameAncestors(api.headers['content-security-policy']), ["'none'"], 'the API');
  });

  it('without FORM_EMBED_ORIGINS no other site may frame the form', async () => {
    const plain = await openSite();
    try {
      const res = await request(plain.app).get('/request').expect(200);
      const ancestors = frameAncestors(res.headers['content-security-policy']);
      assert.ok(ancestors.every((a) => a === "'self'" || a === "'none'"), `got ${ancestors.join(' ')}`);
    } finally {
      await plain.close();
    }
  });

  it('sends nosniff and a same-origin referrer policy on pages, assets and the API', async () => {
    const { app } = site;
    for (const [where, res] of [
      ['/', await request(app).get('/')],
      ['/request', await request(app).get('/request')],
      ['script', await request(app).get('/assets/request-form.js')],
      ['stylesheet', await request(app).get('/assets/app.css')],
      ['API', await request(app).post('/api/v1/requests').send({})],
      ['/healthz', await request(app).get('/healthz')],
    ] as const) {
      assert.equal(res.headers['x-content-type-options'], 'nosniff', where);
      assert.ok(res.headers['referrer-policy'], where);
      assert.equal(res.headers['x-powered-by'], undefined, where);
    }
  });
});

describe('https: HSTS and cookie flags follow BASE_URL', () => {
  it('over https: HSTS for a year with subdomains, and a __Host- CSRF cookie that is HttpOnly, Secure and SameSite=Strict', async () => {
    const site = await openSite({ BASE_URL: 'https://parents.example-school.org' });
    try {
      for (const path of ['/', '/request', '/healthz', '/no/such/page']) {
        const res = await request(site.app).get(path);
        const hsts = String(res.headers['strict-transport-security'] ?? '');
        assert.match(hsts, /max-age=(\d+)/, `${path}: HSTS`);
        assert.ok(Number(/max-age=(\d+)/.exec(hsts)?.[1]) >= 31_536_000, `${path}: HSTS for at least a year`);
        assert.match(hsts, /includeSubDomains/);
        assert.ok(cspDirectives(res.headers['content-security-policy']).has('upgrade-insecure-requests'), path);
      }
      const form = await request(site.app).get('/request').expect(200);
      const attributes = cookieAttributes(setCookie(form, '__Host-mpp.csrf'));
      assert.ok(attributes.has('httponly'), 'HttpOnly');
      assert.ok(attributes.has('secure'), 'Secure');
      assert.equal(attributes.get('samesite')?.toLowerCase(), 'strict');
      assert.equal(attributes.get('path'), '/');
      assert.equal(attributes.has('domain'), false, 'a __Host- cookie has no Domain');
    } finally {
      await site.close();
    }
  });

  it('over https with an embedding site: SameSite=None, still Secure and HttpOnly (browsers send it into the frame)', async () => {
    const site = await openSite({ BASE_URL: 'https://parents.example-school.org', FORM_EMBED_ORIGINS: SCHOOL_SITE });
    try {
      const attributes = cookieAttributes(setCookie(await request(site.app).get('/request').expect(200), '__Host-mpp.csrf'));
      assert.equal(attributes.get('samesite')?.toLowerCase(), 'none');
      assert.ok(attributes.has('secure') && attributes.has('httponly'));
    } finally {
      await site.close();
    }
  });

  it('over plain http: no HSTS, and the CSRF cookie is HttpOnly and SameSite=Strict but not Secure (it could not be set)', async () => {
    const site = await openSite({ BASE_URL: 'http://parents.example-school.test:3000', FORM_EMBED_ORIGINS: SCHOOL_SITE });
    try {
      for (const path of ['/', '/request', '/healthz']) {
        const res = await request(site.app).get(path);
        assert.equal(res.headers['strict-transport-security'], undefined, `${path}: no HSTS over http`);
        assert.equal(cspDirectives(res.headers['content-security-policy']).has('upgrade-insecure-requests'), false, path);
      }
      const attributes = cookieAttributes(setCookie(await request(site.app).get('/request').expect(200), 'mpp.csrf'));
      assert.ok(attributes.has('httponly'));
      assert.equal(attributes.has('secure'), false);
      assert.equal(attributes.get('samesite')?.toLowerCase(), 'strict');
    } finally {
      await site.close();
    }
  });
});

/**
 * How the app's Express sees a request from the given peer with the given headers. Staff
 * session cookies are Secure over https, and express-session sets them only when Express
 * believes the request came over https, so this decides whether staff can sign in behind a
 * TLS-terminating proxy.
 */
function seenByApp(app: Express, headers: Record<string, string>, peer = '127.0.0.1') {
  const req = Object.create(app.request) as Express['request'];
  const socket = { remoteAddress: peer, encrypted: false };
  Object.assign(req, { headers, socket, connection: socket });
  return { protocol: req.protocol, secure: req.secure, ip: req.ip };
}

describe('TRUST_PROXY', () => {
  const LIMIT = '2';

  async function submitFrom(app: Express, forwardedFor: string | undefined, status: number) {
    const session = new FormSession(app, forwardedFor === undefined ? {} : { forwardedFor });
    await session.open();
    return session.post('/request', validFields()).expect(status);
  }

  describe('set (the service is behind the school reverse proxy on this host)', () => {
    let site: Site;
    before(async () => {
      site = await openSite({ TRUST_PROXY: 'loopback', FORM_RATE_LIMIT_PER_IP: LIMIT });
    });
    after(() => site.close());

    it('counts the limit per forwarded client address: two parents behind the proxy have separate limits', async () => {
      await submitFrom(site.app, '203.0.113.10', 200);
      await submitFrom(site.app, '203.0.113.10', 200);
      const refused = await submitFrom(site.app, '203.0.113.10', 429);
      assert.match(refused.text, /This form has been sent many times from your network/);
      assert.ok(Number(refused.headers['retry-after']) > 0);
      await submitFrom(site.app, '203.0.113.11', 200);
      await submitFrom(site.app, '203.0.113.11', 200);
      await submitFrom(site.app, '203.0.113.11', 429);
      const ips = (await site.t.db('requests').distinct('submitter_ip')).map((r: { submitter_ip: string }) => r.submitter_ip).sort();
      assert.deepEqual(ips, ['203.0.113.10', '203.0.113.11'], 'the stored address is the parent, not the proxy');
    });

    it('a client cannot dodge the limit by sending its own X-Forwarded-For through the proxy', async () => {
      // The proxy appends the address it saw, so the entry nearest the proxy is the real one.
      await submitFrom(site.app, '10.0.0.1, 203.0.113.20', 200);
      await submitFrom(site.app, '10.0.0.2, 203.0.113.20', 200);
      await submitFrom(site.app, '10.0.0.3, 203.0.113.20', 429);
    });

    it('believes X-Forwarded-Proto from the proxy: the request counts as https', () => {
      assert.deepEqual(seenByApp(site.app, { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.30' }), {
        protocol: 'https',
        secure: true,
        ip: '203.0.113.30',
      });
      assert.equal(seenByApp(site.app, {}).secure, false, 'no header: the hop from the proxy was plain http');
      // A peer that is not the proxy is not believed.
      assert.deepEqual(seenByApp(site.app, { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.30' }, '198.51.100.7'), {
        protocol: 'http',
        secure: false,
        ip: '198.51.100.7',
      });
    });
  });

  describe('not set (parents reach the service directly)', () => {
    let site: Site;
    before(async () => {
      site = await openSite({ FORM_RATE_LIMIT_PER_IP: LIMIT });
    });
    after(() => site.close());

    it('ignores X-Forwarded-For: a client forging a new address each time still meets the limit', async () => {
      await submitFrom(site.app, '198.51.100.1', 200);
      await submitFrom(site.app, '198.51.100.2', 200);
      const refused = await submitFrom(site.app, '198.51.100.3', 429);
      assert.match(refused.text, /This form has been sent many times from your network/);
      await submitFrom(site.app, undefined, 429);
      const ips = (await site.t.db('requests').distinct('submitter_ip')).map((r: { submitter_ip: string }) => r.submitter_ip);
      assert.equal(ips.length, 1);
      assert.doesNotMatch(String(ips[0]), /198\.51\.100/, 'a forged address is never stored');
    });

    it('ignores X-Forwarded-Proto: a client cannot claim the request came over https', () => {
      assert.deepEqual(seenByApp(site.app, { 'x-forwarded-proto': 'https', 'x-forwarded-for': '198.51.100.9' }), {
        protocol: 'http',
        secure: false,
        ip: '127.0.0.1',
      });
    });
  });
});
