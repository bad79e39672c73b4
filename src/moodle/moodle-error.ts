// Every way a call to Moodle can fail, told twice: in plain words a school office understands
// (the message) and as a pointer for IT saying where to fix it (the help). The token never appears.
import { AppError } from '../errors';

/** Error codes this service gives to failures Moodle itself did not name. */
export type OwnMoodleErrorcode =
  | 'webservicesdisabled'
  | 'unreachable'
  | 'timeout'
  | 'badresponse'
  | 'httperror'
  | 'redirected'
  | 'searchwarnings';

const OWN_ERRORCODES: ReadonlySet<string> = new Set<OwnMoodleErrorcode>([
  'webservicesdisabled',
  'unreachable',
  'timeout',
  'badresponse',
  'httperror',
  'redirected',
  'searchwarnings',
]);

/** Failures where a later attempt may well succeed: the network, a slow or briefly broken server. */
const TRANSIENT_ERRORCODES: ReadonlySet<string> = new Set(['unreachable', 'timeout', 'httperror']);

/**
 * Moodle answers that concern one item of a batch (a pupil or parent account that is missing, a
 * context where the role cannot be assigned). Any other failure would hit every item alike.
 */
const ITEM_ERRORCODES: ReadonlySet<string> = new Set(['invalidparameter', 'codingerror']);

const ROLE_FUNCTIONS: ReadonlySet<string> = new Set(['core_role_assign_roles', 'core_role_unassign_roles']);

// Moodle names a missing capability by its description ("Assign roles to users"); IT searches
// the role definition page by the capability's name, so translate the ones this service needs.
const CAPABILITY_BY_DESCRIPTION: Readonly<Record<string, string>> = {
  'assign roles to users': 'moodle/role:assign',
  'view user profiles': 'moodle/user:viewdetails',
  'view user full information': 'moodle/user:viewalldetails',
  'view hidden details of users': 'moodle/user:viewhiddendetails',
  'update user profiles': 'moodle/user:update',
  'use rest protocol': 'webservice/rest:use',
};

/** Shorter strings cannot be hidden without mangling ordinary words, and are no real Moodle token. */
const MIN_SECRET_LENGTH = 6;
const HIDDEN = '[hidden]';

export interface MoodleErrorExplanation {
  message: string;
  help: string;
}

export interface ExplainContext {
  /** MOODLE_URL, for the failures that are about the address. */
  url?: string;
  /** The HTTP status, for the failures that are about the answer. */
  status?: number;
  /** Where Moodle redirected to, for 'redirected'. */
  location?: string;
}

