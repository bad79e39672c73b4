// The export writes its CSV lines itself (csvLine): they must read back through csv-parse, the
// library the import uses, exactly as written, whatever a parent typed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parse } from 'csv-parse/sync';
import { csvLine, EXPORT_COLUMNS } from '../../src/review/requests-csv-export';
import { prng } from '../support/random';

const awkward = ['plain', '', 'O"Brien', 'Smith, Jr', 'two\r\nlines', 'cr\ronly', 'lf\nonly', '"', '""', ',', ' spaced ', 'Zoë Ångström', '😀', "'=1+1"];

test('a line of awkward cells reads back through csv-parse unchanged', () => {
  const text = csvLine(awkward) + csvLine(['second', 'line']);
  assert.ok(text.endsWith('\r\n'));
  assert.deepEqual(parse(text, { relax_column_count: true }), [awkward, ['second', 'line']]);
});

test('random lines read back unchanged, and only cells that need it are quoted', () => {
  const random = prng(20261201);
  const alphabet = ['a', 'Z', ' ', ',', '"', '\r', '\n', 'é', '=', "'", '-'];
  for (let n = 0; n < 500; n++) {
    const cells = Array.from({ length: 1 + Math.floor(random() * EXPORT_COLUMNS.length) }, () =>
      Array.from({ length: Math.floor(random() * 6) }, () => alphabet[Math.floor(random() * alphabet.length)]).join(''),
    );
    const line = csvLine(cells);
    assert.deepEqual(parse(line), [cells], JSON.stringify(cells));
    const plain = cells.filter((c) => !/[",\r\n]/.test(c));
    if (plain.length === cells.length) assert.equal(line, `${cells.join(',')}\r\n`);
    for (const cell of cells) if (/[",\r\n]/.test(cell)) assert.ok(line.includes(`"${cell.replace(/"/g, '""')}"`), JSON.stringify(cell));
  }
});
