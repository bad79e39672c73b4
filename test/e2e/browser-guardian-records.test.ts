// The school records in Chromium, against the Moodle double over HTTP: an administrator uploads
// the MIS export, checks the preview and replaces the records; a confirmed request that matches
// then shows the evidence on its page with the pupil preselected, and one press of Approve
// approves it with that pupil. axe-core checks each page at its screenshot, at desktop and phone width.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, CHECKED_WIDTHS, launchBrowser, startTestSite, withBrowserPage, type TestSite } from '../support/browser';
import { submission } from '../support/builders';
import { addGuardianPupils, FAMILY_ROWS, guardianCsv } from '../support/guardian-records';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, STAFF_PASSWORD } from '../support/staff';

describe('the school records suggest flow, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let moodle: MoodleDouble;
  let site: TestSite;
  let adminUsername: string;
  let csvFile: string;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    const state = seedRecordedSite();
    addGuardianPupils(state);
    moodle = await startMoodleDouble({ state });
    site = await startTestSite({
      env: { MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws, MOODLE_PARENT_ROLE_ID: '9', GUARDIAN_MATCH: 'suggest' },
      services: { moodle: undefined },
    });
    adminUsername = await createStaffUser(site.services, { role: 'admin', displayName: 'Jo Office' });
    csvFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'guardian-browser-')), 'pupil-contacts.csv');
    fs.writeFileSync(csvFile, guardianCsv(FAMILY_ROWS) + 'ADM3000,,Al,Bad,,7B,Mr,Al,Bad,al.bad@example.org,Father,Maybe,1,N\r\n');
  });
  after(async () => {
    await site?.close();
    await moodle?.close();
    await browser?.close();
    if (csvFile) fs.rmSync(path.dirname(csvFile), { recursive: true, force: true });
  });

  async function signIn(page: Page) {
    await page.goto(`${site.url}/admin/sign-in`);
    await page.getByLabel('Username').fill(adminUsername);
    await page.getByLabel('Password').fill(STAFF_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Signed in as Jo Office').waitFor();
  }

  for (const { name, context } of CHECKED_WIDTHS) {
    it(`upload the records, then approve a matching request with the preselected pupil (${name})`, { skip }, async (t) => {
      await withBrowserPage(browser, t, __filename, { context }, async (session) => {
        const { page } = session;
        await signIn(page);
        await page.goto(`${site.url}/admin/guardian-records`);
        await session.screenshot('school records page');
        await page.getByLabel('CSV file from the MIS').setInputFiles(csvFile);
        await page.getByRole('button', { name: 'Check the file' }).click();
        await page.getByText('The records in use have not been replaced yet').waitFor();
        assert.match(await page.locator('table').innerText(), /Parental responsibility “Maybe” is not Yes or No/);
        await session.screenshot('preview with a row left out');
        await page.getByRole('button', { name: 'Replace the school records' }).click();
        await page.getByText(/The school records were replaced: 6 records of 5 pupils/).waitFor();
        await session.screenshot('records replaced');

        const email = `amira.haddad+${name}@example.org`;
        // The records hold the address without the tag: this request's address differs by more than a typo.
        const { request: other } = await site.services.lifecycle.submitRequest(
          submission({ email, children: [{ firstName: 'Sami', lastName: 'Haddad', tutorGroup: '7B', pupilIdentifier: null }] }),
          { type: 'parent' },
        );
        await site.services.guardianRecords.settled();
        await page.goto(`${site.url}/admin/requests/${other.id}`);
        await page.getByText('This request does not match the school’s guardian records.').waitFor();
        await session.screenshot('a request that does not match');
        await site.services.lifecycle.denyRequest(other.id, { reason: 'test' }, { type: 'staff', id: adminUsername });

        const { request, children } = await site.services.lifecycle.submitRequest(
          submission({ email: 'amira.haddad@example.org', children: [{ firstName: 'Sami', lastName: 'Haddad', tutorGroup: '7B', pupilIdentifier: null }] }),
          { type: 'parent' },
        );
        await site.services.guardianRecords.settled();
        await page.goto(`${site.url}/admin/requests/${request.id}`);
        const evidence = page.locator('section.school-records');
        await evidence.getByText('Matches school records').waitFor();
        assert.match(await evidence.innerText(), /Mrs Amira Haddad is a contact of Sami Haddad, 7B, ADM1042, mother, parental responsibility: yes/);
        assert.match(await evidence.innerText(), /also a contact of Lina Haddad, 10R/);
        assert.equal(await page.locator(`#match_${children[0]?.id}_42`).isChecked(), true, 'the pupil the records name is preselected');
        await session.screenshot('request page with the school records');
        await page.getByRole('button', { name: 'Approve', exact: true }).click();
        await page.waitForLoadState('load');
        const after = await site.services.lifecycle.get(request.id);
        assert.equal(after.request.status, 'approved');
        assert.equal(after.children[0]?.moodleUserId, 42);
        await session.screenshot('approved');
        await site.services.lifecycle.revokeRequest(request.id, { reason: 'next width' }, { type: 'staff', id: adminUsername });
      });
    });
  }
});
