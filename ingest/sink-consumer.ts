// One consumer group feeding one sink. Per partition batch: decode and validate every message, park the
// ones that fail in the dead-letter topic, write the rest, and only then commit the offsets. A crash
// anywhere before that commit replays the batch; the sink and the replay fence make the replay harmless.
//
// Batching is done by the broker: a fetch waits for `minBytes` or `lingerMs`, whichever comes first, and
// a fetched partition run is cut into batches of at most `maxRows`.
//
// Pipelined per partition: kafkajs fetches nothing while eachBatch runs, so eachBatch only decodes a
// batch and queues it on its partition's lane, then returns once the batch before it is written. The
// next fetch and its decoding overlap the current insert (which runs on chdb's threads). A lane writes
// one batch at a time, in offset order, and its invariant keeps replays exact: a batch's insert starts
// only after its replay fence is committed, and the next fence is committed only after that insert
// returned, in the same offset commit that marks the batch done (one commit per batch when the lane is
// busy). A rebalance, a stop or a failed step kills the lane: its queued and in-flight batches never
// commit, and whoever owns the partition next replays the fenced range with the same token.
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
/** kafkajs error types meaning this member's assignment is changing or gone. */
const GROUP_CHANGE_ERRORS = new Set(['REBALANCE_IN_PROGRESS', 'NOT_COORDINATOR_FOR_GROUP', 'ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID']);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function decodeRun(topic: string, contractTopic: string, partition: number, messages: readonly KafkaMessage[]) {
  const events: SourcedEvent[] = [];
  const rejected: RejectedMessage[] = [];
  for (const message of messages) {
    try {
      const raw = message.value;
      // A string skips decodeEvent's defensive Buffer copy; the bytes themselves go on to the sink.
      events.push({
        event: decodeEvent(raw === null ? null : raw.toString('utf8'), contractTopic),
        partition,
        offset: message.offset,
        raw: raw ?? undefined,
      });
    } catch (error) {
      if (!(error instanceof EventContractError)) throw error;
      rejected.push({ topic, partition, message, error });
    }
  }
  return { events, rejected };
}

/** One cut batch, decoded, waiting on its partition's lane. */
interface LaneJob {
  topic: string;
  partition: number;
  messages: KafkaMessage[];
  batch: SinkBatch;
  rejected: RejectedMessage[];
  highWatermark: string;
  /** Its fence is already committed: a replay's own, or written by the commit of the batch before. */
  fenced: boolean;
  /** The batch queued right behind this one while it was being written, if any. */
  follower?: LaneJob;
  heartbeat: () => Promise<void>;
}

/** A partition's queue of batches in this assignment. Dead once revoked, stopped or failed. */
interface Lane {
  alive: boolean;
  tail: Promise<void>;
  last?: LaneJob;
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
  const lanes = new Map<string, Lane>();
  // Bumped whenever lanes die: an eachBatch call that began before (kafkajs may still be finishing it)
  // must not queue its batch on a lane of the new assignment.
  let generation = 0;
  // A step that failed for no group reason: thrown from the next eachBatch so kafkajs restarts the
  // consumer, which rejoins and reads from the committed offsets again.
  let fatal: Error | undefined;
  const killLanes = () => {
    generation++;
    for (const lane of lanes.values()) lane.alive = false;
    lanes.clear();
  };
  // The group is about to take partitions away (or just did): nothing queued may commit any more.
  consumer.on(consumer.events.REBALANCING, killLanes);
  consumer.on(consumer.events.CRASH, killLanes);
  consumer.on(consumer.events.GROUP_JOIN, () => {
    killLanes();
    fatal = undefined;
    fenceChecked.clear();
    pendingReplays.clear();
  });

  const assertGeneration = (seen: number) => {
    if (seen !== generation) throw new AbandonedBatch();
  };

