// Ingest benchmark (issue 4): events/s from produced to visible in the warehouse, and freshness p50/p95
// at a paced 10,000 events/s, side by side with a bare kafkajs consumer that only decodes (the ceiling).
// Loopback only, on the local stack's broker, with topics of its own that it deletes afterwards.
//
//   npm run bench:ingest          (BENCH_EVENTS=200000 BENCH_PACED_SECONDS=10 to change the size)
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { Kafka } from 'kafkajs';
import { decodeEvent } from '../common/events.js';
import { createKafka, createTopicsAndWait } from '../common/kafka.js';
import { clickMessage } from './click-messages.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000);
const PACED_RATE = 10_000;
const PACED_SECONDS = Number(process.env.BENCH_PACED_SECONDS ?? 10);
const PARTITIONS = 6;
const kafka = createKafka('bench-ingest');
const run = randomUUID().slice(0, 8);

async function createTopics(names: string[]) {
  const admin = kafka.admin();
  await admin.connect();
  await createTopicsAndWait(
    admin,
    names.map((topic) => ({ topic, numPartitions: PARTITIONS, replicationFactor: 1 })),
  );
  await admin.disconnect();
}

async function deleteTopics(names: string[]) {
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: names }).catch(() => {});
  await admin.disconnect();
}

async function produceBacklog(topic: string, count: number) {
  const producer = kafka.producer();
  await producer.connect();
  const chunk = 5000;
  for (let i = 0; i < count; i += chunk) {
    const messages = Array.from({ length: Math.min(chunk, count - i) }, (_, j) => clickMessage(i + j));
    await producer.send({ topic, acks: 1, messages });
  }
  await producer.disconnect();
}

/** Sends PACED_RATE events/s in 10 ms slices, each stamped with its send time. */
async function producePaced(topic: string, seconds: number) {
  const producer = kafka.producer();
  await producer.connect();
  const perSlice = PACED_RATE / 100;
  const start = Date.now();
  let sent = 0;
  for (let slice = 0; slice < seconds * 100; slice++) {
    const due = start + slice * 10;
    if (due > Date.now()) await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
    const messages = Array.from({ length: perSlice }, (_, j) => clickMessage(sent + j));
    sent += perSlice;
    await producer.send({ topic, acks: 1, messages });
  }
  await producer.disconnect();
  return { sent, achievedRate: sent / ((Date.now() - start) / 1000) };
}

interface ConsumerRun {
  rate: number;
  freshness: number[];
  /** CPU (user + system, all threads) per event after the first batch. */
  cpuMicrosPerEvent: number;
}

