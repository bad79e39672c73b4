// A real SMTP server in the test process (smtp-server on 127.0.0.1, a free port). It keeps every
// message it accepts, decoded enough to assert on subject, text and HTML, and can be told to
// refuse the next messages or a recipient, or to require a login.
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';

export interface ReceivedMail {
  /** Envelope sender and recipients, as given in MAIL FROM / RCPT TO. */
  from: string;
  to: string[];
  /** Header values, names lower-cased, encoded words decoded. */
  headers: Map<string, string>;
  subject: string;
  text: string;
  html: string;
  raw: string;
}

export interface TestSmtpOptions {
  /** Require this login; without it the server takes mail from anyone. */
  auth?: { user: string; pass: string };
}

interface SmtpError extends Error {
  responseCode?: number;
}

function smtpError(code: number, message: string): SmtpError {
  const error: SmtpError = new Error(message);
  error.responseCode = code;
  return error;
}

export class TestSmtpServer {
  readonly messages: ReceivedMail[] = [];
  private server: SMTPServer | undefined;
  private failures = 0;
  private failureCode = 451;
  private readonly rejected = new Set<string>();
  private readonly waiters = new Set<() => void>();

  constructor(private readonly options: TestSmtpOptions = {}) {}

  async start(): Promise<this> {
    const auth = this.options.auth;
    this.server = new SMTPServer({
      authOptional: auth === undefined,
      allowInsecureAuth: true,
      // Plain SMTP on the loopback: no STARTTLS, so the client never tries a certificate.
      hideSTARTTLS: true,
      disabledCommands: auth === undefined ? ['AUTH', 'STARTTLS'] : ['STARTTLS'],
      logger: false,
      onAuth: (credentials, _session, callback) => {
        if (auth && credentials.username === auth.user && credentials.password === auth.pass) {
          callback(null, { user: credentials.username });
        } else {
          callback(smtpError(535, 'Authentication failed'));
        }
      },
      onRcptTo: (address, _session, callback) => {
        if (this.rejected.has(address.address.toLowerCase())) callback(smtpError(550, 'No such user here'));
        else callback();
      },
      onData: (stream, session, callback) => this.receive(stream, session, callback),
    });
    await new Promise<void>((resolve, reject) => {
      this.server?.once('error', reject);
      this.server?.listen(0, '127.0.0.1', () => resolve());
    });
    return this;
  }

  get port(): number {
    const address = this.server?.server.address() as AddressInfo | null | undefined;
    if (!address) throw new Error('The test SMTP server is not started');
    return address.port;
  }

  /** An SMTP_URL for this server (with the login when one is required). */
  get url(): string {
    const auth = this.options.auth;
    const login = auth ? `${encodeURIComponent(auth.user)}:${encodeURIComponent(auth.pass)}@` : '';
    return `smtp://${login}127.0.0.1:${this.port}`;
  }

  /** The next n messages are answered with this code (451 "try again later" by default). */
  failNext(n: number, code = 451): void {
    this.failures = n;
    this.failureCode = code;
  }

  /** Refuses this recipient for good (550), as a server does for an address that does not exist. */
  rejectRecipient(address: string): void {
    this.rejected.add(address.toLowerCase());
  }

  /** Forgets received mail, pending failures and refused recipients (between tests). */
  reset(): void {
    this.messages.length = 0;
    this.failures = 0;
    this.rejected.clear();
  }

  /** Resolves with the first message (already received or still to come) that matches. */
  async waitFor(predicate: (mail: ReceivedMail) => boolean, timeoutMs = 5000): Promise<ReceivedMail> {
    const found = this.messages.find(predicate);
    if (found) return found;
    return new Promise<ReceivedMail>((resolve, reject) => {
      const check = () => {
        const mail = this.messages.find(predicate);
        if (!mail) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(mail);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`No matching mail within ${timeoutMs} ms (received ${this.messages.length}: ${this.messages.map((m) => m.subject).join(' | ')})`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private receive(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (error?: Error | null) => void): void {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      if (this.failures > 0) {
        this.failures -= 1;
        callback(smtpError(this.failureCode, 'Try again later'));
        return;
      }
      const raw = Buffer.concat(chunks).toString('utf8');
      const parsed = parseMessage(raw);
      this.messages.push({
        ...parsed,
        from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
        to: session.envelope.rcptTo.map((r) => r.address),
        raw,
      });
      callback();
      for (const waiter of [...this.waiters]) waiter();
    });
  }
}

/** Parses a MIME message just enough for tests: headers, and the text/plain and text/html parts. */
export function parseMessage(raw: string): { headers: Map<string, string>; subject: string; text: string; html: string } {
  const root = parsePart(raw.replace(/\r\n/g, '\n'));
  const found = { text: '', html: '' };
  collectBodies(root, found);
  return { headers: root.headers, subject: root.headers.get('subject') ?? '', ...found };
}

interface Part {
  headers: Map<string, string>;
  body: string;
}

function parsePart(source: string): Part {
  const split = source.indexOf('\n\n');
  const head = split === -1 ? source : source.slice(0, split);
  const body = split === -1 ? '' : source.slice(split + 2);
  const headers = new Map<string, string>();
  // Folded header lines continue with whitespace.
  for (const line of head.replace(/\n[ \t]+/g, ' ').split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), decodeEncodedWords(line.slice(colon + 1).trim()));
  }
  return { headers, body };
}

function collectBodies(part: Part, found: { text: string; html: string }): void {
  const type = part.headers.get('content-type') ?? 'text/plain';
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
  if (/^multipart\//i.test(type) && boundary) {
    const sections = part.body.split(`--${boundary}`);
    // The text before the first boundary is the preamble; "--" after the last one closes it.
    for (const section of sections.slice(1)) {
      if (section.startsWith('--')) break;
      // The line break before a boundary belongs to the boundary, not to the part.
      collectBodies(parsePart(section.replace(/^\n/, '').replace(/\n$/, '')), found);
    }
    return;
  }
  const decoded = decodeBody(part.body, part.headers.get('content-transfer-encoding') ?? '7bit');
  if (/^text\/html/i.test(type) && found.html === '') found.html = decoded;
  else if (/^text\/plain/i.test(type) && found.text === '') found.text = decoded;
}

function decodeBody(body: string, encoding: string): string {
  const e = encoding.toLowerCase();
  if (e === 'base64') return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
  if (e === 'quoted-printable') return decodeQuotedPrintable(body);
  return body;
}

function decodeQuotedPrintable(body: string): string {
  const soft = body.replace(/=\n/g, '');
  const bytes: number[] = [];
  for (let i = 0; i < soft.length; i++) {
    const c = soft[i] as string;
    const hex = soft.slice(i + 1, i + 3);
    if (c === '=' && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(c, 'utf8'));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

/** RFC 2047 encoded words (=?UTF-8?Q?…?= and =?UTF-8?B?…?=), as nodemailer writes non-ASCII headers. */
function decodeEncodedWords(value: string): string {
  return value
    .replace(/\?=\s+=\?/g, '?==?')
    .replace(/=\?([^?]+)\?([QqBb])\?([^?]*)\?=/g, (_all, _charset: string, kind: string, data: string) =>
      kind.toUpperCase() === 'B'
        ? Buffer.from(data, 'base64').toString('utf8')
        : decodeQuotedPrintable(data.replace(/_/g, ' ')),
    );
}
