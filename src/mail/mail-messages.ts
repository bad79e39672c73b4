// Builds every email the service sends, from the ejs templates in views/mail: an HTML and a
// plain-text body each, the school's name in subject and body, links back to the service.
import fs from 'node:fs';
import path from 'node:path';
import * as ejs from 'ejs';
import type { Config } from '../config';
import type { ChildRecord, RequestRecord } from '../requests/request-repository';
import type { MailMessage } from './mail-transport';

export type { MailMessage } from './mail-transport';

/** Stored with each queued mail, for metrics and for "what was sent" on a request. */
export type MailKind =
  | 'verification'
  | 'request_received'
  | 'request_extended'
  | 'held_details'
  | 'denied'
  | 'provisioned'
  | 'revoked'
  | 'staff_new_request'
  | 'staff_cycle_summary'
  | 'staff_reconcile_summary';

export interface CycleSummary {
  cycleId: number;
  provisioned: number;
  /** Approved parents whose Moodle account the user sync has not created yet. */
  waiting: number;
  /** Requests with a child that could not be linked; retried next cycle. */
  failed: number;
  /** Why the whole cycle stopped (Moodle refused the token, could not be reached, ...), and what to do. */
  problem?: { message: string; help: string | null } | null;
}

/** What a reconcile run (the Moodle check) tells staff: what it changed and what needs a decision. */
export interface ReconcileMailSummary {
  runId: number;
  /** Links it ended (pupil deleted, or suspended past the grace period), and parents who lost access with their last link. */
  linksEnded: number;
  parentsRevoked: number;
  /** Findings it only reports, each line in plain words with its request. */
  reported: Array<{ requestId: number | null; message: string }>;
  /** Why the whole run stopped, and what to do. */
  problem: { message: string; help: string | null } | null;
}

/** How many reported findings a summary mail lists one by one; the page has them all. */
const MAX_FINDINGS_IN_MAIL = 20;

export interface MailMessagesOptions {
  /** Where the templates are; found beside the source or the build when not given. */
  viewsDir?: string;
  now?: () => number;
}

type Locals = Record<string, unknown>;

/** The school office's contact details are optional: without them the mails just say "contact the school office". */
type MessagesConfig = Pick<Config, 'schoolName' | 'baseUrl'> & Partial<Pick<Config, 'schoolContact'>>;
type Template = (locals: Locals) => string;

// Plain-text bodies are not HTML: a name like "O'Brien & Sons" must come out as typed.
const plainText = (value: unknown): string => (value === undefined || value === null ? '' : String(value));

export class MailMessages {
  private readonly schoolName: string;
  private readonly schoolContact: Config['schoolContact'];
  private readonly baseUrl: string;
  private readonly viewsDir: string;
  private readonly now: () => number;
  private readonly templates = new Map<string, Template>();

  constructor(config: MessagesConfig, options: MailMessagesOptions = {}) {
    this.schoolName = config.schoolName;
    this.schoolContact = config.schoolContact ?? { email: undefined, phone: undefined };
    this.baseUrl = config.baseUrl.replace(/\/+$/, '');
    this.viewsDir = options.viewsDir ?? findViewsDir();
    this.now = options.now ?? Date.now;
  }

  // ------------------------------------------------------------------ parents

  /** Asks the parent to confirm the address. Never names the children: the address is not proven yet. */
  verificationMessage(request: RequestRecord, rawToken: string): MailMessage {
    const verifyUrl = `${this.baseUrl}/request/verify/${encodeURIComponent(rawToken)}`;
    const validFor = request.verificationExpiresAt === null ? null : durationInWords(request.verificationExpiresAt - this.now());
    return {
      ...this.render('verification', request.email, 'Please confirm your email address', {
        ...this.parentLocals(request),
        verifyUrl,
        validFor,
      }),
      verificationLink: verifyUrl,
    };
  }

  /** For when email confirmation is switched off: the request went straight to the office. */
  requestReceivedMessage(request: RequestRecord, children: ChildRecord[]): MailMessage {
    return this.render('request-received', request.email, 'We have received your request', {
      ...this.parentLocals(request),
      childCount: countWords(children.length, 'child', 'children'),
    });
  }

  /** The parent sent the form again while a request was open; it was added to that request. */
  requestExtendedMessage(request: RequestRecord, addedChildren: number): MailMessage {
    return this.render('request-extended', request.email, 'We have added to your request', {
      ...this.parentLocals(request),
      addedText: addedChildren > 0 ? `${countWords(addedChildren, 'more child', 'more children')} added` : null,
      stillUnverified: request.status === 'unverified',
    });
  }

