// A real HTTP stand-in for Moodle 5.1's REST web services over an in-memory site, answering exactly
// like the recordings in shared/moodle-contract, plus auth_db's user sync and fault injection for tests.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Knex } from 'knex';
import { prng } from './random';

// Deliberately not imported from the client: the double models Moodle, not our idea of it.
export const MOODLE_REST_PATH = '/webservice/rest/server.php';

/** The recordings name tokens `ws`, `admin`, `readonly` and `invalid`; these are the double's values for them. */
export const DOUBLE_TOKENS = {
  ws: 'ws-token-5f0c9e2a7b1d4c3e8a6f0b1c',
  admin: 'admin-token-9b8e7d6c5a4f3e2d1c0b9a8f',
  readonly: 'readonly-token-1a2b3c4d5e6f7a8b9c0d',
  /** Never registered: every call with it gets invalidtoken. */
  invalid: 'invalid-token-0f9e8d7c6b5a4f3e2d1c',
} as const;
export type DoubleTokenName = keyof typeof DOUBLE_TOKENS;

export const CONTEXT_LEVELS: Readonly<Record<string, number>> = {
  system: 10,
  user: 30,
  coursecat: 40,
  course: 50,
  module: 70,
  block: 80,
};

const ALL_CAPABILITIES = [
  'webservice/rest:use',
  'moodle/role:assign',
  'moodle/user:viewdetails',
  'moodle/user:viewalldetails',
  'moodle/user:viewhiddendetails',
  'moodle/user:update',
];
const CAPABILITY_DESCRIPTIONS: Record<string, string> = {
  'moodle/role:assign': 'Assign roles to users',
  'moodle/user:update': 'Update user profiles',
  'moodle/user:viewdetails': 'View user profiles',
};

/** Functions that exist in this Moodle (a function outside this list gets invalidrecordunknown). */
const EXISTING_FUNCTIONS = new Set([
  'core_webservice_get_site_info',
  'core_user_get_users_by_field',
  'core_user_get_users',
  'core_role_assign_roles',
  'core_role_unassign_roles',
  'core_user_update_users',
  'core_user_create_users',
  'core_course_get_courses',
]);

/** The service's function list in the recordings (site-info.ok). */
export const RECORDED_SERVICE_FUNCTIONS = [
  'core_webservice_get_site_info',
  'core_user_get_users_by_field',
  'core_user_get_users',
  'core_role_assign_roles',
  'core_role_unassign_roles',
  'core_user_update_users',
  'core_user_create_users',
];

const MOODLE_VERSION = '2025100600';
const IMAGE_REVISION = '1795300852';

export interface DoubleUser {
  id: number;
  username: string;
  firstname: string;
  lastname: string;
  email: string;
  department: string;
  idnumber: string;
  auth: string;
  suspended: boolean;
  deleted: boolean;
  confirmed: boolean;
  /** 1: everyone may see the address; 2: course members only, so the service user does not see it. */
  maildisplay: 1 | 2;
  preferences: Array<{ name: string; value: string | number }>;
  /** A new account made by the sync, whose "new user password" email is still due. */
  createPassword: boolean;
}

export interface DoubleContext {
  id: number;
  contextlevel: number;
  instanceid: number;
}

export interface DoubleRole {
  id: number;
  shortname: string;
  /** Context levels where the role may be assigned. */
  contextlevels: number[];
}

export interface DoubleRoleAssignment {
  roleid: number;
  userid: number;
  contextid: number;
}

export interface TokenProfile {
  userid: number;
  siteAdmin: boolean;
  capabilities: Set<string>;
  /** "Allow role assignments" for the token user's role. */
  assignableRoleIds: Set<number>;
}

/** The in-memory Moodle: users, contexts, roles, role assignments, tokens and the service's functions. */
export class MoodleSiteState {
  readonly users = new Map<number, DoubleUser>();
  readonly contexts = new Map<number, DoubleContext>();
  readonly roles = new Map<number, DoubleRole>();
  assignments: DoubleRoleAssignment[] = [];
  readonly tokens = new Map<string, TokenProfile>();
  serviceFunctions: string[] = [...RECORDED_SERVICE_FUNCTIONS];
  /** Usernames whose new-user password email the password task has "sent". */
  readonly passwordEmailsSent: string[] = [];
  private nextContextId = 2;

  constructor() {
    this.contexts.set(1, { id: 1, contextlevel: CONTEXT_LEVELS.system ?? 10, instanceid: 0 });
  }

  /** Adds a user (next free id unless given) with its user context. */
  addUser(fields: Partial<DoubleUser> & { username: string }): DoubleUser {
    const id = fields.id ?? Math.max(0, ...this.users.keys()) + 1;
    const user: DoubleUser = {
      id,
      username: fields.username,
      firstname: fields.firstname ?? '',
      lastname: fields.lastname ?? '',
      email: fields.email ?? '',
      department: fields.department ?? '',
      idnumber: fields.idnumber ?? '',
      auth: fields.auth ?? 'manual',
      suspended: fields.suspended ?? false,
      deleted: fields.deleted ?? false,
      confirmed: fields.confirmed ?? true,
      maildisplay: fields.maildisplay ?? 2,
      preferences: fields.preferences ?? [],
      createPassword: fields.createPassword ?? false,
    };
    this.users.set(id, user);
    const contextId = this.nextContextId++;
    this.contexts.set(contextId, { id: contextId, contextlevel: CONTEXT_LEVELS.user ?? 30, instanceid: id });
    return user;
  }

  /**
   * Deletes a user as Moodle's delete_user() does: the record stays, flagged, its username becomes
   * "<email>.<unix time>", its email the md5 of the old username and its idnumber empty
   * (users-by-field.id-deleted-user), and its roles go. Its user context is made again on first use,
   * so a role assignment there is still accepted (assign.deleted-user-context).
   */
  deleteUser(id: number, atSeconds: number = Math.floor(Date.now() / 1000)): void {
    const user = this.users.get(id);
    if (user === undefined || user.deleted) return;
    const context = this.userContext(id);
    this.assignments = this.assignments.filter((a) => a.userid !== id && a.contextid !== context?.id);
    const { username, email } = user;
    user.deleted = true;
    user.username = cleanUsername(`${email}.${atSeconds}`);
    user.email = createHash('md5').update(username).digest('hex');
    user.idnumber = '';
  }

