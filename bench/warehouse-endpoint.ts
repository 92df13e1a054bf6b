// Warehouse endpoint benchmark (issue 8), in one run, about two minutes:
//
//   1. small queries: throughput and p95 through the endpoint (@clickhouse/client in this process, the
//      endpoint in the warehouse owner's process, as readers and the owner run) against the same queries
//      on chdb directly in the owner's process, same concurrency; CPU per request of each process;
//   2. Arrow: a 10,000,000-row ArrowStream result through the endpoint, read with apache-arrow (rows/s, MiB/s);
//   3. ingest drain rate in the owner process (its warehouse sink, a backlog on a topic of its own), alone
//      and while this process keeps two heavy queries running through the endpoint, alternately, twice.
//
//   npm run bench:warehouse      (BENCH_SECONDS=8 BENCH_EVENTS=100000 BENCH_CONCURRENCY=4 to change;
//                                 WAREHOUSE_QUERY_NICE etc. reach the endpoint as in production)
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from '@clickhouse/client';
import { RecordBatchReader } from 'apache-arrow';
import { createKafka, createTopicsAndWait } from '../common/kafka.js';
import { clickMessage } from './click-messages.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const EVENTS = Number(process.env.BENCH_EVENTS ?? 100_000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const ARROW_ROWS = 10_000_000;
const DRAIN_ROUNDS = 2;
const PARTITIONS = 6;
const BENCH_PASSWORD = 'bench-analyst-password';

/** The small queries a dashboard or offer job sends: a count, a parameterized group-by, a point lookup. */
const SMALL_QUERIES: Array<{ sql: string; params?: Record<string, unknown> }> = [
  { sql: "SELECT count() AS n FROM clickstream_events WHERE sale_id = 'sale-3'" },
  {
    sql: 'SELECT type, count() AS n FROM clickstream_events WHERE sale_id = {sale:String} GROUP BY type ORDER BY type',
    params: { sale: 'sale-7' },
  },
  { sql: 'SELECT 1 AS one' },
];

/** Heavy queries kept running through the endpoint while ingest drains. */
const HEAVY_QUERIES = [
  'SELECT sale_id, type, count() AS n, uniqExact(shopper_id) AS shoppers FROM clickstream_events GROUP BY sale_id, type ORDER BY n DESC',
  'SELECT count() FROM numbers(30000000) WHERE NOT ignore(sipHash64(number))',
];

const cpuMicros = () => {
  const { user, system } = process.cpuUsage();
  return user + system;
};

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

interface LoopResult {
  count: number;
  errors: number;
  latencies: number[];
  seconds: number;
  cpuMicros: number;
}

/** Runs `CONCURRENCY` loops of `once` for `seconds`, timing each call. */
async function loop(once: (i: number) => Promise<unknown>, seconds: number, concurrency = CONCURRENCY): Promise<LoopResult> {
  const latencies: number[] = [];
  let errors = 0;
  const cpuBefore = cpuMicros();
  const started = performance.now();
  const end = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, worker) => {
      for (let i = worker; performance.now() < end; i += concurrency) {
        const t0 = performance.now();
        try {
          await once(i);
          latencies.push(performance.now() - t0);
        } catch {
          errors++;
        }
      }
    }),
  );
  return { count: latencies.length, errors, latencies, seconds: (performance.now() - started) / 1000, cpuMicros: cpuMicros() - cpuBefore };
}

// ───────────────────────── the warehouse owner (a child process) ─────────────────────────

