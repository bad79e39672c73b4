// Full-page screenshots of the staff dashboard for docs/screenshots, from a real app on SQLite
// with demo data: requests in several states, provisioning cycles run against the Moodle test
// double (one with problems, one failed, one caught while running), signed in through headless
// Chromium. Each page is saved at desktop width (name.png, 1280 px) and phone width
// (name-phone.png, 390 px). Run with: npx tsx test/support/take-screenshots.ts
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import type { Actor } from '../../src/requests/request-lifecycle';
import { createServices } from '../../src/services';
import { createTestDatabase, TEST_AUTH_TABLE } from './databases';
import { seedRecordedSite, startMoodleDouble } from './moodle-double';
import { TestSmtpServer } from './smtp-server';
import { STAFF_PASSWORD } from './staff';

const OUT_DIR = path.resolve(__dirname, '..', '..', 'docs', 'screenshots');
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];
const office: Actor = { type: 'staff', id: 'j.patel' };

async function main(): Promise<void> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install it (apt-get install -y chromium) and run this again.`);
  fs.mkdirSync(OUT_DIR, { recursive: true });

  const t = await createTestDatabase('sqlite');
  const moodle = await startMoodleDouble({ state: seedRecordedSite() });
  const smtp = await new TestSmtpServer().start();
  // Moodle's pupils for the demo children (the recorded site has Ann and Bob Pupil as 3 and 4).
  const pupils = {
    aisha: moodle.state.addUser({ username: 'aisha.shah', firstname: 'Aisha', lastname: 'Shah', department: '7B', idnumber: 'ADM2041' }).id,
    omar: moodle.state.addUser({ username: 'omar.shah', firstname: 'Omar', lastname: 'Shah', department: '10C', idnumber: 'ADM1877' }).id,
    lily: moodle.state.addUser({ username: 'lily.evans', firstname: 'Lily', lastname: 'Evans', department: '8A', idnumber: 'ADM1950' }).id,
    tom: moodle.state.addUser({ username: 'tom.okafor', firstname: 'Tom', lastname: 'Okafor', department: '9D', idnumber: 'ADM1902' }).id,
    mia: moodle.state.addUser({ username: 'mia.novak', firstname: 'Mia', lastname: 'Novak', department: '7A', idnumber: 'ADM2077' }).id,
  };
  // A teacher who is also a parent: Moodle's sync cannot create a second account with this name.
  moodle.state.addUser({ username: 'd.brown@example.org', firstname: 'Dan', lastname: 'Brown', auth: 'manual' });

  // Moodle's user sync as a real command: it fetches this endpoint, which runs auth_db's sync on the double.
  const syncServer = http.createServer((_req, res) => {
    moodle.sync(t.db, TEST_AUTH_TABLE).then((output) => res.end(output), (error: unknown) => res.end(String(error)));
  });
  await new Promise<void>((resolve) => syncServer.listen(0, '127.0.0.1', resolve));
  const syncUrl = `http://127.0.0.1:${(syncServer.address() as AddressInfo).port}/sync`;

  const config = parseConfig({
    NODE_ENV: 'test',
    SCHOOL_NAME: 'Riverside Academy',
    DATABASE_URL: `sqlite:${t.config.client === 'sqlite' ? t.config.filename : ''}`,
    AUTH_TABLE: TEST_AUTH_TABLE,
    SESSION_SECRET: 'screenshots-session-secret-0123456789abcdefghij',
    MOODLE_URL: moodle.url,
    MOODLE_TOKEN: moodle.tokens.ws,
    MOODLE_PARENT_ROLE_ID: '9',
    MOODLE_RETRIES: '0',
    MOODLE_SYNC_COMMAND: `'${process.execPath}' -e 'fetch(process.argv[1]).then((r) => r.text()).then((t) => process.stdout.write(t))' '${syncUrl}'`,
    SMTP_URL: smtp.url,
    CYCLE_SCHEDULE: '*/15 * * * *',
  });
  const services = createServices(config, { db: t.db });
  const app = createApp(services);
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const staffUsername = 'j.patel';
  await services.staffAccounts.addStaff({ username: staffUsername, displayName: 'Jo Patel', email: 'office@riverside.example.org', password: STAFF_PASSWORD, role: 'admin' });
  await services.staffAccounts.addStaff({ username: 'm.green', displayName: 'Morgan Green', password: STAFF_PASSWORD, role: 'staff' });

  const { lifecycle } = services;
  const submit = async (
    parent: { title: string; first: string; last: string; email: string; comment?: string },
    children: Array<{ first: string; last: string; group: string; id?: string }>,
    verified = true,
  ) => {
    const { request, children: kids } = await lifecycle.submitRequest(
      {
        requestType: 'new_account',
        parentTitle: parent.title,
        parentFirstName: parent.first,
        parentLastName: parent.last,
        email: parent.email,
        comment: parent.comment ?? null,
        children: children.map((c) => ({ firstName: c.first, lastName: c.last, tutorGroup: c.group, pupilIdentifier: c.id ?? null })),
        source: 'form',
        requireVerification: !verified,
      },
      { type: 'parent' },
    );
    return { request, kids };
  };
  const approve = async (submitted: Awaited<ReturnType<typeof submit>>, pupilIds: number[]) =>
    lifecycle.approveRequest(
      submitted.request.id,
      { expectedVersion: submitted.request.version, children: submitted.kids.map((c, i) => ({ childId: c.id, moodleUserId: pupilIds[i] ?? null })) },
      office,
    );

  // A scheduled cycle with nothing to do yet.
  await services.cycle.run('schedule', null);

  const shah = await submit({ title: 'Mrs', first: 'Priya', last: 'Shah', email: 'priya.shah@example.org' }, [
    { first: 'Aisha', last: 'Shah', group: '7B', id: 'ADM2041' },
    { first: 'Omar', last: 'Shah', group: '10C' },
  ]);
  await approve(shah, [pupils.aisha, pupils.omar]);
  const evans = await submit({ title: 'Mr', first: 'Gareth', last: 'Evans', email: 'gareth.evans@example.org' }, [
    { first: 'Lily', last: 'Evans', group: '8A' },
    { first: 'Rhys', last: 'Evans', group: '11B' },
  ]);
  // Rhys was matched to an account that has since been removed from Moodle: that link fails.
  await approve(evans, [pupils.lily, 998]);
  const brown = await submit({ title: 'Mr', first: 'Dan', last: 'Brown', email: 'd.brown@example.org' }, [{ first: 'Tom', last: 'Okafor', group: '9D' }]);
  await approve(brown, [pupils.tom]);
  const novak = await submit({ title: 'Ms', first: 'Eva', last: 'Novak', email: 'eva.novak@example.org' }, [{ first: 'Mia', last: 'Novak', group: '7A' }]);
  await approve(novak, [pupils.mia]);
  const main = await services.cycle.run('manual', staffUsername);

  // Afterwards: Ms Novak's account was suspended in Moodle by hand.
  moodle.state.userByUsername('eva.novak@example.org')!.suspended = true;

  // Requests still to review, one unconfirmed, one denied.
  const okafor = await submit(
    { title: 'Dr', first: 'Ngozi', last: 'Okafor', email: 'ngozi.okafor@example.org', comment: 'Tom already has a Moodle login; please link me to him.' },
    [{ first: 'Tom', last: 'Okafor', group: '9D', id: 'ADM1902' }],
  );
  await submit({ title: 'Mr', first: 'Sam', last: 'Taylor', email: 'sam.taylor@example.org' }, [
    { first: 'Ann', last: 'Pupil', group: '7B' },
    { first: 'Bob', last: 'Pupil', group: '9C' },
  ]);
  await submit({ title: 'Mrs', first: 'Helen', last: 'Wright', email: 'helen.wright@example.org' }, [{ first: 'Jack', last: 'Wright', group: '12A' }], false);
  const spam = await submit({ title: 'Mr', first: 'Test', last: 'Test', email: 'test@example.org' }, [{ first: 'Test', last: 'Child', group: 'X' }]);
  await lifecycle.denyRequest(spam.request.id, { reason: 'No pupil of this name at the school.' }, office);

  // A parent approved after that cycle, and a scheduled cycle that failed while web services were off.
  const ali = await submit({ title: 'Mr', first: 'Yusuf', last: 'Ali', email: 'yusuf.ali@example.org' }, [{ first: 'Ann', last: 'Pupil', group: '7B' }]);
  await approve(ali, [3]);
  moodle.setFaults({ webServicesEnabled: false });
  await services.cycle.run('schedule', null);
  moodle.setFaults({ webServicesEnabled: true });

  // A Moodle check some weeks on: Omar has left (his account is suspended) and someone removed
  // Mrs Shah's Parent role for Aisha by hand, which the check gives back.
  moodle.state.setSuspended(pupils.omar, true);
  moodle.state.removeUserContextRole(9, moodle.state.userByUsername('priya.shah@example.org')!.id, pupils.aisha);
  await services.reconcile.run('manual', staffUsername);

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  const taken: string[] = [];
  const skipped: string[] = [];
  try {
    const page = await signedInPage(browser, base, staffUsername, 1280, 900);
    const phone = await signedInPage(browser, base, staffUsername, 390, 844);

    const shoot = async (name: string, address: string, optional = false) => {
      for (const [shown, file] of [[page, name], [phone, `${name}-phone`]] as const) {
        const response = await shown.goto(`${base}${address}`);
        if (optional && response?.status() === 404) {
          skipped.push(`${file} (${address} answers 404: not built yet)`);
          continue;
        }
        if (!response?.ok()) throw new Error(`${address} answered ${response?.status()}`);
        await save(shown, file);
        taken.push(file);
      }
    };

    await shoot('requests', '/admin/requests', true);
    await shoot('request', `/admin/requests/${okafor.request.id}`, true);
    await shoot('cycle-report', `/admin/cycles/${main.cycleId}`);
    await shoot('accounts', '/admin/accounts');
    await shoot('diagnostics', '/admin/diagnostics');
    await shoot('moodle-check', '/admin/moodle-check');
    await shoot('parent-form', '/request');

    // A cycle caught while it runs: role assignments wait until the screenshots are taken.
    const held = await submit({ title: 'Ms', first: 'Rosa', last: 'Diaz', email: 'rosa.diaz@example.org' }, [{ first: 'Bob', last: 'Pupil', group: '9C' }]);
    await approve(held, [4]);
    const assignments = moodle.holdCalls('core_role_assign_roles');
    try {
      await page.goto(`${base}/admin/provisioning`);
      await Promise.all([page.waitForURL(/\/admin\/cycles\/\d+$/), page.click('form.run-now button')]);
      const runningAddress = new URL(page.url()).pathname;
      await assignments.reached;
      await shoot('cycle-running', runningAddress);
      await shoot('provisioning', '/admin/provisioning');
    } finally {
      assignments.release();
    }
  } finally {
    await browser.close();
    await services.cycle.requestStop();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await services.close();
    await new Promise<void>((resolve) => syncServer.close(() => resolve()));
    await smtp.close();
    await moodle.close();
    await t.destroy();
  }
  for (const name of taken) process.stdout.write(`saved docs/screenshots/${name}.png\n`);
  for (const note of skipped) process.stdout.write(`skipped ${note}\n`);
}

/** A page of its own browser context at this width, signed in as the member of staff. */
async function signedInPage(browser: Browser, base: string, username: string, width: number, height: number): Promise<Page> {
  const page = await browser.newPage({ viewport: { width, height } });
  await page.goto(`${base}/admin/sign-in`);
  await page.fill('#username', username);
  await page.fill('#password', STAFF_PASSWORD);
  await Promise.all([page.waitForURL(`${base}/admin`), page.click('button[type=submit]')]);
  return page;
}

async function save(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(OUT_DIR, `${name}.png`), fullPage: true });
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