/** Turns a failure point into plain words for staff and a help line for IT. */
export function explainMoodleError(
  errorcode: string,
  wsfunction: string | undefined,
  moodleMessage: string | undefined,
  context: ExplainContext = {},
): MoodleErrorExplanation {
  const fn = wsfunction ?? 'the requested function';
  const said = moodleMessage === undefined || moodleMessage === '' ? '' : ` Moodle said: "${moodleMessage}".`;
  const where = context.url === undefined ? 'the address in MOODLE_URL' : context.url;
  switch (errorcode) {
    case 'accessexception':
      return {
        message:
          wsfunction === undefined
            ? 'The Moodle web service refused access to a function it needs.'
            : `The Moodle web service is missing the function ${wsfunction}.`,
        help:
          'Add it under Site administration > Server > Web services > External services > (your service) > Functions. ' +
          'If it is listed already, check that the service user is an authorised user of that service and that any IP restriction on the token allows this server.',
      };
    case 'invalidtoken':
      return {
        message: 'Moodle did not accept the web service token (MOODLE_TOKEN): it is wrong, has expired or was deleted.',
        help:
          'Create a token for the service user under Site administration > Server > Web services > Manage tokens, ' +
          'put it in MOODLE_TOKEN and restart the service.',
      };
    case 'nopermissions': {
      const capability = capabilityFromMessage(moodleMessage);
      const named = capability === undefined ? 'a capability it needs' : `the capability ${capability}`;
      const roleAssign = capability === 'moodle/role:assign' || (capability === undefined && ROLE_FUNCTIONS.has(fn));
      return {
        message: `The Moodle service user is not allowed to do this: its role lacks ${named}.`,
        help:
          `Allow ${capability ?? 'the missing capability'} for the service user's role under Site administration > Users > Permissions > Define roles` +
          (roleAssign
            ? ', and let that role assign the Parent role under Define roles > Allow role assignments.'
            : '.') +
          said,
      };
    }
    case 'invalidparameter':
      if (ROLE_FUNCTIONS.has(fn)) {
        const doing = fn === 'core_role_unassign_roles' ? 'remove the Parent role' : 'give the Parent role';
        return {
          message: `Moodle refused to ${doing}: the Parent role cannot be assigned in this user context, or the pupil or parent account does not exist.`,
          help:
            'Make the Parent role assignable in the User context (Site administration > Users > Permissions > Define roles > Parent > ' +
            'Context types where this role may be assigned: User), allow the service user\'s role to assign it ' +
            '(Define roles > Allow role assignments), and check MOODLE_PARENT_ROLE_ID and that the pupil\'s account still exists.',
        };
      }
      if (fn === 'core_user_get_users_by_field') {
        return {
          message: 'Moodle refused an account look-up because one of the values is not in the form Moodle stores (for example a username with capital letters).',
          help: `This is a fault in this service, not in Moodle's settings: report it with the time it happened.${said}`,
        };
      }
      return {
        message: `Moodle refused the request to ${fn} as invalid.`,
        help: `Check the values sent; if they look right, report it as a fault in this service.${said}`,
      };
    case 'codingerror':
      if (moodleMessage !== undefined && /user id does not exist or is deleted/i.test(moodleMessage)) {
        return {
          message: 'The Moodle account no longer exists (it was deleted in Moodle).',
          help:
            'Check the parent\'s and the pupil\'s accounts under Site administration > Users > Browse list of users. ' +
            'If the pupil\'s account was replaced, match the child again; a deleted parent account is created again by the next user sync.',
        };
      }
      return {
        message: `Moodle reported an internal error in ${fn}.`,
        help: `Check Moodle's error log; if the request looks wrong, report it as a fault in this service.${said}`,
      };
    case 'invalidrecordunknown':
      return {
        message: `This Moodle does not know the web service function ${fn}.`,
        help:
          'The function may not exist in this Moodle version (this service needs Moodle 4.x or later; see Site administration > Notifications for the version), ' +
          'or its name is misspelt.',
      };
    case 'sitemaintenance':
      return {
        message: 'Moodle is in maintenance mode, so it cannot be changed right now.',
        help: 'Wait until maintenance ends (Site administration > Server > Maintenance mode); the next provisioning cycle tries again.',
      };
    case 'webservicesdisabled':
      return {
        message: 'Web services are switched off in Moodle.',
        help:
          'Turn on Site administration > Advanced features > Enable web services, ' +
          'and enable REST under Site administration > Server > Web services > Manage protocols.',
      };
    case 'unreachable':
      return {
        message: `Moodle could not be reached at ${where}.`,
        help:
          'Check MOODLE_URL (the Moodle site\'s own address, for example https://moodle.example.org) and that Moodle is running ' +
          `and reachable from this server (DNS name, firewall, proxy).${technical(moodleMessage)}`,
      };
    case 'timeout':
      return {
        message: `Moodle at ${where} did not answer in time.`,
        help: 'Moodle may be overloaded or down; the next attempt tries again. MOODLE_TIMEOUT_MS sets how long to wait for each answer.',
      };
    case 'badresponse':
      return {
        message: 'The address in MOODLE_URL does not look like a Moodle site: it did not answer the way Moodle web services do.',
        help:
          `Set MOODLE_URL to the Moodle site's own address (the one that shows Moodle's front page, for example https://moodle.example.org), ` +
          `not a login page or a page inside the site.${context.status === undefined ? '' : ` It answered with HTTP status ${context.status}.`}${technical(moodleMessage)}`,
      };
    case 'httperror':
      return {
        message: `Moodle had a problem answering${context.status === undefined ? '' : ` (HTTP status ${context.status})`}.`,
        help: 'This is often temporary and is tried again. If it keeps happening, check the web server and Moodle error logs.',
      };
    case 'redirected':
      return {
        message: `Moodle answered from a different address than MOODLE_URL (${where}).`,
        help:
          `Set MOODLE_URL to the address Moodle sends visitors to${context.location === undefined ? '' : ` (${context.location})`}: ` +
          'a redirected web service request loses its content.',
      };
    case 'searchwarnings':
      return {
        message: 'Moodle did not fully understand a user search, so its answer cannot be trusted.',
        help: `Report this as a fault in this service (or a Moodle version that does not support the search).${said}`,
      };
    default:
      return {
        message: `Moodle refused the request to ${fn} (${errorcode}).`,
        help: `Check the Moodle web service settings for ${fn}.${said}`,
      };
  }
}

function technical(detail: string | undefined): string {
  return detail === undefined || detail === '' ? '' : ` Technical detail: ${detail}.`;
}

/** "Sorry, but you do not currently have permissions to do that (Assign roles to users)." → moodle/role:assign */
export function capabilityFromMessage(moodleMessage: string | undefined): string | undefined {
  if (moodleMessage === undefined) return undefined;
  const named = /\b([a-z]+\/[a-z0-9_]+:[a-z0-9_]+)\b/.exec(moodleMessage);
  if (named?.[1] !== undefined) return named[1];
  const described = /\(([^()]+)\)\.?\s*$/.exec(moodleMessage)?.[1]?.trim();
  if (described === undefined) return undefined;
  return CAPABILITY_BY_DESCRIPTION[described.toLowerCase()] ?? `"${described}"`;
}