async function owner(): Promise<void> {
  const { openChdbWarehouse } = await import('../analytics/warehouse/chdb-warehouse.js');
  const { migrate } = await import('../analytics/warehouse/migrate.js');
  const { hashWarehousePassword, startWarehouseEndpoint } = await import('../analytics/warehouse-endpoint/index.js');
  const { startIngest } = await import('../ingest/index.js');
  const { Session } = await import('chdb');
  const dir = mkdtempSync(join(tmpdir(), 'bench-endpoint-chdb-'));
  const warehouse = await openChdbWarehouse(dir, 'flashsale');
  await migrate(warehouse);
  // 1,000,000 clicks over 10 sales to query.
  await warehouse.command(
    `INSERT INTO clickstream_events (event_id, type, ts, sale_id, anon_id, session_id, channel, device, ip_hash, kafka_partition, kafka_offset)
     SELECT generateUUIDv7(), ['page_view', 'product_view', 'add_to_cart', 'purchase_attempt'][1 + number % 4],
            now64(3) - toIntervalSecond(number % 86400), concat('sale-', toString(number % 10)), concat('anon-', toString(number % 50000)),
            concat('s-', toString(number % 80000)), 'web', 'phone', 'h', 0, number
     FROM numbers(1000000)`,
  );
  const endpoint = await startWarehouseEndpoint({
    warehouse,
    port: 0,
    users: [{ name: 'analyst', role: 'analyst', passwordHash: hashWarehousePassword(BENCH_PASSWORD) }],
  });
  // "Directly": a chdb connection of the owner's, as the warehouse adapter queries (JSONEachRow, parsed).
  const direct = new Session(dir);
  await direct.queryAsync('USE flashsale', { format: 'TSV' });
  const kafka = createKafka('bench-endpoint-ingest');

  process.on('message', async (message: { kind: string; topic?: string; expected?: number; group?: string }) => {
    if (message.kind === 'direct') {
      const result = await loop(async (i) => {
        const query = SMALL_QUERIES[i % SMALL_QUERIES.length]!;
        const answer = query.params
          ? await direct.queryBindAsync(query.sql, query.params, { format: 'JSONEachRow' })
          : await direct.queryAsync(query.sql, { format: 'JSONEachRow' });
        for (const line of answer.text().split('\n')) if (line) JSON.parse(line);
      }, SECONDS);
      process.send?.({ kind: 'direct', ...result, latencies: [quantile(result.latencies, 0.5), quantile(result.latencies, 0.95)] });
    } else if (message.kind === 'cpu') {
      process.send?.({ kind: 'cpu', cpuMicros: cpuMicros() });
    } else if (message.kind === 'ingest') {
      let written = 0;
      let firstAt = 0;
      let lastAt = 0;
      let firstRows = 0;
      const ingest = await startIngest({
        warehouse,
        kafka,
        migrate: false,
        topics: { clickstream: message.topic!, orders: `${message.topic}.orders`, deadLetters: `${message.topic}.dlq` },
        groupIds: { warehouse: message.group! },
        sinks: ['warehouse'],
        hooks: {
          warehouse: {
            afterWrite(batch) {
              const now = Date.now();
              if (written === 0) {
                firstAt = now;
                firstRows = batch.events.length;
              }
              written += batch.events.length;
              lastAt = now;
            },
          },
        },
      });
      process.send?.({ kind: 'ingest-started' });
      while (written < message.expected!) await new Promise((resolve) => setTimeout(resolve, 20));
      await ingest.close();
      process.send?.({ kind: 'ingest', rate: (written - firstRows) / ((lastAt - firstAt) / 1000), written });
    } else if (message.kind === 'finish') {
      const peak = Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) / 1024;
      await endpoint.close();
      direct.close();
      await warehouse.close();
      rmSync(dir, { recursive: true, force: true });
      process.send?.({ kind: 'finished', peakRssMiB: peak }, () => process.exit(0));
    }
  });
  process.send?.({ kind: 'ready', url: endpoint.url });
}

// ───────────────────────── the reader (this process) ─────────────────────────