  /**
   * Suspends or reactivates a user as an admin (or the MIS sync) does in Moodle: the record and its
   * roles stay, and look-ups return it with `suspended: true`.
   */
  setSuspended(id: number, suspended: boolean): void {
    const user = this.users.get(id);
    if (user === undefined || user.deleted) throw new Error(`user ${id} does not exist`);
    user.suspended = suspended;
  }

  /** Removes a Parent (or any) role from a user context by hand, as an admin on the role page does. */
  removeUserContextRole(roleid: number, userid: number, pupilId: number): void {
    const context = this.userContext(pupilId);
    this.assignments = this.assignments.filter((a) => !(a.roleid === roleid && a.userid === userid && a.contextid === context?.id));
  }

  userByUsername(username: string): DoubleUser | undefined {
    return [...this.users.values()].find((u) => u.username === username && !u.deleted);
  }

  userContext(userid: number): DoubleContext | undefined {
    return [...this.contexts.values()].find((c) => c.contextlevel === CONTEXT_LEVELS.user && c.instanceid === userid);
  }

  addToken(token: string, profile: TokenProfile): void {
    this.tokens.set(token, profile);
  }

  /** Is `userid` given `roleid` in the user context of `pupilId`? */
  hasUserContextRole(roleid: number, userid: number, pupilId: number): boolean {
    const context = this.userContext(pupilId);
    return context !== undefined && this.assignments.some((a) => a.roleid === roleid && a.userid === userid && a.contextid === context.id);
  }

  addUserContextRole(roleid: number, userid: number, pupilId: number): void {
    const context = this.userContext(pupilId);
    if (context === undefined) throw new Error(`user ${pupilId} has no context`);
    if (!this.hasUserContextRole(roleid, userid, pupilId)) this.assignments.push({ roleid, userid, contextid: context.id });
  }

  removeServiceFunction(name: string): void {
    this.serviceFunctions = this.serviceFunctions.filter((f) => f !== name);
  }
}

/** The site the recordings were made on (users 1..10 as users.unknown-key shows them). */
export function seedRecordedSite(): MoodleSiteState {
  const state = new MoodleSiteState();
  state.addUser({ id: 1, username: 'guest', firstname: 'Guest user', lastname: ' ', email: 'root@localhost' });
  state.addUser({ id: 2, username: 'admin', firstname: 'Admin', lastname: 'User', email: 'admin@example.com', maildisplay: 1 });
  state.addUser({ id: 3, username: 'pupil.a', firstname: 'Ann', lastname: 'Pupil', email: 'pupil.a@example.com', department: '7B', idnumber: 'ADM1001' });
  state.addUser({ id: 4, username: 'pupil.b', firstname: 'Bob', lastname: 'Pupil', email: 'pupil.b@example.com', department: '9C', idnumber: 'ADM1002' });
  state.addUser({
    id: 5,
    username: 'wsprov',
    firstname: 'WS',
    lastname: 'Provisioner',
    email: 'wsprov@example.com',
    preferences: [
      { name: 'auth_manual_passwordupdatetime', value: '1795300821' },
      { name: 'last_time_enrolments_synced', value: '1795300828' },
      { name: 'login_failed_count_since_success', value: '1' },
    ],
  });
  state.addUser({ id: 6, username: 'parent.one', firstname: 'Pat', lastname: 'One', email: 'pat.one@example.com', idnumber: 'P1', auth: 'db' });
  state.addUser({ id: 7, username: 'parent.two', firstname: 'Pam', lastname: 'Two', email: 'pam.two@example.com', idnumber: 'P2', auth: 'db' });
  state.addUser({ id: 8, username: 'parent.three', firstname: 'Pia', lastname: 'Three', email: 'pia.three@example.com', auth: 'db', suspended: true });
  state.addUser({ id: 9, username: 'pupil.a2', firstname: 'Ann', lastname: 'Pupil', email: 'pupil.a2@example.com', department: '10A', idnumber: 'ADM1003' });
  state.addUser({ id: 10, username: 'wsreadonly', firstname: 'WS', lastname: 'ReadOnly', email: 'wsreadonly@example.com' });

  state.roles.set(9, { id: 9, shortname: 'parent', contextlevels: [CONTEXT_LEVELS.user ?? 30] });
  state.roles.set(5, { id: 5, shortname: 'student', contextlevels: [CONTEXT_LEVELS.course ?? 50, CONTEXT_LEVELS.module ?? 70] });

  addRecordedTokens(state, { ws: 5, admin: 2, readonly: 10 });
  return state;
}

/**
 * The recorded tokens for the given token users. `readonly` is a user whose role has only
 * webservice/rest:use: no moodle/role:assign and no moodle/user:viewdetails, so it sees no other
 * user (assign.no-capability, users-by-field.readonly-token).
 */
function addRecordedTokens(state: MoodleSiteState, users: Record<'ws' | 'admin' | 'readonly', number>): void {
  state.addToken(DOUBLE_TOKENS.ws, { userid: users.ws, siteAdmin: false, capabilities: new Set(ALL_CAPABILITIES), assignableRoleIds: new Set([9]) });
  state.addToken(DOUBLE_TOKENS.admin, { userid: users.admin, siteAdmin: true, capabilities: new Set(ALL_CAPABILITIES), assignableRoleIds: new Set() });
  state.addToken(DOUBLE_TOKENS.readonly, {
    userid: users.readonly,
    siteAdmin: false,
    capabilities: new Set(['webservice/rest:use']),
    assignableRoleIds: new Set([9]),
  });
}

/**
 * The second install the later recordings were made on (shared/moodle-contract/README.md, "Added
 * later"): pupil.a is id 6, parent.one id 9, and pupil.leaver (id 64) exists until a test deletes it.
 * The service user there may see email addresses.
 */
