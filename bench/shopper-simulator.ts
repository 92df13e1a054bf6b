// The shopper simulator: the load of the purchase benchmark and of demos.
//
//   journey  realistic shoppers against a running sale-core: they arrive around the start (normal
//            spread), open a session, browse (page and product views), log in, join the waiting room
//            and poll it, buy (retrying on 429/503 with the same Idempotency-Key), and pay — most in
//            the window, some late, some never. A share are bots: no browsing, rapid-fire purchases.
//   load     a fixed pool of connections firing purchase attempts at one target (sale-core, the bare
//            fastify ceiling, or the PostgreSQL baseline), closed-loop (max throughput) or at a fixed
//            rate (open loop, latency measured from the scheduled send time), for a bounded duration.
//
//   tsx bench/shopper-simulator.ts journey --url http://127.0.0.1:8080 --shoppers 2000 --stock 300
//     (every simulated shopper comes from 127.0.0.1: start sale-core with SALE_RATE_IP_PER_SECOND,
//      SALE_RATE_IP_BURST, SALE_RATE_ADDRESS_PER_MINUTE and SALE_QUEUE_ACCOUNTS_PER_IP raised, or the
//      per-address limits — rightly — turn most of them away)
//   tsx bench/shopper-simulator.ts load --url http://127.0.0.1:8080 --sale <id> --duration 8000 --connections 64 [--rate 2000]
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { config } from '../common/config.js';
import { issueSession, issueTicket, sessionTokenDigest } from '../sale-core/tokens.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface LoadOptions {
  url: string;
  saleId: string;
  durationMs: number;
  warmupMs: number;
  connections: number;
  /** Requests per second (open loop); omitted = closed loop at full speed. */
  rate?: number;
  /** Distinct shoppers the attempts rotate over. */
  shoppers: number;
  secret: string;
}

export interface LoadResult {
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  max: number;
  statuses: Record<string, number>;
  errors: number;
  /** Every answered request, warm-up included (to divide the server's CPU time by). */
  answered: number;
  /** CPU time (user + system, µs) this load generator spent firing them: it shares the cores with the server. */
  cpuUs: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/** Fires purchase attempts at `url` and measures what came back. */
export async function runPurchaseLoad(o: LoadOptions): Promise<LoadResult> {
  const pool = new Pool(o.url, { connections: o.connections, pipelining: 1, keepAliveTimeout: 30_000 });
  const expires = Date.now() + 3_600_000;
  const sessions = Array.from({ length: o.shoppers }, (_, i) => {
    const userId = `sim-${i}`;
    const sessionId = randomUUID();
    const token = issueSession({ sessionId, anonId: `anon-sim-${i}`, userId, expiresAt: expires }, o.secret);
    // What the waiting room writes into a ticket about the session it admitted.
    const session = { sessionId, anonId: `anon-sim-${i}`, expiresAt: expires, tokenDigest: sessionTokenDigest(token) };
    return { userId, auth: `Bearer ${token}`, session };
  });
  // Tickets are single use, so every attempt needs a fresh one. The waiting room issues them long before
  // the purchase, so they are signed here before the clock starts: signing on the fly cost the load
  // generator ~60 µs per request, CPU taken from the server it shares the cores with. Sized for 12,000
  // requests/s (above any measured ceiling); past that, attempts sign their own.
  const expected = Math.ceil(((o.rate ?? 12_000) * (o.warmupMs + o.durationMs)) / 1000);
  const ticketFor = ({ userId, session }: (typeof sessions)[number]) =>
    issueTicket({ saleId: o.saleId, userId, position: 1, expiresAt: expires, session }, o.secret);
  const tickets: string[] = Array.from({ length: expected }, (_, i) => ticketFor(sessions[i % sessions.length]!));
  let next = 0;
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  let errors = 0;
  let answered = 0;
  let measuring = false;

  const attempt = async (scheduledAt: number) => {
    const i = next++;
    const who = sessions[i % sessions.length]!;
    const ticket = tickets[i] ?? ticketFor(who);
    if (i < tickets.length) tickets[i] = ''; // spent: let it be collected
    try {
      const res = await pool.request({
        path: `/sales/${o.saleId}/purchase`,
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: who.auth, 'idempotency-key': randomUUID() },
        body: JSON.stringify({ sku: 'SKU-1', ticket }),
      });
      await res.body.dump();
      answered++;
      if (measuring) {
        latencies.push(performance.now() - scheduledAt);
        statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
      }
    } catch {
      if (measuring) errors++;
    }
  };

  const total = o.warmupMs + o.durationMs;
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  setTimeout(() => {
    measuring = true;
  }, o.warmupMs);
  let measuredFrom = start + o.warmupMs;

