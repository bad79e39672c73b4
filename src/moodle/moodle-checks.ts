// Live diagnostics that need only Moodle: is it configured and reachable, are web services on, is the
// token accepted, does the service have every function, is the parent role set. For `doctor` and staff.
import type { MoodleClient, MoodleSiteInfo, MoodleUser } from './moodle-client';
import { MoodleError } from './moodle-error';

/** The web service functions this service calls; each must be in the token's service. */
export const REQUIRED_MOODLE_FUNCTIONS: readonly string[] = [
  'core_webservice_get_site_info',
  'core_user_get_users_by_field',
  'core_user_get_users',
  'core_role_assign_roles',
  'core_role_unassign_roles',
];

export type MoodleCheckId = 'moodle-url' | 'moodle-webservices' | 'moodle-token' | 'moodle-functions' | 'moodle-user-visibility' | 'moodle-parent-role';

/**
 * A service user without moodle/user:viewdetails gets [] for every look-up, exactly as if nobody
 * existed (users-by-field.readonly-token): every parent would "wait for the sync" for ever.
 */
export const CANNOT_SEE_USERS_MESSAGE =
  'Moodle shows this service no account but its own: the web service user lacks moodle/user:viewdetails ("View user profiles"), ' +
  'so every parent and pupil looks as if it did not exist in Moodle.';
export const CANNOT_SEE_USERS_HELP =
  "In Moodle, give the web service user's role the capabilities moodle/user:viewdetails, moodle/user:viewalldetails and " +
  'moodle/user:viewhiddendetails (Site administration > Users > Permissions > Define roles), then run "doctor" again.';

/** True when a look-up of accounts known to exist showed at least one that is not the token's own user. */
export function seesOtherUsers(found: ReadonlyArray<Pick<MoodleUser, 'id'>>, tokenUserId: number): boolean {
  return found.some((user) => user.id !== tokenUserId);
}

/** How many known accounts `doctor` looks for: enough that one deleted pupil cannot mislead it. */
const VISIBILITY_SAMPLE = 20;

export interface CheckResult {
  id: MoodleCheckId;
  label: string;
  ok: boolean;
  /** Plain words: what was found. */
  message: string;
  /** For IT: what to do about it. */
  help?: string;
  /** True when the check could not run because an earlier one failed. */
  skipped?: boolean;
}

export interface MoodleCheckOptions {
  url: string | undefined;
  token: string | undefined;
  parentRoleId: number | undefined;
  requiredFunctions?: readonly string[];
  /**
   * Ids of Moodle accounts known to exist (pupils matched at approval), to prove the token can see
   * users other than its own. Empty: that cannot be proven, and the check says so.
   */
  knownUserIds?: readonly number[];
}

const LABELS: Record<MoodleCheckId, string> = {
  'moodle-url': 'Moodle address (MOODLE_URL)',
  'moodle-webservices': 'Moodle web services',
  'moodle-token': 'Moodle web service token (MOODLE_TOKEN)',
  'moodle-functions': 'Web service functions',
  'moodle-user-visibility': 'Seeing Moodle accounts (moodle/user:viewdetails)',
  'moodle-parent-role': 'Parent role (MOODLE_PARENT_ROLE_ID)',
};

// Which check a failed site-info call belongs to: the address, the web service switch or the token.
const URL_FAILURES = new Set(['unreachable', 'timeout', 'badresponse', 'httperror', 'redirected']);

/**
 * Runs the checks in order; each depends on the ones before it, so after a failure the rest are
 * reported as not checked rather than as failures of their own.
 */
