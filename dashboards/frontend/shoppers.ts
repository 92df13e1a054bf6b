// Shoppers: segments, those who missed out, repeat buyers, and who came back from one sale to the next.
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ChartCard, ErrorNote, money, pct, Table } from './lib.js';
import { SalePicker, useChosenSale, useSales } from './sale-picker.js';

export interface ShoppersAnswer {
  sale_id: string;
  new_vs_returning: { kind: string; shoppers: number }[];
  segments: { segment: string; shoppers: number }[];
  missed_out: { shopper_id: string; queue_position: number | null; reason: string }[];
  missed_out_summary: { reason: string; shoppers: number }[];
  repeat_buyers: { shopper_id: string; sales_bought: number; orders_paid: number; spent_cents: number }[];
  retention: { cohort_sale: string; later_sale: string; cohort_shoppers: number; returned: number; share: number }[];
}

export function ShoppersPage(p: { query: URLSearchParams }) {
  const sales = useSales();
  const [sale, choose] = useChosenSale(p.query, sales);
  const [answer, setAnswer] = useState<ShoppersAnswer | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    if (!sale) return;
    api<ShoppersAnswer>('GET', `/api/shoppers/${encodeURIComponent(sale)}`).then(setAnswer, setError);
  }, [sale]);
  const retention = (answer?.retention ?? []).map((r) => ({ ...r, pair: `${r.cohort_sale} → ${r.later_sale}` }));
  return html`<div>
    <div class="toolbar"><${SalePicker} sales=${sales} sale=${sale} onChange=${choose} /></div>
    <${ErrorNote} error=${error} />
    ${
      answer
        ? html`<div class="grid">
            <${ChartCard} id="new-vs-returning" title="New and returning shoppers" type="bar" rows=${answer.new_vs_returning} x="kind"
              series=${[{ label: 'shoppers', column: 'shoppers' }]} />
            <${ChartCard} id="segments" title="Segments (latest offer run)" type="bar" rows=${answer.segments} x="segment"
              series=${[{ label: 'shoppers', column: 'shoppers' }]} note=${answer.segments.length ? '' : 'No offer run has segmented shoppers yet.'} />
            <${ChartCard} id="missed-out" title="Missed out, by why" type="bar" rows=${answer.missed_out_summary} x="reason"
              series=${[{ label: 'shoppers', column: 'shoppers' }]} />
            <${ChartCard} id="retention" title="Came back to a later sale" type="bar" rows=${retention} x="pair"
              series=${[{ label: 'returned', column: 'returned' }]} columns=${['cohort_sale', 'later_sale', 'cohort_shoppers', 'returned', 'share']} />
          </div>
          <section class="card"><h3>Repeat buyers</h3>
            <${Table} id="repeat-buyers" rows=${answer.repeat_buyers.map((r) => ({ ...r, spent: money(r.spent_cents) }))}
              columns=${['shopper_id', 'sales_bought', 'orders_paid', 'spent']} limit=${50} />
          </section>
          <section class="card"><h3>Missed-out shoppers (first 50)</h3>
            <${Table} id="missed-out-list" rows=${answer.missed_out} columns=${['shopper_id', 'queue_position', 'reason']} limit=${50} />
          </section>
          <section class="card"><h3>Retention</h3>
            <${Table} id="retention-table" rows=${retention.map((r) => ({ ...r, share: pct(r.share) }))}
              columns=${['cohort_sale', 'later_sale', 'cohort_shoppers', 'returned', 'share']} />
          </section>`
        : null
    }
  </div>`;
}
