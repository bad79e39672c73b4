// Live diagnostics that need only Moodle: is it configured and reachable, are web services on, is the
// token accepted, does the service have every function, is the parent role set. For `doctor` and staff.
import type { MoodleClient, MoodleSiteInfo } from './moodle-client';
import { MoodleError } from './moodle-error';

/** The web service functions this service calls; each must be in the token's service. */
export const REQUIRED_MOODLE_FUNCTIONS: readonly string[] = [
  'core_webservice_get_site_info',
  'core_user_get_users_by_field',
  'core_user_get_users',
  'core_role_assign_roles',
  'core_role_unassign_roles',
];

export type MoodleCheckId = 'moodle-url' | 'moodle-webservices' | 'moodle-token' | 'moodle-functions' | 'moodle-parent-role';

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
}

const LABELS: Record<MoodleCheckId, string> = {
  'moodle-url': 'Moodle address (MOODLE_URL)',
  'moodle-webservices': 'Moodle web services',
  'moodle-token': 'Moodle web service token (MOODLE_TOKEN)',
  'moodle-functions': 'Web service functions',
  'moodle-parent-role': 'Parent role (MOODLE_PARENT_ROLE_ID)',
};

// Which check a failed site-info call belongs to: the address, the web service switch or the token.
const URL_FAILURES = new Set(['unreachable', 'timeout', 'badresponse', 'httperror', 'redirected']);

/**
 * Runs the checks in order; each depends on the ones before it, so after a failure the rest are
 * reported as not checked rather than as failures of their own.
 */
export async function checkMoodle(
  client: Pick<MoodleClient, 'getSiteInfo'> | undefined,
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
    skip(['moodle-webservices', 'moodle-token', 'moodle-functions'], 'Moodle is not configured.');
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
      skip(['moodle-webservices', 'moodle-token', 'moodle-functions'], 'Moodle could not be reached.');
    } else if (error.errorcode === 'webservicesdisabled') {
      pass('moodle-url', `Moodle answers at ${options.url}.`);
      fail('moodle-webservices', error.message, error.help);
      skip(['moodle-token', 'moodle-functions'], 'web services are switched off.');
    } else if (error.errorcode === 'invalidtoken') {
      pass('moodle-url', `Moodle answers at ${options.url}.`);
      pass('moodle-webservices', 'Web services are on.');
      fail('moodle-token', error.message, error.help);
      skip(['moodle-functions'], 'the token was not accepted.');
    } else {
      // The token works but the service cannot even tell who it is: the function list is the fault.
      pass('moodle-url', `Moodle answers at ${options.url}.`);
      pass('moodle-webservices', 'Web services are on.');
      pass('moodle-token', 'Moodle accepted the token.');
      fail('moodle-functions', error.message, error.help);
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
  parentRole();
  return results;
}