export function seedSecondRecordedSite(): MoodleSiteState {
  const state = new MoodleSiteState();
  state.addUser({ id: 1, username: 'guest', firstname: 'Guest user', lastname: ' ', email: 'root@localhost' });
  state.addUser({ id: 2, username: 'admin', firstname: 'Admin', lastname: 'User', email: 'admin@example.org', maildisplay: 1 });
  state.addUser({ id: 3, username: 'wsprov', firstname: 'WS', lastname: 'Provisioner', email: 'wsprov@example.org' });
  state.addUser({ id: 4, username: 'wsreadonly', firstname: 'WS', lastname: 'ReadOnly', email: 'wsreadonly@example.org' });
  const pupil = (id: number, username: string, firstname: string, lastname: string, department: string, idnumber: string) =>
    state.addUser({ id, username, firstname, lastname, email: `${username}@example.org`, department, idnumber, maildisplay: 1 });
  pupil(6, 'pupil.a', 'Alice', 'Pupil', '7B', 'ADM1001');
  pupil(7, 'pupil.b', 'Bob', 'Pupil', '9C', 'ADM1002');
  pupil(8, 'pupil.a2', 'Alice', 'Pupil', '10A', 'ADM1003');
  state.addUser({ id: 9, username: 'parent.one', firstname: 'Pat', lastname: 'One', email: 'parent.one@example.org', auth: 'db', maildisplay: 1 });
  pupil(64, 'pupil.leaver', 'Dora', 'Deleted', '8D', 'ADM9498');
  state.roles.set(9, { id: 9, shortname: 'parent', contextlevels: [CONTEXT_LEVELS.user ?? 30] });
  state.roles.set(5, { id: 5, shortname: 'student', contextlevels: [CONTEXT_LEVELS.course ?? 50, CONTEXT_LEVELS.module ?? 70] });
  addRecordedTokens(state, { ws: 3, admin: 2, readonly: 4 });
  return state;
}

// ---------------------------------------------------------------------------------------------
// Moodle's errors, with the exception class strings and messages of the recordings.

class WsError extends Error {
  constructor(
    readonly exception: string,
    readonly errorcode: string,
    message: string,
  ) {
    super(message);
  }
}

const invalidParameter = () =>
  new WsError('core\\exception\\invalid_parameter_exception', 'invalidparameter', 'Invalid parameter value detected');
const invalidToken = () => new WsError('core\\exception\\moodle_exception', 'invalidtoken', 'Invalid token - token not found');
const unknownFunction = () => new WsError('dml_missing_record_exception', 'invalidrecordunknown', "Can't find data record in database.");
const accessException = () => new WsError('webservice_access_exception', 'accessexception', 'Access control exception');
const codingError = (what: string) =>
  new WsError('core\\exception\\coding_exception', 'codingerror', `Coding error detected, it must be fixed by a programmer: ${what}`);
const noPermission = (capability: string) =>
  new WsError(
    'core\\exception\\required_capability_exception',
    'nopermissions',
    `Sorry, but you do not currently have permissions to do that (${CAPABILITY_DESCRIPTIONS[capability] ?? capability}).`,
  );

// ---------------------------------------------------------------------------------------------
// PHP-style form fields (`assignments[0][roleid]=9`) into nested values, and Moodle's parameter types.

type PhpValue = string | PhpArray;
interface PhpArray {
  [key: string]: PhpValue;
}

export function parsePhpForm(pairs: Iterable<[string, string]>): PhpArray {
  const root: PhpArray = Object.create(null) as PhpArray;
  for (const [rawKey, value] of pairs) {
    const m = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(rawKey);
    if (m === null || m[1] === undefined) {
      root[rawKey] = value;
      continue;
    }
    const path = [m[1], ...[...(m[2] ?? '').matchAll(/\[([^[\]]*)\]/g)].map((x) => x[1] ?? '')];
    let node = root;
    path.forEach((segment, index) => {
      const key = segment === '' ? String(Object.keys(node).length) : segment;
      if (index === path.length - 1) {
        node[key] = value;
      } else {
        const next = node[key];
        if (next === undefined || typeof next === 'string') node[key] = Object.create(null) as PhpArray;
        node = node[key] as PhpArray;
      }
    });
  }
  return root;
}

function asList(value: PhpValue | undefined): PhpValue[] {
  if (value === undefined || typeof value === 'string') throw invalidParameter();
  return Object.values(value);
}

/** A single structure: unexpected keys and missing required ones are refused, as Moodle does. */
function asStruct(value: PhpValue | undefined, required: string[], optional: string[]): PhpArray {
  if (value === undefined || typeof value === 'string') throw invalidParameter();
  const allowed = new Set([...required, ...optional]);
  for (const key of Object.keys(value)) if (!allowed.has(key)) throw invalidParameter();
  for (const key of required) if (value[key] === undefined) throw invalidParameter();
  return value;
}

function asInt(value: PhpValue | undefined): number {
  if (typeof value !== 'string' || !/^-?\d+$/.test(value)) throw invalidParameter();
  return Number(value);
}

function asOptionalInt(value: PhpValue | undefined): number | undefined {
  return value === undefined ? undefined : asInt(value);
}

function asAlpha(value: PhpValue | undefined): string {
  if (typeof value !== 'string' || !/^[a-zA-Z]*$/.test(value)) throw invalidParameter();
  return value;
}

function asRaw(value: PhpValue | undefined): string {
  if (typeof value !== 'string') throw invalidParameter();
  return value;
}

/** PARAM_BOOL over REST: 0 or 1; the word "true" is refused (bool-param.true-word). */
function asBool(value: PhpValue | undefined): boolean {
  if (value !== '0' && value !== '1') throw invalidParameter();
  return value === '1';
}

/** Moodle's default PARAM_USERNAME cleaning. */
function cleanUsername(value: string): string {
  return value.trim().toLowerCase().replace(/[^-.@_a-z0-9]/g, '');
}

const EMAIL =
  /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/i;

/** PHP's empty(): '', '0', 0, null and missing are all "empty". */
function phpEmpty(value: unknown): boolean {
  return value === undefined || value === null || value === '' || value === '0' || value === 0 || value === false;
}

