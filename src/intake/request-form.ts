// The parent's request as the form and the intake API send it: one zod schema for both, the
// plain-words message for every field problem, and the reading of the form's
// `children[0][firstName]`-style fields (kept verbatim so the page can show them again).
import { z } from 'zod';
import type { FieldProblem } from '../errors';
import { REQUEST_TYPES, type RequestType } from '../requests/request-states';
import { foldUsernameCase, usernameProblem } from '../requests/username';

export const MAX_NAME = 100;
export const MAX_TITLE = 20;
export const MAX_TUTOR_GROUP = 20;
export const MAX_PUPIL_IDENTIFIER = 50;
export const MAX_COMMENT = 2000;
export const MAX_EMAIL = 254;

// Letters and combining marks of any script, spaces, apostrophes (straight and curly), hyphens
// and full stops; it must start with a letter. This keeps out digits, control characters,
// markup (< >) and emoji, none of which belong in a name that ends up in Moodle.
const NAME_PATTERN = /^[\p{L}\p{M}][\p{L}\p{M} '’.\-\u2010\u2011]*$/u;
const TITLE_PATTERN = /^[\p{L}\p{M}][\p{L}\p{M} .\-]*$/u;
const TUTOR_GROUP_PATTERN = /^[\p{L}\p{N}][\p{L}\p{N} .\/\-]*$/u;
const PUPIL_IDENTIFIER_PATTERN = /^[\p{L}\p{N}][\p{L}\p{N} .\/_\-]*$/u;
// A pragmatic email shape: one @, no spaces or angle brackets, a dot in the domain. \p{C} keeps
// out control, invisible-formatting (right-to-left overrides, zero-width) and unpaired
// surrogate characters: they would make an address that looks like another one, or that no
// mail server takes.
const EMAIL_PATTERN = /^[^\s\p{C}@<>()[\]\\,;:"]+@[^\s\p{C}@<>()[\]\\,;:"]+\.[^\s\p{C}@<>()[\]\\,;:"]{2,}$/u;
// Control characters other than tab and line breaks, and unpaired surrogates: nothing a person
// types, and trouble in mail, exports and Moodle.
const COMMENT_FORBIDDEN = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\p{Cs}]/u;

/** The messages parents see, keyed by what went wrong. `{n}` is the child's number. */
export const MESSAGES = {
  titleTooLong: `Your title must be ${MAX_TITLE} characters or fewer`,
  titleCharacters: 'Your title can only contain letters, spaces, hyphens and full stops',
  firstNameMissing: 'Enter your first name',
  firstNameTooLong: `Your first name must be ${MAX_NAME} characters or fewer`,
  firstNameCharacters: 'Your first name can only contain letters, spaces, hyphens, apostrophes and full stops',
  lastNameMissing: 'Enter your last name',
  lastNameTooLong: `Your last name must be ${MAX_NAME} characters or fewer`,
  lastNameCharacters: 'Your last name can only contain letters, spaces, hyphens, apostrophes and full stops',
  emailMissing: 'Enter your email address',
  emailTooLong: `Your email address must be ${MAX_EMAIL} characters or fewer`,
  emailFormat: 'Enter an email address in the correct format, like name@example.com',
  emailUsernameTooLong: (max: number) =>
    `Your email address must be ${max} characters or fewer, because it will also be your Moodle username. Use a shorter address, or contact the school office`,
  emailUsernameCharacters: (characters: string[]) =>
    `Your email address cannot be used as a Moodle username because it contains ${characters.map((c) => `“${c}”`).join(', ')}. ` +
    'Moodle only accepts addresses made of the letters a to z, the digits 0 to 9 and the characters . _ - @. Use another address, or contact the school office',
  emailConfirmMissing: 'Enter your email address again',
  emailMismatch: 'The two email addresses do not match',
  requestTypeMissing: 'Choose what you need help with',
  childrenMissing: 'Add at least one child',
  childrenTooMany: (max: number) => `You can add up to ${max} children on one request. Tell us about any others in the comment box.`,
  childFirstNameMissing: 'Enter the first name of child {n}',
  childFirstNameTooLong: `The first name of child {n} must be ${MAX_NAME} characters or fewer`,
  childFirstNameCharacters: 'The first name of child {n} can only contain letters, spaces, hyphens, apostrophes and full stops',
  childLastNameMissing: 'Enter the last name of child {n}',
  childLastNameTooLong: `The last name of child {n} must be ${MAX_NAME} characters or fewer`,
  childLastNameCharacters: 'The last name of child {n} can only contain letters, spaces, hyphens, apostrophes and full stops',
  tutorGroupMissing: 'Enter the tutor group of child {n}, for example 7B',
  tutorGroupTooLong: `The tutor group of child {n} must be ${MAX_TUTOR_GROUP} characters or fewer`,
  tutorGroupCharacters: 'The tutor group of child {n} can only contain letters, numbers, spaces, hyphens and slashes',
  pupilIdentifierTooLong: `The pupil number of child {n} must be ${MAX_PUPIL_IDENTIFIER} characters or fewer`,
  pupilIdentifierCharacters: 'The pupil number of child {n} can only contain letters, numbers, hyphens and slashes',
  commentTooLong: `Your comment must be ${MAX_COMMENT} characters or fewer`,
  commentCharacters: 'Your comment contains hidden control characters. Please type it again instead of pasting it',
  privacyMissing: 'Confirm that you have read the privacy notice',
} as const;

const text = (value: unknown) => (typeof value === 'string' ? value : '');

function nameField(missing: string, tooLong: string, characters: string) {
  return z
    .string({ error: missing })
    .trim()
    .min(1, { error: missing })
    .max(MAX_NAME, { error: tooLong })
    .regex(NAME_PATTERN, { error: characters });
}

const childSchema = z.object({
  firstName: nameField(MESSAGES.childFirstNameMissing, MESSAGES.childFirstNameTooLong, MESSAGES.childFirstNameCharacters),
  lastName: nameField(MESSAGES.childLastNameMissing, MESSAGES.childLastNameTooLong, MESSAGES.childLastNameCharacters),
  tutorGroup: z
    .string({ error: MESSAGES.tutorGroupMissing })
    .trim()
    .min(1, { error: MESSAGES.tutorGroupMissing })
    .max(MAX_TUTOR_GROUP, { error: MESSAGES.tutorGroupTooLong })
    .regex(TUTOR_GROUP_PATTERN, { error: MESSAGES.tutorGroupCharacters }),
  pupilIdentifier: z
    .string()
    .trim()
    .max(MAX_PUPIL_IDENTIFIER, { error: MESSAGES.pupilIdentifierTooLong })
    .refine((v) => v === '' || PUPIL_IDENTIFIER_PATTERN.test(v), { error: MESSAGES.pupilIdentifierCharacters })
    .nullish()
    .transform((v) => (v ? v : null)),
});

// Building a zod schema costs far more than using one (about a millisecond per request), so
// each limit's schema is built once.
const schemas = new Map<number, ReturnType<typeof buildRequestSchema>>();

export function requestSchema(maxChildren: number) {
  let schema = schemas.get(maxChildren);
  if (!schema) {
    schema = buildRequestSchema(maxChildren);
    schemas.set(maxChildren, schema);
  }
  return schema;
}

function buildRequestSchema(maxChildren: number) {
  return z.object({
    title: z
      .string()
      .trim()
      .max(MAX_TITLE, { error: MESSAGES.titleTooLong })
      .refine((v) => v === '' || TITLE_PATTERN.test(v), { error: MESSAGES.titleCharacters })
      .nullish()
      .transform((v) => v ?? ''),
    firstName: nameField(MESSAGES.firstNameMissing, MESSAGES.firstNameTooLong, MESSAGES.firstNameCharacters),
    lastName: nameField(MESSAGES.lastNameMissing, MESSAGES.lastNameTooLong, MESSAGES.lastNameCharacters),
    // Only A to Z are lower-cased: any other case fold would store an address the parent did
    // not type (İ becomes i and a combining dot). The address becomes the Moodle username, so
    // it must pass the rule approval applies: refused here, in words, rather than at approval.
    email: z
      .string({ error: MESSAGES.emailMissing })
      .overwrite(foldUsernameCase)
      .min(1, { error: MESSAGES.emailMissing })
      .max(MAX_EMAIL, { error: MESSAGES.emailTooLong })
      .regex(EMAIL_PATTERN, { error: MESSAGES.emailFormat })
      .superRefine((email, ctx) => {
        const problem = usernameProblem(email);
        if (problem?.kind === 'too-long') ctx.addIssue({ code: 'custom', message: MESSAGES.emailUsernameTooLong(problem.maxLength) });
        if (problem?.kind === 'characters') ctx.addIssue({ code: 'custom', message: MESSAGES.emailUsernameCharacters(problem.characters) });
      }),
    requestType: z.enum(REQUEST_TYPES, { error: MESSAGES.requestTypeMissing }),
    children: z
      .array(childSchema, { error: MESSAGES.childrenMissing })
      .min(1, { error: MESSAGES.childrenMissing })
      .max(maxChildren, { error: MESSAGES.childrenTooMany(maxChildren) }),
    comment: z
      .string()
      .trim()
      .max(MAX_COMMENT, { error: MESSAGES.commentTooLong })
      .refine((v) => !COMMENT_FORBIDDEN.test(v), { error: MESSAGES.commentCharacters })
      .nullish()
      .transform((v) => (v ? v : null)),
    privacyAccepted: z.literal(true, { error: MESSAGES.privacyMissing }),
  });
}

export interface ValidRequest {
  title: string;
  firstName: string;
  lastName: string;
  email: string;
  requestType: RequestType;
  children: Array<{ firstName: string; lastName: string; tutorGroup: string; pupilIdentifier: string | null }>;
  comment: string | null;
  privacyAccepted: true;
}

export type ValidationResult = { ok: true; data: ValidRequest } | { ok: false; problems: FieldProblem[] };

type PathPart = PropertyKey;

/**
 * Validates anything (a form read by readForm, or a JSON body). Field names in the problems
 * come from `fieldName`, so the form can use element ids and the API dotted paths.
 * Only the first problem of each field is reported.
 */
export function validateRequest(input: unknown, maxChildren: number, fieldName: (path: PathPart[]) => string): ValidationResult {
  const result = requestSchema(maxChildren).safeParse(input);
  if (result.success) return { ok: true, data: result.data as ValidRequest };
  const problems: FieldProblem[] = [];
  const seen = new Set<string>();
  for (const issue of result.error.issues) {
    const path = issue.path;
    const field = fieldName(path.length === 0 ? ['form'] : path);
    if (seen.has(field)) continue;
    seen.add(field);
    const childIndex = path[0] === 'children' && typeof path[1] === 'number' ? path[1] : undefined;
    const message = childIndex === undefined ? issue.message : issue.message.replace('{n}', String(childIndex + 1));
    problems.push({ field, message });
  }
  return { ok: false, problems };
}

/** `children-0-firstName`: the form's element ids, used for the error summary's links. */
export function formFieldId(path: PathPart[]): string {
  return path.map(String).join('-');
}

/** `children[0].firstName`: the API's field names. */
export function apiFieldName(path: PathPart[]): string {
  return path.reduce<string>((name, part) => (typeof part === 'number' ? `${name}[${part}]` : name ? `${name}.${String(part)}` : String(part)), '');
}

// ------------------------------------------------------------------ the HTML form

export interface ChildValues {
  firstName: string;
  lastName: string;
  tutorGroup: string;
  pupilIdentifier: string;
}

/** What the parent typed, verbatim, so the page can show it again after a problem. */
export interface FormValues {
  title: string;
  firstName: string;
  lastName: string;
  email: string;
  emailConfirm: string;
  requestType: string;
  children: ChildValues[];
  comment: string;
  privacyAccepted: boolean;
  /** The honeypot: people never see it, simple bots fill it in. */
  website: string;
}

export type FormAction = { kind: 'submit' } | { kind: 'add-child' } | { kind: 'remove-child'; index: number };

export function emptyChild(): ChildValues {
  return { firstName: '', lastName: '', tutorGroup: '', pupilIdentifier: '' };
}

export function emptyForm(): FormValues {
  return {
    title: '',
    firstName: '',
    lastName: '',
    email: '',
    emailConfirm: '',
    requestType: '',
    children: [emptyChild()],
    comment: '',
    privacyAccepted: false,
    website: '',
  };
}

/**
 * Reads a urlencoded body. qs turns `children[0][firstName]` into an array, but into an object
 * keyed by index past its array limit, so both are accepted and put in index order.
 * Children beyond maxChildren are dropped here and reported by `tooManyChildren`.
 */
export function readForm(body: unknown, maxChildren: number): { values: FormValues; action: FormAction; tooManyChildren: boolean } {
  const b = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  let rawChildren: unknown[] = [];
  if (Array.isArray(b.children)) rawChildren = b.children;
  else if (b.children && typeof b.children === 'object') {
    rawChildren = Object.entries(b.children as Record<string, unknown>)
      .filter(([k]) => /^\d+$/.test(k))
      .sort(([a], [c]) => Number(a) - Number(c))
      .map(([, v]) => v);
  }
  const children = rawChildren.map((raw) => {
    const c = (raw && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
    return { firstName: text(c.firstName), lastName: text(c.lastName), tutorGroup: text(c.tutorGroup), pupilIdentifier: text(c.pupilIdentifier) };
  });
  const tooManyChildren = children.length > maxChildren;
  const values: FormValues = {
    title: text(b.title),
    firstName: text(b.firstName),
    lastName: text(b.lastName),
    email: text(b.email),
    emailConfirm: text(b.emailConfirm),
    requestType: text(b.requestType),
    children: children.slice(0, maxChildren),
    comment: text(b.comment),
    privacyAccepted: b.privacyAccepted === 'yes',
    website: text(b.website),
  };
  const actionText = text(b.action);
  let action: FormAction = { kind: 'submit' };
  if (actionText === 'add-child') action = { kind: 'add-child' };
  const remove = /^remove-child-(\d+)$/.exec(actionText);
  if (remove) action = { kind: 'remove-child', index: Number(remove[1]) };
  return { values, action, tooManyChildren };
}

/** Validates the form: the shared schema plus the form-only "email again" field. */
export function validateForm(values: FormValues, maxChildren: number, tooManyChildren: boolean): ValidationResult {
  const result = validateRequest(
    {
      title: values.title,
      firstName: values.firstName,
      lastName: values.lastName,
      email: values.email,
      requestType: values.requestType === '' ? undefined : values.requestType,
      children: values.children,
      comment: values.comment,
      privacyAccepted: values.privacyAccepted,
    },
    maxChildren,
    formFieldId,
  );
  const problems = result.ok ? [] : [...result.problems];
  const confirm = values.emailConfirm.trim();
  if (confirm === '') problems.push({ field: 'emailConfirm', message: MESSAGES.emailConfirmMissing });
  else if (values.email.trim() !== '' && foldUsernameCase(confirm) !== foldUsernameCase(values.email)) {
    problems.push({ field: 'emailConfirm', message: MESSAGES.emailMismatch });
  }
  if (tooManyChildren && !problems.some((p) => p.field === 'children')) {
    problems.push({ field: 'children', message: MESSAGES.childrenTooMany(maxChildren) });
  }
  if (problems.length > 0) return { ok: false, problems: orderLikeForm(problems) };
  return result;
}

const FORM_ORDER = ['title', 'firstName', 'lastName', 'email', 'emailConfirm', 'requestType', 'children', 'comment', 'privacyAccepted'];

/** The error summary lists problems in the order the fields appear on the page. */
function orderLikeForm(problems: FieldProblem[]): FieldProblem[] {
  const rank = (field: string) => {
    const top = FORM_ORDER.indexOf(field.split('-')[0] ?? field);
    const child = /^children-(\d+)-/.exec(field);
    return (top < 0 ? 99 : top) * 10_000 + (child ? Number(child[1]) * 10 + 1 : 0);
  };
  return problems
    .map((p, i) => ({ p, i }))
    .sort((a, b) => rank(a.p.field) - rank(b.p.field) || a.i - b.i)
    .map(({ p }) => p);
}
