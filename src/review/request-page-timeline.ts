// The request's audit trail as staff read it on the request page: every event, who did it and
// when, in plain words (unlike the parent's timeline, nothing is left out).
import type { AuditEventRecord, ChildRecord } from '../requests/request-repository';
import { REQUEST_STATUSES, STATUS_LABELS, type RequestStatus } from '../requests/request-states';

export interface StaffTimelineEntry {
  at: number;
  who: string;
  text: string;
  /** Further lines: a reason, which pupil each child was matched to, a Moodle error. */
  details: string[];
}

const SOURCE_WORDS: Record<string, string> = {
  form: 'the request form',
  api: 'the school website',
  import: 'a CSV import',
  cli: 'the command line',
  wordpress_plugin: 'the old WordPress plugin',
};

/** Who did something, as the audit trail records it (staff by username, a cycle by number…). */
export function describeActor(actorType: string, actorId: string | null, staffNames: ReadonlyMap<string, string> = new Map()): string {
  switch (actorType) {
    case 'parent':
      return 'The parent';
    case 'staff': {
      const name = actorId ? staffNames.get(actorId) : undefined;
      return name ? `${name} (${actorId})` : `Staff member ${actorId ?? ''}`.trim();
    }
    case 'cycle':
      return actorId ? `Provisioning cycle ${actorId}` : 'A provisioning cycle';
    case 'reconcile':
      return actorId ? `Moodle check ${actorId}` : 'A Moodle check';
    case 'system':
      if (actorId === 'retention') return 'Automatic erasure after the retention period';
      if (actorId === 'school_records') return 'The school records (approved automatically)';
      return 'This service';
    case 'api':
      return actorId ? `The school website (API key “${actorId}”)` : 'The school website';
    case 'cli':
      return actorId ? `Command line (${actorId})` : 'Command line';
    case 'import':
      return actorId ? `CSV import by ${actorId}` : 'CSV import';
    default:
      return actorId ? `${actorType} ${actorId}` : actorType;
  }
}

/** "staff:sam" (a request's decidedBy) in the same words. */
export function describeActorLabel(label: string | null, staffNames: ReadonlyMap<string, string> = new Map()): string {
  if (!label) return '';
  const colon = label.indexOf(':');
  return colon === -1 ? describeActor(label, null, staffNames) : describeActor(label.slice(0, colon), label.slice(colon + 1), staffNames);
}

