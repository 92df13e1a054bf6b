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
import { type PartitionWatch, type StuckPartition, watchPartitions } from './partition-watch.js';
import { fenceMetadata, type ReplayFence, readFences } from './replay-fence.js';
import { isRefusedForGood, type Sink, type SinkBatch, type SourcedEvent } from './sink.js';

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
  /** A partition with lag whose committed offset has not moved for this long is stuck (not ready). */
  stuckAfterMs: number;
  hooks?: SinkConsumerHooks;
}

export interface SinkConsumer {
  readonly groupId: string;
  readonly consumer: Consumer;
  /** Partitions of this group stuck for longer than `stuckAfterMs` (see partition-watch.ts). */
  stuckPartitions(): StuckPartition[];
  /** Reads the group's offsets now instead of at the next tick. */
  checkPartitions(): Promise<void>;
  stop(): Promise<void>;
}

/** A batch given up because the consumer is stopping or lost the partition: nothing is committed. */
class AbandonedBatch extends Error {}

const MAX_RETRY_DELAY_MS = 5000;
/** kafkajs error types meaning this member's assignment is changing or gone. */
const GROUP_CHANGE_ERRORS = new Set([
  'REBALANCE_IN_PROGRESS',
  'NOT_COORDINATOR_FOR_GROUP',
  'COORDINATOR_NOT_AVAILABLE',
  'ILLEGAL_GENERATION',
  'UNKNOWN_MEMBER_ID',
  'FENCED_INSTANCE_ID',
]);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The group error behind a failure, if any. kafkajs wraps a broker error (an OffsetCommit refused with
 * UNKNOWN_MEMBER_ID, say) in an outer error whose own `type` is undefined, sometimes twice (retries
 * exceeded around a non-retriable error), so the whole cause chain is read.
 */
export function groupChangeOf(error: unknown): string | undefined {
  for (let current = error, depth = 0; current instanceof Error && depth < 8; depth++) {
    const type = (current as { type?: unknown }).type;
    if (typeof type === 'string' && GROUP_CHANGE_ERRORS.has(type)) return type;
    current = current.cause ?? (current as { originalError?: unknown }).originalError;
  }
  return undefined;
}

/** This member lost its place in the group (evicted, or its generation is over): what it holds is abandoned and the consumer restarts. */
class GroupPlaceLost extends Error {
  // kafkajs restarts a consumer whose eachBatch threw a retriable error: a fresh join, new member id.
  readonly retriable = true;
  constructor(readonly reason: string) {
    super(`this member lost its place in the group (${reason}); rejoining`);
    this.name = 'GroupPlaceLost';
  }
}