/** SQL LIKE, case-insensitive (Moodle's sql_like(..., false)): % any run, _ one character. */
/** Compiled LIKE patterns: a search compares one pattern with every user, so it is compiled once. */
const likePatterns = new Map<string, RegExp>();

function like(value: string, pattern: string): boolean {
  let compiled = likePatterns.get(pattern);
  if (compiled === undefined) {
    let source = '';
    for (let i = 0; i < pattern.length; i++) {
      const ch = pattern[i] as string;
      if (ch === '\\' && i + 1 < pattern.length) source += escapeRegExp(pattern[++i] as string);
      else if (ch === '%') source += '.*';
      else if (ch === '_') source += '.';
      else source += escapeRegExp(ch);
    }
    compiled = new RegExp(`^${source}$`, 'is');
    if (likePatterns.size >= 1000) likePatterns.clear();
    likePatterns.set(pattern, compiled);
  }
  return compiled.test(value);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---------------------------------------------------------------------------------------------
// The web service functions.

interface CallContext {
  state: MoodleSiteState;
  params: PhpArray;
  token: TokenProfile;
  viewer: DoubleUser | undefined;
  siteUrl: string;
}

/** What user_get_user_details returns to the service user, field for field as in the recordings. */
function userDetails(user: DoubleUser, ctx: CallContext): Record<string, unknown> {
  const self = ctx.viewer?.id === user.id;
  const details: Record<string, unknown> = {
    id: user.id,
    username: user.username,
    firstname: user.firstname,
    lastname: user.lastname,
    fullname: `${user.firstname} ${user.lastname}`,
  };
  if (user.email !== '' && (self || ctx.token.siteAdmin || user.maildisplay === 1)) details.email = user.email;
  details.department = user.department;
  if (user.idnumber !== '') details.idnumber = user.idnumber;
  Object.assign(details, {
    firstaccess: 0,
    lastaccess: 0,
    auth: user.auth,
    suspended: user.suspended,
    confirmed: user.confirmed,
    lang: 'en',
    theme: '',
    timezone: '99',
    mailformat: 1,
    trackforums: 0,
    profileimageurlsmall: `${ctx.siteUrl}/theme/image.php/boost/core/${IMAGE_REVISION}/u/f2`,
    profileimageurl: `${ctx.siteUrl}/theme/image.php/boost/core/${IMAGE_REVISION}/u/f1`,
  });
  if (self) {
    details.preferences = [...user.preferences, { name: '_lastloaded', value: Math.floor(Date.now() / 1000) }];
  }
  return details;
}

/**
 * Whether the token's user sees this user at all: without moodle/user:viewdetails it sees only
 * itself, and other users are left out as if they did not exist (users-by-field.readonly-token).
 */
function canSee(ctx: CallContext, user: DoubleUser): boolean {
  return ctx.viewer?.id === user.id || ctx.token.siteAdmin || ctx.token.capabilities.has('moodle/user:viewdetails');
}

function requireCapability(ctx: CallContext, capability: string): void {
  if (!ctx.token.siteAdmin && !ctx.token.capabilities.has(capability)) throw noPermission(capability);
}

function getSiteInfo(ctx: CallContext): unknown {
  const user = ctx.viewer;
  if (user === undefined) throw invalidToken();
  return {
    sitename: 'Test School Moodle',
    username: user.username,
    firstname: user.firstname,
    lastname: user.lastname,
    fullname: `${user.firstname} ${user.lastname}`,
    lang: 'en',
    userid: user.id,
    siteurl: ctx.siteUrl,
    userpictureurl: `${ctx.siteUrl}/theme/image.php/boost/core/${IMAGE_REVISION}/u/f1`,
    functions: ctx.state.serviceFunctions.map((name) => ({ name, version: MOODLE_VERSION })),
    downloadfiles: 0,
    uploadfiles: 0,
    release: '5.1 (Build: 20251006)',
    version: MOODLE_VERSION,
    mobilecssurl: '',
    advancedfeatures: [
      ['usecomments', 1],
      ['usetags', 1],
      ['enablenotes', 1],
      ['messaging', 1],
      ['enableblogs', 1],
      ['enablecompletion', 1],
      ['enablebadges', 1],
      ['messagingallusers', 0],
      ['enablecustomreports', 1],
      ['enableglobalsearch', 0],
      ['mnet_dispatcher_mode', 0],
      ['enablecompetencies', 1],
    ].map(([name, value]) => ({ name, value })),
    usercanmanageownfiles: true,
    userquota: 104857600,
    usermaxuploadfilesize: 2097152,
    userhomepage: 1,
    userprivateaccesskey: randomBytes(16).toString('hex'),
    siteid: 1,
    sitecalendartype: 'gregorian',
    usercalendartype: 'gregorian',
    userissiteadmin: ctx.token.siteAdmin,
    theme: 'boost',
    limitconcurrentlogins: 0,
    policyagreed: 0,
  };
}

function getUsersByField(ctx: CallContext): unknown {
  const params = asStruct(ctx.params, ['field', 'values'], []);
  const field = asAlpha(params.field);
  const values = asList(params.values).map(asRaw);
  if (!['id', 'idnumber', 'username', 'email'].includes(field)) throw codingError('invalid field parameter');
  // One value not in Moodle's cleaned form fails the whole call (users-by-field.uppercase-value).
  for (const value of values) {
    const cleaned =
      field === 'id' ? String(Number.parseInt(value, 10) || 0) : field === 'username' ? cleanUsername(value) : field === 'email' ? (EMAIL.test(value) ? value : '') : value;
    if (cleaned !== value) throw invalidParameter();
  }
  const wanted = new Set(field === 'email' ? values.map((v) => v.toLowerCase()) : values);
  // A deleted user is not filtered out here: by id it still comes back, renamed by delete_user()
  // (users-by-field.id-deleted-user); by its old username, email or idnumber it is not found.
  const users = [...ctx.state.users.values()]
    .filter((u) => canSee(ctx, u))
    .filter((u) => {
      const own = field === 'id' ? String(u.id) : field === 'email' ? u.email.toLowerCase() : u[field as 'idnumber' | 'username'];
      return wanted.has(own);
    })
    .sort((a, b) => a.id - b.id)
    .map((u) => userDetails(u, ctx));
  // Moodle returns a user only when the searched field is visible to the caller (a hidden email is not).
  return users.filter((details) => !phpEmpty(details[field]));
}

const SEARCH_KEYS_EXACT = new Set(['id', 'idnumber', 'username', 'auth']);
const SEARCH_KEYS_LIKE = new Set(['email', 'lastname', 'firstname']);

function getUsers(ctx: CallContext): unknown {
  const params = asStruct(ctx.params, ['criteria'], []);
  const criteria = asList(params.criteria).map((c) => {
    const s = asStruct(c, ['key', 'value'], []);
    return { key: asAlpha(s.key), value: asRaw(s.value) };
  });
  const warnings: Array<{ item: string; warningcode: string; message: string }> = [];
  const used = new Set<string>();
  const applied: Array<{ key: string; value: string }> = [];
  for (const criterion of criteria) {
    if (used.has(criterion.key)) throw new WsError('core\\exception\\moodle_exception', 'keyalreadyset', 'error/keyalreadyset');
    used.add(criterion.key);
    if (SEARCH_KEYS_EXACT.has(criterion.key) || SEARCH_KEYS_LIKE.has(criterion.key)) {
      applied.push(criterion);
    } else {
      // An unsupported key is ignored, with a warning: the search then returns everyone (users.unknown-key).
      warnings.push({
        item: criterion.key,
        warningcode: 'invalidfieldparameter',
        message: `The search key '${criterion.key}' is not supported, look at the web service documentation`,
      });
    }
  }
  const field = (u: DoubleUser, key: string): string => (key === 'id' ? String(u.id) : String(u[key as keyof DoubleUser]));
  const users = [...ctx.state.users.values()]
    .filter((u) => !u.deleted && canSee(ctx, u))
    .filter((u) => applied.every((c) => (SEARCH_KEYS_LIKE.has(c.key) ? like(field(u, c.key), c.value) : field(u, c.key) === c.value)))
    .sort((a, b) => a.id - b.id)
    .map((u) => userDetails(u, ctx))
    .filter((details) => applied.every((c) => !phpEmpty(details[c.key])));
  return { users, warnings };
}

interface ParsedAssignment {
  roleid: number;
  userid: number;
  contextid: number | undefined;
  contextlevel: string | undefined;
  instanceid: number | undefined;
}

function parseAssignments(ctx: CallContext, field: string): ParsedAssignment[] {
  const params = asStruct(ctx.params, [field], []);
  return asList(params[field]).map((item) => {
    const a = asStruct(item, ['roleid', 'userid'], ['contextid', 'contextlevel', 'instanceid']);
    return {
      roleid: asInt(a.roleid),
      userid: asInt(a.userid),
      contextid: asOptionalInt(a.contextid),
      contextlevel: a.contextlevel === undefined ? undefined : asAlpha(a.contextlevel),
      instanceid: asOptionalInt(a.instanceid),
    };
  });
}

function resolveContext(state: MoodleSiteState, a: ParsedAssignment): DoubleContext {
  if (a.contextid !== undefined && a.contextid !== 0) {
    const context = state.contexts.get(a.contextid);
    if (context === undefined) throw invalidParameter();
    return context;
  }
  if (a.contextlevel !== undefined && a.instanceid !== undefined) {
    const level = CONTEXT_LEVELS[a.contextlevel];
    if (level === undefined) throw invalidParameter();
    const context = [...state.contexts.values()].find((c) => c.contextlevel === level && c.instanceid === a.instanceid);
    if (context === undefined) throw invalidParameter();
    return context;
  }
  throw invalidParameter();
}

function checkAssignable(ctx: CallContext, a: ParsedAssignment): DoubleContext {
  const context = resolveContext(ctx.state, a);
  requireCapability(ctx, 'moodle/role:assign');
  const role = ctx.state.roles.get(a.roleid);
  const assignable =
    role !== undefined &&
    role.contextlevels.includes(context.contextlevel) &&
    (ctx.token.siteAdmin || ctx.token.assignableRoleIds.has(a.roleid));
  if (!assignable) throw invalidParameter();
  return context;
}

/** One transaction: every assignment lands, or none does (assign.batch-one-bad). */
function assignRoles(ctx: CallContext): unknown {
  const assignments = parseAssignments(ctx, 'assignments');
  const staged = [...ctx.state.assignments];
  for (const a of assignments) {
    const context = checkAssignable(ctx, a);
    const user = ctx.state.users.get(a.userid);
    if (user === undefined || user.deleted) throw codingError('User ID does not exist or is deleted!');
    const exists = staged.some((r) => r.roleid === a.roleid && r.userid === a.userid && r.contextid === context.id);
    if (!exists) staged.push({ roleid: a.roleid, userid: a.userid, contextid: context.id });
  }
  ctx.state.assignments = staged;
  return null;
}

function unassignRoles(ctx: CallContext): unknown {
  const unassignments = parseAssignments(ctx, 'unassignments');
  let staged = [...ctx.state.assignments];
  for (const a of unassignments) {
    const context = checkAssignable(ctx, a);
    // Removing what is not there is a silent no-op (unassign.not-assigned).
    staged = staged.filter((r) => !(r.roleid === a.roleid && r.userid === a.userid && r.contextid === context.id));
  }
  ctx.state.assignments = staged;
  return null;
}

function updateUsers(ctx: CallContext): unknown {
  const params = asStruct(ctx.params, ['users'], []);
  const updates = asList(params.users).map((item) => {
    const u = asStruct(item, ['id'], ['username', 'firstname', 'lastname', 'email', 'department', 'idnumber', 'auth', 'suspended']);
    return {
      id: asInt(u.id),
      username: u.username === undefined ? undefined : asRaw(u.username),
      firstname: u.firstname === undefined ? undefined : asRaw(u.firstname),
      lastname: u.lastname === undefined ? undefined : asRaw(u.lastname),
      email: u.email === undefined ? undefined : asRaw(u.email),
      department: u.department === undefined ? undefined : asRaw(u.department),
      idnumber: u.idnumber === undefined ? undefined : asRaw(u.idnumber),
      auth: u.auth === undefined ? undefined : asRaw(u.auth),
      suspended: u.suspended === undefined ? undefined : asBool(u.suspended),
    };
  });
  requireCapability(ctx, 'moodle/user:update');
  const warnings: Array<{ item: string; itemid: number; warningcode: string; message: string }> = [];
  for (const update of updates) {
    const user = ctx.state.users.get(update.id);
    if (user === undefined || user.deleted) {
      warnings.push({ item: 'user', itemid: update.id, warningcode: 'invaliduserid', message: 'Invalid user ID' });
      continue;
    }
    for (const key of ['username', 'firstname', 'lastname', 'email', 'department', 'idnumber', 'auth'] as const) {
      const value = update[key];
      if (value !== undefined) user[key] = value;
    }
    if (update.suspended !== undefined) user.suspended = update.suspended;
  }
  return { warnings };
}

const HANDLERS: Record<string, (ctx: CallContext) => unknown> = {
  core_webservice_get_site_info: getSiteInfo,
  core_user_get_users_by_field: getUsersByField,
  core_user_get_users: getUsers,
  core_role_assign_roles: assignRoles,
  core_role_unassign_roles: unassignRoles,
  core_user_update_users: updateUsers,
};

// ---------------------------------------------------------------------------------------------
// auth_db's user sync and the new-user password task, printing what Moodle's CLI prints.

export interface AuthTableRow {
  username: string;
  firstname?: string | null;
  lastname?: string | null;
  email?: string | null;
}

const SYNC_TASK = 'Synchronise users task (auth_db\\task\\sync_users)';
const PASSWORD_TASK = 'Send new user passwords (core\\task\\send_new_user_passwords_task)';

function taskStart(task: string): string[] {
  const time = new Date().toTimeString().slice(0, 8);
  return [`Execute scheduled task: ${task}`, `... started ${time}. Current memory use 12.9\u00a0MB.`];
}

function taskUsage(queries: number): string[] {
  return [`... used ${queries} dbqueries`, '... used 0.031149864196777 seconds', '... used 18.4\u00a0MB peak memory'];
}

/**
 * auth_db's sync_users with "removed users: suspend": suspends db users whose row is gone (all of
 * them when the table is empty), revives suspended ones whose row is back, creates the rest; a
 * username that is not clean (lower-case) is skipped with "Error inserting user".
 */
export function applyAuthDbSync(state: MoodleSiteState, rows: AuthTableRow[]): string[] {
  const lines: string[] = [];
  const listed = rows.map((r) => r.username);
  const listedSet = new Set(listed);
  const dbUsers = () => [...state.users.values()].filter((u) => u.auth === 'db' && !u.deleted);

  const toRemove = dbUsers()
    .filter((u) => !u.suspended && !listedSet.has(u.username))
    .sort((a, b) => a.id - b.id);
  if (toRemove.length > 0) {
    lines.push(`User entries to remove: ${toRemove.length}`);
    for (const user of toRemove) {
      user.suspended = true;
      lines.push(`  Suspended user ${user.username} id ${user.id}`);
    }
  }
  if (listed.length === 0) return lines;

  const active = new Set(dbUsers().filter((u) => !u.suspended).map((u) => u.username));
  const toAdd = listed.filter((username, index) => !active.has(username) && listed.indexOf(username) === index);
  if (toAdd.length > 0) {
    lines.push(`User entries to add: ${toAdd.length}`);
    for (const username of toAdd) {
      const old = dbUsers().find((u) => u.username === username && u.suspended);
      if (old !== undefined) {
        old.suspended = false;
        lines.push(`  Revived user ${username} id ${old.id}`);
        continue;
      }
      const collision = state.userByUsername(username);
      if (collision !== undefined) {
        lines.push(`  Error inserting user ${username} - user with this username was already created through '${collision.auth}' plugin.`);
        continue;
      }
      if (cleanUsername(username) !== username || username === '') {
        lines.push(`  Error inserting user ${username}`);
        continue;
      }
      const row = rows.find((r) => r.username === username);
      const user = state.addUser({
        username,
        firstname: row?.firstname ?? '',
        lastname: row?.lastname ?? '',
        email: row?.email ?? '',
        auth: 'db',
        createPassword: true,
      });
      lines.push(`  Inserted user ${username} id ${user.id}`);
    }
  }
  return lines;
}

/** Errors of a database server that cannot be reached (as opposed to a table that is not there). */
const AUTH_DB_UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'ER_ACCESS_DENIED_ERROR', 'ER_BAD_DB_ERROR', 'PROTOCOL_CONNECTION_LOST']);

