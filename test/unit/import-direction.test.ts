// Keeps src/README.md true: imports point down the layers (entry points → features → core →
// base), never up, and no two folders under src/ import each other, however indirectly.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

const SRC = path.resolve(__dirname, '../../src');

type Layer = 'entry' | 'feature' | 'core' | 'base';
const RANK: Record<Layer, number> = { entry: 4, feature: 3, core: 2, base: 1 };

// The same table as src/README.md. A file not named here makes the test fail, so a new folder
// or top-level file has to be placed in a layer (and in the README) on purpose.
const ENTRY_FILES = ['server.ts', 'cli.ts', 'app.ts', 'admin.routes.ts', 'services.ts', 'metrics.ts'];
const BASE_FILES = ['config.ts', 'errors.ts', 'logger.ts', 'periodic-task.ts', 'csv-file.ts'];
const FOLDER_LAYERS: Record<string, Layer> = {
  intake: 'feature',
  'staff-auth': 'feature',
  review: 'feature',
  import: 'feature',
  privacy: 'feature',
  'login-accounts': 'feature',
  diagnostics: 'feature',
  'guardian-records': 'feature',
  'tvs-migration': 'feature',
  requests: 'core',
  moodle: 'core',
  mail: 'core',
  reconcile: 'core',
  db: 'base',
  web: 'base',
};
// provisioning/ holds the cycle (core) and, beside it, the staff pages about the cycle (a feature).
const PROVISIONING_PAGES = ['provisioning-pages.routes.ts', 'provisioning-pages.service.ts',
  'provisioning-pages.repository.ts', 'provisioning-format.ts'];

// reconcile/ holds the reconcile run (core) and, beside it, the staff page about it (a feature).
const RECONCILE_PAGES = ['moodle-check.routes.ts', 'moodle-check.service.ts'];

function layerOf(file: string): Layer {
  const [first = '', second] = file.split('/');
  if (second === undefined) {
    if (ENTRY_FILES.includes(first)) return 'entry';
    if (BASE_FILES.includes(first)) return 'base';
    throw new Error(`src/${file} is in no layer: add it to src/README.md and this test`);
  }
  if (first === 'provisioning') return PROVISIONING_PAGES.includes(second) ? 'feature' : 'core';
  if (first === 'reconcile') return RECONCILE_PAGES.includes(second) ? 'feature' : 'core';
  const layer = FOLDER_LAYERS[first];
  if (!layer) throw new Error(`src/${first}/ is in no layer: add it to src/README.md and this test`);
  return layer;
}

/** The folder a file belongs to, or the file itself at the top of src/. */
function unitOf(file: string): string {
  return file.split('/')[0] ?? file;
}

function sourceFiles(dir = SRC): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [path.relative(SRC, full).split(path.sep).join('/')] : [];
  });
}

interface Edge { from: string; to: string; typeOnly: boolean }

function importsOf(file: string): Edge[] {
  const text = fs.readFileSync(path.join(SRC, file), 'utf8');
  const edges: Edge[] = [];
  // Every static import or re-export with a relative path, on one line or several.
  const pattern = /^(import|export)(\s+type)?\b[^;]*?from\s+'(\.[^']+)'|^import\s+'(\.[^']+)'/gms;
  for (const match of text.matchAll(pattern)) {
    const specifier = match[3] ?? match[4] ?? '';
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier)) + '.ts';
    assert.ok(fs.existsSync(path.join(SRC, target)), `${file} imports ${specifier}, which is not a file in src`);
    edges.push({ from: file, to: target, typeOnly: match[2] !== undefined });
  }
  return edges;
}

// `import type { Services }` is erased when compiled: routes and commands name the wired-up
// services they are given, which is how createServices() reaches them, not a dependency on it.
function counts(edge: Edge): boolean {
  return !(edge.typeOnly && edge.to === 'services.ts');
}

function upwardImports(all: Edge[]): string[] {
  return all
    .filter((edge) => RANK[layerOf(edge.to)] > RANK[layerOf(edge.from)])
    .map((edge) => `${edge.from} (${layerOf(edge.from)}) imports ${edge.to} (${layerOf(edge.to)})`);
}

function folderCycles(all: Edge[]): string[] {
  const graph = new Map<string, Set<string>>();
  for (const edge of all) {
    const from = unitOf(edge.from);
    const to = unitOf(edge.to);
    if (from === to) continue;
    if (!graph.has(from)) graph.set(from, new Set());
    graph.get(from)!.add(to);
  }
  const cycles: string[] = [];
  const done = new Set<string>();
  const visit = (unit: string, trail: string[]): void => {
    const seen = trail.indexOf(unit);
    if (seen >= 0) {
      cycles.push([...trail.slice(seen), unit].join(' → '));
      return;
    }
    if (done.has(unit)) return;
    for (const next of graph.get(unit) ?? []) visit(next, [...trail, unit]);
    done.add(unit);
  };
  for (const unit of graph.keys()) visit(unit, []);
  return cycles;
}

const edges = sourceFiles().flatMap(importsOf).filter(counts);

describe('import direction in src', () => {
  it('finds the imports it checks', () => {
    assert.ok(edges.length > 200, `only ${edges.length} imports found: the pattern has stopped matching`);
  });

  it('never imports from a higher layer (entry → feature → core → base)', () => {
    assert.deepEqual(upwardImports(edges), []);
  });

  it('has no import cycle between folders', () => {
    assert.deepEqual(folderCycles(edges), []);
  });

  it('reports an upward import, a cycle and a file in no layer (the checks can fail)', () => {
    const edge = (from: string, to: string): Edge => ({ from, to, typeOnly: false });
    assert.deepEqual(upwardImports([edge('requests/request-lifecycle.ts', 'review/status-counts.ts')]), [
      'requests/request-lifecycle.ts (core) imports review/status-counts.ts (feature)',
    ]);
    assert.deepEqual(upwardImports([edge('provisioning/provisioning-cycle.ts', 'provisioning/provisioning-format.ts')]), [
      'provisioning/provisioning-cycle.ts (core) imports provisioning/provisioning-format.ts (feature)',
    ]);
    assert.deepEqual(folderCycles([edge('review/a.ts', 'import/b.ts'), edge('import/c.ts', 'privacy/d.ts'), edge('privacy/e.ts', 'review/f.ts')]), [
      'review → import → privacy → review',
    ]);
    assert.equal(counts({ from: 'review/a.ts', to: 'services.ts', typeOnly: true }), false);
    assert.equal(counts({ from: 'review/a.ts', to: 'services.ts', typeOnly: false }), true);
    assert.throws(() => layerOf('staff/anything.ts'), /in no layer/);
  });
});