function decodeRun(topic: string, contractTopic: string, partition: number, messages: readonly KafkaMessage[]) {
  const events: SourcedEvent[] = [];
  const rejected: RejectedMessage[] = [];
  for (const message of messages) {
    try {
      const raw = message.value;
      // The bytes themselves: decodeEvent checks they are UTF-8 before reading them, and they go on to the sink.
      events.push({
        event: decodeEvent(raw, contractTopic),
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
  // eachBatch calls parked on a lane; woken when the member loses its place so they throw at once.
  const waiting = new Set<() => void>();
  const killLanes = () => {
    generation++;
    for (const lane of lanes.values()) lane.alive = false;
    lanes.clear();
  };
  const heartbeatEveryMs = Math.min(3000, Math.floor((options.sessionTimeoutMs ?? 30_000) / 3));
  /**
   * A group error seen by a lane (an offset commit, a dead-letter send or a heartbeat refused): this
   * member has lost its place, so every lane dies (nothing it holds may commit) and the eachBatch waiting
   * on one returns at once. The next eachBatch of this generation throws, so kafkajs restarts the consumer,
   * which joins again and reads from the committed offsets (and fences). Not only for an eviction: kafkajs
   * rejoins by itself only when it meets the error with its `type` on the outer error, which depends on the
   * request that meets it (an OffsetCommit's is wrapped), and until it does it may fetch once more in the
   * old generation. A batch of that fetch lies past the ones just abandoned, and its fence commit (which
   * the broker still accepts while the group prepares its rebalance) would move the committed offset over
   * them: they would never be written. A rejoin costs the group one more rebalance; a lost batch is lost.
   */
  const loseGroupPlace = (reason: string, error: unknown) => {
    if (fatal instanceof GroupPlaceLost) return;
    ingestMetrics.abandonedBatches.inc({ group: groupId, reason });
    log.warn({ err: error, reason }, `${sink.name}: this member lost its place in the group; abandoning its batches and rejoining`);
    killLanes();
    fatal = new GroupPlaceLost(reason);
    for (const wake of waiting) wake();
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
        const groupChange = groupChangeOf(error);
        if (groupChange) {
          lane.alive = false;
          loseGroupPlace(groupChange, error);
          throw new AbandonedBatch();
        }
        assertAlive(lane);
        const delay = Math.min(MAX_RETRY_DELAY_MS, 100 * 2 ** attempt);
        log.warn({ err: error, topic: job.topic, partition: job.partition, attempt, delay }, `${sink.name}: ${what} failed; retrying`);
        await sleep(delay);
        await beat(lane, job);
      }
    }
  };

  /** A heartbeat from a lane; one refused for a group reason means this member lost its place. */
  const beat = async (lane: Lane, job: LaneJob) => {
    if (!lane.alive) return;
    try {
      await job.heartbeat();
    } catch (error) {
      const groupChange = groupChangeOf(error);
      if (groupChange && lane.alive) loseGroupPlace(groupChange, error);
    }
  };

  /**
   * Heartbeats while a sink write (or its retries) runs: kafkajs heartbeats only between batches, and
   * eachBatch waits on this lane, so a write longer than the session timeout would otherwise get this
   * member evicted mid-write. kafkajs sends at most one heartbeat per heartbeat interval whatever we call.
   */
  const whileHeartbeating = async <T>(lane: Lane, job: LaneJob, work: () => Promise<T>): Promise<T> => {
    const timer = setInterval(() => void beat(lane, job), heartbeatEveryMs);
    try {
      return await work();
    } finally {
      clearInterval(timer);
    }
  };

  /**
   * Writes one batch or part, retrying what a retry can help with the partition paused (backpressure:
   * no more fetches for it, the group membership kept). Resolves with nothing once written, or with the
   * error when the sink refused the data for good.
   */
  const writeRetrying = async (lane: Lane, batch: SinkBatch): Promise<Error | undefined> => {
    const partitions = [{ topic: batch.topic, partitions: [batch.partition] }];
    let paused = false;
    try {
      for (let attempt = 0; ; attempt++) {
        assertAlive(lane);
        try {
          await sink.write(batch);
          return undefined;
        } catch (error) {
          const refused = isRefusedForGood(error);
          ingestMetrics.sinkFailures.inc({ sink: sink.name, retriable: String(!refused) });
          assertAlive(lane);
          if (refused) return error as Error;
          if (!paused) consumer.pause(partitions);
          paused = true;
          const delay = Math.min(MAX_RETRY_DELAY_MS, 100 * 2 ** attempt);
          log.warn({ err: error, topic: batch.topic, partition: batch.partition, attempt, delay }, `${sink.name} write failed; retrying`);
          await sleep(delay);
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

  /**
   * Writes a batch; when the sink refuses it for good, splits it in halves (by event index, so the parts
   * depend on the batch's content only and a replay cuts the same parts under the same tokens) until
   * the refused events stand alone. Resolves with those, to be parked as `sink_refused`; every other
   * event is written.
   */
  const writeSplitting = async (lane: Lane, job: LaneJob): Promise<RejectedMessage[]> => {
    const { batch } = job;
    const refused: RejectedMessage[] = [];
    const parts: SourcedEvent[][] = [batch.events];
    while (parts.length > 0) {
      const events = parts.shift()!;
      const whole = events === batch.events;
      const part: SinkBatch = whole
        ? batch
        : { ...batch, events, part: { firstOffset: events[0]!.offset, lastOffset: events.at(-1)!.offset } };
      const error = await writeRetrying(lane, part);
      if (!error) continue;
      if (events.length === 1) {
        const message = job.messages.find((m) => m.offset === events[0]!.offset)!;
        const code = (error as { code?: unknown }).code;
        refused.push({
          topic: batch.topic,
          partition: batch.partition,
          message,
          error: { reason: 'sink_refused', message: `${sink.name}${typeof code === 'string' ? ` ${code}` : ''}: ${error.message}` },
        });
        log.warn(
          { err: error, topic: batch.topic, partition: batch.partition, offset: message.offset },
          `${sink.name} refused an event; parking it`,
        );
        continue;
      }
      if (whole) log.warn({ err: error, topic: batch.topic, partition: batch.partition }, `${sink.name} refused a batch; splitting it`);
      const half = Math.ceil(events.length / 2);
      // Depth first, in offset order: the order store applies a shopper's events in the order they came.
      parts.unshift(events.slice(0, half), events.slice(half));
    }
    return refused;
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
    if (batch.events.length > 0) {
      const refused = await whileHeartbeating(lane, job, () => writeSplitting(lane, job));
      // Parked before the commit below: a crash in between replays the batch and parks them again.
      if (refused.length > 0) await persist(lane, job, 'dead-letter send', () => deadLetters.park(refused));
    }
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
    // Waits for the batch before, or for this member to lose its place, whichever comes first.
    return new Promise<void>((resolve, reject) => {
      const wake = () => {
        waiting.delete(wake);
        if (fatal) reject(fatal);
        else if (!current.alive) reject(new AbandonedBatch());
        else resolve();
      };
      waiting.add(wake);
      void before.then(wake);
    });
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
      try {
        await payload.heartbeat();
      } catch (error) {
        const groupChange = groupChangeOf(error);
        if (!groupChange) throw error;
        loseGroupPlace(groupChange, error);
        // A rebalance: kafkajs's own handling of this error rejoins; an eviction restarts the consumer.
        throw fatal ?? error;
      }
    }
  };

  await admin.connect();
  const watch: PartitionWatch = watchPartitions({
    admin,
    groupId,
    topics: Object.keys(options.topics),
    stuckAfterMs: options.stuckAfterMs,
    fromBeginning: options.fromBeginning ?? true,
    log,
  });
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
    stuckPartitions: () => watch.stuck(),
    checkPartitions: () => watch.poll(),
    async stop() {
      // Queued and in-flight batches are abandoned uncommitted (their fences make the replay exact).
      watch.stop();
      const running = [...lanes.values()].map((lane) => lane.tail);
      killLanes();
      for (const wake of waiting) wake();
      await consumer.disconnect();
      // An insert already handed to the warehouse finishes before the caller may close it.
      await Promise.allSettled(running);
      await admin.disconnect();
    },
  };
}
