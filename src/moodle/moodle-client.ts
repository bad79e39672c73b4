// The one way this service talks to Moodle's REST web services: form-encoded calls, failures read
// from the answer body, a timeout on every call, retries for passing faults, batches that isolate a bad item.
import { z } from 'zod';
import { MoodleError, concernsOneItem, type MoodleErrorOptions } from './moodle-error';
import { nodeHttpFetch } from './node-http-fetch';

export const MOODLE_REST_PATH = '/webservice/rest/server.php';

export type MoodleParamValue =
  | string
  | number
  | boolean
  | null
  | undefined
  | readonly MoodleParamValue[]
  | { readonly [key: string]: MoodleParamValue };
export type MoodleParams = { readonly [key: string]: MoodleParamValue };

/** One HTTP attempt's result, for metrics: 'retried' and 'failed' are transport failures. */
export type MoodleCallOutcome = 'ok' | 'moodle_error' | 'retried' | 'failed';

/**
 * Told about every HTTP attempt. errorcode is Moodle's own for 'moodle_error', one of ours
 * (timeout, unreachable, …) for a transport failure, and undefined for 'ok'.
 */
export type MoodleCallListener = (wsfunction: string, outcome: MoodleCallOutcome, errorcode?: string) => void;

/** The part of a pino logger the client uses; log lines carry no token and no request body. */
export interface MoodleLogger {
  debug(details: Record<string, unknown>, message: string): void;
  warn(details: Record<string, unknown>, message: string): void;
}

export interface MoodleClientOptions {
  /** MOODLE_URL: the site's own address, without /webservice/... */
  url: string;
  token: string;
  timeoutMs: number;
  /** How many times a transient failure is tried again (0 = once only). */
  retries: number;
  /** How many values or assignments go into one call. */
  batchSize: number;
  /** How many batch calls (look-ups, role changes) may wait for Moodle at once; 1 sends them one after another. */
  concurrency?: number;
  /** First retry waits this long, then twice as long each time. Tests set it tiny. */
  retryDelayMs?: number;
  /** The HTTP round trip; node:http by default (see node-http-fetch.ts for why not the global fetch). */
  fetch?: typeof fetch;
  logger?: MoodleLogger;
  onCall?: MoodleCallListener;
}

export type UserLookupField = 'id' | 'idnumber' | 'username' | 'email';

/** The keys core_user_get_users supports; any other key is ignored by Moodle and returns every user. */
export type UserSearchKey = 'id' | 'idnumber' | 'username' | 'email' | 'auth' | 'firstname' | 'lastname';
export interface UserSearchCriterion {
  key: UserSearchKey;
  value: string;
}

export interface MoodleUser {
  id: number;
  username: string;
  firstname: string;
  lastname: string;
  fullname: string;
  /** Absent when Moodle hides the address from the service user. */
  email: string | undefined;
  /** The tutor group, in this school's Moodle. */
  department: string;
  /** The pupil identifier (admission number); '' when not set. */
  idnumber: string;
  auth: string | undefined;
  suspended: boolean;
}

export interface MoodleSiteInfo {
  sitename: string;
  siteurl: string;
  username: string;
  fullname: string;
  userid: number;
  release: string | undefined;
  version: string | undefined;
  userissiteadmin: boolean;
  /** The functions the token's service allows. */
  functions: string[];
}

export type MoodleContextLevel = 'system' | 'user' | 'coursecat' | 'course' | 'module' | 'block';

/**
 * A role assignment in a context named by level word and instance (Moodle refuses the numeric
 * level 30 for "user"), or by context id (for the configured extra contexts).
 */
export type RoleAssignment =
  | { roleid: number; userid: number; contextlevel: MoodleContextLevel; instanceid: number }
  | { roleid: number; userid: number; contextid: number };

/** The items as given (the same objects, so callers may look them up by identity). */
export interface IsolatedOutcome<T> {
  done: T[];
  failed: Array<{ assignment: T; error: MoodleError }>;
}

const DEFAULT_RETRY_DELAY_MS = 250;
/** How much of a non-Moodle answer to keep for IT; enough to recognise a login page. */
const BODY_SNIPPET_LENGTH = 300;

