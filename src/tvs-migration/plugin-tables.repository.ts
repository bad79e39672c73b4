// Reads the old WordPress plugin's two tables, and nothing else: a connection of its own, set
// read-only for its whole session, and SELECTs that name their columns. The plugin's
// provisioned_initialpass column (parents' initial passwords in plain text) is never named, so
// it never leaves the WordPress database.
import knex, { type Knex } from 'knex';

/** A row of <prefix>tvs_parent_moodle_provisioning, without the initial password. */
export interface PluginRequestRow {
  id: number;
  parentTitle: string;
  parentFirstName: string;
  parentLastName: string;
  parentEmail: string;
  /** Up to three children; a slot the parent left empty holds empty strings (or NULL). */
  children: Array<{ firstName: string; lastName: string; tutorGroup: string }>;
  status: string;
  parentComment: string;
  staffComment: string;
  systemComment: string;
  /** As stored ("2019-09-03 10:11:12"); null for NULL and for the zero date. */
  dateCreated: string | null;
  dateUpdated: string | null;
  dateApproved: string | null;
  provisionedUsername: string;
  requestType: string;
}

/** A row of <prefix>tvs_parent_moodle_provisioning_auth: what Moodle's auth_db reads today. */
export interface PluginAuthRow {
  id: number;
  username: string;
  parentTitle: string;
  parentFirstName: string;
  parentLastName: string;
  parentEmail: string;
  description: string;
  requestId: number;
}

// Every column read, by name. The plugin's provisioned_initialpass is deliberately not among them.
const REQUEST_COLUMNS = [
  'id', 'parent_title', 'parent_fname', 'parent_sname', 'parent_email',
  'child_fname', 'child_sname', 'child_tg', 'child2_fname', 'child2_sname', 'child2_tg', 'child3_fname', 'child3_sname', 'child3_tg',
  'status', 'parent_comment', 'staff_comment', 'system_comment', 'date_created', 'date_updated', 'date_approved',
  'provisioned_username', 'request_type',
] as const;
const AUTH_COLUMNS = ['id', 'username', 'parent_title', 'parent_fname', 'parent_sname', 'parent_email', 'description', 'request_id'] as const;

type Row = Record<string, unknown>;

/** What a WordPress table prefix may be (it is put into table names, so nothing else). */
export const WORDPRESS_PREFIX = /^[A-Za-z0-9_]{0,40}$/;
const text = (v: unknown): string => (v === null || v === undefined ? '' : String(v));
/** MySQL's zero date (and a zero day or month) means "no date". */
const date = (v: unknown): string | null => {
  const s = text(v).trim();
  return s === '' || s.startsWith('0000-00-00') || /^\d{4}-00-|^\d{4}-\d{2}-00/.test(s) ? null : s;
};

/** The text with the address's password (if any) replaced by ***: a driver's message may quote it. */
export function withoutPassword(text: string, url: string): string {
  let password = '';
  try {
    password = decodeURIComponent(new URL(url).password);
  } catch {
    password = '';
  }
  return password === '' ? text : text.split(password).join('***');
}

/** The WordPress database, opened read-only for the migration. */
export function openPluginDatabase(url: string): Knex {
  const quiet = () => undefined;
  return knex({
    client: 'mysql2',
    // A failed connection is thrown to the caller (and reported, password masked): not logged here too.
    log: { warn: quiet, error: quiet, deprecate: quiet, debug: quiet },
    // Dates as written: a zero date would otherwise become an invalid Date.
    connection: { uri: url, dateStrings: true, connectTimeout: 10_000 } as never,
    pool: {
      min: 0,
      max: 2,
      // Every statement on this connection is refused if it would write, whatever a bug tried.
      afterCreate: (connection: { query: (sql: string, done: (error: Error | null) => void) => void }, done: (error: Error | null, connection: unknown) => void) => {
        connection.query('SET SESSION TRANSACTION READ ONLY', (error) => done(error, connection));
      },
    },
  });
}

export class PluginTablesRepository {
  readonly requestsTable: string;
  readonly authTable: string;

  constructor(prefix: string) {
    if (!WORDPRESS_PREFIX.test(prefix)) throw new Error(`The WordPress table prefix must be letters, digits and underscores (got ${prefix}).`);
    this.requestsTable = `${prefix}tvs_parent_moodle_provisioning`;
    this.authTable = `${prefix}tvs_parent_moodle_provisioning_auth`;
  }

  /** Which of the two tables the database lacks (a wrong prefix or database). */
  async missingTables(db: Knex): Promise<string[]> {
    const wanted = [this.requestsTable, this.authTable];
    const found = (await db('information_schema.tables')
      .select({ name: 'table_name' })
      .whereRaw('table_schema = database()')
      .whereIn('table_name', wanted)) as Array<{ name: string }>;
    const names = new Set(found.map((r) => String(r.name)));
    return wanted.filter((t) => !names.has(t));
  }

  async requests(db: Knex): Promise<PluginRequestRow[]> {
    const rows = (await db(this.requestsTable).select([...REQUEST_COLUMNS]).orderBy('id')) as Row[];
    return rows.map((r) => ({
      id: Number(r.id),
      parentTitle: text(r.parent_title),
      parentFirstName: text(r.parent_fname),
      parentLastName: text(r.parent_sname),
      parentEmail: text(r.parent_email),
      children: [
        { firstName: text(r.child_fname), lastName: text(r.child_sname), tutorGroup: text(r.child_tg) },
        { firstName: text(r.child2_fname), lastName: text(r.child2_sname), tutorGroup: text(r.child2_tg) },
        { firstName: text(r.child3_fname), lastName: text(r.child3_sname), tutorGroup: text(r.child3_tg) },
      ].filter((c) => c.firstName.trim() !== '' || c.lastName.trim() !== ''),
      status: text(r.status).trim(),
      parentComment: text(r.parent_comment),
      staffComment: text(r.staff_comment),
      systemComment: text(r.system_comment),
      dateCreated: date(r.date_created),
      dateUpdated: date(r.date_updated),
      dateApproved: date(r.date_approved),
      provisionedUsername: text(r.provisioned_username),
      requestType: text(r.request_type),
    }));
  }

  async authRows(db: Knex): Promise<PluginAuthRow[]> {
    const rows = (await db(this.authTable).select([...AUTH_COLUMNS]).orderBy('id')) as Row[];
    return rows.map((r) => ({
      id: Number(r.id),
      username: text(r.username),
      parentTitle: text(r.parent_title),
      parentFirstName: text(r.parent_fname),
      parentLastName: text(r.parent_sname),
      parentEmail: text(r.parent_email),
      description: text(r.description),
      requestId: Number(r.request_id),
    }));
  }
}