/** The ceiling: a kafkajs consumer group that decodes and validates each event and does nothing else. */
async function bareConsumer(
  client: Kafka,
  topic: string,
  expected: number,
  start: () => Promise<unknown> = async () => {},
): Promise<ConsumerRun> {
  const consumer = client.consumer({ groupId: `bench-bare-${run}-${topic}`, maxBytesPerPartition: 16 << 20, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const freshness: number[] = [];
  let seen = 0;
  let firstBatchEnd = 0;
  let firstBatchRows = 0;
  let lastAt = 0;
  let cpuAtFirstBatch = 0;
  const cpuMicros = () => process.cpuUsage().user + process.cpuUsage().system;
  let finished!: () => void;
  const done = new Promise<void>((resolve) => {
    finished = resolve;
  });
  await consumer.run({
    partitionsConsumedConcurrently: 3,
    eachBatch: async ({ batch }) => {
      for (const message of batch.messages) {
        const event = decodeEvent(message.value);
        freshness.push(Date.now() - event.ts);
      }
      seen += batch.messages.length;
      lastAt = Date.now();
      if (firstBatchEnd === 0) {
        firstBatchEnd = lastAt;
        firstBatchRows = batch.messages.length;
        cpuAtFirstBatch = cpuMicros();
      }
      if (seen >= expected) finished();
    },
  });
  await start();
  await done;
  const cpuMicrosPerEvent = (cpuMicros() - cpuAtFirstBatch) / Math.max(1, seen - firstBatchRows);
  await consumer.disconnect();
  return { rate: (seen - firstBatchRows) / ((lastAt - firstBatchEnd) / 1000), freshness, cpuMicrosPerEvent };
}

interface IngestResult {
  cpuMicrosPerEvent: number;
  written: number;
  visible: number;
  firstWriteAt: number;
  lastWriteAt: number;
  firstBatchRows: number;
  freshness: number[];
  rssMiB: number;
  peakRssMiB: number;
}

/** Ingest in its own process (as `--role ingest` would be), until `expected` rows are visible. */
async function ingestProcess(
  topic: string,
  expected: number,
  start: () => Promise<unknown> = async () => {},
): Promise<ConsumerRun & IngestResult> {
  const [orders, dlq] = [`bench.orders.${run}`, `bench.dlq.${run}`];
  const child = fork(join(import.meta.dirname, 'ingest-process.ts'), {
    // BENCH_INGEST_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the ingest process.
    execArgv: ['--import', 'tsx', ...(process.env.BENCH_INGEST_NODE_ARGS?.split(' ').filter(Boolean) ?? [])],
    env: {
      ...process.env,
      LOG_LEVEL: 'warn',
      BENCH_TOPIC: topic,
      BENCH_ORDERS_TOPIC: orders,
      BENCH_DLQ_TOPIC: dlq,
      BENCH_GROUP: `bench-ingest-${run}-${topic}`,
    },
  });
  const result = await new Promise<IngestResult>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? undefined : reject(new Error(`ingest process exited with ${code}`))));
    child.on('message', async (message: { kind: string; written?: number } & IngestResult) => {
      if (message.kind === 'ready') await start();
      if (message.kind === 'progress' && (message.written ?? 0) >= expected) child.send({ kind: 'finish' });
      if (message.kind === 'result') resolve(message);
    });
  });
  const rate = (result.written - result.firstBatchRows) / ((result.lastWriteAt - result.firstWriteAt) / 1000);
  return { ...result, rate };
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function main() {
  const backlog = `bench.clickstream.backlog.${run}`;
  const paced = [`bench.clickstream.paced-bare.${run}`, `bench.clickstream.paced-ingest.${run}`] as const;
  const all = [backlog, ...paced, `bench.orders.${run}`, `bench.dlq.${run}`];
  await createTopics(all);
  const loadBefore = loadavg();
  try {
    console.log(`producing a backlog of ${fmt(EVENTS)} events on ${PARTITIONS} partitions…`);
    await produceBacklog(backlog, EVENTS);
    const bare = await bareConsumer(kafka, backlog, EVENTS);
    const ingest = await ingestProcess(backlog, EVENTS);

    console.log(`paced ${fmt(PACED_RATE)} events/s for ${PACED_SECONDS} s, bare consumer then ingest…`);
    const pacedCount = PACED_RATE * PACED_SECONDS;
    let bareSent = { sent: 0, achievedRate: 0 };
    const barePaced = await bareConsumer(kafka, paced[0], pacedCount, async () => {
      bareSent = await producePaced(paced[0], PACED_SECONDS);
    });
    let ingestSent = { sent: 0, achievedRate: 0 };
    const ingestPaced = await ingestProcess(paced[1], pacedCount, async () => {
      // Let the group join before the clock starts, as a running ingest would have.
      await new Promise((resolve) => setTimeout(resolve, 4000));
      ingestSent = await producePaced(paced[1], PACED_SECONDS);
    });
    const loadAfter = loadavg();

    const rows = [
      ['', 'bare kafkajs (decode only)', 'ingest → chdb warehouse', 'ratio'],
      ['drain rate, events/s', fmt(bare.rate), fmt(ingest.rate), `${((ingest.rate / bare.rate) * 100).toFixed(0)}%`],
      [
        'CPU per event (drain, all threads)',
        `${bare.cpuMicrosPerEvent.toFixed(1)} µs`,
        `${ingest.cpuMicrosPerEvent.toFixed(1)} µs`,
        `${(ingest.cpuMicrosPerEvent / bare.cpuMicrosPerEvent).toFixed(1)}×`,
      ],
      ['rows visible / produced', `${fmt(EVENTS)} decoded`, `${fmt(ingest.visible)} / ${fmt(EVENTS)}`, ''],
      [
        `freshness p50 at ${fmt(PACED_RATE)}/s`,
        `${quantile(barePaced.freshness, 0.5)} ms`,
        `${quantile(ingestPaced.freshness, 0.5)} ms`,
        `${(quantile(ingestPaced.freshness, 0.5) / Math.max(1, quantile(barePaced.freshness, 0.5))).toFixed(1)}×`,
      ],
      [
        `freshness p95 at ${fmt(PACED_RATE)}/s`,
        `${quantile(barePaced.freshness, 0.95)} ms`,
        `${quantile(ingestPaced.freshness, 0.95)} ms`,
        `${(quantile(ingestPaced.freshness, 0.95) / Math.max(1, quantile(barePaced.freshness, 0.95))).toFixed(1)}×`,
      ],
      ['paced rate achieved, events/s', fmt(bareSent.achievedRate), fmt(ingestSent.achievedRate), ''],
      ['ingest process RSS (end / peak)', '', `${fmt(ingest.rssMiB)} / ${fmt(ingest.peakRssMiB)} MiB (drain)`, ''],
      ['', '', `${fmt(ingestPaced.rssMiB)} / ${fmt(ingestPaced.peakRssMiB)} MiB (paced)`, ''],
    ];
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
    for (const row of rows) console.log(row.map((cell, c) => cell.padEnd(widths[c]!)).join('  '));
    console.log(
      `load average 1/5/15 min: before ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${loadAfter.map((l) => l.toFixed(2)).join(' ')} (shared 2-core machine)`,
    );
    if (ingest.visible !== EVENTS) console.log(`WARNING: ${fmt(ingest.visible)} rows visible for ${fmt(EVENTS)} events produced`);
  } finally {
    await deleteTopics(all);
  }
}

await main();
process.exit(0);
