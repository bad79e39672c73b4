// The request page of the dashboard: everything the parent sent, the Moodle pupil accounts each
// child may be, the parent's own Moodle account if one exists, the audit trail, and the staff
// actions, each of which goes through the request lifecycle.
import type { Config } from '../config';
import type { Database } from '../db/database';
import { ValidationError } from '../errors';
import { newVerificationToken } from '../intake/intake.service';
import { isDeletedAccount, type MoodleClient, type MoodleUser } from '../moodle/moodle-client';
import { MoodleError } from '../moodle/moodle-error';
import { findPupilCandidates, searchPupils, type PupilCandidate, type PupilMatch } from '../moodle/pupil-candidates';
import type { Actor, ChildMatch, RequestLifecycle } from '../requests/request-lifecycle';
import type { ChildRecord, RequestRecord, RequestRepository } from '../requests/request-repository';
import { isAllowed, STATUS_LABELS, type LifecycleAction } from '../requests/request-states';
import { usernameFromEmail } from '../requests/username';
import type { StaffAccounts } from '../staff-auth/staff-accounts.service';
import { buildStaffTimeline, describeActorLabel, type StaffTimelineEntry } from './request-page-timeline';
import type { GuardianRecordsService, RequestEvidence } from '../guardian-records/guardian-records.service';

/**
 * What staff chose on the page, carried through the search round trips (GET) and the approval
 * (POST) in flat field names, so that no body or query parser turns a child id into an array index.
 */
export interface PageChoices {
  /** match_<childId>: a Moodle user id, "typed" or "none". */
  match: Map<number, string>;
  /** typed_<childId>: a Moodle user id typed in by hand. */
  typed: Map<number, string>;
  /** search_<childId>: a name or username to look up in Moodle. */
  search: Map<number, string>;
  /** "new", or the Moodle user id of an existing account to link the parent to. */
  account: string | undefined;
}

const CHOICE_FIELD = /^(match|typed|search)_(\d{1,10})$/;
const MAX_CHOICE_LENGTH = 200;

export function readChoices(fields: Iterable<[string, unknown]>): PageChoices {
  const choices: PageChoices = { match: new Map(), typed: new Map(), search: new Map(), account: undefined };
  for (const [name, raw] of fields) {
    if (typeof raw !== 'string') continue;
    const value = raw.slice(0, MAX_CHOICE_LENGTH);
    if (name === 'account') {
      choices.account = value;
      continue;
    }
    const m = CHOICE_FIELD.exec(name);
    if (!m) continue;
    choices[m[1] as 'match' | 'typed' | 'search'].set(Number(m[2]), value);
  }
  return choices;
}

/** The query string that brings the page back with these choices (after a refused approval). */
export function choicesQuery(choices: PageChoices): string {
  const params = new URLSearchParams();
  for (const [id, value] of choices.match) params.set(`match_${id}`, value);
  for (const [id, value] of choices.typed) if (value.trim() !== '') params.set(`typed_${id}`, value);
  if (choices.account) params.set('account', choices.account);
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}

/** A problem with one field of the approval form: shown beside the field and in the error summary. */
export interface FieldProblem {
  /** The id of the field the summary links to. */
  field: string;
  message: string;
}

/** A Moodle user id typed in for a child, as Moodle knows it, for staff to confirm before approving. */
export interface TypedAccountCheck {
  childId: number;
  childName: string;
  moodleUserId: number;
  /** "Alice Pupil, 7B (pupil.a)"; undefined when Moodle could not be asked. */
  description: string | undefined;
  profileUrl: string | undefined;
}

/** What an approval needs before it can be made. */
export type ApprovalReview =
  | { kind: 'problems'; problems: FieldProblem[] }
  | { kind: 'confirm'; typed: TypedAccountCheck[]; moodleProblem: string | undefined }
  | { kind: 'ready' };

/** confirmed_<childId>: the typed Moodle user id staff confirmed for that child. */
const CONFIRMED_FIELD = /^confirmed_(\d{1,10})$/;
/** The approval form's fields that the confirmation step sends again. */
const CARRIED_FIELD = /^(?:(?:match|typed)_\d{1,10}|account|accountUsername_\d{1,10}|accountChoiceRequired)$/;

/** The approval form's choices as hidden fields, for the confirmation step's form. */
export function carriedApprovalFields(body: Record<string, unknown>): Array<[string, string]> {
  return Object.entries(body)
    .filter((entry): entry is [string, string] => CARRIED_FIELD.test(entry[0]) && typeof entry[1] === 'string')
    .map(([name, value]) => [name, value.slice(0, MAX_CHOICE_LENGTH)]);
}

