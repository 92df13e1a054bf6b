// SQL notebooks for analysts: cells of SQL run through the warehouse endpoint as the read-only analyst
// role, parameters bound by the endpoint ({name:Type}, never spliced), results as a table (always text)
// with a quick chart, the query history, and a schema browser beside them.
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ChartCard, ErrorNote, Table } from './lib.js';

interface Cell {
  id: string;
  sql: string;
}

interface Notebook {
  id: number;
  title: string;
  cells: Cell[];
  params: Record<string, string>;
  updated_at: string;
}

interface CellResult {
  columns: { name: string; type: string }[];
  rows: Record<string, unknown>[];
  row_count: number;
  truncated: boolean;
  elapsed_ms: number;
}

interface SchemaTable {
  table: string;
  description: string | null;
  columns: { name: string; type: string; description: string | null }[];
}

interface HistoryEntry {
  id: number;
  sql: string;
  started_at: string;
  duration_ms: number;
  row_count: number | null;
  error: string | null;
}

const newCell = (sql = ''): Cell => ({ id: Math.random().toString(36).slice(2, 10), sql });

/** Every `{name:Type}` placeholder in the cells, in order of appearance. */
export function placeholders(cells: Cell[]): { name: string; type: string }[] {
  const seen = new Map<string, string>();
  for (const cell of cells)
    for (const m of cell.sql.matchAll(/\{([A-Za-z_][A-Za-z0-9_]*):([^}]+)\}/g)) if (!seen.has(m[1]!)) seen.set(m[1]!, m[2]!);
  return [...seen].map(([name, type]) => ({ name, type }));
}