  const replayFenceFor = async (topic: string, partition: number, seen: number) => {
    const key = `${topic}:${partition}`;
    if (!sink.needsStableBatches || fenceChecked.has(key)) return;
    const fences = await readFences(admin, groupId, topic);
    // A fence read across a rebalance may be outdated by the time it would be used.
    assertGeneration(seen);
    fenceChecked.add(key);
    const fence = fences.get(partition);
    if (fence) pendingReplays.set(key, { ...fence, messages: [] });
  };

  const assertAlive = (lane: Lane) => {
    if (!lane.alive) throw new AbandonedBatch();
  };

  /**
   * Offset commits and dead-letter sends are retried in place while the lane lives: the lane may not
   * skip a step, and rewinding kafkajs instead (seek) would outlive a rebalance and re-read a partition
   * another member has moved on. A group change (rebalance, unknown member) abandons the batch.
   */
  const persist = async (lane: Lane, job: LaneJob, what: string, step: () => Promise<unknown>) => {
    for (let attempt = 0; ; attempt++) {
      assertAlive(lane);
      try {
        // Called in the same tick as the check above: a dead lane never sends the request.
        await step();
        return;
      } catch (error) {
        if (GROUP_CHANGE_ERRORS.has((error as { type?: string }).type ?? '')) {
          lane.alive = false;
          throw new AbandonedBatch();
        }
        assertAlive(lane);
        const delay = Math.min(MAX_RETRY_DELAY_MS, 100 * 2 ** attempt);
        log.warn({ err: error, topic: job.topic, partition: job.partition, attempt, delay }, `${sink.name}: ${what} failed; retrying`);
        await sleep(delay);
        await job.heartbeat().catch(() => {});
      }
    }
  };

  const writeWithRetry = async (lane: Lane, job: LaneJob) => {
    const { batch } = job;
    const partitions = [{ topic: batch.topic, partitions: [batch.partition] }];
    let paused = false;
    try {
      for (let attempt = 0; ; attempt++) {
        assertAlive(lane);
        try {
          await sink.write(batch);
          return;
        } catch (error) {
          ingestMetrics.sinkFailures.inc({ sink: sink.name });
          assertAlive(lane);
          // Backpressure: stop fetching this partition while its sink is failing, keep the group membership.
          if (!paused) consumer.pause(partitions);
          paused = true;
          const delay = Math.min(MAX_RETRY_DELAY_MS, 100 * 2 ** attempt);
          log.warn({ err: error, topic: batch.topic, partition: batch.partition, attempt, delay }, `${sink.name} write failed; retrying`);
          await sleep(delay);
          await job.heartbeat().catch(() => {});
        }
      }
    } finally {
      // kafkajs keeps a pause across rebalances: an abandoned batch must not leave its partition stalled.
      if (paused) {
        try {
          consumer.resume(partitions);
        } catch {
          // The consumer is already stopped; there is nothing left to resume.
        }
      }
    }
  };

  const writeAndCommit = async (lane: Lane, job: LaneJob) => {
    const { topic, partition, batch } = job;
    const started = performance.now();
    if (sink.needsStableBatches && !job.fenced) {
      await persist(lane, job, 'fence commit', () =>
        consumer.commitOffsets([{ topic, partition, offset: batch.firstOffset, metadata: fenceMetadata(batch.lastOffset) }]),
      );
    }
    await persist(lane, job, 'dead-letter send', () => deadLetters.park(job.rejected));
    if (batch.events.length > 0) await writeWithRetry(lane, job);
    await hooks?.afterWrite?.(batch);
    const next = (BigInt(batch.lastOffset) + 1n).toString();
    const follower = sink.needsStableBatches ? job.follower : undefined;
    await persist(lane, job, 'offset commit', () =>
      consumer.commitOffsets([
        follower
          ? { topic, partition, offset: follower.batch.firstOffset, metadata: fenceMetadata(follower.batch.lastOffset) }
          : { topic, partition, offset: next, metadata: null },
      ]),
    );
    if (follower) follower.fenced = true;

    const now = Date.now();
    const freshness = ingestMetrics.freshnessSeconds.labels({ sink: sink.name });
    for (const { event } of batch.events) freshness.observe((now - event.ts) / 1000);
    ingestMetrics.batchRows.observe({ sink: sink.name }, job.messages.length);
    ingestMetrics.batchSeconds.observe({ sink: sink.name }, (performance.now() - started) / 1000);
    if (batch.replay) ingestMetrics.replayedBatches.inc({ sink: sink.name });
    const lag = Number(BigInt(job.highWatermark) - BigInt(next));
    ingestMetrics.consumerLag.set({ group: groupId, topic, partition: String(partition) }, Math.max(0, lag));
  };

