// Every page of the parent and staff journeys, reached the way people reach them, so a check
// (axe-core, reflow, visible focus) can be run on each one at any width. The site is seeded
// once through the services with requests in the states the staff pages show; each walk then
// sends one more request through the real form and confirms it from the real email.
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import type { Actor } from '../../src/requests/request-lifecycle';
import { startTestSite, type TestSite } from './browser';
import { TEST_AUTH_TABLE } from './databases';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from './moodle-double';
import { createStaffUser, STAFF_PASSWORD } from './staff';

/** Chromium logs the 400 of the form sent back with a mistake, and the 404 of a used confirmation link. */
export const WALK_CONSOLE_ERRORS = [/status of 400 \(Bad Request\)/, /status of 404 \(Not Found\)/];

export interface SeededSite {
  staffUsername: string;
  pendingId: number;
  provisionedId: number;
  deniedId: number;
  cycleId: number;
  pupilId: number;
}

/** The app served with the Moodle double of the recorded site as its Moodle (and the school's own privacy notice set). */
export async function startSiteWithMoodle(): Promise<{ site: TestSite; moodle: MoodleDouble }> {
  const moodle = await startMoodleDouble({ state: seedRecordedSite() });
  const site = await startTestSite({
    env: { MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws, MOODLE_PARENT_ROLE_ID: '9', PRIVACY_NOTICE_URL: 'https://www.example-school.org/privacy' },
    services: { moodle: undefined },
  });
  return { site, moodle };
}

/** Requests waiting, provisioned (through a real cycle against the Moodle double) and denied. */
export async function seedSite(site: TestSite, moodle: MoodleDouble): Promise<SeededSite> {
  const staffUsername = await createStaffUser(site.services, { displayName: 'Jo Office', role: 'admin' });
  const office: Actor = { type: 'staff', id: staffUsername };
  const { lifecycle } = site.services;
  const submit = (first: string, last: string, email: string, child: { first: string; group: string; id: string | null }) =>
    lifecycle.submitRequest(
      {
        requestType: 'new_account',
        parentTitle: 'Mrs',
        parentFirstName: first,
        parentLastName: last,
        email,
        comment: 'Please link me to both of my children if you can.',
        children: [{ firstName: child.first, lastName: 'Pupil', tutorGroup: child.group, pupilIdentifier: child.id }],
        source: 'form',
        requireVerification: false,
      },
      { type: 'parent' },
    );
  const pending = await submit('Priya', 'Shah', 'priya.shah@example.org', { first: 'Ann', group: '7B', id: 'ADM1001' });
  const provisioned = await submit('Gareth', 'Evans', 'gareth.evans@example.org', { first: 'Bob', group: '9C', id: null });
  const pupilId = 4;
  await lifecycle.approveRequest(
    provisioned.request.id,
    { expectedVersion: provisioned.request.version, children: provisioned.children.map((c) => ({ childId: c.id, moodleUserId: pupilId })) },
    office,
  );
  const denied = await submit('Test', 'Test', 'test@example.org', { first: 'Test', group: 'X', id: null });
  await lifecycle.denyRequest(denied.request.id, { reason: 'No pupil of this name at the school.' }, office);
  await moodle.sync(site.database.db, TEST_AUTH_TABLE);
  const { cycleId } = await site.services.cycle.run('manual', staffUsername);
  // A Moodle check that found the pupil suspended (active again since), so its page has a list to show.
  moodle.state.setSuspended(pupilId, true);
  await site.services.reconcile.run('manual', staffUsername);
  moodle.state.setSuspended(pupilId, false);
  return { staffUsername, pendingId: pending.request.id, provisionedId: provisioned.request.id, deniedId: denied.request.id, cycleId, pupilId };
}

/** Called on each page once it has loaded; the label names the page in failures. */
export type Visit = (label: string) => Promise<void>;

let sequence = 0;

