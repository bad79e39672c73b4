// Moodle usernames for parents: the email address, lower-cased, checked against what Moodle
// accepts. Moodle's auth_db sync silently skips a username it cannot use ("Error inserting
// user"), so an unusable one is refused at approval instead of failing later out of sight.

/** Moodle's PARAM_USERNAME without extended characters: lower-case letters, digits, _ . @ - */
const MOODLE_USERNAME = /^[a-z0-9_.@-]+$/;
export const MOODLE_USERNAME_MAX_LENGTH = 100;

export type UsernameResult = { ok: true; username: string } | { ok: false; reason: string };

export function usernameFromEmail(email: string): UsernameResult {
  const username = email.trim().toLowerCase();
  if (username === '') return { ok: false, reason: 'The parent has no email address to make a Moodle username from.' };
  if (username.length > MOODLE_USERNAME_MAX_LENGTH) {
    return {
      ok: false,
      reason: `The email address is longer than ${MOODLE_USERNAME_MAX_LENGTH} characters, which Moodle does not allow for a username.`,
    };
  }
  if (!MOODLE_USERNAME.test(username)) {
    const bad = [...new Set([...username].filter((c) => !/[a-z0-9_.@-]/.test(c)))].join(' ');
    return {
      ok: false,
      reason:
        `The email address ${username} cannot be a Moodle username because it contains ${bad}. ` +
        'Moodle usernames may only contain lower-case letters, digits and the characters _ . @ - ' +
        "and Moodle's user sync would silently skip this parent. Ask the parent for another address, " +
        'or link the request to an existing Moodle account.',
    };
  }
  return { ok: true, username };
}