/** How staff recognise a pupil account: "Alice Pupil, 7B (pupil.a)". */
export function describePupilAccount(user: Pick<MoodleUser, 'fullname' | 'department' | 'username'>): string {
  return `${user.fullname}, ${user.department.trim() === '' ? 'no tutor group' : user.department} (${user.username})`;
}

export interface ChildView {
  child: ChildRecord;
  /** Taken into account by an approval (a revoked child is not). */
  active: boolean;
  match: PupilMatch | undefined;
  searchQuery: string;
  /** undefined when nothing was searched for. */
  searchResults: PupilCandidate[] | undefined;
  /** Every pupil account offered as a choice: the candidates, then search results not among them. */
  options: Array<PupilCandidate & { profileUrl: string | undefined }>;
  /** The chosen value: a Moodle user id, "typed", "none" or "" (nothing chosen yet). */
  selected: string;
  typed: string;
  profileUrl: string | undefined;
}

export interface ParentAccounts {
  /** What the parent's Moodle username would be, or why the email address cannot be one. */
  username: string | null;
  usernameProblem: string | null;
  /** Moodle accounts with the parent's username or email that this service does not manage. */
  existing: Array<MoodleUser & { profileUrl: string | undefined }>;
  /** Accounts this service made earlier (auth_db), e.g. from an earlier, revoked request. */
  managed: Array<MoodleUser & { profileUrl: string | undefined }>;
}

export interface RequestPageView {
  request: RequestRecord;
  statusLabel: string;
  erased: boolean;
  decidedBy: string;
  children: ChildView[];
  timeline: StaffTimelineEntry[];
  moodle: { configured: boolean; problem: string | undefined; problemHelp: string | undefined };
  parentAccounts: ParentAccounts | undefined;
  accountChoice: string;
  parentProfileUrl: string | undefined;
  can: Record<'approve' | 'deny' | 'duplicate' | 'bogus' | 'revoke' | 'revokeChild' | 'resend' | 'comment' | 'erase', boolean>;
  /** Why erasing is not possible now, when the status would allow it. */
  eraseBlocked: string | undefined;
  /** What the school's guardian records say about this request, while it waits for review. */
  schoolRecords: RequestEvidence | undefined;
}

export interface RequestPageDependencies {
  db: Database;
  lifecycle: RequestLifecycle;
  repository: RequestRepository;
  moodle: MoodleClient | undefined;
  staffAccounts: Pick<StaffAccounts, 'list'>;
  config: Pick<Config, 'moodle' | 'intake'>;
  /** The school's guardian records: their evidence is shown and their pupils preselected. */
  schoolRecords?: Pick<GuardianRecordsService, 'evidenceFor'>;
  now?: () => number;
}

function positiveId(value: unknown): number | undefined {
  if (typeof value !== 'string' || !/^\d{1,10}$/.test(value.trim())) return undefined;
  const n = Number(value.trim());
  return n > 0 && Number.isSafeInteger(n) ? n : undefined;
}

function childName(child: ChildRecord): string {
  return [child.firstName, child.lastName].filter(Boolean).join(' ') || 'this child';
}

function text(body: Record<string, unknown>, name: string): string {
  const value = body[name];
  return typeof value === 'string' ? value : '';
}

/** The version the page showed; every decision is refused if the request changed since. */
export function expectedVersion(body: Record<string, unknown>): number {
  const version = positiveId(body.version);
  if (version === undefined) throw new ValidationError('The form was incomplete, so nothing was changed. Reload the page and try again.');
  return version;
}

export class RequestPageService {
  private readonly now: () => number;

  constructor(private readonly deps: RequestPageDependencies) {
    this.now = deps.now ?? Date.now;
  }

  moodleProfileUrl(moodleUserId: number | null | undefined): string | undefined {
    const base = this.deps.config.moodle.url?.replace(/\/+$/, '');
    return base && moodleUserId ? `${base}/user/profile.php?id=${moodleUserId}` : undefined;
  }