  /**
   * The form was sent again for an address with an open request: the new details are held, and
   * this link adds them. Says how many children were sent, never their names: whoever sent the
   * form has not shown that the address is theirs.
   */
  heldDetailsMessage(request: RequestRecord, rawToken: string, expiresAt: number, sent: { children: number; commentAdded: boolean }): MailMessage {
    const confirmUrl = `${this.baseUrl}/request/details/${encodeURIComponent(rawToken)}`;
    const parts = [sent.children > 0 ? countWords(sent.children, 'child', 'children') : null, sent.commentAdded ? 'a comment' : null].filter(Boolean);
    return {
      ...this.render('held-details', request.email, 'Please confirm the details you sent', {
        ...this.parentLocals(request),
        confirmUrl,
        sentText: parts.length > 0 ? parts.join(' and ') : null,
        validFor: durationInWords(expiresAt - this.now()),
      }),
      verificationLink: confirmUrl,
    };
  }

  deniedMessage(request: RequestRecord): MailMessage {
    return this.render('denied', request.email, 'Your Moodle parent account request', {
      ...this.parentLocals(request),
      reason: request.decisionReason,
    });
  }

  /**
   * The account is ready. For a parent linked to an account they already had, Moodle sends no
   * password, so the mail says to log in as usual.
   */
  /**
   * The account is ready. `alreadyHadAccount`: the parent had this account before (a child's pupil
   * was picked after the account was set up), so no password is on its way.
   */
  provisionedMessage(request: RequestRecord, children: ChildRecord[], moodleLoginUrl?: string, alreadyHadAccount = false): MailMessage {
    // Added to the fresh parentLocals object rather than spread into a new one (see render).
    return this.render(
      'provisioned',
      request.email,
      'Your Moodle parent account is ready',
      Object.assign(this.parentLocals(request), {
        childNames: children.filter((c) => c.linkState === 'linked').map((c) => `${c.firstName} ${c.lastName}`),
        existingAccount: request.linkExistingAccount || alreadyHadAccount,
        username: request.moodleUsername,
        loginUrl: moodleLoginUrl ?? null,
      }),
    );
  }

  /** Access removed. The staff's reason is not included: it may be internal (safeguarding). */
  revokedMessage(request: RequestRecord): MailMessage {
    return this.render('revoked', request.email, 'Your Moodle parent access has been removed', this.parentLocals(request));
  }

  // ------------------------------------------------------------------ staff

  /** Tells the office a request is ready for review: the parent's name, how many children, a link; nothing more. */
  staffNewRequestMessage(request: RequestRecord, children: ChildRecord[], to: string[]): MailMessage {
    return this.render('staff-new-request', to, `New parent account request to review (number ${request.id})`, {
      requestId: request.id,
      parentName: fullName(request),
      childCount: children.filter((c) => c.linkState !== 'revoked').length,
      verified: request.verifiedAt !== null,
      reviewUrl: `${this.baseUrl}/admin/requests/${request.id}`,
    });
  }

  staffCycleSummaryMessage(summary: CycleSummary, to: string[]): MailMessage {
    const problem = summary.problem ?? null;
    return this.render(
      'staff-cycle-summary',
      to,
      problem
        ? `Provisioning cycle ${summary.cycleId} stopped: ${problem.message}`
        : `Provisioning cycle ${summary.cycleId}: ${summary.failed} failed, ${summary.waiting} waiting`,
      {
        cycleId: summary.cycleId,
        provisioned: summary.provisioned,
        waiting: summary.waiting,
        failed: summary.failed,
        problem,
        reportUrl: `${this.baseUrl}/admin/cycles/${summary.cycleId}`,
      },
    );
  }

  staffReconcileSummaryMessage(summary: ReconcileMailSummary, to: string[]): MailMessage {
    const subject = summary.problem
      ? `Moodle check ${summary.runId} stopped: ${summary.problem.message}`
      : `Moodle check ${summary.runId}: ${summary.linksEnded} link${summary.linksEnded === 1 ? '' : 's'} ended, ${summary.reported.length} to look at`;
    return this.render('staff-reconcile-summary', to, subject, {
      runId: summary.runId,
      linksEnded: summary.linksEnded,
      parentsRevoked: summary.parentsRevoked,
      reported: summary.reported.slice(0, MAX_FINDINGS_IN_MAIL),
      moreReported: Math.max(0, summary.reported.length - MAX_FINDINGS_IN_MAIL),
      problem: summary.problem,
      pageUrl: `${this.baseUrl}/admin/moodle-check`,
      requestUrl: (id: number) => `${this.baseUrl}/admin/requests/${id}`,
    });
  }