const NUMERIC = /^(Nullable\()?(U?Int|Float|Decimal)/;

function QuickChart(p: { id: string; result: CellResult }) {
  const x = p.result.columns[0];
  const y = p.result.columns.find((c, i) => i > 0 && NUMERIC.test(c.type));
  if (!x || !y || p.result.rows.length < 2) return null;
  return html`<${ChartCard} id=${p.id} title=${`${y.name} by ${x.name}`} type="bar" rows=${p.result.rows.slice(0, 100)} x=${x.name}
    series=${[{ label: y.name, column: y.name }]} columns=${p.result.columns.map((c) => c.name)} />`;
}

export function NotebooksPage() {
  const [list, setList] = useState<Notebook[]>([]);
  const [notebook, setNotebook] = useState<Notebook | null>(null);
  const [results, setResults] = useState<Record<string, CellResult | { error: string } | 'running'>>({});
  const [schema, setSchema] = useState<SchemaTable[]>([]);
  const [history, setHistory] = useState<HistoryEntry[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(true);

  const loadList = () => api<{ notebooks: Notebook[] }>('GET', '/api/notebooks').then((r) => setList(r.notebooks), setError);
  const loadHistory = () => api<{ history: HistoryEntry[] }>('GET', '/api/notebooks/history').then((r) => setHistory(r.history), setError);
  useEffect(() => {
    loadList();
    loadHistory();
    api<{ tables: SchemaTable[] }>('GET', '/api/notebooks/schema').then((r) => setSchema(r.tables), setError);
  }, []);

  const edit = (change: Partial<Notebook>) => {
    if (!notebook) return;
    setNotebook({ ...notebook, ...change });
    setSaved(false);
  };
  const create = async () => {
    const made = await api<Notebook>('POST', '/api/notebooks', {
      title: 'Untitled notebook',
      cells: [newCell('SELECT sale_id, count() AS events\nFROM clickstream_events\nGROUP BY sale_id\nORDER BY events DESC')],
      params: {},
    });
    setNotebook(made);
    setResults({});
    loadList();
  };
  const save = async () => {
    if (!notebook) return;
    const stored = await api<Notebook>('PUT', `/api/notebooks/${notebook.id}`, {
      title: notebook.title,
      cells: notebook.cells,
      params: notebook.params,
    });
    setNotebook(stored);
    setSaved(true);
    loadList();
  };
  const runCell = async (cell: Cell) => {
    if (!notebook) return;
    setResults((r) => ({ ...r, [cell.id]: 'running' }));
    const wanted = placeholders([cell]).map((p) => p.name);
    const params = Object.fromEntries(wanted.map((name) => [name, notebook.params[name] ?? '']));
    try {
      const result = await api<CellResult>('POST', '/api/notebooks/run', { sql: cell.sql, params, notebook_id: notebook.id });
      setResults((r) => ({ ...r, [cell.id]: result }));
    } catch (e) {
      setResults((r) => ({ ...r, [cell.id]: { error: (e as Error).message } }));
    }
    loadHistory();
  };
  const runAll = async () => {
    for (const cell of notebook?.cells ?? []) await runCell(cell);
  };

  const params = notebook ? placeholders(notebook.cells) : [];
  return html`<div class="notebooks">
    <aside class="notebook-list">
      <button onClick=${create} data-action="new-notebook">New notebook</button>
      <ul>${list.map(
        (n) =>
          html`<li><a href="#/notebooks" class=${notebook?.id === n.id ? 'active' : ''} onClick=${(e: Event) => {
            e.preventDefault();
            setNotebook(n);
            setResults({});
            setSaved(true);
          }}>${n.title}</a></li>`,
      )}</ul>
      <h3>History</h3>
      <ul class="history" data-list="history">${history.map(
        (h) => html`<li class=${h.error ? 'failed' : ''} title=${h.error ?? ''}>
          <code>${h.sql.slice(0, 80)}</code>
          <span>${h.error ? 'refused' : `${h.row_count ?? 0} rows`} · ${h.duration_ms} ms</span>
        </li>`,
      )}</ul>
    </aside>
    <section class="notebook">
      <${ErrorNote} error=${error} />
      ${
        notebook
          ? html`<div class="toolbar">
              <input class="title" value=${notebook.title} onInput=${(e: Event) => edit({ title: (e.target as HTMLInputElement).value })} data-field="title" />
              <button onClick=${runAll} data-action="run-all">Run all</button>
              <button onClick=${save} data-action="save" disabled=${saved}>${saved ? 'Saved' : 'Save'}</button>
            </div>
            ${
              params.length
                ? html`<fieldset class="params"><legend>Parameters</legend>${params.map(
                    (p) => html`<label>${p.name} <small>${p.type}</small>
                      <input data-param=${p.name} value=${notebook.params[p.name] ?? ''}
                        onInput=${(e: Event) => edit({ params: { ...notebook.params, [p.name]: (e.target as HTMLInputElement).value } })} />
                    </label>`,
                  )}</fieldset>`
                : null
            }
            ${notebook.cells.map((cell, index) => {
              const result = results[cell.id];
              return html`<div class="cell" data-cell=${index}>
                <textarea spellcheck="false" rows=${Math.max(3, cell.sql.split('\n').length)} data-sql=${index} value=${cell.sql}
                  onInput=${(e: Event) => edit({ cells: notebook.cells.map((c) => (c.id === cell.id ? { ...c, sql: (e.target as HTMLTextAreaElement).value } : c)) })}
                ></textarea>
                <div class="cell-actions">
                  <button class="small" onClick=${() => runCell(cell)} data-run=${index}>Run</button>
                  <button class="small" onClick=${() => edit({ cells: notebook.cells.filter((c) => c.id !== cell.id) })}>Remove</button>
                </div>
                ${
                  result === 'running'
                    ? html`<p class="loading">Running…</p>`
                    : result && 'error' in result
                      ? html`<p class="error" role="alert" data-cell-error=${index}>${result.error}</p>`
                      : result
                        ? html`<div class="result" data-result=${index}>
                            <p class="meta">${result.row_count} rows${result.truncated ? ' (first 1,000 shown)' : ''} · ${result.elapsed_ms} ms</p>
                            <${Table} id=${`result-${index}`} rows=${result.rows} columns=${result.columns.map((c) => c.name)} />
                            <${QuickChart} id=${`cell-${index}`} result=${result} />
                          </div>`
                        : null
                }
              </div>`;
            })}
            <button onClick=${() => edit({ cells: [...notebook.cells, newCell()] })} data-action="add-cell">Add cell</button>`
          : html`<p class="empty">Open a notebook or make a new one.</p>`
      }
    </section>
    <aside class="schema" data-list="schema">
      <h3>Tables</h3>
      ${schema.map(
        (t) => html`<details>
          <summary title=${t.description ?? ''}>${t.table}</summary>
          <ul>${t.columns.map((c) => html`<li title=${c.description ?? ''}><b>${c.name}</b> <small>${c.type}</small>${c.description ? html`<p>${c.description}</p>` : null}</li>`)}</ul>
        </details>`,
      )}
    </aside>
  </div>`;
}