/** What `scheduled_task.php --execute='\auth_db\task\sync_users'` prints, reading the auth table. */
export async function syncFromAuthTable(state: MoodleSiteState, knex: Knex, authTable: string): Promise<string> {
  let rows: AuthTableRow[];
  try {
    // No ORDER BY, as auth_db's get_userlist: the table's own order.
    rows = (await knex(authTable).select('username', 'firstname', 'lastname', 'email')) as AuthTableRow[];
  } catch (error) {
    // A database that cannot be reached at all: what Moodle printed (sync-users.external-db-down),
    // PHP handing mysqli_query() the `false` of a failed connection.
    const unreachable = AUTH_DB_UNREACHABLE_CODES.has(String((error as { code?: unknown }).code));
    const reason = unreachable
      ? 'mysqli_query(): Argument #1 ($mysql) must be of type mysqli, bool given'
      : error instanceof Error
        ? error.message.split('\n')[0]
        : String(error);
    return [
      ...taskStart(SYNC_TASK),
      ...taskUsage(0),
      `Scheduled task failed: ${SYNC_TASK},${reason}`,
      'Backtrace:',
      ...(unreachable
        ? [
            '* line 1454 of /lib/adodb/drivers/adodb-mysqli.inc.php: call to mysqli_query()',
            '* line 1613 of /lib/adodb/adodb.inc.php: call to ADODB_mysqli->_query()',
            '* line 1195 of /lib/adodb/drivers/adodb-mysqli.inc.php: call to ADOConnection->_Execute()',
          ]
        : []),
      '* line 524 of /auth/db/auth.php: call to ADODB_mysqli->execute()',
      '* line 297 of /auth/db/auth.php: call to auth_plugin_db->get_userlist()',
      ...(unreachable
        ? [
            '* line 60 of /auth/db/classes/task/sync_users.php: call to auth_plugin_db->sync_users()',
            '* line 411 of /lib/classes/cron.php: call to auth_db\\task\\sync_users->execute()',
            '* line 194 of /var/www/moodle/admin/cli/scheduled_task.php: call to core\\cron::run_inner_scheduled_task()',
          ]
        : []),
      '',
    ].join('\n');
  }
  const changes = applyAuthDbSync(state, rows);
  return [...taskStart(SYNC_TASK), ...changes, ...taskUsage(10 + changes.length * 8), `Scheduled task complete: ${SYNC_TASK}`, ''].join('\n');
}

