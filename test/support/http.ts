// HTTP helpers for the public form: a browser-like session that keeps cookies and the form's
// CSRF token, and a valid set of form fields to start from.
import assert from 'node:assert/strict';
import type { Express } from 'express';
import request from 'supertest';

export type FormFields = Record<string, string>;

/** The CSRF token from the last page's hidden field. */
export function csrfTokenOf(html: string): string {
  const match = /name="_csrf" value="([^"]+)"/.exec(html);
  assert.ok(match, 'the page has a CSRF token field');
  return match[1] as string;
}

export class FormSession {
  readonly agent: ReturnType<typeof request.agent>;
  csrfToken = '';
  private forwardedFor: string | undefined;

  constructor(app: Express, options: { forwardedFor?: string } = {}) {
    this.agent = request.agent(app);
    this.forwardedFor = options.forwardedFor;
  }

  /** GETs a page (the form by default) and remembers its CSRF token. */
  async open(path = '/request') {
    const res = await this.withHeaders(this.agent.get(path)).expect(200);
    this.csrfToken = csrfTokenOf(res.text);
    return res;
  }

  /** POSTs urlencoded fields with the remembered token (unless the fields give their own). */
  post(path: string, fields: FormFields, options: { csrf?: boolean } = {}) {
    const body = new URLSearchParams({ ...(options.csrf === false ? {} : { _csrf: this.csrfToken }), ...fields });
    return this.withHeaders(this.agent.post(path).type('form').send(body.toString()));
  }

  get(path: string) {
    return this.withHeaders(this.agent.get(path));
  }

  private withHeaders<T extends { set(name: string, value: string): T }>(req: T): T {
    return this.forwardedFor ? req.set('X-Forwarded-For', this.forwardedFor) : req;
  }
}

/**
 * Uses a confirmation link as a parent does: opens it (which confirms nothing) and presses
 * "Confirm my email address", expecting the given status. Answers the response to the button.
 */
export async function confirmEmail(app: Express, token: string, expectedStatus = 200) {
  const session = new FormSession(app);
  await session.open(`/request/verify/${token}`);
  return session.post(`/request/verify/${token}`, {}).expect(expectedStatus);
}

let sequence = 0;

/** A complete, valid form with two children. Each call uses a new email address. */
export function validFields(overrides: FormFields = {}): FormFields {
  sequence += 1;
  const email = `parent${sequence}.${process.pid}@example.org`;
  return {
    title: 'Mrs',
    firstName: 'Zoë',
    lastName: 'O’Brien-Smith',
    email,
    emailConfirm: email,
    requestType: 'new_account',
    'children[0][firstName]': 'Ann',
    'children[0][lastName]': 'O’Brien-Smith',
    'children[0][tutorGroup]': '7B',
    'children[0][pupilIdentifier]': 'ADM1001',
    'children[1][firstName]': 'José',
    'children[1][lastName]': 'O’Brien-Smith',
    'children[1][tutorGroup]': '9C',
    'children[1][pupilIdentifier]': '',
    comment: 'Thank you',
    privacyAccepted: 'yes',
    website: '',
    action: 'submit',
    ...overrides,
  };
}

/** Removes fields (e.g. an unticked checkbox is simply not sent). */
export function without(fields: FormFields, ...names: string[]): FormFields {
  const copy = { ...fields };
  for (const name of names) delete copy[name];
  return copy;
}

/** Decodes the few HTML entities ejs writes, to compare page text with what was typed. */
export function htmlText(html: string): string {
  return html
    .replace(/&#39;/g, "'")
    .replace(/&#34;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}
