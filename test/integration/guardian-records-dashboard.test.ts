// The school records in the dashboard and the API, against real databases and the Moodle double:
// an administrator uploads the MIS export, sees the rows left out by line, and replaces the
// records; office staff see the records in use but cannot import; the request page shows the
// evidence and preselects the pupils; PUT /api/v1/guardian-records needs a key with its scope.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createApiKey } from '../../src/intake/api-keys';
import { createServices, type Services } from '../../src/services';
import { submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { FAMILY_ROWS, startGuardianMoodle, guardianCsv } from '../support/guardian-records';
import { htmlText } from '../support/http';
import type { MoodleDouble } from '../support/moodle-double';
import { createStaffUser, StaffSession } from '../support/staff';

const SECRET = 'a-test-session-secret-that-is-long-enough-0123456789';

for (const dialect of DIALECTS) {
  describe(`school records in the dashboard and the API on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let services: Services;
    let app: Express;
    let admin: StaffSession;
    let office: StaffSession;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      const started = await startGuardianMoodle();
      moodle = started.moodle;
      const client = started.client;
      services = createServices(parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SESSION_SECRET: SECRET }), { db: t.db, moodle: client });
      app = createApp(services);
      admin = await StaffSession.signIn(app, await createStaffUser(services, { role: 'admin', displayName: 'Records Admin' }));
      office = await StaffSession.signIn(app, await createStaffUser(services, { role: 'staff', displayName: 'Office Person' }));
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await moodle.close();
      await t.destroy();
    });

    async function upload(session: StaffSession, content: string) {
      await session.open('/admin/guardian-records');
      return session.agent
        .post('/admin/guardian-records/preview')
        .field('_csrf', session.csrfToken)
        .attach('file', Buffer.from(content, 'utf8'), { filename: 'contacts.csv', contentType: 'text/csv' });
    }

    it('an administrator checks the export in a preview (rows left out, by line), and only confirming replaces the records', { skip }, async () => {
      const res = await upload(admin, guardianCsv(FAMILY_ROWS) + 'ADM3000,,Al,Bad,,7B,Mr,Al,Bad,al.bad@example.org,Father,Maybe,1,N\r\n');
      assert.equal(res.status, 303, res.text);
      const page = await admin.open(res.headers.location as string);
      const text = htmlText(page.text);
      assert.match(text, /The records in use have not been replaced yet/);
      assert.match(text, /<th scope="row">8<\/th><td>Parental responsibility “Maybe” is not Yes or No/);
      assert.equal(await services.guardianRecords.currentImport(), undefined, 'nothing is in use before confirming');
      const id = /\/admin\/guardian-records\/(\d+)/.exec(res.headers.location as string)?.[1];
      const committed = await admin.post(`/admin/guardian-records/${id}/commit`);
      assert.equal(committed.status, 303);
      const index = htmlText((await admin.open('/admin/guardian-records')).text);
      assert.match(index, /The school records were replaced: 6 records of 5 pupils/);
      assert.match(index, /6 \(5 pupils, 5 contact addresses\)/);
      assert.equal((await services.guardianRecords.currentImport())?.id, Number(id));
      // A second confirmation of the same preview does nothing more.
      await admin.post(`/admin/guardian-records/${id}/commit`);
      assert.match(htmlText((await admin.open(`/admin/guardian-records/${id}`)).text), /these are the records in use/);
    });

    it('office staff see the records in use but may not import them', { skip }, async () => {
      const page = htmlText((await office.open('/admin/guardian-records')).text);
      assert.match(page, /The records are imported by the dashboard’s administrators/);
      const res = await upload(office, guardianCsv(FAMILY_ROWS));
      assert.equal(res.status, 403);
      assert.match(res.text, /Your account cannot import from a CSV file/);
    });

    it('the request page shows the evidence, the pupils the parent did not name, and preselects the pupil', { skip }, async () => {
      const { request: r, children } = await services.lifecycle.submitRequest(
        submission({ email: 'amira.haddad@example.org', children: [{ firstName: 'Sami', lastName: 'Haddad', tutorGroup: '7B', pupilIdentifier: null }] }),
        { type: 'parent' },
      );
      await services.guardianRecords.settled();
      const page = await office.open(`/admin/requests/${r.id}`);
      const text = htmlText(page.text);
      assert.match(text, /Matches school records/);
      assert.match(text, /Mrs Amira Haddad is a contact of Sami Haddad, 7B, ADM1042, mother, parental responsibility: yes\./);
      assert.match(text, /also a contact of Lina Haddad, 10R/);
      assert.match(text, /Records imported today/);
      assert.match(page.text, new RegExp(`name="match_${children[0]?.id}" value="42" checked`));
    });

    it('the list tags and filters the requests that match, and one button approves them all with the pupils the records name', { skip }, async () => {
      const { request: other } = await services.lifecycle.submitRequest(
        submission({ email: 'carl.pupil@example.org', children: [{ firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: 'ADM1001' }] }),
        { type: 'parent' },
      );
      await services.guardianRecords.settled();
      const matching = (await t.db('guardian_matches').where({ state: 'full' })).map((m) => Number(m.request_id));
      assert.equal(matching.length, 1);
      const [match] = matching;
      const all = htmlText((await office.open('/admin/requests?status=pending')).text);
      assert.match(all, new RegExp(`Request ${match}</a>[\\s\\S]*?Matches school records`));
      assert.match(all, new RegExp(`Request ${other.id}</a>`));
      const filtered = await office.open('/admin/requests?status=pending&records=match');
      const text = htmlText(filtered.text);
      assert.match(text, /Waiting for review: 1 request that match the school records/);
      assert.doesNotMatch(text, new RegExp(`Request ${other.id}</a>`));
      assert.match(text, /Approve this request with the pupils the school records name/);
      const res = await office.post('/admin/requests/bulk', [
        ['status', 'pending'],
        ['records', 'match'],
        ['request', String(match)],
        ['version-' + match, String((await services.lifecycle.get(match as number)).request.version)],
        ['action', 'approve'],
      ]);
      assert.equal(res.status, 200);
      assert.match(htmlText(res.text), /Approved, with the pupil the school records name/);
      const after = await services.lifecycle.get(match as number);
      assert.equal(after.request.status, 'approved');
      assert.deepEqual(after.children.map((c) => c.moodleUserId), [42]);
      assert.equal((await services.lifecycle.get(other.id)).request.status, 'pending');
    });

    it('PUT /api/v1/guardian-records needs a key with the guardian-records scope, and replaces the records', { skip }, async () => {
      const body = {
        records: [
          { admissionNumber: 'ADM1042', pupilForename: 'Sami', pupilSurname: 'Haddad', registrationGroup: '7B', contactTitle: 'Mrs', contactForename: 'Amira', contactSurname: 'Haddad', contactEmail: 'Amira.Haddad@example.org', relationship: 'Mother', parentalResponsibility: true, courtOrder: false, contactPriority: 1 },
          { admissionNumber: 'ADM1043', pupilForename: 'Lina', pupilSurname: 'Haddad', registrationGroup: '10R', contactEmail: 'amira.haddad@example.org', parentalResponsibility: 'Y', unknownColumn: 'not kept' },
          { admissionNumber: '', pupilForename: 'No', pupilSurname: 'Number', registrationGroup: '7B', contactEmail: 'x@example.org', parentalResponsibility: 'Y' },
        ],
      };
      const before = await services.guardianRecords.currentImport();
      assert.equal((await request(app).put('/api/v1/guardian-records').send(body)).status, 401);
      const { key: requestsKey } = await createApiKey(services.db, 'website');
      const refused = await request(app).put('/api/v1/guardian-records').set('Authorization', `Bearer ${requestsKey}`).send(body);
      assert.equal(refused.status, 403);
      assert.match(refused.body.error.message, /may not be used for guardian records/);
      const { key } = await createApiKey(services.db, 'mis', Date.now(), ['guardian-records']);
      const wrongKind = await request(app).post('/api/v1/requests').set('Authorization', `Bearer ${key}`).send({});
      assert.equal(wrongKind.status, 403, 'a guardian-records key cannot send requests');
      assert.deepEqual(await services.guardianRecords.currentImport(), before, 'refused calls changed nothing');
      const res = await request(app).put('/api/v1/guardian-records').set('Authorization', `Bearer ${key}`).send(body);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.imported, 2);
      assert.deepEqual(res.body.problems, [{ record: 3, message: 'Admission number is empty, so the pupil cannot be found in Moodle.' }]);
      const current = await services.guardianRecords.currentImport();
      assert.equal(current?.source, 'api');
      assert.equal(Number((await t.db('guardian_records').count({ n: '*' }).first())?.n), 2, 'the earlier records are gone');
      const audit = await t.db('audit_events').where({ action: 'guardian_records_imported', actor_type: 'api', actor_id: 'mis' });
      assert.equal(audit.length, 1);
      const empty = await request(app).put('/api/v1/guardian-records').set('Authorization', `Bearer ${key}`).send({ records: [body.records[2]] });
      assert.equal(empty.status, 422);
      assert.match(empty.body.error.message, /No row could be kept, so the current records were not replaced/);
      assert.equal((await services.guardianRecords.currentImport())?.id, current?.id, 'nothing usable: the records in use stay');
    });
  });
}
