// What a benchmark scenario is: a module that measures one thing and returns its section of
// docs/benchmarks.md. run.ts lists the scenarios; adding one is a new module and one line there.
import type { BenchDatabases } from './bench-database';

export type BenchScale = 'full' | 'quick';

export interface BenchContext {
  scale: BenchScale;
  databases: BenchDatabases;
  /** Progress for whoever is watching; the run is long. */
  log(message: string): void;
  /** Echo the workers' own output (service logs) instead of discarding it. */
  verbose: boolean;
}

/** A target from the brief, and whether this run met it. */
export interface TargetResult {
  name: string;
  target: string;
  measured: string;
  met: boolean;
  /** When missed: by how much, in words. */
  shortfall?: string;
}

export interface PeakMemory {
  label: string;
  rssBytes: number;
}

export interface ReportSection {
  title: string;
  /** Markdown under the section's heading (tables, method, caveats). */
  body: string;
  targets: TargetResult[];
  peakMemory: PeakMemory[];
}

export interface BenchScenario {
  /** Used by --only. */
  id: string;
  run(context: BenchContext): Promise<ReportSection>;
}

/** A benchmark that cannot vouch for its figures stops here rather than reporting them. */
export class BenchCheckFailed extends Error {
  override name = 'BenchCheckFailed';
}

export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new BenchCheckFailed(message);
}