/** What the new-user password task prints; marks the due emails as sent. */
export function sendNewUserPasswords(state: MoodleSiteState): string {
  for (const user of state.users.values()) {
    if (user.createPassword && !user.deleted && !user.suspended) {
      user.createPassword = false;
      state.passwordEmailsSent.push(user.username);
    }
  }
  return [...taskStart(PASSWORD_TASK), 'Creating passwords for new users...', ...taskUsage(20), `Scheduled task complete: ${PASSWORD_TASK}`, ''].join('\n');
}

// ---------------------------------------------------------------------------------------------
// The HTTP server and fault injection.

/**
 * 5xx: HTTP 503 page. hang: never answered. garbage: an HTML login page with status 200.
 * echo: an HTML page that repeats the request body (token included), as a misconfigured proxy might.
 * reset: the connection is dropped.
 */
export type FaultKind = '5xx' | 'hang' | 'garbage' | 'echo' | 'reset';

export interface MoodleDoubleFaults {
  /** false: every call gets HTTP 403 with an empty body, as Moodle with web services off. */
  webServicesEnabled: boolean;
  /** Delay before every answer. */
  latencyMs: number;
  /** Share of calls (0..1) answered HTTP 503, drawn from a seeded generator so runs repeat. */
  errorRate: number;
  /** Share of calls (0..1) never answered. */
  hangRate: number;
  /** Every call answered with an HTML page instead of JSON. */
  garbage: boolean;
  /** Faults for the next calls, one per call, in order, before the rates apply. */
  next: FaultKind[];
}

