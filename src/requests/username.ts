// Moodle usernames for parents: the email address, lower-cased, checked against what Moodle
// accepts. Moodle's auth_db sync silently skips a username it cannot use ("Error inserting
// user"), so an unusable one is refused: on the request form (in a parent's words) and again
// at approval (in staff's words), by the same rule.

/** Moodle's PARAM_USERNAME without extended characters: lower-case letters, digits, _ . @ - */
const MOODLE_USERNAME = /^[a-z0-9_.@-]+$/;
export const MOODLE_USERNAME_MAX_LENGTH = 100;

export type UsernameResult = { ok: true; username: string } | { ok: false; reason: string };

/** Why an address can never be a Moodle username; null when it can. */
export type UsernameProblem = { kind: 'empty' } | { kind: 'too-long'; maxLength: number } | { kind: 'characters'; characters: string[] };

/**
 * Folds A to Z to lower case and nothing else. A wider fold changes the address into another
 * one (İ becomes i and a combining dot; the Kelvin sign K becomes k): such characters stay as
 * typed, for the rule below to refuse.
 */
export function foldUsernameCase(email: string): string {
  return email.trim().replace(/[A-Z]+/g, (letters) => letters.toLowerCase());
}

/** Checks an address already folded by foldUsernameCase against what Moodle accepts. */
export function usernameProblem(username: string): UsernameProblem | null {
  if (username === '') return { kind: 'empty' };
  if (username.length > MOODLE_USERNAME_MAX_LENGTH) return { kind: 'too-long', maxLength: MOODLE_USERNAME_MAX_LENGTH };
  if (!MOODLE_USERNAME.test(username)) return { kind: 'characters', characters: [...new Set([...username].filter((c) => !/[a-z0-9_.@-]/.test(c)))] };
  return null;
}

export function usernameFromEmail(email: string): UsernameResult {
  const username = foldUsernameCase(email);
  const problem = usernameProblem(username);
  if (!problem) return { ok: true, username };
  switch (problem.kind) {
    case 'empty':
      return { ok: false, reason: 'The parent has no email address to make a Moodle username from.' };
    case 'too-long':
      return {
        ok: false,
        reason: `The email address is longer than ${problem.maxLength} characters, which Moodle does not allow for a username.`,
      };
    case 'characters':
      return {
        ok: false,
        reason:
          `The email address ${username} cannot be a Moodle username because it contains ${problem.characters.join(' ')}. ` +
          'Moodle usernames may only contain lower-case letters, digits and the characters _ . @ - ' +
          "and Moodle's user sync would silently skip this parent. Ask the parent for another address, " +
          'or link the request to an existing Moodle account.',
      };
  }
}
