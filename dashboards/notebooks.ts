// SQL notebooks (analysts and admins): notebooks saved per account in PostgreSQL, cells run through the
// warehouse endpoint as the read-only analyst role, so the endpoint's limits and refusals apply exactly
// as they would to the analyst's own client. Parameters travel as `query_params` and are bound by the
// endpoint ({name:Type}); the SQL text is sent as written, never edited or spliced here.
import type { ClickHouseClient } from '@clickhouse/client';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { requireRole, signedInAccount } from './auth.js';
import { dashboardError } from './errors.js';
import { schemaDocs } from './schema-doc.js';
import type { DashboardStore } from './store.js';

/** Rows sent to the browser per cell; the endpoint's own result limits bound what the warehouse returns. */
export const CELL_ROWS_SHOWN = 1000;

const Cell = Type.Object(
  { id: Type.String({ pattern: '^[A-Za-z0-9_-]{1,40}$' }), sql: Type.String({ maxLength: 100_000 }) },
  { additionalProperties: false },
);
const Params = Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,62}$' }), Type.String({ maxLength: 10_000 }));
const NotebookBody = Type.Object(
  { title: Type.String({ minLength: 1, maxLength: 200 }), cells: Type.Array(Cell, { maxItems: 200 }), params: Params },
  { additionalProperties: false },
);
const IdParams = Type.Object({ id: Type.String({ pattern: '^[0-9]{1,15}$' }) });
const RunBody = Type.Object(
  { sql: Type.String({ minLength: 1, maxLength: 100_000 }), params: Params, notebook_id: Type.Optional(Type.Integer({ minimum: 1 })) },
  { additionalProperties: false },
);

export interface CellResult {
  columns: { name: string; type: string }[];
  rows: Record<string, unknown>[];
  row_count: number;
  truncated: boolean;
  elapsed_ms: number;
}

/** A ClickHouse error (from the endpoint) carries its `Code: N. DB::Exception: …` text: show it as it is. */
function isWarehouseRefusal(error: unknown): error is Error {
  if (!(error instanceof Error)) return false;
  return error.name === 'ClickHouseError' || 'code' in error || /Code: \d+|DB::Exception/.test(error.message);
}

export async function runNotebookQuery(
  reader: ClickHouseClient,
  sql: string,
  params: Record<string, string>,
  who: string,
): Promise<CellResult> {
  const started = performance.now();
  try {
    const result = await reader.query({
      query: sql,
      query_params: params,
      format: 'JSON',
      // Names the person in the endpoint's query log; it lifts no limit (the endpoint decides those).
      clickhouse_settings: { log_comment: `dashboards:${who}` },
    });
    const body = await result.json<Record<string, unknown>>();
    const rows = body.data ?? [];
    return {
      columns: body.meta ?? [],
      rows: rows.slice(0, CELL_ROWS_SHOWN),
      row_count: Number(body.rows ?? rows.length),
      truncated: rows.length > CELL_ROWS_SHOWN,
      elapsed_ms: Math.round(performance.now() - started),
    };
  } catch (error) {
    if (isWarehouseRefusal(error)) throw dashboardError('WAREHOUSE_REFUSED', error.message);
    throw dashboardError('WAREHOUSE_UNAVAILABLE', `The warehouse did not answer: ${(error as Error).message}`);
  }
}

export function registerNotebookRoutes(root: FastifyInstance, store: DashboardStore, reader: ClickHouseClient): void {
  const app = root.withTypeProvider<TypeBoxTypeProvider>();
  const analyst = { preHandler: requireRole('analyst') };

  app.get('/api/notebooks', analyst, async (request) => ({ notebooks: await store.listNotebooks(signedInAccount(request).id) }));

  app.post('/api/notebooks', { ...analyst, schema: { body: NotebookBody } }, async (request, reply) => {
    const { title, cells, params } = request.body;
    reply.code(201);
    return store.createNotebook(signedInAccount(request).id, title, cells, params);
  });

  app.get('/api/notebooks/history', analyst, async (request) => ({ history: await store.queryHistory(signedInAccount(request).id) }));

  app.get('/api/notebooks/schema', analyst, async (request) => {
    const result = await runNotebookQuery(
      reader,
      `SELECT table, name, type, position FROM system.columns WHERE database = currentDatabase() ORDER BY table, position`,
      {},
      signedInAccount(request).email,
    );
    const docs = schemaDocs();
    const tables = new Map<
      string,
      { table: string; description: string | null; columns: { name: string; type: string; description: string | null }[] }
    >();
    for (const row of result.rows as { table: string; name: string; type: string }[]) {
      let table = tables.get(row.table);
      if (!table) {
        table = { table: row.table, description: docs[row.table]?.description ?? null, columns: [] };
        tables.set(row.table, table);
      }
      table.columns.push({ name: row.name, type: row.type, description: docs[row.table]?.columns[row.name] ?? null });
    }
    return { tables: [...tables.values()] };
  });

  app.get('/api/notebooks/:id', { ...analyst, schema: { params: IdParams } }, async (request) => {
    const notebook = await store.notebook(signedInAccount(request).id, Number(request.params.id));
    if (!notebook) throw dashboardError('NOTEBOOK_NOT_FOUND');
    return notebook;
  });

  app.put('/api/notebooks/:id', { ...analyst, schema: { params: IdParams, body: NotebookBody } }, async (request) => {
    const saved = await store.saveNotebook(signedInAccount(request).id, Number(request.params.id), request.body);
    if (!saved) throw dashboardError('NOTEBOOK_NOT_FOUND');
    return saved;
  });

  app.delete('/api/notebooks/:id', { ...analyst, schema: { params: IdParams } }, async (request) => {
    if (!(await store.deleteNotebook(signedInAccount(request).id, Number(request.params.id)))) throw dashboardError('NOTEBOOK_NOT_FOUND');
    return { deleted: true };
  });

  app.post('/api/notebooks/run', { ...analyst, schema: { body: RunBody } }, async (request) => {
    const account = signedInAccount(request);
    const { sql, params, notebook_id } = request.body;
    const started = performance.now();
    try {
      const result = await runNotebookQuery(reader, sql, params, account.email);
      await store.recordQuery({
        accountId: account.id,
        notebookId: notebook_id ?? null,
        sql,
        params,
        durationMs: result.elapsed_ms,
        rowCount: result.row_count,
        error: null,
      });
      return result;
    } catch (error) {
      await store.recordQuery({
        accountId: account.id,
        notebookId: notebook_id ?? null,
        sql,
        params,
        durationMs: performance.now() - started,
        rowCount: null,
        error: (error as Error).message,
      });
      throw error;
    }
  });
}
