// The cycle preview: what the next provisioning cycle will do, found with read-only Moodle calls
// (site info and look-ups; no sync, no assignment) and the same rules as the cycle (resolveParent,
// pupilStanding), so the preview and the cycle that follows agree.
import type { Database } from '../db/database';
import { CANNOT_SEE_USERS_HELP, CANNOT_SEE_USERS_MESSAGE } from '../moodle/moodle-checks';
import type { MoodleClient } from '../moodle/moodle-client';
import { MoodleError } from '../moodle/moodle-error';
import type { RequestRepository } from '../requests/request-repository';
import { CycleRepository } from './cycle-repository';
import { MOODLE_NOT_CONFIGURED_MESSAGE, pupilStanding, resolveParent } from './provisioning-cycle';

export interface CyclePreviewSettings {
  parentRoleId: number | undefined;
  syncCommand: string | undefined;
  syncWaitWarnMs: number;
}

export interface CyclePreview {
  checkedAt: number;
  /** Why the preview (and so the cycle) cannot work with Moodle now; the lists are then empty. */
  problem: { message: string; help: string | null } | null;
  /** Auth-table rows Moodle has no active account for: its next user sync creates (or revives) them. */
  parentsToCreate: Array<{ requestId: number; username: string; revived: boolean }>;
  /** Parent roles the cycle assigns; afterSync: only once the sync command has created the parent. */
  linksToAdd: Array<{ requestId: number; childId: number; pupilId: number; afterSync: boolean }>;
  /** Revoked links whose role the cycle removes; inMoodle false: the parent never had an account, nothing to remove. */
  linksToRemove: Array<{ requestId: number; childId: number; pupilId: number | null; inMoodle: boolean }>;
  /** Children the cycle will fail: their pupil's account was deleted in Moodle. */
  childrenFailing: Array<{ requestId: number; childId: number; pupilId: number }>;
  /** Requests that stay waiting (for Moodle's sync, or a suspended pupil); tooLong past SYNC_WAIT_WARN_MINUTES. */
  requestsWaiting: Array<{ requestId: number; message: string; tooLong: boolean }>;
  /** Requests whose username Moodle already has as an account this service does not manage. */
  requestsConflicting: Array<{ requestId: number; message: string }>;
}

export interface CyclePreviewDependencies {
  db: Database;
  requests: RequestRepository;
  moodle: MoodleClient | undefined;
  settings: CyclePreviewSettings;
  now?: () => number;
}

function emptyPreview(checkedAt: number, problem: CyclePreview['problem']): CyclePreview {
  return { checkedAt, problem, parentsToCreate: [], linksToAdd: [], linksToRemove: [], childrenFailing: [], requestsWaiting: [], requestsConflicting: [] };
}

export class CyclePreviewer {
  private readonly cycles: CycleRepository;
  private readonly now: () => number;

  constructor(private readonly deps: CyclePreviewDependencies) {
    this.cycles = new CycleRepository(deps.db);
    this.now = deps.now ?? Date.now;
  }

  async preview(): Promise<CyclePreview> {
    const now = this.now();
    const { moodle, settings } = this.deps;
    if (!moodle) return emptyPreview(now, { message: MOODLE_NOT_CONFIGURED_MESSAGE, help: 'Set MOODLE_URL, MOODLE_TOKEN and MOODLE_PARENT_ROLE_ID, then run "doctor".' });
    if (settings.parentRoleId === undefined) return emptyPreview(now, { message: 'MOODLE_PARENT_ROLE_ID is not set, so the cycle links no parent.', help: 'Set MOODLE_PARENT_ROLE_ID, then run "doctor".' });
    try {
      return await this.look(moodle, now);
    } catch (error) {
      if (error instanceof MoodleError) return emptyPreview(now, { message: error.message, help: error.help ?? null });
      throw error;
    }
  }