  if (o.rate === undefined) {
    await Promise.all(
      Array.from({ length: o.connections }, async () => {
        while (performance.now() - start < total) await attempt(performance.now());
      }),
    );
  } else {
    // Open loop: requests go out on schedule whether or not earlier ones returned (no coordinated omission).
    // The schedule is a 5 ms grid: at each grid point the requests due by then leave together (about as
    // clumped as random arrivals at these rates), and their latency counts from the grid point itself,
    // so a late tick counts against the result. Waking every millisecond instead cost this process
    // ~110 ms of CPU per second with nothing to send, taken from the servers on the same cores.
    const inFlight = new Set<Promise<void>>();
    const TICK_MS = 5;
    let sent = 0;
    for (let tick = 1; tick * TICK_MS < total; tick++) {
      const tickAt = start + tick * TICK_MS;
      const wait = tickAt - performance.now();
      if (wait > 0) await sleep(wait);
      const due = Math.floor((tick * TICK_MS * o.rate) / 1000);
      while (sent < due) {
        const p = attempt(tickAt).finally(() => inFlight.delete(p));
        inFlight.add(p);
        sent++;
      }
    }
    await Promise.all(inFlight);
  }
  const elapsed = (performance.now() - measuredFrom) / 1000;
  measuredFrom = 0;
  await pool.close();
  const cpu = process.cpuUsage(cpuBefore);
  const sorted = Float64Array.from(latencies).sort();
  return {
    requests: latencies.length,
    rps: Math.round(latencies.length / Math.min(elapsed, o.durationMs / 1000)),
    p50: Number(percentile(sorted, 0.5).toFixed(2)),
    p99: Number(percentile(sorted, 0.99).toFixed(2)),
    max: Number((sorted.at(-1) ?? Number.NaN).toFixed(2)),
    statuses,
    errors,
    answered,
    cpuUs: cpu.user + cpu.system,
  };
}

// ------------------------------------------------------------------ journeys

export interface JourneyOptions {
  url: string;
  adminToken: string;
  shoppers: number;
  stock: number;
  botShare: number;
  latePayShare: number;
  neverPayShare: number;
  arrivalSpreadMs: number;
  paymentWindowMinutes: number;
  admissionRate: number;
}