const userSchema = z.object({
  id: z.number().int(),
  username: z.string().optional(),
  firstname: z.string().optional(),
  lastname: z.string().optional(),
  fullname: z.string(),
  email: z.string().optional(),
  department: z.string().optional(),
  idnumber: z.string().optional(),
  auth: z.string().optional(),
  // Only shown to a service user with moodle/user:viewalldetails (the documented set-up has it).
  suspended: z.boolean().optional(),
});
const warningsSchema = z.array(
  z.object({ item: z.string().optional(), warningcode: z.string().optional(), message: z.string() }),
);
const usersListSchema = z.array(userSchema);
const usersSearchSchema = z.object({ users: z.array(userSchema), warnings: warningsSchema.optional() });
const siteInfoSchema = z.object({
  sitename: z.string(),
  siteurl: z.string(),
  username: z.string(),
  fullname: z.string(),
  userid: z.number().int(),
  release: z.string().optional(),
  version: z.string().optional(),
  userissiteadmin: z.boolean().optional(),
  functions: z.array(z.object({ name: z.string() })).optional(),
});
const roleChangeResultSchema = z.union([z.null(), z.object({ warnings: warningsSchema.optional() })]);

/** Builds the form body exactly as Moodle's recordings show: token, function, format, then PHP-style fields. */
export function encodeMoodleForm(token: string, wsfunction: string, params: MoodleParams): string {
  const form = new URLSearchParams();
  form.append('wstoken', token);
  form.append('wsfunction', wsfunction);
  form.append('moodlewsrestformat', 'json');
  for (const [key, value] of Object.entries(params)) appendParam(form, key, value);
  return form.toString();
}

function appendParam(form: URLSearchParams, key: string, value: MoodleParamValue): void {
  if (value === undefined || value === null) return;
  if (Array.isArray(value)) {
    value.forEach((item: MoodleParamValue, index: number) => appendParam(form, `${key}[${index}]`, item));
  } else if (typeof value === 'object') {
    for (const [k, v] of Object.entries(value as { readonly [key: string]: MoodleParamValue })) {
      appendParam(form, `${key}[${k}]`, v);
    }
  } else if (typeof value === 'boolean') {
    // Moodle's PARAM_BOOL refuses "true"/"false" (bool-param.true-word).
    form.append(key, value ? '1' : '0');
  } else {
    form.append(key, String(value));
  }
}

// Moodle's default PARAM_USERNAME: lower-case letters, digits and - . @ _ only.
const CLEAN_USERNAME = /^[a-z0-9._@-]+$/;
// Close to Moodle's validate_email; an address it would refuse fails the whole look-up call.
const CLEAN_EMAIL =
  /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/i;

/**
 * The form of a look-up value Moodle accepts, or undefined for a value no Moodle account can have.
 * Moodle fails the WHOLE core_user_get_users_by_field call for one value that is not in its cleaned
 * form (users-by-field.uppercase-value), so such a value must never be sent.
 */
export function normaliseLookupValue(field: UserLookupField, value: string | number): string | undefined {
  const text = String(value).trim();
  switch (field) {
    case 'id':
      return /^[1-9]\d*$/.test(text) ? text : undefined;
    case 'username': {
      const lower = text.toLowerCase();
      return CLEAN_USERNAME.test(lower) ? lower : undefined;
    }
    case 'email':
      return CLEAN_EMAIL.test(text) ? text : undefined;
    case 'idnumber':
      // PARAM_RAW: Moodle compares the value as given, so only an empty one is pointless.
      return String(value) === '' ? undefined : String(value);
  }
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Runs work(item) for every item, at most `concurrency` at a time, in order of starting. After a
 * failure no new item is started; those already started finish, then the first failure is thrown.
 */
export async function forEachConcurrently<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const item = items[next++] as T;
      try {
        await work(item);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(Math.floor(concurrency), items.length)) }, worker));
  if (failure !== undefined) throw failure.error;
}

/**
 * Sends items in batches of batchSize, up to `concurrency` batches at once. Moodle runs a role batch
 * in one transaction, so one bad item fails (and rolls back) its whole batch: a batch failing for one
 * item's sake is split in halves until each bad item is alone, and every good one lands; other
 * batches go on meanwhile. A clean batch costs one call; k bad items in a batch of n cost about
 * 2·k·log2(n) more. Failures that are not about one item are thrown (no new batch is started).
 */
