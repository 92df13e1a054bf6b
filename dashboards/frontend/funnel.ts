// Funnel per sale: shoppers reaching each stage, and the same split by channel, device, segment or offer.
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ChartCard, ErrorNote, pct, Table } from './lib.js';
import { SalePicker, useChosenSale, useSales } from './sale-picker.js';

export interface FunnelAnswer {
  sale_id: string;
  by: string;
  stages: string[];
  overall: { stage: string; shoppers: number; conversion: number | null; median_seconds_from_previous: number | null }[];
  breakdown: Record<string, string | number>[];
}

const BREAKDOWNS = ['channel', 'device', 'segment', 'offer'] as const;

export function FunnelPage(p: { query: URLSearchParams }) {
  const sales = useSales();
  const [sale, choose] = useChosenSale(p.query, sales);
  const [by, setBy] = useState<string>(p.query.get('by') ?? 'channel');
  const [answer, setAnswer] = useState<FunnelAnswer | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    if (!sale) return;
    api<FunnelAnswer>('GET', `/api/funnel/${encodeURIComponent(sale)}?by=${by}`).then(setAnswer, setError);
  }, [sale, by]);
  const overall = (answer?.overall ?? []).map((r) => ({ ...r, conversion_text: pct(r.conversion) }));
  return html`<div>
    <div class="toolbar">
      <${SalePicker} sales=${sales} sale=${sale} onChange=${choose} />
      <label class="picker">Break down by
        <select data-picker="by" value=${by} onChange=${(e: Event) => setBy((e.target as HTMLSelectElement).value)}>
          ${BREAKDOWNS.map((b) => html`<option value=${b}>${b}</option>`)}
        </select>
      </label>
    </div>
    <${ErrorNote} error=${error} />
    ${
      answer
        ? html`<div class="grid">
            <${ChartCard} id="funnel" title="Shoppers per stage" type="bar" rows=${answer.overall} x="stage"
              series=${[{ label: 'shoppers', column: 'shoppers' }]} columns=${['stage', 'shoppers', 'conversion', 'median_seconds_from_previous']} />
            <${ChartCard} id=${`funnel-by-${by}`} title=${`Stages by ${by}`} type="bar" rows=${answer.breakdown} x="key"
              series=${answer.stages.map((s) => ({ label: s, column: s }))} columns=${['key', ...answer.stages]} />
          </div>
          <section class="card">
            <h3>Conversion from the previous stage</h3>
            <${Table} id="funnel-table" rows=${overall} columns=${['stage', 'shoppers', 'conversion_text', 'median_seconds_from_previous']} />
          </section>`
        : null
    }
  </div>`;
}