  async load(id: number, choices: PageChoices): Promise<RequestPageView> {
    const { db, lifecycle, repository, moodle } = this.deps;
    const { request, children } = await lifecycle.get(id);
    const events = await repository.auditFor(db, id);
    const staffNames = new Map((await this.deps.staffAccounts.list()).map((u) => [u.username, u.displayName]));
    const erased = request.erasedAt !== null;
    const reviewing = request.status === 'pending' && !erased;

    // Moodle is asked only while a decision is open. After its first failure it is not asked
    // again for this page: the page must still come up, without Moodle, for approving by hand.
    let problem: MoodleError | undefined;
    const ask = async <T>(question: (client: MoodleClient) => Promise<T>): Promise<T | undefined> => {
      if (!moodle || problem) return undefined;
      try {
        return await question(moodle);
      } catch (error) {
        if (!(error instanceof MoodleError)) throw error;
        problem = error;
        return undefined;
      }
    };

    const schoolRecords = reviewing && this.deps.schoolRecords ? (await this.deps.schoolRecords.evidenceFor([id])).get(id) : undefined;
    const recordsPupil = new Map((schoolRecords?.result?.children ?? []).filter((c) => c.matched && c.moodlePupil).map((c) => [c.childId, c.moodlePupil as PupilCandidate]));

    const childViews: ChildView[] = [];
    for (const child of children) {
      const active = child.linkState !== 'revoked';
      const searchQuery = choices.search.get(child.id)?.trim() ?? '';
      const match = reviewing && active ? await ask((client) => findPupilCandidates(client, child)) : undefined;
      const searchResults = reviewing && active && searchQuery !== '' ? await ask((client) => searchPupils(client, searchQuery)) : undefined;
      const options = [...(match?.candidates ?? [])];
      const fromRecords = active ? recordsPupil.get(child.id) : undefined;
      if (fromRecords && !options.some((o) => o.id === fromRecords.id)) options.unshift(fromRecords);
      for (const found of searchResults ?? []) if (!options.some((o) => o.id === found.id)) options.push(found);

      let selected = choices.match.get(child.id) ?? '';
      let typed = choices.typed.get(child.id) ?? '';
      // The pupil the school records name is preselected; else an exact match from Moodle.
      if (selected === '' && fromRecords) selected = String(fromRecords.id);
      if (selected === '' && match?.kind === 'exact' && match.candidates[0]) selected = String(match.candidates[0].id);
      // A pupil chosen from an earlier search that is not offered now stays chosen, as a typed id.
      if (/^\d+$/.test(selected) && !options.some((o) => String(o.id) === selected)) {
        typed = selected;
        selected = 'typed';
      }
      childViews.push({
        child,
        active,
        match,
        searchQuery,
        searchResults,
        options: options.map((o) => ({ ...o, profileUrl: this.moodleProfileUrl(o.id) })),
        selected,
        typed,
        profileUrl: this.moodleProfileUrl(child.moodleUserId),
      });
    }

    let parentAccounts: ParentAccounts | undefined;
    if (reviewing) {
      const username = usernameFromEmail(request.email);
      const byUsername = username.ok ? await ask((client) => client.getUsersByField('username', [username.username])) : [];
      const byEmail = await ask((client) => client.getUsersByField('email', [request.email]));
      const found = new Map<number, MoodleUser>();
      for (const user of [...(byUsername ?? []), ...(byEmail ?? [])]) found.set(user.id, user);
      const withLink = [...found.values()].map((u) => ({ ...u, profileUrl: this.moodleProfileUrl(u.id) }));
      parentAccounts = {
        username: username.ok ? username.username : null,
        usernameProblem: username.ok ? null : username.reason,
        existing: withLink.filter((u) => u.auth !== 'db'),
        managed: withLink.filter((u) => u.auth === 'db'),
      };
    }

    const can = (action: LifecycleAction) => !erased && isAllowed(action, request.status);
    const unlinkDue = children.some((c) => c.unassignPending);
    return {
      request,
      statusLabel: STATUS_LABELS[request.status],
      erased,
      decidedBy: describeActorLabel(request.decidedBy, staffNames),
      children: childViews,
      timeline: buildStaffTimeline(events, children, staffNames),
      moodle: { configured: moodle !== undefined, problem: problem?.message, problemHelp: problem?.help },
      parentAccounts,
      accountChoice: choices.account ?? '',
      parentProfileUrl: this.moodleProfileUrl(request.moodleUserId),
      can: {
        approve: can('approve'),
        deny: can('deny'),
        duplicate: can('mark_duplicate'),
        bogus: can('mark_bogus'),
        revoke: can('revoke'),
        revokeChild: can('revoke_child'),
        resend: can('resend_verification'),
        comment: !erased,
        erase: can('erase') && !unlinkDue,
      },
      schoolRecords,
      eraseBlocked:
        can('erase') && unlinkDue
          ? 'A child on this request still has to be unlinked in Moodle, which the next provisioning cycle does. It can be erased after that.'
          : undefined,
    };
  }

  // ------------------------------------------------------------------ actions

