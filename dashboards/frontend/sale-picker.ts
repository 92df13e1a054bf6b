// Choosing the sale a page is about; the choice is kept in the address (#/page?sale=…) so it can be shared.
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, setQuery } from './lib.js';

export interface SaleSummary {
  sale_id: string;
  title: string | null;
  first_event: string | null;
}

/** The sales to choose from, refreshed every ten seconds so a sale that just started shows up. */
export function useSales(): SaleSummary[] {
  const [sales, setSales] = useState<SaleSummary[]>([]);
  useEffect(() => {
    const load = () =>
      api<{ sales: SaleSummary[] }>('GET', '/api/sale-list').then(
        (r) => setSales(r.sales),
        () => {},
      );
    load();
    const timer = setInterval(load, 10_000);
    return () => clearInterval(timer);
  }, []);
  return sales;
}

/** The sale named in the address, or the most recent one; choosing another one changes the address. */
export function useChosenSale(query: URLSearchParams, sales: SaleSummary[]): [string | null, (id: string) => void] {
  const sale = query.get('sale') ?? sales[0]?.sale_id ?? null;
  return [sale, (id: string) => setQuery('sale', id)];
}

export function SalePicker(p: { sales: SaleSummary[]; sale: string | null; onChange: (id: string) => void }) {
  return html`<label class="picker">Sale
    <select data-picker="sale" value=${p.sale ?? ''} onChange=${(e: Event) => p.onChange((e.target as HTMLSelectElement).value)}>
      ${p.sale && !p.sales.some((s) => s.sale_id === p.sale) ? html`<option value=${p.sale}>${p.sale}</option>` : null}
      ${p.sales.map((s) => html`<option value=${s.sale_id}>${s.title ? `${s.title} (${s.sale_id})` : s.sale_id}</option>`)}
    </select>
  </label>`;
}
