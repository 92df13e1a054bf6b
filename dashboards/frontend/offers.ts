// Offers: the rules, each run and who got what, uplift against the hold-out with 95% intervals, and a
// form that runs an offer job while its progress streams back.
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import type { OfferJobProgress } from '../offer-jobs.js';
import { type Account, api, ChartCard, ErrorNote, money, pct, Table } from './lib.js';
import { SalePicker, useChosenSale, useSales } from './sale-picker.js';

export interface OffersAnswer {
  sale_id: string;
  rules: Record<string, unknown>[];
  runs: { run_id: string; step: string; from_sales: string[]; for_sale: string; shoppers: number; at: string }[];
  offers: { run_id: string; rule_id: string; shopper_id: string; offer_id: string | null; holdout: number; segment: string; why: string }[];
  uplift: {
    rule_id: string;
    offered: number;
    offered_conversion: number;
    holdout: number;
    holdout_conversion: number;
    difference: number;
    ci_low: number | null;
    ci_high: number | null;
    revenue_per_offered_shopper_cents: number;
    revenue_per_holdout_shopper_cents: number;
    shown: number;
    redeemed: number;
    warning: string | null;
  }[];
  note: string | null;
}

export function OffersPage(p: { query: URLSearchParams; account: Account }) {
  const sales = useSales();
  const [sale, choose] = useChosenSale(p.query, sales);
  const [answer, setAnswer] = useState<OffersAnswer | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [job, setJob] = useState<OfferJobProgress | null>(null);
  const [refresh, setRefresh] = useState(0);
  useEffect(() => {
    if (!sale) return;
    api<OffersAnswer>('GET', `/api/offers/${encodeURIComponent(sale)}`).then(setAnswer, setError);
  }, [sale, refresh]);

  const runJob = async (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.target as HTMLFormElement);
    const from = String(form.get('from') ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    setError(null);
    try {
      const { run_id } = await api<{ run_id: string }>('POST', '/api/offers/runs', { from_sales: from, for_sale: String(form.get('for')) });
      const source = new EventSource(`/api/offers/runs/${encodeURIComponent(run_id)}/stream`);
      source.addEventListener('progress', (e) => {
        const progress = JSON.parse((e as MessageEvent).data) as OfferJobProgress;
        setJob(progress);
        if (progress.finished) {
          source.close();
          setRefresh((n) => n + 1);
        }
      });
    } catch (e) {
      setError(e);
    }
  };

  const uplift = (answer?.uplift ?? []).map((u) => ({
    ...u,
    difference_pp: u.difference * 100,
    ci_low_pp: (u.ci_low ?? 0) * 100,
    ci_high_pp: (u.ci_high ?? 0) * 100,
  }));
  return html`<div>
    <div class="toolbar"><${SalePicker} sales=${sales} sale=${sale} onChange=${choose} /></div>
    <${ErrorNote} error=${error} />
    ${answer?.note ? html`<p class="note">${answer.note}</p>` : null}
    ${
      p.account.role !== 'analyst'
        ? html`<form class="card inline" onSubmit=${runJob} data-form="offer-run">
            <h3>Run an offer job</h3>
            <label>From past sales <input name="from" placeholder="sale-a,sale-b" value=${sale ?? ''} required /></label>
            <label>For sale <input name="for" placeholder="next sale id" required /></label>
            <button type="submit">Run</button>
            ${
              job
                ? html`<div class="progress" data-job=${job.run_id} data-job-step=${job.step}>
                    <progress max=${job.total || 1} value=${job.done}></progress>
                    <span>${job.step} ${job.total ? `${job.done}/${job.total}` : ''}</span>
                    ${job.error ? html`<span class="error">${job.error}</span>` : null}
                  </div>`
                : null
            }
          </form>`
        : null
    }
    ${
      answer
        ? html`<div class="grid">
            <${ChartCard} id="uplift" title="Conversion: offered vs hold-out" type="bar" rows=${answer.uplift} x="rule_id"
              series=${[
                { label: 'offered', column: 'offered_conversion' },
                { label: 'hold-out', column: 'holdout_conversion' },
              ]} columns=${['rule_id', 'offered', 'offered_conversion', 'holdout', 'holdout_conversion', 'difference', 'ci_low', 'ci_high', 'warning']} />
            <${ChartCard} id="uplift-interval" title="Uplift with 95% interval (percentage points)" type="line" rows=${uplift} x="rule_id"
              series=${[
                { label: 'low', column: 'ci_low_pp' },
                { label: 'uplift', column: 'difference_pp' },
                { label: 'high', column: 'ci_high_pp' },
              ]} />
          </div>
          <section class="card"><h3>Uplift per rule</h3>
            <${Table} id="uplift-table" rows=${answer.uplift.map((u) => ({
              ...u,
              offered_conversion: pct(u.offered_conversion),
              holdout_conversion: pct(u.holdout_conversion),
              difference: pct(u.difference),
              interval: `${pct(u.ci_low)} … ${pct(u.ci_high)}`,
              revenue_per_offered: money(u.revenue_per_offered_shopper_cents),
              revenue_per_holdout: money(u.revenue_per_holdout_shopper_cents),
            }))} columns=${[
              'rule_id',
              'offered',
              'shown',
              'redeemed',
              'offered_conversion',
              'holdout',
              'holdout_conversion',
              'difference',
              'interval',
              'revenue_per_offered',
              'revenue_per_holdout',
              'warning',
            ]} />
          </section>
          <section class="card"><h3>Rules</h3><${Table} id="rules" rows=${answer.rules} /></section>
          <section class="card"><h3>Runs</h3><${Table} id="runs" rows=${answer.runs} /></section>
          <section class="card"><h3>Who got what (first 100)</h3>
            <${Table} id="offers-given" rows=${answer.offers} columns=${['run_id', 'rule_id', 'shopper_id', 'segment', 'offer_id', 'holdout', 'why']} limit=${100} />
          </section>`
        : null
    }
  </div>`;
}
