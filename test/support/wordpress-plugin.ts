// The old WordPress plugin's two tables in a MariaDB database of their own, as WordPress would
// have them (the plugin's own CREATE TABLE statements), with a reader account that may only
// SELECT, for the tvs-migrate tests and the bench.
import { randomBytes } from 'node:crypto';
import knex, { type Knex } from 'knex';

const MYSQL_SERVER_URL = process.env.TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';

/** The plugin's tables exactly as its activation hook creates them (tvs-moodle-parent-provisioning.php). */
export function pluginTablesDdl(prefix: string): string[] {
  return [
    `CREATE TABLE ${prefix}tvs_parent_moodle_provisioning (
      id bigint(20) NOT NULL AUTO_INCREMENT  PRIMARY KEY,
      parent_title varchar(12) NOT NULL,
      parent_fname varchar(255) NOT NULL,
      parent_sname varchar(255) NOT NULL,
      child_fname varchar(255) NOT NULL,
      child_sname varchar(255) NOT NULL,
      child_tg varchar(16) NOT NULL,
      parent_email varchar(255) NOT NULL,
      child2_fname varchar(255),
      child2_sname varchar(255) NOT NULL,
      child2_tg varchar(16) NOT NULL,
      child3_fname varchar(255),
      child3_sname varchar(255) NOT NULL,
      child3_tg varchar(16) NOT NULL,
      status varchar(16) NOT NULL,
      parent_comment mediumtext,
      staff_comment mediumtext,
      system_comment mediumtext,
      date_created datetime DEFAULT '0000-00-00 00:00:00' NOT NULL,
      date_updated datetime,
      date_approved datetime,
      remote_ip_addr varchar(255) NOT NULL,
      provisioned_username varchar(255),
      provisioned_initialpass varchar(255),
      request_type varchar(255)
    ) DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`,
    `CREATE TABLE ${prefix}tvs_parent_moodle_provisioning_auth (
      id bigint(20) NOT NULL AUTO_INCREMENT  PRIMARY KEY,
      username varchar(255) NOT NULL,
      parent_title varchar(12) NOT NULL,
      parent_fname varchar(255) NOT NULL,
      parent_sname varchar(255) NOT NULL,
      parent_email varchar(255) NOT NULL,
      description varchar(255) NOT NULL,
      request_id bigint(20) NOT NULL
    ) DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`,
  ];
}

export interface PluginRequestSeed {
  id?: number;
  parent_title?: string;
  parent_fname?: string;
  parent_sname?: string;
  parent_email?: string;
  child_fname?: string;
  child_sname?: string;
  child_tg?: string;
  child2_fname?: string | null;
  child2_sname?: string;
  child2_tg?: string;
  child3_fname?: string | null;
  child3_sname?: string;
  child3_tg?: string;
  status: string;
  parent_comment?: string | null;
  staff_comment?: string | null;
  system_comment?: string | null;
  date_created?: string;
  date_updated?: string | null;
  date_approved?: string | null;
  remote_ip_addr?: string;
  provisioned_username?: string | null;
  provisioned_initialpass?: string | null;
  request_type?: string | null;
}

export interface PluginAuthSeed {
  id?: number;
  username: string;
  parent_title?: string;
  parent_fname?: string;
  parent_sname?: string;
  parent_email?: string;
  description?: string;
  request_id: number;
}

/** A plugin request with the plugin's defaults: unused child slots are empty strings. */
export function pluginRequest(seed: PluginRequestSeed): Record<string, unknown> {
  return {
    parent_title: 'Mrs',
    parent_fname: 'Pat',
    parent_sname: 'Parent',
    parent_email: 'pat.parent@example.org',
    child_fname: '',
    child_sname: '',
    child_tg: '',
    child2_fname: '',
    child2_sname: '',
    child2_tg: '',
    child3_fname: '',
    child3_sname: '',
    child3_tg: '',
    parent_comment: '',
    staff_comment: '',
    system_comment: '',
    date_created: '2019-09-03 10:11:12',
    date_updated: null,
    date_approved: null,
    remote_ip_addr: '192.0.2.10',
    provisioned_username: null,
    provisioned_initialpass: null,
    request_type: 'I do not currently have a Moodle Account.',
    ...seed,
  };
}

export function pluginAuthRow(seed: PluginAuthSeed): Record<string, unknown> {
  return { parent_title: 'Mrs', parent_fname: 'Pat', parent_sname: 'Parent', parent_email: 'pat.parent@example.org', description: 'Parent of pupils', ...seed };
}

export interface PluginDatabase {
  /** mysql:// address of the reader account (SELECT only), password included. */
  readerUrl: string;
  readerPassword: string;
  /** A root connection to the plugin's database, for seeding and checksums. */
  db: Knex;
  prefix: string;
  seed(requests: PluginRequestSeed[], auth: PluginAuthSeed[]): Promise<void>;
  destroy(): Promise<void>;
}

export async function createPluginDatabase(prefix = 'wp_'): Promise<PluginDatabase> {
  const suffix = `${process.pid}_${randomBytes(4).toString('hex')}`;
  const name = `wp_t_${suffix}`;
  const reader = `wpr_${suffix}`;
  const readerPassword = `Pw-${randomBytes(6).toString('hex')}`;
  const server = knex({ client: 'mysql2', connection: { uri: MYSQL_SERVER_URL } as never, pool: { min: 0, max: 1 } });
  await server.raw(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  await server.raw(`CREATE USER '${reader}'@'%' IDENTIFIED BY '${readerPassword}'`);
  await server.raw(`GRANT SELECT ON \`${name}\`.* TO '${reader}'@'%'`);
  await server.destroy();
  const rootUrl = new URL(MYSQL_SERVER_URL);
  rootUrl.pathname = `/${name}`;
  const db = knex({
    client: 'mysql2',
    connection: { uri: rootUrl.toString(), dateStrings: true } as never,
    pool: {
      min: 0,
      max: 2,
      // WordPress of that era wrote zero dates: allow them on this connection whatever the server's mode.
      afterCreate: (conn: { query: (sql: string, cb: (e: Error | null) => void) => void }, done: (e: Error | null, c: unknown) => void) =>
        conn.query("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'", (e) => done(e, conn)),
    },
  });
  for (const ddl of pluginTablesDdl(prefix)) await db.raw(ddl);
  const readerUrl = new URL(MYSQL_SERVER_URL);
  readerUrl.username = reader;
  readerUrl.password = readerPassword;
  readerUrl.pathname = `/${name}`;
  return {
    readerUrl: readerUrl.toString(),
    readerPassword,
    db,
    prefix,
    async seed(requests, auth) {
      for (let i = 0; i < requests.length; i += 500) await db(`${prefix}tvs_parent_moodle_provisioning`).insert(requests.slice(i, i + 500).map(pluginRequest));
      for (let i = 0; i < auth.length; i += 500) await db(`${prefix}tvs_parent_moodle_provisioning_auth`).insert(auth.slice(i, i + 500).map(pluginAuthRow));
    },
    async destroy() {
      await db.destroy();
      const admin = knex({ client: 'mysql2', connection: { uri: MYSQL_SERVER_URL } as never, pool: { min: 0, max: 1 } });
      await admin.raw(`DROP DATABASE IF EXISTS \`${name}\``);
      await admin.raw(`DROP USER IF EXISTS '${reader}'@'%'`);
      await admin.destroy();
    },
  };
}