  private async look(moodle: MoodleClient, now: number): Promise<CyclePreview> {
    const { settings } = this.deps;
    const site = await moodle.getSiteInfo();
    const work = await this.cycles.dueApprovedRequests(now);
    const unassignments = await this.cycles.dueUnassignments(now);
    const authRows = await this.deps.requests.allAuthRows(this.deps.db);

    const usernames = new Set<string>(authRows.map((r) => r.username));
    for (const { request } of work) if (!request.linkExistingAccount && request.moodleUsername) usernames.add(request.moodleUsername);
    for (const u of unassignments) if (u.parentMoodleUserId === null && u.moodleUsername) usernames.add(u.moodleUsername);
    const pupilIds = new Set<number>();
    for (const { children } of work) for (const c of children) if (c.linkState === 'matched' && c.moodleUserId !== null) pupilIds.add(c.moodleUserId);
    const parents = new Map((await moodle.getUsersByField('username', [...usernames])).map((u) => [u.username, u]));
    const pupils = new Map((await moodle.getUsersByField('id', [...pupilIds])).map((u) => [u.id, u]));
    const asked = [...pupilIds].filter((id) => id !== site.userid).length + usernames.size;
    if (asked > 0 && [...parents.values(), ...pupils.values()].every((u) => u.id === site.userid)) {
      return emptyPreview(now, { message: CANNOT_SEE_USERS_MESSAGE, help: CANNOT_SEE_USERS_HELP });
    }

    const preview = emptyPreview(now, null);
    const createdAtSync = new Set<string>();
    for (const row of authRows) {
      const user = parents.get(row.username);
      if (user === undefined || (user.suspended && user.auth === 'db')) {
        preview.parentsToCreate.push({ requestId: row.requestId, username: row.username, revived: user !== undefined });
        createdAtSync.add(row.username);
      }
    }

    for (const { request, children } of work) {
      const matched = children.filter((c) => c.linkState === 'matched' && c.moodleUserId !== null);
      const parent = resolveParent(request, parents, settings.syncWaitWarnMs);
      // With a sync command the cycle runs Moodle's sync first, so a parent it creates is linked at once.
      const afterSync = parent.kind === 'waiting' && settings.syncCommand !== undefined && request.moodleUsername !== null && createdAtSync.has(request.moodleUsername);
      if (parent.kind === 'conflict') {
        preview.requestsConflicting.push({ requestId: request.id, message: parent.message });
        continue;
      }
      if (parent.kind === 'waiting' && !afterSync) {
        const tooLong = now - (request.waitingSince ?? now) > settings.syncWaitWarnMs;
        preview.requestsWaiting.push({ requestId: request.id, message: tooLong ? parent.tooLongMessage : parent.message, tooLong });
        continue;
      }
      let suspended = false;
      for (const child of matched) {
        const pupilId = child.moodleUserId as number;
        const standing = pupilStanding(pupils.get(pupilId));
        if (standing === 'deleted') preview.childrenFailing.push({ requestId: request.id, childId: child.id, pupilId });
        else if (standing === 'suspended') suspended = true;
        else preview.linksToAdd.push({ requestId: request.id, childId: child.id, pupilId, afterSync });
      }
      if (suspended) preview.requestsWaiting.push({ requestId: request.id, message: "Waiting: a pupil's Moodle account is suspended.", tooLong: false });
    }

    for (const u of unassignments) {
      const parentId = u.parentMoodleUserId ?? (u.moodleUsername ? parents.get(u.moodleUsername)?.id : undefined);
      preview.linksToRemove.push({ requestId: u.child.requestId, childId: u.child.id, pupilId: u.child.moodleUserId, inMoodle: parentId !== undefined && u.child.moodleUserId !== null });
    }
    return preview;
  }
}

/** For a summary line: how many of each. */
export function previewCounts(preview: CyclePreview): Record<'parentsToCreate' | 'linksToAdd' | 'linksToRemove' | 'childrenFailing' | 'waitingTooLong' | 'requestsWaiting' | 'requestsConflicting', number> {
  return {
    parentsToCreate: preview.parentsToCreate.length,
    linksToAdd: preview.linksToAdd.length,
    linksToRemove: preview.linksToRemove.length,
    childrenFailing: preview.childrenFailing.length,
    waitingTooLong: preview.requestsWaiting.filter((w) => w.tooLong).length,
    requestsWaiting: preview.requestsWaiting.length,
    requestsConflicting: preview.requestsConflicting.length,
  };
}

