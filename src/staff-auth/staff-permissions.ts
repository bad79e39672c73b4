// What each staff role may do in the dashboard: one small table, enforced by requireStaff (every
// role may review) and by requirePermission on each route that needs more, shown on the
// diagnostics page and in the README. The route sweep test checks every route against it.
import type { NextFunction, Request, Response } from 'express';
import { AppError } from '../errors';
import type { StaffRole } from './staff-users.repository';

export const PERMISSIONS = ['review', 'decide', 'comment', 'provision', 'export', 'import', 'erase', 'see_submitter_details', 'run_sync', 'manage_staff'] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** What each permission lets someone do, in the words the diagnostics page shows. */
export const PERMISSION_WORDS: Record<Permission, string> = {
  review: 'See requests and their history, pupils’ access history, provisioning reports, who can log in and the diagnostics checks',
  decide: 'Approve, deny, mark as duplicate or not genuine, remove access, pick the pupil of a child who has none, send a new confirmation link (one request or several at once)',
  comment: 'Add staff comments to a request',
  provision: 'Run provisioning now, and the Moodle check',
  export: 'Download requests as a CSV file',
  import: 'Import parents and children from a CSV file, and the school’s guardian records',
  erase: 'Erase the personal data of a request',
  see_submitter_details: 'See the internet address and browser a request was sent from (kept only to deal with misuse of the form)',
  run_sync: 'Run Moodle’s user sync from the diagnostics page',
  manage_staff: 'See and manage staff accounts',
};

/** What a refusal says the person cannot do. */
const REFUSAL_WORDS: Record<Permission, string> = {
  review: 'see the dashboard',
  decide: 'decide on requests',
  comment: 'add comments',
  provision: 'run provisioning or the Moodle check',
  export: 'download requests',
  import: 'import from a CSV file',
  erase: 'erase personal data',
  see_submitter_details: 'see where a request was sent from',
  run_sync: 'run Moodle’s user sync',
  manage_staff: 'manage staff accounts',
};

export const ROLE_LABELS: Record<StaffRole, string> = { staff: 'Office staff', admin: 'Administrator' };

/** Office staff review, decide, comment, run provisioning and export; administrators do everything. */
export const ROLE_PERMISSIONS: Record<StaffRole, readonly Permission[]> = {
  staff: ['review', 'decide', 'comment', 'provision', 'export'],
  admin: PERMISSIONS,
};

export function can(role: StaffRole, permission: Permission): boolean {
  return ROLE_PERMISSIONS[role].includes(permission);
}

/** The table as rows for a page: each permission with whether each role has it. */
export function permissionTable(): { permission: Permission; words: string; roles: Record<StaffRole, boolean> }[] {
  return PERMISSIONS.map((permission) => ({
    permission,
    words: PERMISSION_WORDS[permission],
    roles: { staff: can('staff', permission), admin: can('admin', permission) },
  }));
}

/**
 * Guards one route (after requireStaff, which has put the signed-in person in res.locals): a
 * role without the permission gets 403 and nothing is done.
 */
export function requirePermission(permission: Permission) {
  return (_req: Request, res: Response, next: NextFunction) => {
    const role = (res.locals.staff as { role?: StaffRole } | undefined)?.role;
    if (role && can(role, permission)) return next();
    next(
      new AppError(`Your account cannot ${REFUSAL_WORDS[permission]}, so nothing was done.`, 403, 'not_permitted', {
        help: 'Ask one of the school’s dashboard administrators to do it.',
      }),
    );
  };
}
