// Whole journeys in a real browser: Debian's headless Chromium driven by playwright-core, the
// real app served on a free port with its own database and a real SMTP server for its mail.
// Each test gets a fresh browser context; screenshots of each step are kept under
// test-artifacts/; any console error, uncaught page error or 5xx answer fails the test.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { chromium, type Browser, type BrowserContextOptions, type Page } from 'playwright-core';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices, type ServiceOptions, type Services } from '../../src/services';
import { createTestDatabase, TEST_AUTH_TABLE, type Dialect, type TestDatabase } from './databases';
import { TestSmtpServer, type ReceivedMail } from './smtp-server';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];
export const ARTIFACTS_DIR = path.resolve(__dirname, '..', '..', 'test-artifacts');

/** A phone: what most parents will use. */
export const PHONE: BrowserContextOptions = {
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 2,
  isMobile: true,
  hasTouch: true,
  locale: 'en-GB',
};

export const DESKTOP: BrowserContextOptions = { viewport: { width: 1280, height: 900 }, locale: 'en-GB' };

/**
 * Why the browser tests must be skipped, or false to run them. As with MariaDB, never skips
 * under CI: there a missing Chromium makes them fail.
 */
export function browserSkipReason(): string | false {
  if (process.env.CI || fs.existsSync(CHROMIUM_PATH)) return false;
  const reason = `Chromium is not installed at ${CHROMIUM_PATH} (apt-get install chromium, or set CHROMIUM_PATH)`;
  process.stderr.write(`\n*** SKIPPING browser tests: ${reason}\n\n`);
  return reason;
}

export async function launchBrowser(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM_PATH)) {
    throw new Error(`No Chromium at ${CHROMIUM_PATH}: install it (apt-get install chromium) or set CHROMIUM_PATH`);
  }
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true });
}

function slug(text: string): string {
  return text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '')
    .slice(0, 80);
}

export interface PageOptions {
  context?: BrowserContextOptions;
  /**
   * Console errors the test expects, matched against "message (address)". Chromium reports every
   * 4xx answer as a console error, so a test that is shown an error page on purpose lists it.
   */
  allowConsoleErrors?: RegExp[];
  /** Run axe-core on the page at every screenshot (the journeys' page-visit steps). On unless false or JavaScript is off. */
  checkAccessibility?: boolean;
}


/** One test's page, with its screenshots and everything that went wrong in the browser. */
export class BrowserSession {
  /** Console errors, uncaught exceptions and 5xx answers seen so far. */
  readonly problems: string[] = [];
  private step = 0;

  constructor(
    readonly page: Page,
    readonly artifactsDir: string,
    allowConsoleErrors: RegExp[],
    private readonly checkAccessibility = true,
  ) {
    page.on('console', (message) => {
      if (message.type() !== 'error') return;
      const where = message.location().url;
      const described = `${message.text()}${where ? ` (${where})` : ''}`;
      if (allowConsoleErrors.some((pattern) => pattern.test(described))) return;
      this.problems.push(`console error: ${described}`);
    });
    page.on('pageerror', (error) => this.problems.push(`uncaught error in the page: ${error.message}`));
    page.on('response', (response) => {
      if (response.status() >= 500) this.problems.push(`${response.status()} from ${response.request().method()} ${response.url()}`);
    });
  }

  /**
   * Saves a full-page screenshot as the next numbered step and returns its path. A screenshot
   * marks a page the journey visits, so axe-core checks that page too (see expectNoAxeViolations).
   */
  async screenshot(name: string, options: { checkAccessibility?: boolean } = {}): Promise<string> {
    this.step += 1;
    const file = path.join(this.artifactsDir, `${String(this.step).padStart(2, '0')}-${slug(name)}.png`);
    await this.page.screenshot({ path: file, fullPage: true });
    if (options.checkAccessibility ?? this.checkAccessibility) await expectNoAxeViolations(this.page, name);
    return file;
  }

  assertNoProblems(): void {
    if (this.problems.length > 0) throw new Error(`The browser reported problems:\n  ${this.problems.join('\n  ')}`);
  }
}

/**
 * Runs fn with a page in a fresh browser context (no cookies or storage from other tests).
 * Screenshots go to test-artifacts/<test file>/<test name>/; on failure one more is taken.
 * The test fails if the browser saw a console error, an uncaught error or a 5xx answer, or if
 * axe-core finds an accessibility violation on a page when its screenshot is taken.
 */
export async function withBrowserPage(
  browser: Browser,
  t: TestContext,
  testFile: string,
  options: PageOptions,
  fn: (session: BrowserSession) => Promise<void>,
): Promise<void> {
  const dir = path.join(ARTIFACTS_DIR, slug(path.basename(testFile, '.test.ts')), slug(t.name));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const context = await browser.newContext(options.context ?? PHONE);
  const page = await context.newPage();
  // axe-core runs as a script in the page, which a context without JavaScript cannot do (the
  // same pages are checked with JavaScript on by the other journeys and test/e2e/accessibility).
  const checkAccessibility = options.checkAccessibility ?? options.context?.javaScriptEnabled !== false;
  const session = new BrowserSession(page, dir, options.allowConsoleErrors ?? [], checkAccessibility);
  try {
    await fn(session);
  } catch (error) {
    await session.screenshot('failed', { checkAccessibility: false }).catch(() => undefined);
    throw error;
  } finally {
    await context.close();
  }
  session.assertNoProblems();
}

