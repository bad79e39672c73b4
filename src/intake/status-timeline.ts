// What a parent sees on their status page: a timeline built from the request's audit trail,
// in plain words, and what happens next. Staff names, internal ids and technical problems
// (failed Moodle calls, waiting for sync) stay out: those are for the school's dashboard.
import type { AuditEventRecord, ChildRecord, RequestRecord } from '../requests/request-repository';
import type { RequestStatus } from '../requests/request-states';

export interface TimelineEntry {
  at: number;
  text: string;
  /** A second line, e.g. the reason a request was not approved. */
  detail?: string;
}

export const PARENT_STATUS_LABELS: Record<RequestStatus, string> = {
  unverified: 'Waiting for you to confirm your email address',
  pending: 'Waiting for the school to check',
  approved: 'Approved: your account is being set up',
  provisioned: 'Your account is ready',
  denied: 'Not approved',
  duplicate: 'Closed (a repeat of another request)',
  bogus: 'Closed',
  revoked: 'Access removed',
};

export const NEXT_STEPS: Record<RequestStatus, string[]> = {
  unverified: [
    'Check your email, including any spam or junk folder, for a message from us, follow the link in it and press “Confirm my email address”.',
    'The school can only look at your request once you have done this. If the link has expired or the email has not arrived, ask for a new one below.',
  ],
  pending: [
    'The school office will check your details against the school’s records and link your account to each child.',
    'This usually takes a few school days. We will email you when there is news; there is nothing you need to do now.',
  ],
  approved: [
    'The school has approved your request. Your Moodle account is being set up and linked to your children; this usually happens within a few hours.',
    'We will email you when it is ready.',
  ],
  provisioned: [
    'Your Moodle account is ready. Your username is your email address.',
    'If this is a new account, Moodle sends you a separate email with your password. If you already had an account, sign in as usual.',
  ],
  denied: ['The school did not approve this request. If you think this is a mistake, contact the school office.'],
  duplicate: ['This request repeated another one that the school is dealing with, so it was closed. There is nothing you need to do.'],
  bogus: ['This request was closed. If you think this is a mistake, contact the school office.'],
  revoked: ['Access through this request has been removed. If you have questions, contact the school office.'],
};

/**
 * What an approved request's parent is told while this service is not connected to Moodle: the
 * account cannot be set up "within a few hours", so no time is promised.
 */
export const APPROVED_WITHOUT_MOODLE_STEPS: string[] = [
  'The school has approved your request. Your Moodle account cannot be set up yet, because the school is still connecting this service to Moodle, so we cannot say yet when it will be ready.',
  'We will email you when it is ready; there is nothing you need to do now.',
];

/** The next steps for a request in this status; without Moodle an approved one is not promised a time. */
export function nextStepsFor(status: RequestStatus, moodleConfigured: boolean): string[] {
  return status === 'approved' && !moodleConfigured ? APPROVED_WITHOUT_MOODLE_STEPS : NEXT_STEPS[status];
}

function childName(children: ChildRecord[], id: unknown): string {
  const child = children.find((c) => c.id === Number(id));
  return child ? child.firstName : 'your child';
}

function names(children: ChildRecord[], ids: unknown): string {
  const list = (Array.isArray(ids) ? ids : []).map((id) => childName(children, id));
  if (list.length <= 1) return list[0] ?? 'your child';
  return `${list.slice(0, -1).join(', ')} and ${list[list.length - 1]}`;
}

export function buildTimeline(request: RequestRecord, children: ChildRecord[], events: AuditEventRecord[]): TimelineEntry[] {
  const entries: TimelineEntry[] = [];
  for (const event of events) {
    const d = event.details;
    const reason = typeof d.reason === 'string' && d.reason ? d.reason : undefined;
    switch (event.action) {
      case 'submitted':
        entries.push({ at: event.createdAt, text: 'We received your request.' });
        break;
      case 'extended':
        entries.push({ at: event.createdAt, text: 'You sent more details, and we added them to this request.' });
        break;
      case 'details_held':
        entries.push({ at: event.createdAt, text: 'The form was sent again with your email address. We emailed you a link to add the new details to this request.' });
        break;
      case 'verification_resent':
        entries.push({ at: event.createdAt, text: 'We sent you a new confirmation link.' });
        break;
      case 'email_verified':
        entries.push({ at: event.createdAt, text: 'You confirmed your email address.' });
        break;
      case 'approved':
        entries.push({ at: event.createdAt, text: 'The school approved your request.' });
        break;
      case 'denied':
        entries.push({ at: event.createdAt, text: 'The school did not approve your request.', detail: reason ?? request.decisionReason ?? undefined });
        break;
      case 'marked_duplicate':
        entries.push({ at: event.createdAt, text: 'The school closed this request because it repeats another one.' });
        break;
      case 'marked_bogus':
        entries.push({ at: event.createdAt, text: 'The school closed this request.' });
        break;
      case 'children_linked':
        entries.push({ at: event.createdAt, text: `Your account was linked to ${names(children, d.childIds)} in Moodle.` });
        break;
      case 'provisioned':
        entries.push({ at: event.createdAt, text: 'Your Moodle account is ready.' });
        break;
      case 'child_revoked':
        entries.push({ at: event.createdAt, text: `The link to ${childName(children, d.childId)} was removed.`, detail: reason });
        break;
      case 'revoked':
        entries.push({ at: event.createdAt, text: 'Access through this request was removed.', detail: reason });
        break;
      default:
        // Internal steps (Moodle retries, staff comments, role clean-up) are not shown to parents.
        break;
    }
  }
  return entries;
}
