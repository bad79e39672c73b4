// Dashboard helpers for tests: staff accounts and a signed-in browser-like session (cookies,
// the CSRF token of the last page) that goes through the real sign-in form.
import assert from 'node:assert/strict';
import type { Express } from 'express';
import request from 'supertest';
import type { Services } from '../../src/services';
import type { StaffRole } from '../../src/staff-auth/staff-users.repository';
import { csrfTokenOf, type FormFields } from './http';

export const STAFF_PASSWORD = 'correct horse battery staple';

let sequence = 0;

/** Adds a staff account through the accounts service; returns its username. */
export async function createStaffUser(services: Services, options: { username?: string; role?: StaffRole; displayName?: string } = {}) {
  sequence += 1;
  const username = options.username ?? `staff${sequence}.${process.pid}`;
  await services.staffAccounts.addStaff({ username, displayName: options.displayName ?? `Staff Member ${sequence}`, password: STAFF_PASSWORD, role: options.role ?? 'staff' });
  return username;
}

export class StaffSession {
  readonly agent: ReturnType<typeof request.agent>;
  csrfToken = '';

  constructor(readonly app: Express) {
    this.agent = request.agent(app);
  }

  /** Signs in through the sign-in form and checks it worked. */
  static async signIn(app: Express, username: string, password = STAFF_PASSWORD): Promise<StaffSession> {
    const session = new StaffSession(app);
    const res = await session.signIn(username, password);
    assert.equal(res.status, 303, `sign-in as ${username} should redirect, got ${res.status}: ${res.text.slice(0, 300)}`);
    await session.open('/admin');
    return session;
  }

  async signIn(username: string, password: string) {
    await this.open('/admin/sign-in');
    return this.post('/admin/sign-in', { username, password });
  }

  /** GETs a page and remembers its CSRF token when it has one. */
  async open(path: string, expectedStatus = 200) {
    const res = await this.agent.get(path);
    assert.equal(res.status, expectedStatus, `GET ${path}: expected ${expectedStatus}, got ${res.status}: ${res.text.slice(0, 300)}`);
    if (/name="_csrf" value="/.test(res.text)) this.csrfToken = csrfTokenOf(res.text);
    return res;
  }

  get(path: string) {
    return this.agent.get(path);
  }

  /** POSTs urlencoded fields (repeated names as arrays) with the remembered CSRF token. */
  post(path: string, fields: FormFields | [string, string][] = {}, options: { csrf?: boolean } = {}) {
    const body = new URLSearchParams(Array.isArray(fields) ? fields : Object.entries(fields));
    if (options.csrf !== false) body.set('_csrf', this.csrfToken);
    return this.agent.post(path).type('form').send(body.toString());
  }
}