/** What a page's focus is on, described well enough to assert on. */
export async function focused(page: Page): Promise<{ tag: string; id: string; name: string; text: string; type: string }> {
  // Written as page source: the test project has no DOM types.
  return page.evaluate(`(() => {
    const el = document.activeElement;
    return {
      tag: el ? el.tagName.toLowerCase() : '',
      id: (el && el.id) || '',
      name: (el && el.getAttribute('name')) || '',
      text: ((el && el.textContent) || '').trim().replace(/\\s+/g, ' ').slice(0, 80),
      type: (el && el.getAttribute('type')) || '',
    };
  })()`);
}

/** True when the page needs no sideways scrolling at its viewport width. */
export async function fitsViewportWidth(page: Page): Promise<boolean> {
  return page.evaluate('document.documentElement.scrollWidth <= window.innerWidth');
}

/** The widths every page is checked at: the staff's desktop and a parent's phone. */
export const CHECKED_WIDTHS = [
  { name: 'desktop', context: DESKTOP },
  { name: 'phone', context: PHONE },
] as const;

const AXE_SOURCE_PATH = require.resolve('axe-core/axe.min.js');
/** WCAG 2.0, 2.1 and 2.2, levels A and AA: what a school's public service is held to. */
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'];

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  helpUrl: string;
  nodes: Array<{ target: unknown[]; failureSummary?: string }>;
}

/**
 * Runs axe-core (Deque's accessibility rules) on the page as it is now and fails, naming each
 * rule, the elements it found and what to do, if it finds any WCAG 2.x A or AA violation.
 */
export async function expectNoAxeViolations(page: Page, label: string): Promise<void> {
  // Evaluated rather than added with page.addScriptTag: the app's content security policy
  // (script-src 'self') rightly refuses an inline script tag, and Chromium would log that refusal.
  const loaded = await page.evaluate('typeof window.axe === "object"');
  if (!loaded) await page.evaluate(fs.readFileSync(AXE_SOURCE_PATH, 'utf8'));
  const violations = (await page.evaluate(
    `axe.run(document, { runOnly: { type: 'tag', values: ${JSON.stringify(AXE_TAGS)} }, resultTypes: ['violations'] }).then((r) => r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl, nodes: v.nodes.map((n) => ({ target: n.target, failureSummary: n.failureSummary })) })))`,
  )) as AxeViolation[];
  if (violations.length === 0) return;
  const width = page.viewportSize()?.width ?? 0;
  const described = violations.map((v) => {
    const nodes = v.nodes.map((n) => `      ${JSON.stringify(n.target)}${n.failureSummary ? `: ${n.failureSummary.replace(/\s+/g, ' ')}` : ''}`).join('\n');
    return `  ${v.id} (${v.impact ?? 'no impact given'}): ${v.help} <${v.helpUrl}>\n${nodes}`;
  });
  throw new Error(`axe-core found ${violations.length} accessibility violation(s) on "${label}" at ${width} px (${page.url()}):\n${described.join('\n')}`);
}

// ------------------------------------------------------------------ the site under test

export interface TestSite {
  /** The address the app listens on, also its BASE_URL (links in mail point here). */
  url: string;
  services: Services;
  database: TestDatabase;
  smtp: TestSmtpServer;
  /** Sends the queued mail now (instead of waiting for the sender's timer) and returns the message to this address. */
  mailTo(address: string, subject?: RegExp): Promise<ReceivedMail>;
  close(): Promise<void>;
}

export interface TestSiteOptions {
  dialect?: Dialect;
  /** Environment variables on top of the test defaults. */
  env?: Record<string, string>;
  /** Service options such as a Moodle test double. */
  services?: Omit<ServiceOptions, 'db'>;
}

/** Serves the real app on 127.0.0.1 on a free port, with a fresh database and a test SMTP server. */
export async function startTestSite(options: TestSiteOptions = {}): Promise<TestSite> {
  const database = await createTestDatabase(options.dialect ?? 'sqlite');
  const smtp = await new TestSmtpServer().start();
  // Listen first: the configuration needs the port for BASE_URL.
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const config = parseConfig({
    NODE_ENV: 'test',
    AUTH_TABLE: TEST_AUTH_TABLE,
    BASE_URL: url,
    SMTP_URL: smtp.url,
    SCHOOL_NAME: 'Hillside School',
    CYCLE_SCHEDULE: 'off',
    RECONCILE_SCHEDULE: 'off',
    FORM_RATE_LIMIT_PER_IP: '1000',
    FORM_RATE_LIMIT_PER_EMAIL: '1000',
    ...options.env,
  });
  const services = createServices(config, { moodle: null, ...options.services, db: database.db });
  server.on('request', createApp(services));
  return {
    url,
    services,
    database,
    smtp,
    async mailTo(address: string, subject?: RegExp) {
      await services.mailOutbox.sendDue();
      return smtp.waitFor((mail) => mail.to.includes(address.toLowerCase()) && (subject === undefined || subject.test(mail.subject)));
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await services.close();
      await smtp.close();
      await database.destroy();
    },
  };
}