export async function checkMoodle(
  client: Pick<MoodleClient, 'getSiteInfo' | 'getUsersByField'> | undefined,
  options: MoodleCheckOptions,
): Promise<CheckResult[]> {
  const required = options.requiredFunctions ?? REQUIRED_MOODLE_FUNCTIONS;
  const results: CheckResult[] = [];
  const pass = (id: MoodleCheckId, message: string, help?: string) =>
    results.push({ id, label: LABELS[id], ok: true, message, ...(help === undefined ? {} : { help }) });
  const fail = (id: MoodleCheckId, message: string, help?: string) =>
    results.push({ id, label: LABELS[id], ok: false, message, ...(help === undefined ? {} : { help }) });
  const skip = (ids: MoodleCheckId[], because: string) => {
    for (const id of ids) results.push({ id, label: LABELS[id], ok: false, skipped: true, message: `Not checked: ${because}` });
  };
  const parentRole = () => {
    if (options.parentRoleId === undefined) {
      fail(
        'moodle-parent-role',
        'The Parent role is not set, so parents cannot be linked to their children.',
        'Set MOODLE_PARENT_ROLE_ID to the id of the Parent role (Site administration > Users > Permissions > Define roles; the id is in the address of the role\'s page).',
      );
    } else {
      pass('moodle-parent-role', `The Parent role is role id ${options.parentRoleId}.`, 'It must be assignable in the User context; the first link made shows whether it is.');
    }
  };

  if (options.url === undefined || client === undefined) {
    fail(
      'moodle-url',
      options.url === undefined
        ? 'MOODLE_URL is not set.'
        : options.token === undefined
          ? 'MOODLE_TOKEN is not set, so Moodle cannot be asked anything.'
          : 'Moodle is not configured.',
      'Set MOODLE_URL to the Moodle site\'s address and MOODLE_TOKEN to a web service token for the service user.',
    );
    skip(['moodle-webservices', 'moodle-token', 'moodle-functions', 'moodle-user-visibility'], 'Moodle is not configured.');
    parentRole();
    return results;
  }

  let info: MoodleSiteInfo;
  try {
    info = await client.getSiteInfo();
  } catch (error) {
    if (!(error instanceof MoodleError)) throw error;
    if (URL_FAILURES.has(error.errorcode)) {
      fail('moodle-url', error.message, error.help);
      skip(['moodle-webservices', 'moodle-token', 'moodle-functions', 'moodle-user-visibility'], 'Moodle could not be reached.');
    } else if (error.errorcode === 'webservicesdisabled') {
      pass('moodle-url', `Moodle answers at ${options.url}.`);
      fail('moodle-webservices', error.message, error.help);
      skip(['moodle-token', 'moodle-functions', 'moodle-user-visibility'], 'web services are switched off.');
    } else if (error.errorcode === 'invalidtoken') {
      pass('moodle-url', `Moodle answers at ${options.url}.`);
      pass('moodle-webservices', 'Web services are on.');
      fail('moodle-token', error.message, error.help);
      skip(['moodle-functions', 'moodle-user-visibility'], 'the token was not accepted.');
    } else {
      // The token works but the service cannot even tell who it is: the function list is the fault.
      pass('moodle-url', `Moodle answers at ${options.url}.`);
      pass('moodle-webservices', 'Web services are on.');
      pass('moodle-token', 'Moodle accepted the token.');
      fail('moodle-functions', error.message, error.help);
      skip(['moodle-user-visibility'], 'the web service functions are not available.');
    }
    parentRole();
    return results;
  }

  pass('moodle-url', `Moodle answers at ${options.url} (${info.sitename}${info.release === undefined ? '' : `, Moodle ${info.release}`}).`);
  pass('moodle-webservices', 'Web services are on.');
  pass(
    'moodle-token',
    `Moodle accepted the token; it belongs to ${info.fullname} (${info.username}).`,
    info.userissiteadmin
      ? 'The token belongs to a site administrator: a dedicated service user with only the capabilities this service needs is safer.'
      : undefined,
  );
  const userVisibility = async () => {
    if (!available.has('core_user_get_users_by_field')) {
      skip(['moodle-user-visibility'], 'the web service lacks core_user_get_users_by_field.');
      return;
    }
    const known = [...new Set(options.knownUserIds ?? [])].filter((id) => id !== info.userid).slice(0, VISIBILITY_SAMPLE);
    if (known.length === 0) {
      results.push({
        id: 'moodle-user-visibility',
        label: LABELS['moodle-user-visibility'],
        ok: false,
        skipped: true,
        message:
          'Not proven: no pupil has been matched to a Moodle account yet, so there was no account to look for. ' +
          'The web service user needs moodle/user:viewdetails; the first provisioning cycle with work checks it.',
      });
      return;
    }
    try {
      const found = await client.getUsersByField('id', known);
      if (seesOtherUsers(found, info.userid)) {
        pass('moodle-user-visibility', `The token can see other Moodle accounts (it found ${found.length} of ${known.length} matched pupil account(s) looked for).`);
      } else {
        fail('moodle-user-visibility', CANNOT_SEE_USERS_MESSAGE, CANNOT_SEE_USERS_HELP);
      }
    } catch (error) {
      if (!(error instanceof MoodleError)) throw error;
      fail('moodle-user-visibility', error.message, error.help);
    }
  };
  const available = new Set(info.functions);
  const missing = required.filter((name) => !available.has(name));
  if (missing.length === 0) {
    pass('moodle-functions', `The web service has all ${required.length} functions this service uses.`);
  } else {
    fail(
      'moodle-functions',
      `The Moodle web service is missing ${missing.length === 1 ? 'the function' : 'the functions'} ${missing.join(', ')}.`,
      'Add them under Site administration > Server > Web services > External services > (your service) > Functions.',
    );
  }
  await userVisibility();
  parentRole();
  return results;
}
