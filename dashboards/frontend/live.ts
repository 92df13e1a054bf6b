// Live sale: one server-sent event stream per open page; the server pushes a snapshot every second.
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
// The server's shape, as a type only: esbuild drops the import, so no server code reaches the bundle.
import type { LiveSnapshot } from '../live.js';
import { ChartCard, ErrorNote, money, num, Stat } from './lib.js';
import { SalePicker, useChosenSale, useSales } from './sale-picker.js';

declare global {
  interface Window {
    /** Render times of live snapshots, read by the browser test to measure update latency. */
    __liveUpdates?: { at: number; rendered: number; lastEventAt: number | null; ordersReserved: number }[];
  }
}

export function LivePage(p: { query: URLSearchParams }) {
  const sales = useSales();
  const [sale, choose] = useChosenSale(p.query, sales);
  const [snap, setSnap] = useState<LiveSnapshot | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (!sale) return;
    setSnap(null);
    const source = new EventSource(`/api/live/${encodeURIComponent(sale)}/stream`);
    source.addEventListener('snapshot', (event) => {
      const next = JSON.parse((event as MessageEvent).data) as LiveSnapshot;
      setSnap(next);
      setError(null);
      window.__liveUpdates ??= [];
      window.__liveUpdates.push({
        at: next.at,
        rendered: Date.now(),
        lastEventAt: next.freshness.last_event_at,
        ordersReserved: next.totals.orders_reserved,
      });
      if (window.__liveUpdates.length > 600) window.__liveUpdates.shift();
    });
    source.addEventListener('problem', (event) => setError(JSON.parse((event as MessageEvent).data).message));
    return () => source.close();
  }, [sale]);

  const t = snap?.totals;
  const lag = snap?.freshness.last_event_at ? Math.max(0, (snap.at - snap.freshness.last_event_at) / 1000) : null;
  return html`<div>
    <div class="toolbar">
      <${SalePicker} sales=${sales} sale=${sale} onChange=${choose} />
      <span class="status" data-live-status=${snap?.status ?? ''}>${snap ? `${snap.status ?? 'unknown'} · updated ${new Date(snap.at).toLocaleTimeString()}` : 'connecting…'}</span>
    </div>
    <${ErrorNote} error=${error} />
    ${
      snap
        ? html`<div class="stats">
            <${Stat} id="orders-reserved" label="Orders reserved" value=${num(t?.orders_reserved)} />
            <${Stat} id="orders-paid" label="Orders paid" value=${num(t?.orders_paid)} />
            <${Stat} id="revenue" label="Revenue" value=${money(t?.revenue_cents)} />
            <${Stat} id="waiting" label="Waiting room" value=${num(snap.waiting_room.waiting)} hint=${`${num(snap.waiting_room.joined)} joined · ${num(snap.waiting_room.admitted)} admitted`} />
            <${Stat} id="bots" label="Bot-flagged attempts" value=${num(snap.bots.attempts)} hint=${`${num(snap.bots.shoppers)} shoppers`} />
            <${Stat} id="freshness" label="Data freshness" value=${lag === null ? '–' : `${lag.toFixed(1)} s`} hint=${
              snap.freshness.pipeline_ms === null ? 'since the last event' : `pipeline ${num(snap.freshness.pipeline_ms)} ms`
            } />
          </div>
          <div class="grid">
            <${ChartCard} id="orders-per-second" title="Orders per second" type="line" rows=${snap.per_second} x="second"
              series=${[{ label: 'reserved', column: 'reserved' }, { label: 'paid', column: 'paid' }]} />
            <${ChartCard} id="units-left" title="Units left per SKU" type="bar" rows=${snap.stock} x="sku" stacked=${true}
              series=${[
                { label: 'available', column: 'available' },
                { label: 'reserved', column: 'reserved' },
                { label: 'sold', column: 'sold' },
              ]} columns=${['sku', 'available', 'reserved', 'sold', 'initial']} />
            <${ChartCard} id="rejections" title="Rejections by reason" type="bar" rows=${snap.rejections} x="reason" horizontal=${true}
              series=${[{ label: 'rejections', column: 'rejections' }]} />
          </div>`
        : null
    }
  </div>`;
}
