// Descriptions for the schema browser, read from analytics/SCHEMA.md (the page data scientists read,
// kept in step with the real tables by a test): a `## table` heading, its first paragraph, and the
// `| column | type | meaning |` rows under it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const SCHEMA_DOC = join(import.meta.dirname, '..', 'analytics', 'SCHEMA.md');

export interface TableDoc {
  description: string | null;
  columns: Record<string, string>;
}

export function parseSchemaDoc(markdown: string): Record<string, TableDoc> {
  const tables: Record<string, TableDoc> = {};
  let current: TableDoc | undefined;
  let paragraph: string[] = [];
  for (const line of markdown.split('\n')) {
    const heading = /^##\s+`?([A-Za-z_][A-Za-z0-9_]*)`?\s*$/.exec(line);
    if (heading) {
      current = { description: null, columns: {} };
      tables[heading[1]!] = current;
      paragraph = [];
      continue;
    }
    if (!current) continue;
    if (line.startsWith('#')) {
      current = undefined;
      continue;
    }
    const row = /^\|\s*`?([A-Za-z_][A-Za-z0-9_]*)`?\s*\|\s*([^|]+?)\s*\|\s*(.+?)\s*\|\s*$/.exec(line);
    if (row) {
      if (row[1] !== 'column') current.columns[row[1]!] = row[3]!;
      continue;
    }
    if (current.description === null) {
      if (line.trim() === '' && paragraph.length > 0) current.description = paragraph.join(' ');
      else if (line.trim() !== '' && !line.startsWith('|')) paragraph.push(line.trim());
    }
  }
  return tables;
}

let cached: { at: number; tables: Record<string, TableDoc> } | undefined;

/** The parsed page, re-read at most once a minute (it changes with migrations, not with requests). */
export function schemaDocs(path = SCHEMA_DOC): Record<string, TableDoc> {
  if (!cached || Date.now() - cached.at > 60_000) {
    let text = '';
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      // No page, no descriptions: the browser still lists tables and types from the warehouse.
    }
    cached = { at: Date.now(), tables: parseSchemaDoc(text) };
  }
  return cached.tables;
}
