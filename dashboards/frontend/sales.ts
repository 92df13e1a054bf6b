// Sales: create and schedule a sale with its follow-up sale (through the sale core's admin API), end one,
// and compare past sales side by side.
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import type { SaleComparison } from '../insight-routes.js';
import type { SaleRecord } from '../store.js';
import { type Account, api, ChartCard, ErrorNote, money, pct, Table } from './lib.js';

const localInput = (ms: number) => new Date(ms - new Date().getTimezoneOffset() * 60_000).toISOString().slice(0, 16);

function saleFromForm(form: FormData, prefix: string) {
  const value = (name: string) => String(form.get(`${prefix}${name}`) ?? '').trim();
  return {
    id: value('id'),
    title: value('title'),
    starts_at: new Date(value('starts_at')).getTime(),
    ends_at: new Date(value('ends_at')).getTime(),
    payment_window_minutes: Number(value('window')),
    skus: [
      {
        sku: value('sku'),
        title: value('sku_title'),
        price: Math.round(Number(value('price')) * 100),
        stock: Number(value('stock')),
        limit_per_shopper: Number(value('limit')),
      },
    ],
  };
}

function SaleFields(p: { prefix: string; startsAt: number; legend: string; optional?: boolean }) {
  const f = (name: string) => `${p.prefix}${name}`;
  const required = !p.optional;
  return html`<fieldset>
    <legend>${p.legend}</legend>
    <label>Id <input name=${f('id')} pattern="[a-z0-9][a-z0-9-]{0,39}" required=${required} placeholder="spring-drop" /></label>
    <label>Title <input name=${f('title')} required=${required} /></label>
    <label>Starts <input name=${f('starts_at')} type="datetime-local" value=${localInput(p.startsAt)} required=${required} /></label>
    <label>Ends <input name=${f('ends_at')} type="datetime-local" value=${localInput(p.startsAt + 3_600_000)} required=${required} /></label>
    <label>Payment window (min) <input name=${f('window')} type="number" min="1" value="10" required=${required} /></label>
    <label>SKU <input name=${f('sku')} value="SKU-1" required=${required} /></label>
    <label>Product <input name=${f('sku_title')} value="Limited sneaker" required=${required} /></label>
    <label>Price <input name=${f('price')} type="number" step="0.01" min="0" value="129.00" required=${required} /></label>
    <label>Stock <input name=${f('stock')} type="number" min="0" value="100" required=${required} /></label>
    <label>Limit per shopper <input name=${f('limit')} type="number" min="1" max="100" value="1" required=${required} /></label>
  </fieldset>`;
}

export function SalesPage(p: { account: Account }) {
  const [sales, setSales] = useState<SaleRecord[]>([]);
  const [comparison, setComparison] = useState<SaleComparison[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [created, setCreated] = useState<string | null>(null);
  const [refresh, setRefresh] = useState(0);
  const mayChange = p.account.role !== 'analyst';
  useEffect(() => {
    api<{ sales: SaleRecord[] }>('GET', '/api/sales').then((r) => setSales(r.sales), setError);
    api<{ sales: SaleComparison[] }>('GET', '/api/sales/compare').then((r) => setComparison(r.sales), setError);
  }, [refresh]);

  const create = async (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.target as HTMLFormElement);
    setError(null);
    try {
      const sale = saleFromForm(form, '');
      const followUp = String(form.get('f_id') ?? '').trim() ? saleFromForm(form, 'f_') : undefined;
      const result = await api<{ sale_id: string; follow_up_sale_id: string | null }>('POST', '/api/sales', { sale, follow_up: followUp });
      setCreated(result.follow_up_sale_id ? `${result.sale_id} (follow-up ${result.follow_up_sale_id})` : result.sale_id);
      setRefresh((n) => n + 1);
    } catch (e) {
      setError(e);
    }
  };
  const end = async (id: string) => {
    try {
      await api('POST', `/api/sales/${encodeURIComponent(id)}/end`, {});
      setRefresh((n) => n + 1);
    } catch (e) {
      setError(e);
    }
  };
  const now = Date.now() + 5 * 60_000;
  return html`<div>
    <${ErrorNote} error=${error} />
    ${created ? html`<p class="ok" data-created=${created}>Created ${created}.</p>` : null}
    ${
      mayChange
        ? html`<form class="card sale-form" onSubmit=${create} data-form="create-sale">
            <h3>Create and schedule a sale</h3>
            <${SaleFields} prefix="" startsAt=${now} legend="The sale" />
            <${SaleFields} prefix="f_" startsAt=${now + 24 * 3_600_000} legend="Its follow-up sale (optional)" optional=${true} />
            <button type="submit" data-action="create-sale">Create</button>
          </form>`
        : null
    }
    <section class="card"><h3>Sales created here</h3>
      <div class="table-wrap"><table data-table="sales">
        <thead><tr><th>sale</th><th>title</th><th>starts</th><th>ends</th><th>follow-up</th><th>by</th><th></th></tr></thead>
        <tbody>${sales.map(
          (s) => html`<tr data-sale=${s.sale_id}>
            <td>${s.sale_id}</td><td>${s.title}</td><td>${new Date(s.starts_at).toLocaleString()}</td>
            <td>${new Date(s.ends_at).toLocaleString()}</td><td>${s.follow_up_sale_id ?? ''}</td><td>${s.created_by ?? ''}</td>
            <td>${
              s.ended_at
                ? 'ended'
                : mayChange
                  ? html`<button class="small" data-end=${s.sale_id} onClick=${() => end(s.sale_id)}>End now</button>`
                  : ''
            }</td>
          </tr>`,
        )}</tbody>
      </table></div>
    </section>
    <div class="grid">
      <${ChartCard} id="compare-revenue" title="Revenue per sale" type="bar" rows=${comparison.map((c) => ({ ...c, revenue: c.revenue_cents / 100 }))} x="sale_id"
        series=${[{ label: 'revenue', column: 'revenue' }]} columns=${['sale_id', 'shoppers', 'orders_reserved', 'orders_paid', 'units_paid', 'revenue_cents', 'conversion', 'sell_out_seconds', 'rejections']} />
      <${ChartCard} id="compare-orders" title="Orders per sale" type="bar" rows=${comparison} x="sale_id"
        series=${[{ label: 'reserved', column: 'orders_reserved' }, { label: 'paid', column: 'orders_paid' }]} />
    </div>
    <section class="card"><h3>Past sales compared</h3>
      <${Table} id="compare" rows=${comparison.map((c) => ({ ...c, revenue: money(c.revenue_cents), conversion: pct(c.conversion) }))}
        columns=${['sale_id', 'shoppers', 'orders_reserved', 'orders_paid', 'units_paid', 'revenue', 'conversion', 'sell_out_seconds', 'rejections']} />
    </section>
  </div>`;
}