export async function sendIsolated<T>(
  items: readonly T[],
  batchSize: number,
  send: (batch: T[]) => Promise<void>,
  concurrency = 1,
): Promise<IsolatedOutcome<T>> {
  const outcome: IsolatedOutcome<T> = { done: [], failed: [] };
  const attempt = async (batch: T[]): Promise<void> => {
    try {
      await send(batch);
      outcome.done.push(...batch);
    } catch (error) {
      if (!concernsOneItem(error)) throw error;
      const [only] = batch;
      if (batch.length === 1 && only !== undefined) {
        outcome.failed.push({ assignment: only, error });
        return;
      }
      const middle = Math.ceil(batch.length / 2);
      await attempt(batch.slice(0, middle));
      await attempt(batch.slice(middle));
    }
  };
  await forEachConcurrently(chunk(items, Math.max(1, batchSize)), concurrency, attempt);
  return outcome;
}

function toAssignmentParam(assignment: RoleAssignment): MoodleParams {
  // Fixed field order, whatever order the caller's object has: the recordings' form strings.
  return 'contextid' in assignment
    ? { roleid: assignment.roleid, userid: assignment.userid, contextid: assignment.contextid }
    : {
        roleid: assignment.roleid,
        userid: assignment.userid,
        contextlevel: assignment.contextlevel,
        instanceid: assignment.instanceid,
      };
}

function toMoodleUser(user: z.infer<typeof userSchema>): MoodleUser {
  return {
    id: user.id,
    username: user.username ?? '',
    firstname: user.firstname ?? '',
    lastname: user.lastname ?? '',
    fullname: user.fullname,
    email: user.email,
    department: user.department ?? '',
    idnumber: user.idnumber ?? '',
    auth: user.auth,
    suspended: user.suspended ?? false,
  };
}

/**
 * Moodle's delete_user() keeps the record (and the pupil's context, which still accepts a role:
 * assign.deleted-user-context) but renames it: username "<old email>.<unix time>", email the md5 of
 * the old username, no idnumber. A look-up by id may still return it (users-by-field.id-deleted-user).
 * Without the email (hidden from the service user) the renamed username alone tells.
 */
export function isDeletedAccount(user: Pick<MoodleUser, 'username' | 'email' | 'idnumber'>): boolean {
  if (user.idnumber !== '' || !/\.\d{9,}$/.test(user.username)) return false;
  return user.email === undefined || /^[0-9a-f]{32}$/.test(user.email);
}

function isTimeoutError(error: unknown): boolean {
  return error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError');
}

/** "fetch failed" says nothing; the cause says ECONNREFUSED, ENOTFOUND or a certificate problem. */
function describeNetworkError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return `${typeof code === 'string' ? `${code}: ` : ''}${cause.message}`;
  }
  return error.message;
}

function isMoodleErrorBody(body: unknown): body is { errorcode: string; exception?: unknown; message?: unknown; debuginfo?: unknown } {
  return body !== null && typeof body === 'object' && !Array.isArray(body) && typeof (body as { errorcode?: unknown }).errorcode === 'string';
}

export class MoodleClient {
  readonly url: string;
  readonly batchSize: number;
  readonly concurrency: number;
  private readonly endpoint: string;
  private readonly token: string;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly fetchImpl: typeof fetch;
  private readonly logger: MoodleLogger | undefined;
  private readonly onCall: MoodleCallListener | undefined;

