// Delivers one email: through the school's SMTP server when SMTP_URL is set, otherwise (in
// development) into files under data/outbox, so a fresh checkout works end to end without one.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import nodemailer, { type Transporter } from 'nodemailer';
import type { Config } from '../config';
import { ConfigError } from '../errors';

export interface MailMessage {
  to: string | string[];
  subject: string;
  text: string;
  html: string;
  /**
   * Set on verification mail only. The development outbox logs it, so someone trying the service
   * without a mail server can still confirm a request. The SMTP transport ignores it.
   */
  verificationLink?: string;
}

export interface SendResult {
  messageId: string;
  /** Where the development outbox wrote the message. */
  file?: string;
}

/** The answer of a live check, in words staff can act on. Never contains the SMTP password. */
export type MailCheck = { ok: true; message: string } | { ok: false; message: string; help: string };

export interface MailTransport {
  readonly mode: 'smtp' | 'outbox';
  /** Where mail goes, safe to show: "smtp://mail.example.org:587" or the outbox folder. */
  readonly target: string;
  /** Throws MailSendError (a plain message, no password) when the message was not accepted. */
  send(message: MailMessage): Promise<SendResult>;
  verify(): Promise<MailCheck>;
  close(): void;
}

/** Structured-first logging, as pino does it; a pino logger fits. */
export interface MailLogger {
  debug(details: Record<string, unknown>, message: string): void;
  info(details: Record<string, unknown>, message: string): void;
  warn(details: Record<string, unknown>, message: string): void;
  error(details: Record<string, unknown>, message: string): void;
}

export class MailSendError extends Error {
  constructor(
    message: string,
    /** Retrying the same message would be refused again (the server rejected the recipient). */
    readonly permanent: boolean,
    /** The server could not be reached or would not let us in: other messages will fail the same way. */
    readonly serverProblem: boolean,
  ) {
    super(message);
    this.name = 'MailSendError';
  }
}

export interface MailTransportOptions {
  /** How long to wait for the connection, the greeting, and any reply (defaults 10 s, 10 s, 30 s). */
  connectionTimeoutMs?: number;
  greetingTimeoutMs?: number;
  socketTimeoutMs?: number;
}

export function createMailTransport(
  mail: Readonly<Config['mail']>,
  logger: MailLogger,
  options: MailTransportOptions = {},
): MailTransport {
  if (mail.smtpUrl === undefined) return new OutboxFolderTransport(mail.outboxDir, mail.from, logger);
  return new SmtpTransport(mail.smtpUrl, mail.from, logger, options);
}

interface SmtpTarget {
  host: string;
  port: number;
  secure: boolean;
  /** The decoded password, kept only to scrub it out of any error text. */
  password: string;
  display: string;
}

function parseSmtpUrl(raw: string): SmtpTarget {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(['SMTP_URL is not a valid address; expected smtp://user:password@mail.example.org:587 or smtps://…:465']);
  }
  if (url.protocol !== 'smtp:' && url.protocol !== 'smtps:') {
    throw new ConfigError(['SMTP_URL must start with smtp:// (port 587 or 25, STARTTLS) or smtps:// (port 465, TLS from the start)']);
  }
  if (url.hostname === '') throw new ConfigError(['SMTP_URL must name the mail server, as in smtp://mail.example.org:587']);
  const secure = url.protocol === 'smtps:';
  const port = url.port === '' ? (secure ? 465 : 587) : Number(url.port);
  let password = '';
  try {
    password = decodeURIComponent(url.password);
  } catch {
    password = url.password;
  }
  return { host: url.hostname, port, secure, password, display: `${url.protocol}//${url.hostname}:${port}` };
}

class SmtpTransport implements MailTransport {
  readonly mode = 'smtp' as const;
  readonly target: string;
  private readonly server: SmtpTarget;
  private readonly transporter: Transporter;

  constructor(
    smtpUrl: string,
    private readonly from: string,
    private readonly logger: MailLogger,
    options: MailTransportOptions,
  ) {
    this.server = parseSmtpUrl(smtpUrl);
    this.target = this.server.display;
    // nodemailer parses the URL itself, which keeps its query options (requireTLS=true,
    // tls.rejectUnauthorized=false, …) available to schools whose mail server needs them.
    this.transporter = nodemailer.createTransport({
      url: smtpUrl,
      connectionTimeout: options.connectionTimeoutMs ?? 10_000,
      greetingTimeout: options.greetingTimeoutMs ?? 10_000,
      socketTimeout: options.socketTimeoutMs ?? 30_000,
      // Our messages are built from templates; no message may make the service read a file or a URL.
      disableFileAccess: true,
      disableUrlAccess: true,
    });
    // An 'error' event with no listener would end the process.
    this.transporter.on('error', (error: unknown) => {
      this.logger.warn({ smtp: this.target, error: this.describe(error).message }, 'SMTP transport error');
    });
  }

  async send(message: MailMessage): Promise<SendResult> {
    try {
      const info = (await this.transporter.sendMail({
        from: this.from,
        to: message.to,
        subject: message.subject,
        text: message.text,
        html: message.html,
      })) as { messageId?: string };
      return { messageId: info.messageId ?? '' };
    } catch (error) {
      throw this.describe(error);
    }
  }

  async verify(): Promise<MailCheck> {
    try {
      await this.transporter.verify();
      return { ok: true, message: `The mail server at ${this.target} accepted a connection${this.server.password ? ' and the login' : ''}.` };
    } catch (error) {
      const problem = this.describe(error);
      return { ok: false, message: problem.message, help: helpFor(error) };
    }
  }