  const runJob = async (key: string, lane: Lane, job: LaneJob) => {
    try {
      await writeAndCommit(lane, job);
    } catch (error) {
      if (error instanceof AbandonedBatch || !lane.alive) return;
      // Only an unexpected error gets here (a throwing hook): nothing after this batch may commit, and
      // kafkajs has already fetched past it, so the consumer restarts from the committed offsets.
      lane.alive = false;
      if (lanes.get(key) === lane) lanes.delete(key);
      fatal ??= error as Error;
      log.error({ err: error, topic: job.topic, partition: job.partition }, `${sink.name}: batch failed; restarting the consumer`);
    }
  };

  /** Queues a decoded batch and resolves once the batch queued before it is written and committed. */
  const enqueue = (payload: EachBatchPayload, messages: KafkaMessage[], replay: boolean, seen: number): Promise<void> => {
    const { topic, partition, highWatermark } = payload.batch;
    const key = `${topic}:${partition}`;
    assertGeneration(seen);
    let lane = lanes.get(key);
    if (!lane) {
      lane = { alive: true, tail: Promise.resolve() };
      lanes.set(key, lane);
    }
    const firstOffset = messages[0]!.offset;
    const lastOffset = messages.at(-1)!.offset;
    const { events, rejected } = decodeRun(topic, options.topics[topic] ?? topic, partition, messages);
    const job: LaneJob = {
      topic,
      partition,
      messages,
      batch: { topic, partition, firstOffset, lastOffset, events, replay },
      rejected,
      highWatermark,
      fenced: replay,
      heartbeat: payload.heartbeat,
    };
    if (lane.last) lane.last.follower = job;
    lane.last = job;
    const before = lane.tail;
    const current = lane;
    lane.tail = before.then(() => runJob(key, current, job));
    return before.then(() => assertAlive(current));
  };

  const consumePartitionRun = async (payload: EachBatchPayload) => {
    const seen = generation;
    if (fatal) throw fatal;
    const { topic, partition } = payload.batch;
    const key = `${topic}:${partition}`;
    let queue = payload.batch.messages;
    if (queue.length === 0) return;
    await replayFenceFor(topic, partition, seen);
    while (queue.length > 0) {
      if (!payload.isRunning() || payload.isStale()) return;
      // resolveOffset below would move the fetch position of the new assignment, not of this one.
      assertGeneration(seen);
      const fence = pendingReplays.get(key);
      let run: KafkaMessage[];
      let replay = false;
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
        run = fence.messages;
        replay = true;
      } else {
        run = queue.slice(0, limits.maxRows);
        queue = queue.slice(run.length);
      }
      const previousWritten = enqueue(payload, run, replay, seen);
      // The fetch position moves on so kafkajs can fetch while this batch is written; the committed
      // offset (the only one a restart or another member trusts) moves only after the write.
      payload.resolveOffset(run.at(-1)!.offset);
      await previousWritten;
      await payload.heartbeat();
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
      // Queued and in-flight batches are abandoned uncommitted (their fences make the replay exact).
      const running = [...lanes.values()].map((lane) => lane.tail);
      killLanes();
      await consumer.disconnect();
      // An insert already handed to the warehouse finishes before the caller may close it.
      await Promise.allSettled(running);
      await admin.disconnect();
    },
  };
}
