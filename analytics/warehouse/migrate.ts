// Schema migrations: ordered SQL files (`NNNN_what.sql`) applied once each, recorded in
// `schema_migrations`. A file may hold several statements separated by `;` at the end of a line.

import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Warehouse, WarehouseError } from './warehouse.js';

export const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'migrations');

export interface MigrationResult {
  applied: string[];
  alreadyApplied: string[];
}

function statementsOf(sql: string): string[] {
  return sql
    .split(/;\s*$/m)
    .map((statement) =>
      statement
        .split('\n')
        .filter((line) => !line.trim().startsWith('--'))
        .join('\n')
        .trim(),
    )
    .filter((statement) => statement.length > 0);
}

export async function migrate(warehouse: Warehouse, dir: string = MIGRATIONS_DIR): Promise<MigrationResult> {
  // Plain MergeTree (no ReplacingMergeTree/FINAL) so the same DDL runs on old servers too.
  await warehouse.command(
    `CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime DEFAULT now())
     ENGINE = MergeTree ORDER BY version`,
  );
  const done = new Set(
    (await warehouse.query<{ version: number }>('SELECT version FROM schema_migrations')).map((row) => Number(row.version)),
  );
  const files = readdirSync(dir)
    .filter((file) => /^\d+_[\w-]+\.sql$/.test(file))
    .sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10));
  const result: MigrationResult = { applied: [], alreadyApplied: [] };
  const seen = new Set<number>();
  for (const file of files) {
    const version = Number.parseInt(file, 10);
    if (seen.has(version)) throw new WarehouseError(`two migrations share version ${version}: rename one (${file})`);
    seen.add(version);
    if (done.has(version)) {
      result.alreadyApplied.push(file);
      continue;
    }
    for (const statement of statementsOf(readFileSync(join(dir, file), 'utf8'))) {
      try {
        await warehouse.command(statement);
      } catch (error) {
        throw new WarehouseError(`migration ${file} failed: ${(error as Error).message}`, { cause: error });
      }
    }
    await warehouse.insert('schema_migrations', [{ version, name: file }]);
    result.applied.push(file);
  }
  return result;
}