/** The parent's pages: home, the form (empty, with a mistake), thank you, confirm, confirmed, status, link used again. */
export async function walkParentPages(page: Page, site: TestSite, visit: Visit): Promise<void> {
  sequence += 1;
  const email = `walk${sequence}.${process.pid}@example.org`;
  await page.goto(`${site.url}/`);
  await visit('parent: home page');
  await page.goto(`${site.url}/request`);
  await page.getByRole('heading', { name: 'Ask for a Moodle parent account' }).waitFor();
  await visit('parent: the request form');
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Send request' }).click()]);
  await page.getByRole('heading', { name: 'There is a problem' }).waitFor();
  await visit('parent: the form with mistakes');
  const aboutYou = page.getByRole('group', { name: 'About you' });
  await aboutYou.getByLabel('First name').fill('Robin');
  await aboutYou.getByLabel('Last name').fill('Parent');
  await aboutYou.getByLabel('Email address', { exact: true }).fill(email);
  await aboutYou.getByLabel('Email address again').fill(email);
  await page.getByRole('radio', { name: 'I do not have a parent account yet' }).check();
  const child = page.getByRole('group', { name: 'Child 1' });
  await child.getByLabel('First name').fill('Ann');
  await child.getByLabel('Last name').fill('Pupil');
  await child.getByLabel('Tutor group or class').fill('7B');
  await page.getByRole('checkbox', { name: 'I have read the privacy notice' }).check();
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Send request' }).click()]);
  await page.getByRole('heading', { name: 'Thank you' }).waitFor();
  await visit('parent: thank you');

  const mail = await site.mailTo(email, /confirm/i);
  const link = /(https?:\/\/\S+\/request\/verify\/[A-Za-z0-9_-]+)/.exec(mail.text)?.[1];
  assert.ok(link, 'the confirmation email has the link');
  await page.goto(link);
  await page.getByRole('heading', { name: 'Confirm your email address' }).waitFor();
  await visit('parent: confirm your email address');
  await page.getByRole('button', { name: 'Confirm my email address' }).click();
  await page.getByRole('heading', { name: 'Thank you, your email address is confirmed' }).waitFor();
  await visit('parent: address confirmed');
  await page.getByRole('link', { name: 'See how your request is going' }).click();
  await page.getByRole('heading', { name: 'Your request' }).waitFor();
  await visit('parent: status page');
  await page.goto(link);
  await page.getByRole('heading', { name: 'Your email address is already confirmed' }).waitFor();
  await visit('parent: link used again');
}

/** The staff pages: sign-in, then every dashboard page with the seeded requests and cycle. */
export async function walkStaffPages(page: Page, site: TestSite, seeded: SeededSite, visit: Visit): Promise<void> {
  await page.goto(`${site.url}/admin`);
  await page.getByRole('heading', { name: 'Staff sign-in' }).waitFor();
  await visit('staff: sign-in');
  await page.getByLabel('Username').fill(seeded.staffUsername);
  await page.getByLabel('Password').fill(STAFF_PASSWORD);
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign in' }).click()]);
  await page.getByText('Signed in as Jo Office').waitFor();
  await visit('staff: overview');
  const pages: Array<[string, string]> = [
    ['staff: request list', '/admin/requests'],
    ['staff: request list, waiting for review', '/admin/requests?status=pending'],
    ['staff: a request waiting for review', `/admin/requests/${seeded.pendingId}`],
    ['staff: a provisioned request', `/admin/requests/${seeded.provisionedId}`],
    ['staff: a denied request', `/admin/requests/${seeded.deniedId}`],
    ['staff: erase a request', `/admin/requests/${seeded.deniedId}/erase`],
    ['staff: provisioning', '/admin/provisioning'],
    ['staff: provisioning, what the next cycle will do', '/admin/provisioning?preview=1'],
    ['staff: Moodle check', '/admin/moodle-check'],
    ['staff: a cycle report', `/admin/cycles/${seeded.cycleId}`],
    ['staff: who can log in', '/admin/accounts'],
    ['staff: a pupil’s parents', `/admin/pupils/${seeded.pupilId}`],
    ['staff: import', '/admin/import'],
    ['staff: school records', '/admin/guardian-records'],
    ['staff: diagnostics', '/admin/diagnostics'],
  ];
  for (const [label, address] of pages) {
    const response = await page.goto(`${site.url}${address}`);
    assert.equal(response?.status(), 200, `${label}: GET ${address} answered ${response?.status()}`);
    await visit(label);
  }
}
