// What every page shares: calls to the app's API (with the CSRF token on anything that changes state),
// CSV export of a chart's rows, and one chart component over Chart.js.
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  type ChartDataset,
  type ChartType,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from 'chart.js';
import { html } from 'htm/preact';
import { useEffect, useRef } from 'preact/hooks';

// Only the pieces used are registered, which keeps the bundle small (tree-shaking drops the rest).
Chart.register(BarController, BarElement, CategoryScale, LinearScale, LineController, LineElement, PointElement, Legend, Tooltip, Filler);
Chart.defaults.animation = false; // live charts redraw every second; animation would only lag behind

export type Row = Record<string, unknown>;

export interface Account {
  id: number;
  email: string;
  name: string;
  role: 'marketer' | 'analyst' | 'admin';
}

let csrfToken: string | undefined;

export async function csrf(): Promise<string> {
  if (!csrfToken) csrfToken = ((await (await fetch('/api/csrf')).json()) as { token: string }).token;
  return csrfToken;
}

export function setCsrf(token: string): void {
  csrfToken = token;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET') headers['x-csrf-token'] = await csrf();
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401 && !location.pathname.startsWith('/signin')) {
    location.href = `/signin?next=${encodeURIComponent(location.pathname + location.hash)}`;
  }
  const json = (await res.json().catch(() => ({}))) as { error?: { code: string; message: string } };
  if (!res.ok) throw new ApiError(res.status, json.error?.code ?? String(res.status), json.error?.message ?? res.statusText);
  return json as T;
}

// ------------------------------------------------------------------ CSV

function csvCell(value: unknown): string {
  const text = value === null || value === undefined ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value);
  // Quote when needed; a leading =,+,-,@ is prefixed so a spreadsheet does not run it as a formula.
  const safe = /^[=+\-@]/.test(text) && Number.isNaN(Number(text)) ? `'${text}` : text;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export function toCsv(columns: readonly string[], rows: readonly Row[]): string {
  return `${[columns.map(csvCell).join(','), ...rows.map((row) => columns.map((c) => csvCell(row[c])).join(','))].join('\n')}\n`;
}

export function downloadCsv(filename: string, columns: readonly string[], rows: readonly Row[]): void {
  const url = URL.createObjectURL(new Blob([toCsv(columns, rows)], { type: 'text/csv' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = filename.endsWith('.csv') ? filename : `${filename}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ------------------------------------------------------------------ formatting

export const fmt = new Intl.NumberFormat('en');
export const money = (cents: unknown) =>
  `${(Number(cents ?? 0) / 100).toLocaleString('en', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
export const pct = (x: unknown) => (x === null || x === undefined || Number.isNaN(Number(x)) ? '–' : `${(Number(x) * 100).toFixed(1)}%`);
export const num = (x: unknown) => (x === null || x === undefined ? '–' : fmt.format(Number(x)));

// ------------------------------------------------------------------ components

export interface ChartSeries {
  label: string;
  column: string;
}

export interface ChartCardProps {
  id: string;
  title: string;
  type: 'bar' | 'line';
  rows: Row[];
  /** The column whose values label the x axis. */
  x: string;
  series: ChartSeries[];
  /** Columns the CSV carries (default: x and the series). */
  columns?: string[];
  stacked?: boolean;
  horizontal?: boolean;
  note?: string;
}

const PALETTE = ['#2563eb', '#16a34a', '#dc2626', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#4b5563'];

/** A chart with its data one click away as CSV. */
export function ChartCard(p: ChartCardProps) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart | null>(null);
  const labels = p.rows.map((r) => String(r[p.x] ?? ''));
  const datasets: ChartDataset<ChartType, number[]>[] = p.series.map((s, i) => ({
    label: s.label,
    data: p.rows.map((r) => Number(r[s.column] ?? 0)),
    backgroundColor: PALETTE[i % PALETTE.length],
    borderColor: PALETTE[i % PALETTE.length],
    pointRadius: 0,
    tension: 0.2,
  }));
  useEffect(() => {
    if (!canvas.current) return;
    if (!chart.current) {
      chart.current = new Chart(canvas.current, {
        type: p.type,
        data: { labels, datasets },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          indexAxis: p.horizontal ? 'y' : 'x',
          scales: { x: { stacked: !!p.stacked }, y: { stacked: !!p.stacked, beginAtZero: true } },
          plugins: { legend: { display: p.series.length > 1 } },
        },
      });
    } else {
      chart.current.data.labels = labels;
      chart.current.data.datasets = datasets;
      chart.current.update('none');
    }
  });
  useEffect(
    () => () => {
      chart.current?.destroy();
      chart.current = null;
    },
    [],
  );
  const columns = p.columns ?? [p.x, ...p.series.map((s) => s.column)];
  return html`<section class="card" data-chart=${p.id}>
    <header>
      <h3>${p.title}</h3>
      <button class="small" data-csv=${p.id} onClick=${() => downloadCsv(p.id, columns, p.rows)} disabled=${p.rows.length === 0}>
        CSV
      </button>
    </header>
    ${p.rows.length === 0 ? html`<p class="empty">No data yet.</p>` : null}
    <div class="chart"><canvas ref=${canvas}></canvas></div>
    ${p.note ? html`<p class="note">${p.note}</p>` : null}
  </section>`;
}

/** A table of rows, every value rendered as text (never as markup). */
export function Table(p: { rows: Row[]; columns?: string[]; id?: string; limit?: number }) {
  const columns = p.columns ?? Object.keys(p.rows[0] ?? {});
  const shown = p.limit ? p.rows.slice(0, p.limit) : p.rows;
  return html`<div class="table-wrap"><table data-table=${p.id ?? ''}>
    <thead><tr>${columns.map((c) => html`<th>${c}</th>`)}</tr></thead>
    <tbody>${shown.map((row) => html`<tr>${columns.map((c) => html`<td>${cellText(row[c])}</td>`)}</tr>`)}</tbody>
  </table></div>`;
}

export function cellText(value: unknown): string {
  if (value === null || value === undefined) return '';
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

export function Stat(p: { label: string; value: string; id: string; hint?: string }) {
  return html`<div class="stat" data-stat=${p.id}><span class="label">${p.label}</span><span class="value">${p.value}</span>${
    p.hint ? html`<span class="hint">${p.hint}</span>` : null
  }</div>`;
}

export function ErrorNote(p: { error: unknown }) {
  if (!p.error) return null;
  return html`<p class="error" role="alert">${p.error instanceof Error ? p.error.message : String(p.error)}</p>`;
}

// ------------------------------------------------------------------ routing

/** `#/funnel?sale=x` → { path: 'funnel', query: { sale: 'x' } } */
export function currentRoute(): { path: string; query: URLSearchParams } {
  const [path, query] = location.hash.replace(/^#\/?/, '').split('?');
  return { path: path || 'live', query: new URLSearchParams(query ?? '') };
}

export function setQuery(name: string, value: string): void {
  const { path, query } = currentRoute();
  query.set(name, value);
  // Assigning the hash fires hashchange, so the page re-renders for the new choice (and Back works).
  location.hash = `#/${path}?${query}`;
}
