import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { compareReports, describeChange, leadingNumber, readFigures, renderComparison } from '../bench/support/compare';

const PREVIOUS = `# Benchmarks

## Machine

|  |  |
| --- | --- |
| cores | 2 |

## Targets

|  | target | measured | result |
| --- | --- | --- | --- |
| Intake throughput | ≥ 0.5× | 216.6/s vs 1,547.2/s = 0.14× | **missed** |

## Provisioning cycle against the Moodle test double

| requests × children | cycle | wall time | Moodle calls |
| --- | --- | --- | --- |
| 1,000 × 2 | the service | 2.19 s | 31 |
| 1,000 × 2 | naive | 91.2 s | 3,000 |
| 10,000 × 2 | the service | 41.2 s | 301 |

### EXPLAIN of the search

| id | select_type | table |
| --- | --- | --- |
| 1 | PRIMARY | requests |
`;

const CURRENT = PREVIOUS.replace('| 2.19 s | 31 |', '| 2.50 s | 31 |')
  .replace('216.6/s vs 1,547.2/s = 0.14×', '470.1/s vs 1,500.0/s = 0.31×')
  .replace('| 10,000 × 2 | the service | 41.2 s | 301 |\n', '');

describe('npm run bench -- --compare', () => {
  it('reads the figures of every table but the machine and the EXPLAIN plans, naming repeated rows by their first two cells', () => {
    const figures = readFigures(PREVIOUS);
    assert.deepEqual(
      figures.map((f) => `${f.section} | ${f.row} | ${f.column} | ${f.text}`),
      [
        'Targets | Intake throughput | target | ≥ 0.5×',
        'Targets | Intake throughput | measured | 216.6/s vs 1,547.2/s = 0.14×',
        'Targets | Intake throughput | result | **missed**',
        'Provisioning cycle against the Moodle test double | 1,000 × 2 / the service | wall time | 2.19 s',
        'Provisioning cycle against the Moodle test double | 1,000 × 2 / the service | Moodle calls | 31',
        'Provisioning cycle against the Moodle test double | 1,000 × 2 / naive | wall time | 91.2 s',
        'Provisioning cycle against the Moodle test double | 1,000 × 2 / naive | Moodle calls | 3,000',
        'Provisioning cycle against the Moodle test double | 10,000 × 2 / the service | wall time | 41.2 s',
        'Provisioning cycle against the Moodle test double | 10,000 × 2 / the service | Moodle calls | 301',
      ],
    );
  });

  it('reads the leading number of a cell, with thousands separators, bold and "≈"', () => {
    assert.equal(leadingNumber('1,547.2/s'), 1547.2);
    assert.equal(leadingNumber('≈ 978 s'), 978);
    assert.equal(leadingNumber('**41.6× faster**'), 41.6);
    assert.equal(leadingNumber('met'), undefined);
  });

  it('sets each figure beside the previous one with the change, and counts the figures no longer there', () => {
    const comparison = compareReports(PREVIOUS, CURRENT);
    const wall = comparison.figures.find((f) => f.row === '1,000 × 2 / the service' && f.column === 'wall time');
    assert.equal(wall?.previous, '2.19 s');
    assert.equal(wall?.text, '2.50 s');
    assert.equal(describeChange(wall!), '+14 %');
    const calls = comparison.figures.find((f) => f.row === '1,000 × 2 / the service' && f.column === 'Moodle calls');
    assert.equal(describeChange(calls!), 'same');
    const measured = comparison.figures.find((f) => f.column === 'measured');
    assert.equal(describeChange(measured!), '+117 %');
    assert.deepEqual(
      comparison.missing.map((f) => f.column),
      ['wall time', 'Moodle calls'],
    );

    const text = renderComparison('old.md', comparison);
    assert.match(text, /^! 1,000 × 2 \/ the service · wall time: 2\.19 s → 2\.50 s {2}\[\+14 %\]$/m);
    assert.match(text, /^ {2}1,000 × 2 \/ naive · wall time: 91\.2 s {2}\[same\]$/m);
    assert.match(text, /Not in this run \(2 figures of the previous report\)/);
  });

  it('compares the committed report with itself as every figure the same', () => {
    const report = fs.readFileSync(path.resolve(__dirname, '..', '..', 'docs', 'benchmarks.md'), 'utf8');
    const comparison = compareReports(report, report);
    assert.ok(comparison.figures.length > 50, `${comparison.figures.length} figures read`);
    assert.deepEqual(new Set(comparison.figures.map(describeChange)), new Set(['same']));
    assert.equal(comparison.missing.length, 0);
  });
});