  close(): void {
    this.transporter.close();
  }

  /** Turns a nodemailer error into a plain sentence; the password is scrubbed from anything quoted. */
  private describe(error: unknown): MailSendError {
    const e = (error ?? {}) as { code?: string; responseCode?: number; response?: string; message?: string; command?: string };
    const where = this.target;
    const reply = e.response ? ` The server said: ${this.scrub(e.response).slice(0, 200)}` : '';
    const low = `${e.code ?? ''} ${e.message ?? ''}`;
    if (e.code === 'EAUTH' || e.code === 'ENOAUTH') {
      return new MailSendError(`The mail server at ${where} did not accept the username and password in SMTP_URL.${reply}`, false, true);
    }
    if (e.code === 'EDNS' || /ENOTFOUND|EAI_AGAIN/.test(low)) {
      return new MailSendError(`The mail server name ${this.server.host} could not be found.`, false, true);
    }
    if (e.code === 'ETIMEDOUT' || /ETIMEDOUT|timeout/i.test(low)) {
      return new MailSendError(`The mail server at ${where} did not answer in time.`, false, true);
    }
    if (e.code === 'ETLS' || /certificate|SSL|TLS/i.test(low)) {
      return new MailSendError(`A secure (TLS) connection to the mail server at ${where} could not be made: ${this.scrub(e.message ?? '')}`, false, true);
    }
    if (/ECONNREFUSED/.test(low)) {
      return new MailSendError(`The mail server at ${where} refused the connection (nothing is listening on that port).`, false, true);
    }
    if (e.code === 'ECONNECTION' || e.code === 'ESOCKET' || /ECONNRESET|EHOSTUNREACH|ENETUNREACH/.test(low)) {
      return new MailSendError(`The connection to the mail server at ${where} failed: ${this.scrub(e.message ?? 'connection closed')}`, false, true);
    }
    if (typeof e.responseCode === 'number') {
      // A 5xx answer to the recipient is final; 4xx (greylisting, a full queue) is worth retrying.
      const permanent = e.responseCode >= 500 && e.responseCode !== 503 && e.code === 'EENVELOPE';
      const what = permanent ? 'refused the recipient' : 'did not accept the message';
      return new MailSendError(`The mail server ${what} (${e.responseCode}).${reply}`, permanent, false);
    }
    return new MailSendError(`The message could not be sent: ${this.scrub(e.message ?? String(error))}`, false, false);
  }

  private scrub(text: string): string {
    const password = this.server.password;
    let clean = text.replace(/\r?\n/g, ' ').trim();
    if (password) {
      clean = clean.split(password).join('***');
      clean = clean.split(encodeURIComponent(password)).join('***');
    }
    return clean;
  }
}

function helpFor(error: unknown): string {
  const code = (error as { code?: string } | undefined)?.code;
  switch (code) {
    case 'EAUTH':
    case 'ENOAUTH':
      return 'Check the username and password in SMTP_URL (special characters in the password must be percent-encoded, e.g. @ as %40).';
    case 'ETLS':
      return 'Use smtps:// for port 465 and smtp:// for ports 587 and 25; check the mail server certificate.';
    case 'EDNS':
      return 'Check the server name in SMTP_URL.';
    default:
      return 'Check the host and port in SMTP_URL, and that this machine may connect to the mail server (firewall).';
  }
}

/**
 * Development only: each message becomes an .eml file (opens in any mail program). One log line
 * says where it went and, for verification mail, carries the link so the flow can be followed.
 */
class OutboxFolderTransport implements MailTransport {
  readonly mode = 'outbox' as const;
  readonly target: string;
  private readonly composer = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'unix' });

  constructor(
    private readonly dir: string,
    private readonly from: string,
    private readonly logger: MailLogger,
  ) {
    this.target = dir;
  }

  async send(message: MailMessage): Promise<SendResult> {
    const info = await this.composer.sendMail({
      from: this.from,
      to: message.to,
      subject: message.subject,
      text: message.text,
      html: message.html,
      disableFileAccess: true,
      disableUrlAccess: true,
    });
    await fs.mkdir(this.dir, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const file = path.join(this.dir, `${stamp}-${randomBytes(3).toString('hex')}.eml`);
    await fs.writeFile(file, info.message as Buffer);
    const details: Record<string, unknown> = { file };
    if (message.verificationLink) details.verificationLink = message.verificationLink;
    this.logger.info(
      details,
      message.verificationLink
        ? `Mail not sent (SMTP_URL is not set): written to ${file}. Confirmation link: ${message.verificationLink}`
        : `Mail not sent (SMTP_URL is not set): written to ${file}`,
    );
    return { messageId: info.messageId, file };
  }

  async verify(): Promise<MailCheck> {
    try {
      await fs.mkdir(this.dir, { recursive: true });
      await fs.access(this.dir, fs.constants.W_OK);
    } catch (error) {
      return {
        ok: false,
        message: `SMTP_URL is not set, and mail cannot be written to ${this.dir}: ${(error as Error).message}`,
        help: 'Set SMTP_URL to send real mail, or make the data folder writable.',
      };
    }
    return {
      ok: false,
      message: `SMTP_URL is not set: no mail reaches parents or staff; each message is written to ${this.dir} instead.`,
      help: 'Set SMTP_URL (for example smtp://user:password@mail.example.org:587) to send real mail.',
    };
  }

  close(): void {
    this.composer.close();
  }
}
