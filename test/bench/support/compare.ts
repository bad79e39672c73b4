// npm run bench -- --compare OLD.md: every figure of this run beside the same figure in an earlier
// report, so that a change that made something slower is seen in review. Figures are the cells of
// the report's tables, found by section, row and column; the Machine table and the EXPLAIN
// tables are descriptions, not figures, and are left out.

export interface Figure {
  section: string;
  row: string;
  column: string;
  text: string;
}

export interface ComparedFigure extends Figure {
  previous: string | undefined;
  /** (now − previous) ÷ previous, when both cells start with a number; undefined otherwise. */
  change: number | undefined;
}

const SKIPPED_SECTIONS = new Set(['Machine']);

function cells(line: string): string[] {
  // The report escapes a pipe inside a cell as "\|".
  return line
    .trim()
    .replace(/^\||\|$/g, '')
    .split(/(?<!\\)\|/)
    .map((c) => c.trim().replace(/\\\|/g, '|'));
}

/** Every figure in a report written by `npm run bench`, in the order it appears. */
export function readFigures(markdown: string): Figure[] {
  const figures: Figure[] = [];
  const lines = markdown.split('\n');
  let section = '';
  for (let i = 0; i < lines.length; i++) {
    const heading = /^(#{2,3}) (.*)$/.exec(lines[i] as string);
    if (heading) {
      section = heading[1] === '##' ? (heading[2] as string) : `${section.split(' › ')[0]} › ${heading[2]}`;
      continue;
    }
    if (!(lines[i] as string).startsWith('|') || !(lines[i + 1] ?? '').startsWith('| ---')) continue;
    const headers = cells(lines[i] as string);
    const rows: string[][] = [];
    for (i += 2; i < lines.length && (lines[i] as string).startsWith('|'); i++) rows.push(cells(lines[i] as string));
    i--;
    if (SKIPPED_SECTIONS.has(section.split(' › ')[0] as string) || headers.includes('select_type')) continue;
    // Rows are named by their first cell, or by their first two in a table where the first repeats
    // (the cycle's sizes).
    const firsts = rows.map((r) => r[0] ?? '');
    const twoCells = new Set(firsts).size < firsts.length;
    for (const row of rows) {
      const name = twoCells ? `${row[0]} / ${row[1]}` : (row[0] ?? '');
      for (let c = twoCells ? 2 : 1; c < headers.length; c++) {
        const text = row[c] ?? '';
        if (text !== '') figures.push({ section, row: name, column: headers[c] || '(value)', text });
      }
    }
  }
  return figures;
}

/** The first number in a cell: "≈ 978 s" → 978, "1,547.2/s" → 1547.2, "**41.6× faster**" → 41.6. */
export function leadingNumber(text: string): number | undefined {
  const match = /-?\d[\d,]*(?:\.\d+)?/.exec(text.replace(/\*\*/g, ''));
  if (!match) return undefined;
  const n = Number(match[0].replace(/,/g, ''));
  return Number.isFinite(n) ? n : undefined;
}

const key = (f: Figure) => `${f.section}\u0000${f.row}\u0000${f.column}`;

export interface Comparison {
  /** This run's figures, each with the earlier report's figure at the same place. */
  figures: ComparedFigure[];
  /** Figures of the earlier report that this run no longer has (a scenario left out with --only, a renamed row). */
  missing: Figure[];
}

export function compareReports(previousMarkdown: string, currentMarkdown: string): Comparison {
  const before = readFigures(previousMarkdown);
  const previous = new Map(before.map((f) => [key(f), f.text]));
  const figures = readFigures(currentMarkdown).map((f) => {
    const old = previous.get(key(f));
    const a = old === undefined ? undefined : leadingNumber(old);
    const b = leadingNumber(f.text);
    const change = a !== undefined && b !== undefined && a !== 0 ? (b - a) / a : undefined;
    return { ...f, previous: old, change };
  });
  const now = new Set(figures.map(key));
  return { figures, missing: before.filter((f) => !now.has(key(f))) };
}

/** How much a figure moved, in words a reviewer scans: "+12 %", "−3 %", "same", "new". */
export function describeChange(f: ComparedFigure): string {
  if (f.previous === undefined) return 'new';
  if (f.previous === f.text) return 'same';
  if (f.change === undefined) return 'changed';
  const percent = Math.round(f.change * 100);
  if (percent === 0) return '±0 %';
  return `${percent > 0 ? '+' : '−'}${Math.abs(percent)} %`;
}

/**
 * The comparison as plain text, one section at a time. Changes of 10 % or more either way are
 * marked "!": whether more is better depends on the column (submissions/s versus latency), so the
 * reviewer reads the column name.
 */
export function renderComparison(previousName: string, comparison: Comparison): string {
  const out = [`Compared with ${previousName} (previous → now; "!" marks a change of 10 % or more):`];
  let section = '';
  for (const f of comparison.figures) {
    if (f.section !== section) {
      section = f.section;
      out.push('', section);
    }
    const moved = f.change !== undefined && Math.abs(f.change) >= 0.1 ? '!' : ' ';
    const values = f.previous === f.text ? f.text : `${f.previous ?? '(not in the previous report)'} → ${f.text}`;
    out.push(`${moved} ${f.row} · ${f.column}: ${values}  [${describeChange(f)}]`);
  }
  if (comparison.missing.length > 0) {
    out.push('', `Not in this run (${comparison.missing.length} figures of the previous report), by section:`);
    for (const s of [...new Set(comparison.missing.map((f) => f.section))]) {
      out.push(`  ${s}: ${comparison.missing.filter((f) => f.section === s).length}`);
    }
  }
  return out.join('\n');
}