  constructor(options: MoodleClientOptions) {
    this.url = options.url.replace(/\/+$/, '');
    this.endpoint = `${this.url}${MOODLE_REST_PATH}`;
    this.token = options.token;
    this.timeoutMs = options.timeoutMs;
    this.retries = Math.max(0, Math.floor(options.retries));
    this.batchSize = Math.max(1, Math.floor(options.batchSize));
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 1));
    this.retryDelayMs = options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
    this.fetchImpl = options.fetch ?? nodeHttpFetch;
    this.logger = options.logger;
    this.onCall = options.onCall;
  }

  /**
   * Calls any web service function and returns Moodle's decoded answer. Throws MoodleError for an
   * errorcode answer (never retried) and for transport failures (retried first when transient).
   */
  async call(wsfunction: string, params: MoodleParams = {}): Promise<unknown> {
    const form = encodeMoodleForm(this.token, wsfunction, params);
    for (let attempt = 1; ; attempt++) {
      let error: MoodleError;
      try {
        const body = await this.postOnce(wsfunction, form);
        this.onCall?.(wsfunction, 'ok');
        return body;
      } catch (thrown) {
        // postOnce throws only MoodleErrors; anything else came from onCall and is not Moodle's fault.
        if (!(thrown instanceof MoodleError)) throw thrown;
        error = thrown;
      }
      const willRetry = error.transient && attempt <= this.retries;
      this.onCall?.(wsfunction, error.fromMoodle ? 'moodle_error' : willRetry ? 'retried' : 'failed', error.errorcode);
      const logDetails = { wsfunction, attempt, errorcode: error.errorcode, moodleMessage: error.moodleMessage };
      if (!willRetry) {
        this.logger?.warn(logDetails, 'Moodle call failed');
        throw error;
      }
      const delayMs = this.retryDelayMs * 2 ** (attempt - 1);
      this.logger?.debug({ ...logDetails, delayMs }, 'Moodle call failed for a passing reason; trying again');
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }

  async getSiteInfo(): Promise<MoodleSiteInfo> {
    const wsfunction = 'core_webservice_get_site_info';
    const info = this.parse(wsfunction, siteInfoSchema, await this.call(wsfunction));
    return {
      sitename: info.sitename,
      siteurl: info.siteurl,
      username: info.username,
      fullname: info.fullname,
      userid: info.userid,
      release: info.release,
      version: info.version,
      userissiteadmin: info.userissiteadmin ?? false,
      functions: (info.functions ?? []).map((f) => f.name),
    };
  }

  /**
   * Finds users by one field, many values per call (batchSize per call, up to `concurrency` calls at
   * once, results merged, ordered by id). Values no Moodle account can have are left out rather than failing the whole call; Moodle
   * itself leaves out values it cannot find. Usernames are matched lower-cased, as Moodle stores them.
   */
  async getUsersByField(field: UserLookupField, values: ReadonlyArray<string | number>): Promise<MoodleUser[]> {
    const wsfunction = 'core_user_get_users_by_field';
    const cleaned = new Set<string>();
    for (const value of values) {
      const normalised = normaliseLookupValue(field, value);
      if (normalised === undefined) this.logger?.debug({ field }, 'Skipped a look-up value no Moodle account can have');
      else cleaned.add(normalised);
    }
    const found = new Map<number, MoodleUser>();
    await forEachConcurrently(chunk([...cleaned], this.batchSize), this.concurrency, async (batch) => {
      const users = this.parse(wsfunction, usersListSchema, await this.call(wsfunction, { field, values: batch }));
      for (const user of users) found.set(user.id, toMoodleUser(user));
    });
    return [...found.values()].sort((a, b) => a.id - b.id);
  }

  /**
   * Searches users (core_user_get_users; firstname, lastname and email match case-insensitively).
   * An answer with warnings is refused: Moodle ignores a criterion it does not support and then
   * returns every user (users.unknown-key).
   */
  async getUsers(criteria: readonly UserSearchCriterion[]): Promise<MoodleUser[]> {
    const wsfunction = 'core_user_get_users';
    const params = { criteria: criteria.map((c) => ({ key: c.key, value: c.value })) };
    const answer = this.parse(wsfunction, usersSearchSchema, await this.call(wsfunction, params));
    const warnings = answer.warnings ?? [];
    if (warnings.length > 0) {
      throw this.error({
        errorcode: 'searchwarnings',
        wsfunction,
        moodleMessage: warnings.map((w) => w.message).join(' '),
        details: { warnings },
      });
    }
    return answer.users.map(toMoodleUser);
  }

  /** Assigns roles in ONE call: Moodle applies all or none. Repeating an assignment is harmless. */
  async assignRoles(assignments: readonly RoleAssignment[]): Promise<void> {
    await this.changeRoles('core_role_assign_roles', 'assignments', assignments);
  }

  /** Removes role assignments in ONE call; removing one that is not there is a silent no-op. */
  async unassignRoles(unassignments: readonly RoleAssignment[]): Promise<void> {
    await this.changeRoles('core_role_unassign_roles', 'unassignments', unassignments);
  }

  /**
   * Assigns roles batchSize at a time, up to `concurrency` calls at once, isolating the bad ones (see sendIsolated). A failure that
   * is not about one assignment is thrown; batches sent before it have landed, and sending them
   * again is harmless because assignment is idempotent.
   */
  async assignRolesIsolated(assignments: readonly RoleAssignment[]): Promise<IsolatedOutcome<RoleAssignment>> {
    return sendIsolated(assignments, this.batchSize, (batch) => this.assignRoles(batch), this.concurrency);
  }

  async unassignRolesIsolated(unassignments: readonly RoleAssignment[]): Promise<IsolatedOutcome<RoleAssignment>> {
    return sendIsolated(unassignments, this.batchSize, (batch) => this.unassignRoles(batch), this.concurrency);
  }

  private async changeRoles(wsfunction: string, field: string, items: readonly RoleAssignment[]): Promise<void> {
    if (items.length === 0) return;
    const answer = this.parse(wsfunction, roleChangeResultSchema, await this.call(wsfunction, { [field]: items.map(toAssignmentParam) }));
    const warnings = answer?.warnings ?? [];
    if (warnings.length > 0) {
      throw this.error({ errorcode: 'searchwarnings', wsfunction, moodleMessage: warnings.map((w) => w.message).join(' ') });
    }
  }

  /** One HTTP round trip. Returns the decoded JSON answer or throws a MoodleError. */
  private async postOnce(wsfunction: string, form: string): Promise<unknown> {
    let response: Response;
    let text: string;
    try {
      response = await this.fetchImpl(this.endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: form,
        // A redirect would turn the POST into a GET without the form; report it instead.
        redirect: 'manual',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      text = await response.text();
    } catch (error) {
      if (isTimeoutError(error)) {
        throw this.error({ errorcode: 'timeout', wsfunction, moodleMessage: `no answer within ${this.timeoutMs} ms` });
      }
      throw this.error({ errorcode: 'unreachable', wsfunction, moodleMessage: describeNetworkError(error), cause: error });
    }
    const status = response.status;
    if (status >= 300 && status < 400) {
      throw this.error({ errorcode: 'redirected', wsfunction, status, location: response.headers.get('location') ?? undefined });
    }
    // Moodle's one answer that is not a JSON error: web services (or REST) switched off.
    if (status === 403 && text.trim() === '') throw this.error({ errorcode: 'webservicesdisabled', wsfunction, status });
    if (status >= 500) throw this.error({ errorcode: 'httperror', wsfunction, status, details: { body: text.slice(0, BODY_SNIPPET_LENGTH) } });
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw this.error({ errorcode: 'badresponse', wsfunction, status, details: { body: text.slice(0, BODY_SNIPPET_LENGTH) } });
    }
    // Moodle reports errors as HTTP 200 with an errorcode in the body: the status says nothing.
    if (isMoodleErrorBody(body)) {
      const details: Record<string, unknown> = {};
      if (typeof body.exception === 'string') details.exception = body.exception;
      if (typeof body.debuginfo === 'string') details.debuginfo = body.debuginfo;
      throw this.error({
        errorcode: body.errorcode,
        wsfunction,
        moodleMessage: typeof body.message === 'string' ? body.message : undefined,
        details,
      });
    }
    if (status < 200 || status >= 300) {
      throw this.error({ errorcode: 'badresponse', wsfunction, status, details: { body: text.slice(0, BODY_SNIPPET_LENGTH) } });
    }
    return body;
  }

  private parse<S extends z.ZodType>(wsfunction: string, schema: S, body: unknown): z.infer<S> {
    const result = schema.safeParse(body);
    if (result.success) return result.data;
    throw this.error({
      errorcode: 'badresponse',
      wsfunction,
      moodleMessage: 'the answer did not have the expected fields',
      details: { issues: result.error.issues.slice(0, 5).map((i) => `${i.path.join('.')}: ${i.message}`) },
    });
  }

  private error(options: Omit<MoodleErrorOptions, 'secrets' | 'url'>): MoodleError {
    return new MoodleError({ ...options, url: this.url, secrets: [this.token] });
  }
}