  // ------------------------------------------------------------------ internals

  /** Every mail to a parent ends with the request number to quote and how to reach the school office. */
  private parentLocals(request: RequestRecord): Locals {
    return {
      requestNumber: request.id,
      contactEmail: this.schoolContact.email ?? null,
      contactPhone: this.schoolContact.phone ?? null,
      greetingName: greetingName(request),
      statusUrl: `${this.baseUrl}/request/status/${encodeURIComponent(request.publicId)}`,
    };
  }

  private render(name: string, to: string | string[], subject: string, locals: Locals): MailMessage {
    // Header text must stay on one line whatever a school name or template holds.
    const fullSubject = `${this.schoolName}: ${subject}`.replace(/[\r\n]+/g, ' ').trim();
    const common = {
      schoolName: this.schoolName,
      subject: fullSubject,
      footer: `Sent by the Moodle parent account service of ${this.schoolName}. If you have a question, please contact the school office.`,
    };
    // Object.assign and plain literals, not object spreads: on this Node (V8 11.3) a spread merged
    // into a literal with other properties makes new hidden classes on every call, in the old
    // space, and a cycle renders thousands of these mails.
    const all = Object.assign({}, common, locals);
    const html = this.template('layout.html')({ schoolName: common.schoolName, subject: common.subject, footer: common.footer, body: this.template(`${name}.html`)(all) });
    const text = this.template('layout.text')({ schoolName: common.schoolName, subject: common.subject, footer: common.footer, body: this.template(`${name}.text`)(all) });
    return { to, subject: fullSubject, text: tidyText(text), html };
  }

  private template(name: string): Template {
    let compiled = this.templates.get(name);
    if (!compiled) {
      const filename = path.join(this.viewsDir, `${name}.ejs`);
      const source = fs.readFileSync(filename, 'utf8');
      const isText = name.endsWith('.text');
      // cache: the templates' own includes (the button) are compiled once too, not per message.
      const fn = ejs.compile(source, { filename, cache: true, ...(isText ? { escape: plainText } : {}) });
      compiled = (locals: Locals) => fn(locals);
      this.templates.set(name, compiled);
    }
    return compiled;
  }
}

export function createMailMessages(config: MessagesConfig, options: MailMessagesOptions = {}): MailMessages {
  return new MailMessages(config, options);
}

/** "Ms Khan"; without a title, the full name, so nobody is greeted as a bare surname. */
function greetingName(request: RequestRecord): string {
  const title = request.parentTitle.trim();
  return title ? `${title} ${request.parentLastName}`.trim() : fullName(request);
}

function fullName(request: RequestRecord): string {
  return [request.parentTitle, request.parentFirstName, request.parentLastName].map((s) => s.trim()).filter(Boolean).join(' ');
}

function countWords(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** "48 hours", "7 days", "30 minutes": how long a link stays valid, rounded for people. */
export function durationInWords(ms: number): string | null {
  if (!Number.isFinite(ms) || ms <= 0) return null;
  const minutes = Math.round(ms / 60_000);
  if (minutes < 60) return countWords(Math.max(1, minutes), 'minute', 'minutes');
  const hours = Math.round(ms / 3_600_000);
  if (hours <= 48) return countWords(hours, 'hour', 'hours');
  return countWords(Math.round(ms / 86_400_000), 'day', 'days');
}

/** At most one blank line in a row, no trailing spaces: templates leave a little slack. */
function tidyText(text: string): string {
  return `${text
    .split('\n')
    .map((line) => line.trimEnd())
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim()}\n`;
}

function findViewsDir(): string {
  // src/mail when run through tsx, dist/src/mail after a build: views/ is at the project root.
  const candidates = [path.resolve(__dirname, '../../views/mail'), path.resolve(__dirname, '../../../views/mail')];
  const found = candidates.find((dir) => fs.existsSync(path.join(dir, 'layout.html.ejs')));
  if (!found) throw new Error(`The email templates were not found (looked in ${candidates.join(' and ')}).`);
  return found;
}