async function reader(): Promise<void> {
  const run = randomUUID().slice(0, 8);
  // Alternately alone and loaded, so a change in the machine's other load hits both alike.
  const topics = Array.from({ length: DRAIN_ROUNDS }, (_, round) => [
    `bench.endpoint.alone${round}.${run}`,
    `bench.endpoint.loaded${round}.${run}`,
  ]).flat();
  const allTopics = topics.flatMap((topic) => [topic, `${topic}.orders`, `${topic}.dlq`]);
  const kafka = createKafka('bench-endpoint');
  const admin = kafka.admin();
  await admin.connect();
  await createTopicsAndWait(
    admin,
    allTopics.map((topic) => ({ topic, numPartitions: PARTITIONS, replicationFactor: 1 })),
  );
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  const loadBefore = loadavg();
  const child = fork(fileURLToPath(import.meta.url), ['--owner'], {
    execArgv: ['--import', 'tsx'],
    // As main.ts's ingest role sets it: chdb holds a libuv worker for each query and insert.
    env: { ...process.env, LOG_LEVEL: 'warn', UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' },
  });
  const messages: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  child.on('message', (message: Record<string, unknown>) => {
    messages.push(message);
    for (const wake of waiters.splice(0)) wake();
  });
  const next = async <T = Record<string, unknown>>(kind: string): Promise<T> => {
    for (;;) {
      const index = messages.findIndex((message) => message.kind === kind);
      if (index >= 0) return messages.splice(index, 1)[0] as T;
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  };
  try {
    console.log(`producing ${fmt(EVENTS)} clickstream events on each of ${topics.length} topics; the owner process seeds 1,000,000 rows…`);
    const producer = kafka.producer();
    await producer.connect();
    for (const topic of topics) {
      for (let i = 0; i < EVENTS; i += 5000) {
        await producer.send({
          topic,
          acks: 1,
          messages: Array.from({ length: Math.min(5000, EVENTS - i) }, (_, j) => clickMessage(i + j)),
        });
      }
    }
    await producer.disconnect();
    const { url } = await next<{ url: string }>('ready');
    const client = createClient({ url, username: 'analyst', password: BENCH_PASSWORD, database: 'flashsale' });
    const ownerCpu = async () => {
      child.send({ kind: 'cpu' });
      return (await next<{ cpuMicros: number }>('cpu')).cpuMicros;
    };

    // 1. Small queries: direct, then through the endpoint (warm-up first, both).
    console.log(`small queries, ${CONCURRENCY} at a time, ${SECONDS} s each: chdb directly, then through the endpoint…`);
    child.send({ kind: 'direct' });
    const direct = await next<LoopResult & { latencies: [number, number] }>('direct');
    const viaEndpoint = async (i: number) => {
      const query = SMALL_QUERIES[i % SMALL_QUERIES.length]!;
      const result = await client.query({
        query: query.sql,
        format: 'JSONEachRow',
        ...(query.params ? { query_params: query.params } : {}),
      });
      await result.json();
    };
    await loop(viaEndpoint, 1);
    const ownerBefore = await ownerCpu();
    const endpoint = await loop(viaEndpoint, SECONDS);
    const ownerDuring = (await ownerCpu()) - ownerBefore;

    // 2. Arrow transfer.
    console.log(`ArrowStream of ${fmt(ARROW_ROWS)} rows through the endpoint…`);
    const arrowOwnerBefore = await ownerCpu();
    const arrowCpuBefore = cpuMicros();
    const arrowStart = performance.now();
    const arrow = await client.exec({
      query: `SELECT number AS n, toString(number) AS s, number * 0.5 AS x, toDateTime64('2026-01-01 00:00:00', 3, 'UTC') + number AS t FROM numbers(${ARROW_ROWS}) FORMAT ArrowStream`,
      // apache-arrow in JS reads uncompressed IPC only.
      clickhouse_settings: { output_format_arrow_compression_method: 'none' },
    });
    let arrowBytes = 0;
    async function* counted() {
      for await (const chunk of arrow.stream) {
        arrowBytes += (chunk as Buffer).length;
        yield chunk as Buffer;
      }
    }
    let arrowRows = 0;
    for await (const batch of await RecordBatchReader.from(counted())) arrowRows += batch.numRows;
    const arrowSeconds = (performance.now() - arrowStart) / 1000;
    const arrowCpu = cpuMicros() - arrowCpuBefore;
    const arrowOwnerCpu = (await ownerCpu()) - arrowOwnerBefore;

    // 3. Ingest drain, alone and under a heavy query load.
    console.log('ingest drain in the owner process, alternately alone and with heavy queries through the endpoint (2 rounds)…');
    const drain = async (topic: string) => {
      child.send({ kind: 'ingest', topic, expected: EVENTS, group: `bench-endpoint-${run}-${topic}` });
      return (await next<{ rate: number }>('ingest')).rate;
    };
    const aloneRates: number[] = [];
    const loadedRates: number[] = [];
    let heavyDone = 0;
    let heavyErrors = 0;
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      aloneRates.push(await drain(topics[2 * round]!));
      let loading = true;
      const heavy = Promise.all(
        Array.from({ length: 2 }, async (_, worker) => {
          for (let i = worker; loading; i++) {
            try {
              await (await client.query({ query: HEAVY_QUERIES[i % HEAVY_QUERIES.length]!, format: 'JSONEachRow' })).json();
              heavyDone++;
            } catch {
              heavyErrors++;
            }
          }
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, 500)); // the load is running before the drain starts
      loadedRates.push(await drain(topics[2 * round + 1]!));
      loading = false;
      await heavy;
    }
    const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
    const alone = { rate: mean(aloneRates) };
    const loaded = { rate: mean(loadedRates) };
    await client.close();
    child.send({ kind: 'finish' });
    const { peakRssMiB } = await next<{ peakRssMiB: number }>('finished');
    const loadAfter = loadavg();

    const directRate = direct.count / direct.seconds;
    const endpointRate = endpoint.count / endpoint.seconds;
    const rows = [
      ['', 'chdb directly', 'through the endpoint', 'ratio'],
      ['small queries/s', fmt(directRate), fmt(endpointRate), `${(endpointRate / directRate).toFixed(2)}`],
      [
        'latency p50 / p95',
        `${direct.latencies[0].toFixed(2)} / ${direct.latencies[1].toFixed(2)} ms`,
        `${quantile(endpoint.latencies, 0.5).toFixed(2)} / ${quantile(endpoint.latencies, 0.95).toFixed(2)} ms`,
        `${(quantile(endpoint.latencies, 0.95) / direct.latencies[1]).toFixed(2)}× p95`,
      ],
      [
        'CPU per request',
        `${(direct.cpuMicros / direct.count).toFixed(0)} µs (owner)`,
        `${(ownerDuring / endpoint.count).toFixed(0)} µs owner + ${(endpoint.cpuMicros / endpoint.count).toFixed(0)} µs reader`,
        '',
      ],
      ['errors', String(direct.errors), String(endpoint.errors), ''],
      [
        `ArrowStream, ${fmt(arrowRows)} rows`,
        '',
        `${fmt(arrowRows / arrowSeconds)} rows/s, ${(arrowBytes / 2 ** 20 / arrowSeconds).toFixed(0)} MiB/s (${(arrowBytes / 2 ** 20).toFixed(0)} MiB in ${arrowSeconds.toFixed(1)} s)`,
        '',
      ],
      [
        '  CPU per million rows',
        '',
        `${(arrowOwnerCpu / 1e6 / (arrowRows / 1e6)).toFixed(2)} s owner + ${(arrowCpu / 1e6 / (arrowRows / 1e6)).toFixed(2)} s reader`,
        '',
      ],
      ['', 'ingest alone', 'ingest + heavy queries', 'ratio'],
      ['ingest drain, events/s (mean)', fmt(alone.rate), fmt(loaded.rate), `${(loaded.rate / alone.rate).toFixed(2)}`],
      ['  each round', aloneRates.map(fmt).join(', '), loadedRates.map(fmt).join(', '), ''],
      ['heavy queries during the drain', '', `${heavyDone} done, ${heavyErrors} failed`, ''],
      ['owner process peak RSS', '', `${fmt(peakRssMiB)} MiB`, ''],
    ];
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
    for (const row of rows) console.log(row.map((cell, c) => cell.padEnd(widths[c]!)).join('  '));
    console.log(
      `load average 1/5/15 min: before ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${loadAfter.map((l) => l.toFixed(2)).join(' ')} (shared 2-core machine)`,
    );
  } finally {
    child.kill();
    await admin.deleteTopics({ topics: allTopics }).catch(() => {});
    await admin.disconnect();
  }
}

if (process.argv.includes('--owner')) await owner();
else {
  await reader();
  process.exit(0);
}