export async function runShopperJourneys(o: JourneyOptions) {
  const pool = new Pool(o.url, { connections: 64 });
  const call = async (method: 'GET' | 'POST', path: string, token?: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await pool.request({
      path,
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.body.text();
    return {
      status: res.statusCode,
      json: text ? JSON.parse(text) : null,
      retryAfter: Number(res.headers['retry-after'] ?? 1),
      place: typeof res.headers['x-position-token'] === 'string' ? res.headers['x-position-token'] : undefined,
      // Sold out, but units held by unpaid orders may come back (the answer says when): worth waiting for.
      soldOutForNow: res.statusCode === 409 && res.headers['retry-after'] !== undefined,
    };
  };
  const saleId = `sim-${randomUUID().slice(0, 8)}`;
  const startsAt = Date.now() + Math.min(5000, o.arrivalSpreadMs / 2);
  const created = await call('POST', '/admin/sales', o.adminToken, {
    id: saleId,
    title: 'Simulated flash sale',
    starts_at: startsAt,
    ends_at: startsAt + 3_600_000,
    payment_window_minutes: o.paymentWindowMinutes,
    admission_rate_per_second: o.admissionRate,
    skus: [{ sku: 'SKU-1', title: 'Limited sneaker', price: 12_900, stock: o.stock, limit_per_shopper: 1 }],
  });
  if (created.status !== 201) throw new Error(`could not create the sale: ${JSON.stringify(created.json)}`);

  const tally: Record<string, number> = {};
  const count = (what: string) => {
    tally[what] = (tally[what] ?? 0) + 1;
  };
  const gaussian = () => Math.sqrt(-2 * Math.log(Math.random() || 1e-9)) * Math.cos(2 * Math.PI * Math.random());

  const journey = async (i: number) => {
    const bot = Math.random() < o.botShare;
    await sleep(Math.max(0, startsAt - Date.now() + (gaussian() * o.arrivalSpreadMs) / 4));
    const session = (await call('POST', '/session')).json;
    let token: string = session.token;
    if (!bot) {
      await call('GET', `/sales/${saleId}/catalog`);
      await call('POST', `/sales/${saleId}/events`, token, { type: 'page_view', path: `/sales/${saleId}` });
      await sleep(200 + Math.random() * 800);
      await call('POST', `/sales/${saleId}/events`, token, { type: 'product_view', sku: 'SKU-1' });
      await sleep(100 + Math.random() * 400);
      await call('POST', `/sales/${saleId}/events`, token, { type: 'add_to_cart', sku: 'SKU-1', qty: 1 });
    }
    token = (await call('POST', '/session/login', token, { user_id: `${bot ? 'bot' : 'shopper'}-${i}`, sale_id: saleId })).json.token;
    // The waiting room: join once, then poll with the signed place (a poll costs Redis nothing) until
    // admitted, sold out, or the shopper gives up. Without a place (a join refused), join again.
    let ticket: string | undefined;
    let place: string | undefined;
    for (let poll = 0; poll < 60 && !ticket; poll++) {
      const q = place
        ? await call('GET', `/sales/${saleId}/queue`, token, undefined, { 'x-position-token': place })
        : await call('POST', `/sales/${saleId}/queue`, token);
      place = q.place ?? place;
      if (q.status === 200 && q.json.status === 'admitted') ticket = q.json.ticket;
      else if (q.status === 200) await sleep(Math.min(q.json.retry_after_ms, 2000) * (0.8 + Math.random() * 0.4));
      else if (q.status === 429) await sleep(q.retryAfter * 1000);
      else if (q.soldOutForNow) {
        count('queue_waited_for_returns');
        await sleep(q.retryAfter * 1000);
      } else {
        count(`queue_${q.json?.error?.code ?? q.status}`);
        return;
      }
    }
    if (!ticket) return count('gave_up_waiting');
    // A person takes a moment between admission and buying; a bot carts straight away, never having
    // viewed the product (the no_prior_view signal the purchase script and the segments look for).
    if (!bot) await sleep(300 + Math.random() * 1500);
    else await call('POST', `/sales/${saleId}/events`, token, { type: 'add_to_cart', sku: 'SKU-1', qty: 1 });
    const key = randomUUID();
    for (let tries = 0; tries < 10; tries++) {
      const p = await call('POST', `/sales/${saleId}/purchase`, token, { sku: 'SKU-1', ticket }, { 'idempotency-key': key });
      if (p.status === 429 || p.status === 503) {
        count(`purchase_retry_${p.status}`);
        await sleep(bot ? 50 : p.retryAfter * 1000);
        continue;
      }
      if (p.soldOutForNow && !bot) {
        count('purchase_waited_for_returns');
        await sleep(p.retryAfter * 1000);
        continue;
      }
      if (p.status !== 202) return count(`purchase_${p.json?.error?.code ?? p.status}`);
      count(bot ? 'bot_reserved' : 'reserved');
      const roll = Math.random();
      if (roll < o.neverPayShare) return count('never_paid');
      const windowMs = o.paymentWindowMinutes * 60_000;
      await sleep(roll < o.neverPayShare + o.latePayShare ? windowMs + 500 + Math.random() * 1000 : Math.random() * windowMs * 0.5);
      let paid = await call('POST', `/orders/${p.json.order_id}/pay`, token, {});
      for (let retry = 0; retry < 5 && (paid.status === 429 || paid.status === 503); retry++) {
        await sleep(paid.retryAfter * 1000);
        paid = await call('POST', `/orders/${p.json.order_id}/pay`, token, {});
      }
      return count(paid.status === 200 ? (paid.json.late_reacquired ? 'paid_late_reacquired' : 'paid') : `pay_${paid.json?.error?.code}`);
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: o.shoppers }, (_, i) => journey(i).catch(() => count('error'))));
  const stock = (await call('GET', `/admin/sales/${saleId}`, o.adminToken)).json?.ledger;
  await pool.close();
  return { saleId, seconds: (Date.now() - started) / 1000, outcomes: tally, ledger: stock };
}

// ------------------------------------------------------------------ CLI

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      url: { type: 'string', default: `http://127.0.0.1:${config().sale.port}` },
      sale: { type: 'string', default: 'bench' },
      duration: { type: 'string', default: '8000' },
      warmup: { type: 'string', default: '2000' },
      connections: { type: 'string', default: '64' },
      rate: { type: 'string' },
      shoppers: { type: 'string', default: '2000' },
      stock: { type: 'string', default: '300' },
      bots: { type: 'string', default: '0.1' },
      late: { type: 'string', default: '0.1' },
      never: { type: 'string', default: '0.15' },
      spread: { type: 'string', default: '10000' },
      window: { type: 'string', default: '1' }, // minutes; the API allows no less
      admission: { type: 'string', default: '200' },
    },
  });
  const mode = positionals[0] ?? 'journey';
  const result =
    mode === 'load'
      ? await runPurchaseLoad({
          url: values.url,
          saleId: values.sale,
          durationMs: Number(values.duration),
          warmupMs: Number(values.warmup),
          connections: Number(values.connections),
          rate: values.rate ? Number(values.rate) : undefined,
          shoppers: Number(values.shoppers),
          secret: config().sale.tokenSecret,
        })
      : await runShopperJourneys({
          url: values.url,
          adminToken: config().sale.adminToken,
          shoppers: Number(values.shoppers),
          stock: Number(values.stock),
          botShare: Number(values.bots),
          latePayShare: Number(values.late),
          neverPayShare: Number(values.never),
          arrivalSpreadMs: Number(values.spread),
          paymentWindowMinutes: Number(values.window),
          admissionRate: Number(values.admission),
        });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
