// How insight queries talk to the warehouse: through @clickhouse/client (the endpoint, or a ClickHouse
// server), parameters bound server-side with `{name:Type}` placeholders, never spliced into the SQL text.
import type { ClickHouseClient } from '@clickhouse/client';

export type WarehouseReader = ClickHouseClient;

export class InsightError extends Error {
  constructor(
    readonly code: 'INSIGHT_QUERY_FAILED' | 'INSIGHT_BAD_PARAMETER',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'InsightError';
  }
}

/**
 * Runs one query and returns its rows. ClickHouse quotes 64-bit integers in JSON (they do not fit a JS
 * number exactly); the columns named in `numeric` are turned back into numbers, which is exact for every
 * count and cent total a sale produces (below 2^53).
 */
export async function selectRows<T>(
  reader: WarehouseReader,
  sql: string,
  params: Record<string, unknown>,
  numeric: readonly string[] = [],
): Promise<T[]> {
  let rows: Record<string, unknown>[];
  try {
    const result = await reader.query({ query: sql, query_params: params, format: 'JSONEachRow' });
    rows = await result.json<Record<string, unknown>>();
  } catch (error) {
    throw new InsightError('INSIGHT_QUERY_FAILED', `insight query failed: ${(error as Error).message}`, { cause: error });
  }
  if (numeric.length > 0) {
    for (const row of rows) {
      for (const column of numeric) {
        const value = row[column];
        if (typeof value === 'string') row[column] = Number(value);
        else if (Array.isArray(value)) row[column] = value.map(Number);
      }
    }
  }
  return rows as T[];
}

export function requireSale(saleId: string): string {
  if (!/^[a-z0-9][a-z0-9-]{0,39}$/.test(saleId))
    throw new InsightError('INSIGHT_BAD_PARAMETER', `not a sale id: ${JSON.stringify(saleId)}`);
  return saleId;
}

/** Starting stock per SKU as two parallel arrays, the shape a bound `Array(...)` parameter takes. */
export function stockParams(initialStock: Record<string, number>): { skus: string[]; units: number[] } {
  const skus = Object.keys(initialStock).sort();
  return { skus, units: skus.map((sku) => initialStock[sku]!) };
}