export interface RecordedRequest {
  wsfunction: string;
  /** The raw request body. */
  form: string;
}

/** A call as the hooks see it: `index` is its position in `requests` (1 for the first since the last resetCounts). */
export interface DoubleCall {
  wsfunction: string;
  index: number;
}

/**
 * Points in a call's life where a test may act (stop the caller's process, hold the call, take a
 * database lock), each awaited before the call goes on. `received` and `handled` may return a fault
 * for this call instead of its normal course: at `received` Moodle has not acted yet, at `handled`
 * it has (a role assignment has landed) but the answer has not left.
 */
export interface MoodleDoubleHooks {
  received?: (call: DoubleCall) => Promise<FaultKind | void> | FaultKind | void;
  handled?: (call: DoubleCall) => Promise<'hang' | 'reset' | void> | 'hang' | 'reset' | void;
  /** The answer has been handed to the network. */
  answered?: (call: DoubleCall) => void;
}

export interface MoodleDoubleOptions {
  state?: MoodleSiteState;
  faults?: Partial<MoodleDoubleFaults>;
  /** Seed for errorRate / hangRate. */
  seed?: number;
  hooks?: MoodleDoubleHooks;
}

export interface MoodleDouble {
  /** The site address, as MOODLE_URL. */
  url: string;
  state: MoodleSiteState;
  tokens: typeof DOUBLE_TOKENS;
  /** Requests that reached the double, per wsfunction, faulted ones included. */
  counts: Record<string, number>;
  requests: RecordedRequest[];
  /** Requests for one function, or for all when none is named. */
  calls(wsfunction?: string): number;
  resetCounts(): void;
  setFaults(faults: Partial<MoodleDoubleFaults>): void;
  /** Replaces the hooks (undefined removes them). */
  setHooks(hooks: MoodleDoubleHooks | undefined): void;
  /**
   * Holds every call of one web service function until release(): `reached` settles when the
   * first arrives, so a test can look at the service while it waits. release() also lets the
   * held calls go on and stops holding.
   */
  holdCalls(wsfunction: string): { reached: Promise<void>; release(): void };
  /** Runs auth_db's sync against the service's auth table; returns what Moodle's CLI prints. */
  sync(knex: Knex, authTable: string): Promise<string>;
  sendNewUserPasswords(): string;
  close(): Promise<void>;
}

