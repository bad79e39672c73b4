// The request and child link states, and which transitions each action allows.

export const REQUEST_STATUSES = [
  'unverified',
  'pending',
  'approved',
  'provisioned',
  'denied',
  'duplicate',
  'bogus',
  'revoked',
] as const;
export type RequestStatus = (typeof REQUEST_STATUSES)[number];

export const CHILD_LINK_STATES = ['unmatched', 'matched', 'linked', 'not_found', 'revoked'] as const;
export type ChildLinkState = (typeof CHILD_LINK_STATES)[number];

export const REQUEST_TYPES = ['new_account', 'cannot_log_in', 'child_not_linked'] as const;
export type RequestType = (typeof REQUEST_TYPES)[number];

/** Where a request came from; `wordpress_plugin`: imported from the old WordPress plugin by `tvs-migrate run`. */
export const REQUEST_SOURCES = ['form', 'api', 'import', 'cli', 'wordpress_plugin'] as const;
export type RequestSource = (typeof REQUEST_SOURCES)[number];

/** Statuses whose parent may log in: exactly these requests have a row in the auth table. */
export const ACCESS_STATUSES: readonly RequestStatus[] = ['approved', 'provisioned'];

/** Statuses a parent's new submission joins instead of opening a second request. */
export const OPEN_STATUSES: readonly RequestStatus[] = ['unverified', 'pending'];

export type LifecycleAction =
  | 'verify_email'
  | 'approve'
  | 'deny'
  | 'mark_duplicate'
  | 'mark_bogus'
  | 'revoke'
  | 'revoke_child'
  | 'record_outcome'
  | 'extend'
  | 'comment'
  | 'resend_verification'
  | 'pick_pupil'
  | 'erase';

/** From which statuses each action may start. */
export const ALLOWED_FROM: Record<LifecycleAction, readonly RequestStatus[]> = {
  verify_email: ['unverified'],
  approve: ['pending'],
  deny: ['unverified', 'pending', 'approved'],
  mark_duplicate: ['unverified', 'pending', 'approved'],
  mark_bogus: ['unverified', 'pending', 'approved'],
  revoke: ['approved', 'provisioned'],
  revoke_child: ['approved', 'provisioned'],
  record_outcome: ['approved'],
  extend: ['unverified', 'pending'],
  comment: REQUEST_STATUSES,
  resend_verification: ['unverified'],
  pick_pupil: ['approved', 'provisioned'],
  erase: ['denied', 'duplicate', 'bogus', 'revoked', 'unverified', 'pending'],
};

/** Plain words for each status, as staff and parents see them. */
export const STATUS_LABELS: Record<RequestStatus, string> = {
  unverified: 'Waiting for email confirmation',
  pending: 'Waiting for review',
  approved: 'Approved, account being set up',
  provisioned: 'Account ready',
  denied: 'Not approved',
  duplicate: 'Duplicate',
  bogus: 'Rejected as not genuine',
  revoked: 'Access removed',
};

const ACTION_LABELS: Record<LifecycleAction, string> = {
  verify_email: 'confirm the email address of',
  approve: 'approve',
  deny: 'deny',
  mark_duplicate: 'mark as duplicate',
  mark_bogus: 'mark as not genuine',
  revoke: 'revoke',
  revoke_child: 'revoke a child of',
  record_outcome: 'record provisioning for',
  extend: 'add to',
  comment: 'comment on',
  resend_verification: 'resend the confirmation email for',
  pick_pupil: 'pick a pupil on',
  erase: 'erase',
};

export function isAllowed(action: LifecycleAction, from: RequestStatus): boolean {
  return ALLOWED_FROM[action].includes(from);
}

export function refusalMessage(action: LifecycleAction, from: RequestStatus): string {
  return `Cannot ${ACTION_LABELS[action]} a request that is "${STATUS_LABELS[from].toLowerCase()}" (${from}).`;
}
