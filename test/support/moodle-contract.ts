// Reads the recorded Moodle requests and answers in shared/moodle-contract, for contract tests.
import fs from 'node:fs';
import path from 'node:path';

export const CONTRACT_DIR = path.resolve(__dirname, '../../../shared/moodle-contract');

export interface Recording {
  case: string;
  note: string;
  file: string;
  request: {
    method: string;
    path: string;
    token: string;
    wsfunction: string;
    params: Record<string, unknown>;
    form: string;
  };
  response: {
    status: number;
    contentType: string;
    body: unknown;
  };
}

export function loadRestRecordings(): Recording[] {
  const dir = path.join(CONTRACT_DIR, 'rest');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({ ...(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as Omit<Recording, 'file'>), file }));
}

export interface CliRecording {
  file: string;
  /** The `# ` header lines, without the marker. */
  header: string[];
  exitCode: number;
  output: string;
}

export function loadCliRecordings(): CliRecording[] {
  const dir = path.join(CONTRACT_DIR, 'cli');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.txt'))
    .sort()
    .map((file) => {
      const lines = fs.readFileSync(path.join(dir, file), 'utf8').split('\n');
      const header: string[] = [];
      while (lines[0]?.startsWith('# ')) header.push((lines.shift() as string).slice(2));
      const exitLine = header.find((h) => /^exit \d+$/.test(h));
      if (exitLine === undefined) throw new Error(`${file} has no "# exit N" header`);
      return { file, header, exitCode: Number(exitLine.slice('exit '.length)), output: lines.join('\n') };
    });
}

/** The media type of a Content-Type header: "text/html; charset=utf-8" → "text/html". */
export function mediaType(contentType: string | null): string {
  return (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

/**
 * Differences in shape between a recorded JSON value and an actual one: the same keys recursively,
 * the same value types, arrays of the same length with elements of the same shape.
 */
export function shapeDifferences(expected: unknown, actual: unknown, at = '$'): string[] {
  const expectedType = typeName(expected);
  const actualType = typeName(actual);
  if (expectedType !== actualType) return [`${at}: expected ${expectedType}, got ${actualType}`];
  if (Array.isArray(expected) && Array.isArray(actual)) {
    if (expected.length !== actual.length) return [`${at}: expected ${expected.length} elements, got ${actual.length}`];
    return expected.flatMap((item, i) => shapeDifferences(item, actual[i], `${at}[${i}]`));
  }
  if (expectedType === 'object') {
    const e = expected as Record<string, unknown>;
    const a = actual as Record<string, unknown>;
    const problems: string[] = [];
    const expectedKeys = Object.keys(e);
    const actualKeys = Object.keys(a);
    for (const key of expectedKeys) if (!(key in a)) problems.push(`${at}.${key}: missing`);
    for (const key of actualKeys) if (!(key in e)) problems.push(`${at}.${key}: not in the recording`);
    for (const key of expectedKeys) if (key in a) problems.push(...shapeDifferences(e[key], a[key], `${at}.${key}`));
    return problems;
  }
  return [];
}

/**
 * Differences in value, leaving out what differs by nature between two sites: addresses, access
 * keys and times.
 */
export function valueDifferences(expected: unknown, actual: unknown, ignoreKeys: ReadonlySet<string>, at = '$'): string[] {
  if (Array.isArray(expected) && Array.isArray(actual)) {
    return expected.flatMap((item, i) => valueDifferences(item, actual[i], ignoreKeys, `${at}[${i}]`));
  }
  if (expected !== null && actual !== null && typeof expected === 'object' && typeof actual === 'object') {
    const e = expected as Record<string, unknown>;
    const a = actual as Record<string, unknown>;
    return Object.keys(e)
      .filter((key) => !ignoreKeys.has(key))
      .flatMap((key) => valueDifferences(e[key], a[key], ignoreKeys, `${at}.${key}`));
  }
  return expected === actual ? [] : [`${at}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`];
}