const LOGIN_PAGE =
  '<!DOCTYPE html>\n<html><head><title>Log in to the site</title></head>\n<body><form action="/login/index.php" method="post"></form></body></html>\n';

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function escapeHtml(text: string): string {
  return escapeXml(text).replace(/"/g, '&quot;');
}

export async function startMoodleDouble(options: MoodleDoubleOptions = {}): Promise<MoodleDouble> {
  const state = options.state ?? seedRecordedSite();
  const faults: MoodleDoubleFaults = {
    webServicesEnabled: true,
    latencyMs: 0,
    errorRate: 0,
    hangRate: 0,
    garbage: false,
    next: [],
    ...options.faults,
  };
  const random = prng(options.seed ?? 1);
  let hooks: MoodleDoubleHooks = options.hooks ?? {};
  const counts: Record<string, number> = {};
  const requests: RecordedRequest[] = [];
  let siteUrl = '';

  const pickFault = (): FaultKind | undefined => {
    const scripted = faults.next.shift();
    if (scripted !== undefined) return scripted;
    if (faults.garbage) return 'garbage';
    if (faults.errorRate > 0 && random() < faults.errorRate) return '5xx';
    if (faults.hangRate > 0 && random() < faults.hangRate) return 'hang';
    return undefined;
  };

  const answer = (res: http.ServerResponse, status: number, contentType: string, body: string) => {
    res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const address = new URL(req.url ?? '/', 'http://double');
    if (address.pathname !== MOODLE_REST_PATH) {
      answer(res, 404, 'text/html; charset=utf-8', '<html><body>Not found</body></html>');
      return;
    }
    // PHP fills $_POST only from a form body: a JSON body is not understood at all.
    const isForm = (req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded');
    const pairs: Array<[string, string]> = [...address.searchParams, ...(isForm ? new URLSearchParams(body) : [])];
    const params = parsePhpForm(pairs);
    const wsfunction = typeof params.wsfunction === 'string' ? params.wsfunction : '';
    counts[wsfunction] = (counts[wsfunction] ?? 0) + 1;
    requests.push({ wsfunction, form: body });
    const call: DoubleCall = { wsfunction, index: requests.length };
    const { answered } = hooks;
    if (answered !== undefined) res.once('finish', () => answered(call));
    const hooked = hooks.received === undefined ? undefined : ((await hooks.received(call)) ?? undefined);

    if (faults.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, faults.latencyMs));
    switch (hooked ?? pickFault()) {
      case 'hang':
        return;
      case 'reset':
        req.socket.destroy();
        return;
      case '5xx':
        answer(res, 503, 'text/html; charset=utf-8', '<html><body><h1>503 Service Unavailable</h1></body></html>');
        return;
      case 'garbage':
        answer(res, 200, 'text/html; charset=utf-8', LOGIN_PAGE);
        return;
      case 'echo':
        answer(res, 200, 'text/html; charset=utf-8', `<html><body><p>Request was: ${escapeHtml(body)}</p></body></html>`);
        return;
      case undefined:
        break;
    }
    if (!faults.webServicesEnabled) {
      answer(res, 403, 'text/html; charset=utf-8', '');
      return;
    }

    const json = params.moodlewsrestformat === 'json';
    /** The `handled` hook: true when it chose that this answer never leaves. */
    const answerLost = async (): Promise<boolean> => {
      const lost = await hooks.handled?.(call);
      if (lost === 'reset') req.socket.destroy();
      return lost === 'reset' || lost === 'hang';
    };
    try {
      const token = typeof params.wstoken === 'string' ? state.tokens.get(params.wstoken) : undefined;
      if (token === undefined) throw invalidToken();
      if (!EXISTING_FUNCTIONS.has(wsfunction)) throw unknownFunction();
      if (!state.serviceFunctions.includes(wsfunction)) throw accessException();
      const handler = HANDLERS[wsfunction];
      if (handler === undefined) {
        answer(res, 501, 'text/plain; charset=utf-8', `The Moodle double does not implement ${wsfunction}.`);
        return;
      }
      const functionParams: PhpArray = Object.create(null) as PhpArray;
      for (const [key, value] of Object.entries(params)) {
        if (key !== 'wstoken' && key !== 'wsfunction' && key !== 'moodlewsrestformat') functionParams[key] = value;
      }
      const ctx: CallContext = { state, params: functionParams, token, viewer: state.users.get(token.userid), siteUrl };
      const result = handler(ctx);
      if (hooks.handled !== undefined && (await answerLost())) return;
      if (!json) {
        answer(res, 501, 'text/plain; charset=utf-8', 'The Moodle double answers only moodlewsrestformat=json.');
        return;
      }
      answer(res, 200, 'application/json', JSON.stringify(result));
    } catch (error) {
      if (!(error instanceof WsError)) throw error;
      if (hooks.handled !== undefined && (await answerLost())) return;
      if (json) {
        answer(res, 200, 'application/json', JSON.stringify({ exception: error.exception, errorcode: error.errorcode, message: error.message }));
      } else {
        // Without moodlewsrestformat=json Moodle answers in XML.
        answer(
          res,
          200,
          'application/xml; charset=utf-8',
          `<?xml version="1.0" encoding="UTF-8" ?>\n<EXCEPTION class="${escapeXml(error.exception)}">\n` +
            `<ERRORCODE>${escapeXml(error.errorcode)}</ERRORCODE>\n<MESSAGE>${escapeXml(error.message)}</MESSAGE>\n</EXCEPTION>\n`,
        );
      }
    }
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) answer(res, 500, 'text/plain; charset=utf-8', `Moodle double failure: ${String(error)}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  siteUrl = `http://127.0.0.1:${port}`;

  return {
    url: siteUrl,
    state,
    tokens: DOUBLE_TOKENS,
    counts,
    requests,
    calls: (wsfunction?: string) =>
      wsfunction === undefined ? Object.values(counts).reduce((sum, n) => sum + n, 0) : (counts[wsfunction] ?? 0),
    resetCounts: () => {
      for (const key of Object.keys(counts)) delete counts[key];
      requests.length = 0;
    },
    setFaults: (changes: Partial<MoodleDoubleFaults>) => {
      Object.assign(faults, changes);
      if (changes.next !== undefined) faults.next = [...changes.next];
    },
    setHooks: (next: MoodleDoubleHooks | undefined) => {
      hooks = next ?? {};
    },
    holdCalls: (wsfunction: string) => {
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let arrived!: () => void;
      const reached = new Promise<void>((resolve) => (arrived = resolve));
      hooks = {
        received: async (call) => {
          if (call.wsfunction !== wsfunction) return;
          arrived();
          await gate;
        },
      };
      return {
        reached,
        release: () => {
          hooks = {};
          release();
        },
      };
    },
    sync: (knex: Knex, authTable: string) => syncFromAuthTable(state, knex, authTable),
    sendNewUserPasswords: () => sendNewUserPasswords(state),
    close: () =>
      new Promise<void>((resolve, reject) => {
        // Hanging requests would keep the server open for ever.
        server.closeAllConnections();
        server.close((error) => (error === undefined ? resolve() : reject(error)));
      }),
  };
}
