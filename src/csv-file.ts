// Reading a CSV file the way school offices save them: UTF-8 with or without a byte order mark,
// UTF-16 with one, or Excel's older Windows-1252 "CSV"; commas or semicolons; any line endings.
// Each record keeps the line it starts on, so every problem can be said with its line.
import { parse, type InfoRecord, type Options } from 'csv-parse/sync';

// Windows-1252's 0x80–0x9F, where it differs from Latin-1 (Excel's quotes, dashes, €). Node 20's
// TextDecoder('windows-1252') decodes these bytes as Latin-1 control characters, so the table is
// here. The five bytes without a character (0x81, 0x8D, 0x8F, 0x90, 0x9D) are left out on purpose.
const WINDOWS_1252_HIGH: Record<number, string> = {
  0x80: '€', 0x82: '‚', 0x83: 'ƒ', 0x84: '„', 0x85: '…', 0x86: '†', 0x87: '‡', 0x88: 'ˆ', 0x89: '‰', 0x8a: 'Š', 0x8b: '‹', 0x8c: 'Œ', 0x8e: 'Ž',
  0x91: '‘', 0x92: '’', 0x93: '“', 0x94: '”', 0x95: '•', 0x96: '–', 0x97: '—', 0x98: '˜', 0x99: '™', 0x9a: 'š', 0x9b: '›', 0x9c: 'œ', 0x9e: 'ž', 0x9f: 'Ÿ',
};

const SAVE_AS_UTF8 = 'In Excel choose File, Save As, “CSV UTF-8 (Comma delimited)”, and upload that file.';

/** The line (1 for the first) on which byte `index` of a single-byte file stands: LF, CRLF or CR ends a line. */
function lineOfByte(bytes: Uint8Array, index: number): number {
  let line = 1;
  for (let i = 0; i < index; i += 1) if (bytes[i] === 0x0a || (bytes[i] === 0x0d && bytes[i + 1] !== 0x0a)) line += 1;
  return line;
}

type Decoded = { ok: true; text: string } | { ok: false; problem: string };

function decodeStrictly(encoding: string, bytes: Uint8Array, name: string): Decoded {
  try {
    return { ok: true, text: new TextDecoder(encoding, { fatal: true }).decode(bytes) };
  } catch {
    return { ok: false, problem: `The file says it is ${name} text, but parts of it are not. ${SAVE_AS_UTF8}` };
  }
}

/**
 * The text of a file the way schools save them: UTF-8 with or without a byte order mark, UTF-16
 * with one (Excel's "Unicode text"), or Windows-1252 (Excel's plain "CSV"). A file that is none of
 * these for sure is refused with the reason rather than read as something it may not be.
 */
function decode(buffer: Buffer): Decoded {
  const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.length);
  const startsWith = (...marks: number[]) => marks.every((b, i) => bytes[i] === b);
  let decoded: Decoded;
  if (startsWith(0xef, 0xbb, 0xbf)) decoded = decodeStrictly('utf-8', bytes, 'UTF-8');
  else if (startsWith(0xff, 0xfe)) decoded = decodeStrictly('utf-16le', bytes, 'UTF-16');
  else if (startsWith(0xfe, 0xff)) decoded = decodeStrictly('utf-16be', bytes, 'UTF-16');
  else {
    const nul = bytes.indexOf(0);
    if (nul >= 0) {
      return {
        ok: false,
        problem:
          'The file is not plain text: it looks like UTF-16 without the mark that says so, or another kind of file. ' + SAVE_AS_UTF8,
      };
    }
    try {
      decoded = { ok: true, text: new TextDecoder('utf-8', { fatal: true }).decode(bytes) };
    } catch {
      let text = '';
      for (let i = 0; i < bytes.length; i += 1) {
        const byte = bytes[i] as number;
        if (byte < 0x80 || byte > 0x9f) {
          text += String.fromCharCode(byte);
          continue;
        }
        const character = WINDOWS_1252_HIGH[byte];
        if (character === undefined) {
          return {
            ok: false,
            problem:
              `The file’s characters could not be read for sure: it is not UTF-8, and line ${lineOfByte(bytes, i)} has a byte ` +
              `(0x${byte.toString(16).toUpperCase()}) that is not a character in Excel’s older “CSV” format either. ${SAVE_AS_UTF8}`,
          };
        }
        text += character;
      }
      decoded = { ok: true, text };
    }
  }
  if (decoded.ok && decoded.text.includes('\u0000')) {
    return { ok: false, problem: `The file is not plain text (it has empty characters in it). ${SAVE_AS_UTF8}` };
  }
  return decoded;
}

/** One record of a CSV file: its cells (trimmed) and the line it starts on (1 for the first). */
export interface CsvRecord {
  cells: string[];
  line: number;
}

export type CsvReadResult = { ok: true; records: CsvRecord[] } | { ok: false; problem: string };

/** Column names compared without case, spaces or punctuation ("Adm. No" is "admno"). */
export const squashColumnName = (name: string): string => name.toLowerCase().replace(/[^a-z0-9]/g, '');

/**
 * Reads a CSV file as schools save them (the encodings above, commas or semicolons, any line
 * endings) into records, or says in words why it cannot. Nothing is checked beyond that.
 */
export function readCsvRecords(buffer: Buffer): CsvReadResult {
  if (buffer.length === 0) return { ok: false, problem: 'The file is empty.' };
  if (buffer.subarray(0, 4).equals(Buffer.from([0x50, 0x4b, 0x03, 0x04]))) {
    return {
      ok: false,
      problem: 'This is a spreadsheet workbook (.xlsx), not a CSV file. In Excel choose File, Save As, "CSV UTF-8 (Comma delimited)", and upload that file.',
    };
  }
  const decoded = decode(buffer);
  if (!decoded.ok) return decoded;
  // One kind of line ending: the CSV reader keeps the first one it sees, so a file with Windows
  // lines and Unix lines mixed would otherwise have rows run into each other.
  const text = decoded.text.replace(/\r\n?/g, '\n');
  let records: CsvRecord[];
  try {
    const options = {
      bom: true,
      trim: true,
      skip_empty_lines: true,
      skip_records_with_empty_values: true,
      relax_column_count: true,
      // Excel writes semicolons where the comma is the decimal mark.
      delimiter: [',', ';'],
      // Each record straight to its cells and first line: `info: true` kept a dozen counters per
      // record, all alive until the whole file was read (5,000 rows are thousands of objects).
      on_record: (cells: string[], context: InfoRecord): CsvRecord => ({ cells, line: context.lines - newlinesIn(cells) }),
    };
    // csv-parse's types tie on_record's result to `columns`; the records are what on_record makes.
    records = parse(text, options as unknown as Options) as unknown as CsvRecord[];
  } catch (error) {
    const line = (error as { lines?: number }).lines;
    return {
      ok: false,
      problem: `The file could not be read as CSV${line ? ` (the problem is near line ${line})` : ''}. Check that it was saved as CSV, and that quotation marks in it are paired.`,
    };
  }
  if (records.length === 0) return { ok: false, problem: 'The file has no rows.' };
  return { ok: true, records };
}

/** Line breaks inside a record's quoted cells: the record starts that many lines before it ends. */
function newlinesIn(cells: readonly string[]): number {
  let count = 0;
  for (const cell of cells) for (let i = cell.indexOf('\n'); i !== -1; i = cell.indexOf('\n', i + 1)) count += 1;
  return count;
}

