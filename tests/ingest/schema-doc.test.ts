// analytics/SCHEMA.md is what data scientists read; this keeps it in step with the real tables.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

const SCHEMA_MD = join(import.meta.dirname, '..', '..', 'analytics', 'SCHEMA.md');

interface DocumentedTable {
  columns: Map<string, string>;
}

/** `## name` sections, each with a `| column | type | meaning |` table. */
function documentedTables(markdown: string): Map<string, DocumentedTable> {
  const tables = new Map<string, DocumentedTable>();
  let current: DocumentedTable | undefined;
  for (const line of markdown.split('\n')) {
    const heading = /^## (\w+)\s*$/.exec(line);
    if (heading) {
      current = { columns: new Map() };
      tables.set(heading[1]!, current);
      continue;
    }
    if (line.startsWith('## ')) current = undefined;
    const cells = line.split('|').map((cell) => cell.trim());
    // Biome pads markdown tables, so cells are trimmed and the separator row is dashes of any length.
    if (current && cells.length >= 5 && cells[1] && cells[1] !== 'column' && !/^-+$/.test(cells[1]))
      current.columns.set(cells[1], cells[2]!);
  }
  return tables;
}

function documentedViews(markdown: string): Set<string> {
  const section = markdown.split('## Materialized views')[1] ?? '';
  return new Set([...section.matchAll(/^\| (\w+_mv)\s*\|/gm)].map((match) => match[1]!));
}

describe('analytics/SCHEMA.md', () => {
  let test: TestWarehouse;
  const markdown = readFileSync(SCHEMA_MD, 'utf8');

  beforeAll(async () => {
    test = await openTestWarehouse();
  });
  afterAll(async () => test?.dispose());

  it('documents every table, with exactly its columns and their types', async () => {
    const actual = await test.warehouse.query<{ table: string; name: string; type: string }>(
      `SELECT c.table AS table, c.name AS name, c.type AS type FROM system.columns AS c
       INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table
       WHERE c.database = currentDatabase() AND t.engine != 'MaterializedView' ORDER BY c.table, c.position`,
    );
    const real = new Map<string, Map<string, string>>();
    for (const { table, name, type } of actual) {
      if (!real.has(table)) real.set(table, new Map());
      real.get(table)!.set(name, type);
    }
    const docs = documentedTables(markdown);
    expect([...real.keys()].sort()).toEqual([...docs.keys()].sort());
    for (const [table, columns] of real) {
      expect(Object.fromEntries(docs.get(table)!.columns), `columns of ${table} in SCHEMA.md`).toEqual(Object.fromEntries(columns));
    }
  });

  it('lists every materialized view', async () => {
    const views = await test.warehouse.query<{ name: string }>(
      "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView' ORDER BY name",
    );
    expect(views.length).toBeGreaterThan(0);
    expect([...documentedViews(markdown)].sort()).toEqual(views.map((view) => view.name));
  });

  it('migrates once: a second run applies nothing', async () => {
    const { migrate } = await import('../../analytics/warehouse/migrate.js');
    const again = await migrate(test.warehouse);
    expect(again.applied).toEqual([]);
    expect(again.alreadyApplied.length).toBeGreaterThanOrEqual(4);
  });
});