function statusWords(value: unknown): string | undefined {
  return typeof value === 'string' && (REQUEST_STATUSES as readonly string[]).includes(value) ? STATUS_LABELS[value as RequestStatus] : undefined;
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

function ids(value: unknown): number[] {
  if (!Array.isArray(value)) return [];
  return value
    .map((item: unknown) => (typeof item === 'number' ? item : (item as { childId?: unknown } | null)?.childId))
    .filter((item): item is number => typeof item === 'number');
}

export function buildStaffTimeline(events: AuditEventRecord[], children: ChildRecord[], staffNames: ReadonlyMap<string, string> = new Map()): StaffTimelineEntry[] {
  const childName = (id: unknown): string => {
    const child = children.find((c) => c.id === Number(id));
    const name = child ? `${child.firstName} ${child.lastName}`.trim() : '';
    return name === '' ? `child ${String(id)}` : name;
  };
  const childNames = (list: number[]): string => (list.length === 0 ? 'no children' : list.map(childName).join(', '));

  return events.map((event) => {
    const d = event.details;
    const details: string[] = [];
    const reason = typeof d.reason === 'string' && d.reason !== '' ? d.reason : undefined;
    let text: string;
    switch (event.action) {
      case 'submitted': {
        const count = typeof d.children === 'number' ? d.children : undefined;
        text = `Request received through ${SOURCE_WORDS[String(d.source)] ?? 'an unknown route'}${count === undefined ? '' : ` naming ${plural(count, 'child', 'children')}`}.`;
        break;
      }
      case 'extended':
        text = `The parent sent the form again: ${plural(Number(d.addedChildren ?? 0), 'child', 'children')} added${d.commentAdded ? ' and a comment added' : ''}.`;
        break;
      case 'details_held': {
        const count = typeof d.children === 'number' ? d.children : 0;
        text = `The form was sent again for this email address (${plural(count, 'child', 'children')}${d.commentAdded ? ' and a comment' : ''}). Nothing was added: the new details wait until the link emailed to the address is opened.`;
        break;
      }
      case 'open_request_duplicate':
        text =
          typeof d.duplicateOf === 'number'
            ? `Request ${d.duplicateOf} is a newer open request for the same email address. Check whether this one is a duplicate of it.`
            : 'There is a newer open request for the same email address. Check whether this one is a duplicate.';
        break;
      case 'email_verified':
        text = 'The parent confirmed their email address.';
        break;
      case 'verification_resent':
        text = 'A new confirmation link was emailed to the parent (earlier links stopped working).';
        break;
      case 'approved': {
        text = 'Approved.';
        const matches = Array.isArray(d.children) ? (d.children as Array<{ childId?: unknown; moodleUserId?: unknown }>) : [];
        for (const m of matches) {
          if (m && typeof m === 'object' && 'moodleUserId' in m) {
            details.push(`${childName(m.childId)}: ${typeof m.moodleUserId === 'number' ? `Moodle pupil account ${m.moodleUserId}` : 'no Moodle account'}`);
          }
        }
        if (typeof d.existingAccount === 'number') details.push(`Linked to the parent's existing Moodle account ${d.existingAccount} (no new account).`);
        for (const line of Array.isArray(d.evidence) ? d.evidence : []) if (typeof line === 'string') details.push(line);
        break;
      }
      case 'denied':
        text = 'Denied. The parent was emailed the reason.';
        break;
      case 'marked_duplicate':
        text = typeof d.duplicateOf === 'number' ? `Marked as a duplicate of request ${d.duplicateOf}.` : 'Marked as a duplicate.';
        break;
      case 'marked_bogus':
        text = 'Rejected as not genuine.';
        break;
      case 'revoked':
        text = typeof d.childId === 'number' ? `Access removed: the link to ${childName(d.childId)} was the last one.` : 'Access removed for the whole request.';
        break;
      case 'child_revoked':
        text = `The link to ${childName(d.childId)} was removed.`;
        break;
      case 'commented':
        text = 'Staff comment added.';
        break;
      case 'children_linked':
        text = `Linked in Moodle: ${childNames(ids(d.childIds))}.`;
        break;
      case 'link_failed':
        text = 'Moodle could not link everything; it is tried again.';
        for (const f of Array.isArray(d.children) ? (d.children as Array<{ childId?: unknown; error?: unknown }>) : []) {
          if (f && typeof f.error === 'string') details.push(`${childName(f.childId)}: ${f.error}`);
        }
        for (const p of Array.isArray(d.problems) ? d.problems : []) if (typeof p === 'string') details.push(p);
        break;
      case 'waiting_for_moodle':
        text = 'Waiting for Moodle to create the parent’s account.';
        if (typeof d.message === 'string') details.push(d.message);
        break;
      case 'provisioned':
        text = 'Account ready; the parent was emailed.';
        break;
      case 'role_unassigned':
        text = `The Parent role for ${childName(d.childId)} was removed in Moodle.`;
        break;
      case 'unassign_failed':
        text = `The Parent role for ${childName(d.childId)} could not be removed in Moodle yet; it is tried again.`;
        if (typeof d.error === 'string') details.push(d.error);
        break;
      case 'pupil_picked':
        text = `Pupil picked for ${childName(d.childId)}${typeof d.moodleUserId === 'number' ? `: Moodle pupil account ${d.moodleUserId}` : ''}. The next provisioning cycle links them.`;
        break;
      case 'imported_from_wordpress_plugin':
        text = `Imported from the WordPress plugin${typeof d.wpRequestId === 'number' ? ` (its request ${d.wpRequestId}` : ' (from a row of its auth table'}${typeof d.pluginStatus === 'string' ? `, “${d.pluginStatus}” there)` : ')'}.`;
        if (typeof d.duplicateOf === 'number') details.push(`Request ${d.duplicateOf} was already open for this email address, so this one is its duplicate.`);
        if (typeof d.duplicateOfWpRequest === 'number') details.push(`The plugin’s request ${d.duplicateOfWpRequest} has the same Moodle account: its children are on that request.`);
        break;
      case 'erased':
        text = 'Personal data erased. Only what happened to the request is kept.';
        break;
      default:
        text = `${event.action.charAt(0).toUpperCase()}${event.action.slice(1).replace(/_/g, ' ')}.`;
        break;
    }
    if (reason) details.unshift(`Reason: ${reason}`);
    const from = statusWords(d.from);
    const to = statusWords(d.to);
    if (from && to) details.push(`Status: ${from} → ${to}`);
    return { at: event.createdAt, who: describeActor(event.actorType, event.actorId, staffNames), text, details };
  });
}