/** Replaces every occurrence of each secret (plain and URL-encoded) with a marker. */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret.length < MIN_SECRET_LENGTH) continue;
    out = out.split(secret).join(HIDDEN);
    const encoded = encodeURIComponent(secret);
    if (encoded !== secret) out = out.split(encoded).join(HIDDEN);
  }
  return out;
}

function scrubValue(value: unknown, secrets: readonly string[]): unknown {
  if (typeof value === 'string') return scrubSecrets(value, secrets);
  if (Array.isArray(value)) return value.map((v) => scrubValue(v, secrets));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = scrubValue(v, secrets);
    return out;
  }
  return value;
}

/**
 * A cause that is safe to log: the original error's name, code and message with secrets removed.
 * The original object is dropped because its fields (a request, a socket) may carry the token.
 */
function scrubCause(cause: unknown, secrets: readonly string[]): Error | undefined {
  if (cause === undefined || cause === null) return undefined;
  const describe = (e: unknown): string => {
    if (e instanceof Error) {
      const code = (e as { code?: unknown }).code;
      return `${e.name}${typeof code === 'string' ? ` ${code}` : ''}: ${e.message}`;
    }
    return String(e);
  };
  let text = describe(cause);
  const inner = cause instanceof Error ? cause.cause : undefined;
  if (inner !== undefined && inner !== null) text += ` (${describe(inner)})`;
  const safe = new Error(scrubSecrets(text, secrets));
  safe.name = 'MoodleFailureCause';
  return safe;
}

export interface MoodleErrorOptions {
  errorcode: string;
  wsfunction?: string | undefined;
  /** Moodle's own message (or a technical description of a network failure). */
  moodleMessage?: string | undefined;
  url?: string | undefined;
  status?: number | undefined;
  location?: string | undefined;
  details?: Record<string, unknown>;
  cause?: unknown;
  /** Strings that must never appear anywhere in the error: the Moodle token. */
  secrets?: readonly string[];
}

export class MoodleError extends AppError {
  /** Moodle's errorcode, or one of ours (OwnMoodleErrorcode). Branch on this, never on the message. */
  readonly errorcode: string;
  readonly wsfunction: string | undefined;
  /** Moodle's own words (secrets removed), for logs and IT. */
  readonly moodleMessage: string | undefined;
  /** A later attempt may succeed; an answer Moodle gave on purpose does not change by asking again. */
  readonly transient: boolean;
  /** Moodle itself answered with this errorcode (as opposed to a failure we named). */
  readonly fromMoodle: boolean;

  constructor(options: MoodleErrorOptions) {
    const secrets = options.secrets ?? [];
    const moodleMessage = options.moodleMessage === undefined ? undefined : scrubSecrets(options.moodleMessage, secrets);
    const url = options.url === undefined ? undefined : scrubSecrets(options.url, secrets);
    const context: ExplainContext = {};
    if (url !== undefined) context.url = url;
    if (options.status !== undefined) context.status = options.status;
    if (options.location !== undefined) context.location = scrubSecrets(options.location, secrets);
    const explained = explainMoodleError(options.errorcode, options.wsfunction, moodleMessage, context);
    const details: Record<string, unknown> = { errorcode: options.errorcode };
    if (options.wsfunction !== undefined) details.wsfunction = options.wsfunction;
    if (moodleMessage !== undefined) details.moodleMessage = moodleMessage;
    if (options.status !== undefined) details.status = options.status;
    if (url !== undefined) details.url = url;
    Object.assign(details, scrubValue(options.details ?? {}, secrets));
    super(
      scrubSecrets(explained.message, secrets),
      options.errorcode === 'timeout' ? 504 : 502,
      'moodle',
      { help: scrubSecrets(explained.help, secrets), details, cause: scrubCause(options.cause, secrets) },
    );
    this.errorcode = options.errorcode;
    this.wsfunction = options.wsfunction;
    this.moodleMessage = moodleMessage;
    this.transient = TRANSIENT_ERRORCODES.has(options.errorcode);
    this.fromMoodle = !OWN_ERRORCODES.has(options.errorcode);
  }
}

/**
 * True when a failed batch should be split to find the bad item: Moodle's answer is about one
 * item's data. Token, permission, service and network failures would fail every half as well.
 */
export function concernsOneItem(error: unknown): error is MoodleError {
  return error instanceof MoodleError && ITEM_ERRORCODES.has(error.errorcode);
}