  /**
   * Checks an approval before it is made: every "another Moodle account" has a readable id, and,
   * when Moodle is connected, that id is a pupil's live account (not missing, deleted, suspended
   * or the parent's own), shown to staff by name to confirm before anything is approved. Without
   * Moodle, or for a request no longer waiting, it is left to the lifecycle (which refuses).
   */
  async reviewApproval(id: number, body: Record<string, unknown>): Promise<ApprovalReview> {
    const { request, children } = await this.deps.lifecycle.get(id);
    if (request.status !== 'pending' || request.erasedAt !== null) return { kind: 'ready' };
    const choices = readChoices(Object.entries(body));
    const problems: FieldProblem[] = [];
    if ((choices.account ?? '') === '' && text(body, 'accountChoiceRequired') === '1') {
      problems.push({
        field: 'existing-account',
        message: 'Choose whether the parent gets a new Moodle account or uses the account that already exists in Moodle.',
      });
    }
    const typed: Array<{ child: ChildRecord; moodleUserId: number }> = [];
    for (const child of children) {
      if (child.linkState === 'revoked') continue;
      if ((choices.match.get(child.id) ?? '') === '') {
        problems.push({ field: `child-${child.id}`, message: `Choose a Moodle pupil account for ${childName(child)}, or “No Moodle account for this child”.` });
        continue;
      }
      if (choices.match.get(child.id) !== 'typed') continue;
      const moodleUserId = positiveId(choices.typed.get(child.id));
      if (moodleUserId === undefined) {
        problems.push({
          field: `typed_${child.id}`,
          message: `Type the Moodle user id of ${childName(child)}’s account: a number, shown after id= in the address of the pupil’s Moodle profile.`,
        });
      } else {
        typed.push({ child, moodleUserId });
      }
    }
    if (problems.length > 0) return { kind: 'problems', problems };
    const moodle = this.deps.moodle;
    if (typed.length === 0 || !moodle) return { kind: 'ready' };

    let found: MoodleUser[] | undefined;
    let moodleProblem: string | undefined;
    try {
      found = await moodle.getUsersByField('id', typed.map((t) => t.moodleUserId));
    } catch (error) {
      if (!(error instanceof MoodleError)) throw error;
      moodleProblem = error.message;
    }
    const fromEmail = usernameFromEmail(request.email);
    const parentUsernames = new Set(
      [request.moodleUsername, fromEmail.ok ? fromEmail.username : null].filter((u): u is string => u !== null).map((u) => u.toLowerCase()),
    );
    const parentIds = new Set([request.moodleUserId, positiveId(choices.account)].filter((n): n is number => typeof n === 'number'));
    const checks: TypedAccountCheck[] = [];
    for (const { child, moodleUserId } of typed) {
      const field = `typed_${child.id}`;
      const name = childName(child);
      const user = found?.find((u) => u.id === moodleUserId);
      if (found !== undefined && user === undefined) {
        problems.push({ field, message: `There is no Moodle account with the user id ${moodleUserId} (typed for ${name}). Check the number in the address of the pupil’s Moodle profile.` });
      } else if (user && isDeletedAccount(user)) {
        problems.push({ field, message: `Moodle user ${moodleUserId} (typed for ${name}) has been deleted in Moodle, so ${name} cannot be linked to it. Type the id of the pupil’s current account.` });
      } else if (user && (parentIds.has(user.id) || parentUsernames.has(user.username.toLowerCase()) || (user.email ?? '').toLowerCase() === request.email.toLowerCase())) {
        problems.push({ field, message: `Moodle user ${moodleUserId} (typed for ${name}) is the parent’s own account, ${user.fullname} (${user.username}), not a pupil’s. Type the pupil’s Moodle user id.` });
      } else if (user?.suspended) {
        problems.push({ field, message: `Moodle user ${moodleUserId} (typed for ${name}), ${describePupilAccount(user)}, is suspended in Moodle, so ${name} cannot be linked to it. Type another id, or have the account made active in Moodle first.` });
      } else {
        checks.push({ childId: child.id, childName: name, moodleUserId, description: user ? describePupilAccount(user) : undefined, profileUrl: this.moodleProfileUrl(moodleUserId) });
      }
    }
    if (problems.length > 0) return { kind: 'problems', problems };
    const confirmed = new Map<number, string>();
    for (const [name, value] of Object.entries(body)) {
      const m = CONFIRMED_FIELD.exec(name);
      if (m && typeof value === 'string') confirmed.set(Number(m[1]), value);
    }
    if (checks.every((c) => confirmed.get(c.childId) === String(c.moodleUserId))) return { kind: 'ready' };
    return { kind: 'confirm', typed: checks, moodleProblem };
  }

