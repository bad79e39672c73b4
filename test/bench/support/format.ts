// Number and markdown formatting for the report.

export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const line = (cells: Array<string | number>) => `| ${cells.map((c) => String(c).replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(headers), `| ${headers.map(() => '---').join(' | ')} |`, ...rows.map(line)].join('\n');
}

export function integer(n: number): string {
  return Math.round(n).toLocaleString('en-GB');
}

export function decimal(n: number, digits = 1): string {
  return n.toLocaleString('en-GB', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function seconds(ms: number): string {
  return ms >= 100_000 ? `${integer(ms / 1000)} s` : `${decimal(ms / 1000, ms >= 10_000 ? 1 : 2)} s`;
}

export function megabytes(bytes: number): string {
  return `${integer(bytes / (1024 * 1024))} MiB`;
}

/** "0.62×" style ratio; "n/a" when the baseline is zero. */
export function ratio(value: number, baseline: number, digits = 2): string {
  if (baseline === 0) return 'n/a';
  return `${decimal(value / baseline, digits)}×`;
}

/** "1/96" style: how many times fewer (or less) than the baseline. */
export function timesFewer(value: number, baseline: number): string {
  if (value === 0) return 'none at all';
  return `${decimal(baseline / value, 1)}× fewer`;
}

export function yesNo(met: boolean): string {
  return met ? 'met' : '**missed**';
}
