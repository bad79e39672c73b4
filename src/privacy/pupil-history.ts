// The access history of one pupil: every parent who was linked (or matched, awaiting the link)
// to the pupil's Moodle account, who approved it and when, and when and by whom it was removed.
// Built from request_children, requests and the audit trail; exported as CSV for safeguarding.
// An erased request no longer says which pupil it named, so it is not part of any history.
import { stringify } from 'csv-stringify/sync';
import type { AuditEventRecord } from '../requests/request-repository';
import { neutraliseCell } from '../review/requests-csv-export';
import type { PupilLinkRow } from './privacy.repository';
import { describeActor } from '../review/request-page-timeline';

export interface PupilHistoryEntry {
  requestId: number;
  childId: number;
  parentName: string;
  parentEmail: string;
  parentUsername: string | null;
  parentMoodleUserId: number | null;
  requestStatus: string;
  linkState: string;
  approvedAt: number | null;
  approvedBy: string | null;
  linkedAt: number | null;
  revokedAt: number | null;
  revokedBy: string | null;
  revokeReason: string | null;
  /** When the Parent role was actually taken away in Moodle. */
  unlinkedAt: number | null;
  /** What an approval by the school's guardian records rested on (empty for a staff approval). */
  approvalEvidence: string[];
}

const REVOKING_ACTIONS = new Set(['revoked', 'child_revoked', 'denied', 'marked_duplicate', 'marked_bogus']);

function includesChild(value: unknown, childId: number): boolean {
  return Array.isArray(value) && value.some((v: unknown) => v === childId || (v as { childId?: unknown } | null)?.childId === childId);
}

export function buildPupilHistory(links: PupilLinkRow[], auditByRequest: ReadonlyMap<number, AuditEventRecord[]>): PupilHistoryEntry[] {
  return links.map(({ child, request }) => {
    const events = auditByRequest.get(request.id) ?? [];
    const approved = events.find((e) => e.action === 'approved');
    const linked = events.find((e) => e.action === 'children_linked' && includesChild(e.details.childIds, child.id));
    const revoked = events.find(
      (e) => REVOKING_ACTIONS.has(e.action) && (e.details.childId === child.id || includesChild(e.details.revokedChildren, child.id)),
    );
    const unlinked = events.find((e) => e.action === 'role_unassigned' && e.details.childId === child.id);
    const reason = revoked && typeof revoked.details.reason === 'string' ? revoked.details.reason : null;
    return {
      requestId: request.id,
      childId: child.id,
      parentName: [request.parentTitle, request.parentFirstName, request.parentLastName].filter(Boolean).join(' '),
      parentEmail: request.email,
      parentUsername: request.moodleUsername,
      parentMoodleUserId: request.moodleUserId,
      requestStatus: request.status,
      linkState: child.linkState,
      approvedAt: approved?.createdAt ?? null,
      approvedBy: approved ? describeActor(approved.actorType, approved.actorId) : null,
      linkedAt: child.linkedAt ?? linked?.createdAt ?? null,
      revokedAt: child.revokedAt ?? revoked?.createdAt ?? null,
      revokedBy: revoked ? describeActor(revoked.actorType, revoked.actorId) : null,
      revokeReason: reason,
      unlinkedAt: unlinked?.createdAt ?? null,
      approvalEvidence: Array.isArray(approved?.details.evidence) ? approved.details.evidence.filter((line): line is string => typeof line === 'string') : [],
    };
  });
}

const LINK_WORDS: Record<string, string> = {
  unmatched: 'Not matched yet',
  matched: 'Approved, waiting to be linked in Moodle',
  linked: 'Linked in Moodle',
  not_found: 'No Moodle account',
  revoked: 'Link removed',
};

export function linkWords(state: string): string {
  return LINK_WORDS[state] ?? state;
}

const timeParts = new Intl.DateTimeFormat('en-GB', {
  timeZone: 'Europe/London',
  year: 'numeric',
  month: '2-digit',
  day: '2-digit',
  hour: '2-digit',
  minute: '2-digit',
  hourCycle: 'h23',
});

/** "2026-11-21 09:05", school time: sorts as text and reads plainly in a spreadsheet. */
export function spreadsheetTime(ms: number | null): string {
  if (ms === null) return '';
  const part = Object.fromEntries(timeParts.formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
  return `${part.year}-${part.month}-${part.day} ${part.hour}:${part.minute}`;
}

export const PUPIL_HISTORY_COLUMNS = [
  'Request',
  'Parent name',
  'Parent email',
  'Parent Moodle username',
  'Parent Moodle user id',
  'Request status',
  'Link',
  'Approved at',
  'Approved by',
  'Linked in Moodle at',
  'Link removed at',
  'Link removed by',
  'Reason given',
  'Parent role removed in Moodle at',
  'Approved on the school records',
] as const;

export function pupilHistoryCsv(entries: PupilHistoryEntry[]): string {
  const rows = entries.map((e) =>
    [
      String(e.requestId),
      e.parentName,
      e.parentEmail,
      e.parentUsername ?? '',
      e.parentMoodleUserId === null ? '' : String(e.parentMoodleUserId),
      e.requestStatus,
      linkWords(e.linkState),
      spreadsheetTime(e.approvedAt),
      e.approvedBy ?? '',
      spreadsheetTime(e.linkedAt),
      spreadsheetTime(e.revokedAt),
      e.revokedBy ?? '',
      e.revokeReason ?? '',
      spreadsheetTime(e.unlinkedAt),
      e.approvalEvidence.join(' '),
    // Parents type their own names: opening the export in a spreadsheet must never run one as a formula.
    ].map(neutraliseCell),
  );
  return stringify([[...PUPIL_HISTORY_COLUMNS], ...rows], { record_delimiter: '\r\n' });
}