  async approve(id: number, body: Record<string, unknown>, actor: Actor): Promise<RequestRecord> {
    const version = expectedVersion(body);
    const choices = readChoices(Object.entries(body));
    const matches: ChildMatch[] = [];
    for (const [childId, value] of choices.match) {
      if (value === 'none') {
        matches.push({ childId, moodleUserId: null });
      } else if (value === 'typed') {
        const typed = positiveId(choices.typed.get(childId));
        if (typed === undefined) {
          throw new ValidationError('Where you chose “another Moodle account”, type its Moodle user id (a number, shown in the address of the pupil’s Moodle profile).');
        }
        matches.push({ childId, moodleUserId: typed });
      } else {
        const chosen = positiveId(value);
        if (chosen === undefined) throw new ValidationError('A choice on the form could not be read. Reload the page and try again.');
        matches.push({ childId, moodleUserId: chosen });
      }
    }
    let existingAccount: { moodleUserId: number; username: string | null } | undefined;
    const account = choices.account ?? '';
    if (account === '' && text(body, 'accountChoiceRequired') === '1') {
      throw new ValidationError('Choose whether the parent gets a new Moodle account or uses the account that already exists in Moodle.');
    }
    if (account !== '' && account !== 'new') {
      const moodleUserId = positiveId(account);
      if (moodleUserId === undefined) throw new ValidationError('The existing Moodle account could not be read. Reload the page and try again.');
      const username = text(body, `accountUsername_${moodleUserId}`).trim().slice(0, 100);
      existingAccount = { moodleUserId, username: username === '' ? null : username };
    }
    return this.deps.lifecycle.approveRequest(id, { expectedVersion: version, children: matches, ...(existingAccount ? { existingAccount } : {}) }, actor);
  }

  async deny(id: number, body: Record<string, unknown>, actor: Actor): Promise<RequestRecord> {
    return this.deps.lifecycle.denyRequest(id, { expectedVersion: expectedVersion(body), reason: text(body, 'reason') }, actor);
  }

  async markDuplicate(id: number, body: Record<string, unknown>, actor: Actor): Promise<RequestRecord> {
    const version = expectedVersion(body);
    const ofText = text(body, 'duplicateOf').trim().replace(/^#/, '');
    const duplicateOf = ofText === '' ? null : positiveId(ofText);
    if (duplicateOf === undefined) {
      const message = 'The other request’s number must be a whole number, such as 42, or left empty.';
      throw new ValidationError(message, [{ field: 'duplicateOf', message }]);
    }
    if (duplicateOf === id) {
      const message = 'A request cannot be a duplicate of itself: type the number of the other request, or leave it empty.';
      throw new ValidationError(message, [{ field: 'duplicateOf', message }]);
    }
    return this.deps.lifecycle.markDuplicate(id, { expectedVersion: version, duplicateOf, reason: text(body, 'reason') || null }, actor);
  }

  async markBogus(id: number, body: Record<string, unknown>, actor: Actor): Promise<RequestRecord> {
    return this.deps.lifecycle.markBogus(id, { expectedVersion: expectedVersion(body), reason: text(body, 'reason') || null }, actor);
  }

  async revoke(id: number, body: Record<string, unknown>, actor: Actor): Promise<RequestRecord> {
    return this.deps.lifecycle.revokeRequest(id, { expectedVersion: expectedVersion(body), reason: text(body, 'reason') || null }, actor);
  }

  async revokeChild(id: number, body: Record<string, unknown>, actor: Actor): Promise<RequestRecord> {
    const version = expectedVersion(body);
    const childId = positiveId(body.childId);
    if (childId === undefined) throw new ValidationError('The form was incomplete, so nothing was changed. Reload the page and try again.');
    return this.deps.lifecycle.revokeChild(id, childId, { expectedVersion: version, reason: text(body, 'reason') || null }, actor);
  }

  async comment(id: number, body: Record<string, unknown>, actor: Actor): Promise<RequestRecord> {
    return this.deps.lifecycle.addStaffComment(id, text(body, 'comment'), actor);
  }

  /** A new confirmation link for the parent, mailed by the lifecycle's mail listener; the old link stops working. */
  async resendVerification(id: number, actor: Actor): Promise<RequestRecord> {
    return this.deps.lifecycle.replaceVerificationToken(id, newVerificationToken(), this.now() + this.deps.config.intake.verificationTtlMs, actor);
  }
}
