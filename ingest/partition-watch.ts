// Watches a consumer group from the outside, the way an operator would: per partition, the committed
// offset against the end of the log. A partition whose committed offset has not moved for `stuckAfterMs`
// while messages wait behind it is stuck, whatever the cause (a batch retried without end, a member that
// cannot rejoin, a consumer that crashed and did not restart), and makes the process not ready.
//
// Read from the broker rather than from the lanes, so it also sees what no lane knows about: a member
// stuck outside eachBatch, or a partition no member holds. It also keeps the lag gauge true for idle
// partitions, which the per-batch update alone left at its last value.
import type { Admin } from 'kafkajs';
import type { Logger } from '../common/logger.js';
import { ingestMetrics } from './metrics.js';

export interface StuckPartition {
  group: string;
  topic: string;
  partition: number;
  /** The committed offset that has not moved (-1: nothing committed yet). */
  committed: string;
  /** Messages behind it. */
  lag: number;
  /** Since when (ms since the epoch) the committed offset has not moved. */
  since: number;
}

interface Seen {
  committed: string;
  lag: number;
  since: number;
}

export interface PartitionWatch {
  stuck(): StuckPartition[];
  /** One look at the broker now (the timer does this on its own). */
  poll(): Promise<void>;
  stop(): void;
}

export function watchPartitions(options: {
  admin: Admin;
  groupId: string;
  topics: readonly string[];
  stuckAfterMs: number;
  /** Whether a partition with nothing committed is read from its start (otherwise its lag is unknown). */
  fromBeginning: boolean;
  log: Logger;
}): PartitionWatch {
  const { admin, groupId, topics, stuckAfterMs, log } = options;
  const seen = new Map<string, Seen & { topic: string; partition: number }>();
  let stopped = false;
  let polling: Promise<void> | undefined;

  const isStuck = (s: Seen, now: number) => s.lag > 0 && now - s.since > stuckAfterMs;
  /**
   * Sets the stuck gauge as of `now`, from the same test `stuck()` applies: each answer to "is it stuck"
   * (a poll, /readyz through stuck()) sets it, so the metric and readiness never disagree, and a partition
   * ages into stuck on the gauge too while the broker cannot be read.
   */
  const publish = (now: number) => {
    for (const s of seen.values()) {
      ingestMetrics.partitionStuck.set({ group: groupId, topic: s.topic, partition: String(s.partition) }, isStuck(s, now) ? 1 : 0);
    }
  };

  const pollOnce = async () => {
    const now = Date.now();
    for (const topic of topics) {
      const ends = await admin.fetchTopicOffsets(topic);
      const [committedOffsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
      for (const end of ends) {
        const committed = committedOffsets?.partitions.find((p) => p.partition === end.partition)?.offset ?? '-1';
        const from = BigInt(committed) >= 0n ? BigInt(committed) : options.fromBeginning ? BigInt(end.low) : undefined;
        if (from === undefined) continue;
        const lag = Number(BigInt(end.high) > from ? BigInt(end.high) - from : 0n);
        const key = `${topic}:${end.partition}`;
        const before = seen.get(key);
        // The clock restarts whenever the committed offset moves or nothing is waiting.
        const since = before && before.committed === committed && before.lag > 0 && lag > 0 ? before.since : now;
        seen.set(key, { topic, partition: end.partition, committed, lag, since });
        ingestMetrics.consumerLag.set({ group: groupId, topic, partition: String(end.partition) }, lag);
      }
    }
  };

  const poll = () => {
    polling ??= pollOnce()
      .catch((error) => {
        // The broker is unreachable: nothing moves, so what was seen last stands (and ages into "stuck").
        log.warn({ err: error, group: groupId }, 'partition watch: cannot read offsets');
      })
      .finally(() => {
        polling = undefined;
        publish(Date.now());
      });
    return polling;
  };

  const everyMs = Math.max(250, Math.min(5000, Math.floor(stuckAfterMs / 4)));
  const timer = setInterval(() => {
    if (!stopped) void poll();
  }, everyMs);
  timer.unref();

  return {
    stuck() {
      const now = Date.now();
      publish(now);
      return [...seen.values()]
        .filter((s) => isStuck(s, now))
        .map((s) => ({ group: groupId, topic: s.topic, partition: s.partition, committed: s.committed, lag: s.lag, since: s.since }));
    },
    poll,
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
