// One consumer group feeding one sink. Per partition batch: decode and validate every message, park the
// ones that fail in the dead-letter topic, write the rest, and only then commit the offsets. A crash
// anywhere before that commit replays the batch; the sink and the replay fence make the replay harmless.
//
// Batching is done by the broker: a fetch waits for `minBytes` or `lingerMs`, whichever comes first, and
// a fetched partition run is cut into batches of at most `maxRows`. The write happens inside eachBatch, so
// kafkajs never rebalances a partition away in the middle of a write.
import type { Admin, Consumer, EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import { decodeEvent, EventContractError } from '../common/events.js';
import type { Logger } from '../common/logger.js';
import type { DeadLetters, RejectedMessage } from './dead-letters.js';
import { ingestMetrics } from './metrics.js';
import { fenceMetadata, type ReplayFence, readFences } from './replay-fence.js';
import type { Sink, SinkBatch, SourcedEvent } from './sink.js';

export interface BatchLimits {
  maxRows: number;
  lingerMs: number;
  minBytes: number;
  /** Partitions written at the same time: one decodes while another's insert runs off-thread. */
  partitionsInParallel: number;
  /** Most bytes one fetch brings per partition; bounds memory while draining a backlog. */
  maxBytesPerPartition: number;
}

export interface SinkConsumerHooks {
  /** Fault injection for crash tests: runs after the sink wrote a batch and before its commit. */
  afterWrite?(batch: SinkBatch): void | Promise<void>;
}

export interface SinkConsumerOptions {
  kafka: Kafka;
  groupId: string;
  /** Topics to read, each mapped to the contract topic its events belong on (tests use their own names). */
  topics: Record<string, string>;
  sink: Sink;
  deadLetters: DeadLetters;
  limits: BatchLimits;
  log: Logger;
  fromBeginning?: boolean;
  /** How long the group waits for a silent member (a killed process) before giving its partitions away. */
  sessionTimeoutMs?: number;
  hooks?: SinkConsumerHooks;
}

export interface SinkConsumer {
  readonly groupId: string;
  readonly consumer: Consumer;
  stop(): Promise<void>;
}

/** A batch given up because the consumer is stopping or lost the partition: nothing is committed. */
class AbandonedBatch extends Error {}

const MAX_RETRY_DELAY_MS = 5000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function decodeRun(topic: string, contractTopic: string, partition: number, messages: readonly KafkaMessage[]) {
  const events: SourcedEvent[] = [];
  const rejected: RejectedMessage[] = [];
  for (const message of messages) {
    try {
      events.push({ event: decodeEvent(message.value, contractTopic), partition, offset: message.offset });
    } catch (error) {
      if (!(error instanceof EventContractError)) throw error;
      rejected.push({ topic, partition, message, error });
    }
  }
  return { events, rejected };
}

export async function startSinkConsumer(options: SinkConsumerOptions): Promise<SinkConsumer> {
  const { kafka, groupId, sink, deadLetters, limits, log, hooks } = options;
  const consumer = kafka.consumer({
    groupId,
    minBytes: limits.minBytes,
    maxWaitTimeInMs: limits.lingerMs,
    maxBytesPerPartition: limits.maxBytesPerPartition,
    maxBytes: Math.max(24 << 20, limits.maxBytesPerPartition),
    sessionTimeout: options.sessionTimeoutMs ?? 30_000,
    heartbeatInterval: Math.min(3000, Math.floor((options.sessionTimeoutMs ?? 30_000) / 3)),
  });
  const admin: Admin = kafka.admin();
  // Fences are read once per partition after each (re)assignment; a rebalance forgets them all.
  const fenceChecked = new Set<string>();
  const pendingReplays = new Map<string, ReplayFence & { messages: KafkaMessage[] }>();
  consumer.on(consumer.events.GROUP_JOIN, () => {
    fenceChecked.clear();
    pendingReplays.clear();
  });

  const replayFenceFor = async (topic: string, partition: number) => {
    const key = `${topic}:${partition}`;
    if (!sink.needsStableBatches || fenceChecked.has(key)) return;
    const fences = await readFences(admin, groupId, topic);
    fenceChecked.add(key);
    const fence = fences.get(partition);
    if (fence) pendingReplays.set(key, { ...fence, messages: [] });
  };

  const writeWithRetry = async (batch: SinkBatch, payload: EachBatchPayload) => {
    let resume: (() => void) | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        await sink.write(batch);
        resume?.();
        return;
      } catch (error) {
        ingestMetrics.sinkFailures.inc({ sink: sink.name });
        if (!payload.isRunning() || payload.isStale()) throw new AbandonedBatch();
        // Backpressure: stop fetching this partition while its sink is failing, keep the group membership.
        resume ??= payload.pause();
        const delay = Math.min(MAX_RETRY_DELAY_MS, 100 * 2 ** attempt);
        log.warn({ err: error, topic: batch.topic, partition: batch.partition, attempt, delay }, `${sink.name} write failed; retrying`);
        await sleep(delay);
        await payload.heartbeat().catch(() => {});
      }
    }
  };

  const writeAndCommit = async (payload: EachBatchPayload, messages: KafkaMessage[], replay: boolean) => {
    const { topic, partition } = payload.batch;
    const started = performance.now();
    const firstOffset = messages[0]!.offset;
    const lastOffset = messages.at(-1)!.offset;
    const { events, rejected } = decodeRun(topic, options.topics[topic] ?? topic, partition, messages);
    const batch: SinkBatch = { topic, partition, firstOffset, lastOffset, events, replay };
    if (sink.needsStableBatches && !replay) {
      await consumer.commitOffsets([{ topic, partition, offset: firstOffset, metadata: fenceMetadata(lastOffset) }]);
    }
    await deadLetters.park(rejected);
    if (events.length > 0) await writeWithRetry(batch, payload);
    await hooks?.afterWrite?.(batch);
    const next = (BigInt(lastOffset) + 1n).toString();
    await consumer.commitOffsets([{ topic, partition, offset: next, metadata: null }]);
    payload.resolveOffset(lastOffset);

    const now = Date.now();
    const freshness = ingestMetrics.freshnessSeconds.labels({ sink: sink.name });
    for (const { event } of events) freshness.observe((now - event.ts) / 1000);
    ingestMetrics.batchRows.observe({ sink: sink.name }, messages.length);
    ingestMetrics.batchSeconds.observe({ sink: sink.name }, (performance.now() - started) / 1000);
    if (replay) ingestMetrics.replayedBatches.inc({ sink: sink.name });
    const lag = Number(BigInt(payload.batch.highWatermark) - BigInt(next));
    ingestMetrics.consumerLag.set({ group: groupId, topic, partition: String(partition) }, Math.max(0, lag));
    await payload.heartbeat();
  };

  const consumePartitionRun = async (payload: EachBatchPayload) => {
    const { topic, partition } = payload.batch;
    const key = `${topic}:${partition}`;
    let queue = payload.batch.messages;
    if (queue.length === 0) return;
    await replayFenceFor(topic, partition);
    while (queue.length > 0) {
      if (!payload.isRunning() || payload.isStale()) return;
      const fence = pendingReplays.get(key);
      if (fence) {
        // Re-cut to the fenced range, however the fetch came back this time.
        const inFence = queue.filter((message) => BigInt(message.offset) <= BigInt(fence.to));
        fence.messages.push(...inFence);
        queue = queue.slice(inFence.length);
        const carried = fence.messages.at(-1);
        if (queue.length === 0 && carried?.offset !== fence.to) {
          // The fetch stopped short of the fence: read on without committing anything.
          if (carried) payload.resolveOffset(carried.offset);
          return;
        }
        pendingReplays.delete(key);
        if (fence.messages.length === 0) continue;
        log.info({ topic, partition, from: fence.from, to: fence.to }, `${sink.name}: replaying a batch with its original boundaries`);
        await writeAndCommit(payload, fence.messages, true);
        continue;
      }
      const run = queue.slice(0, limits.maxRows);
      queue = queue.slice(run.length);
      await writeAndCommit(payload, run, false);
    }
  };

  await admin.connect();
  await consumer.connect();
  await consumer.subscribe({ topics: Object.keys(options.topics), fromBeginning: options.fromBeginning ?? true });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    partitionsConsumedConcurrently: limits.partitionsInParallel,
    eachBatch: async (payload) => {
      try {
        await consumePartitionRun(payload);
      } catch (error) {
        if (error instanceof AbandonedBatch) return;
        throw error;
      }
    },
  });

  return {
    groupId,
    consumer,
    async stop() {
      // kafkajs lets the running batch finish (or abandon itself through isRunning) before leaving the group.
      await consumer.disconnect();
      await admin.disconnect();
    },
  };
}
