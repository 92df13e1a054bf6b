// Deterministic batch boundaries across crashes and rebalances.
//
// The warehouse drops a re-inserted batch only if it carries the same deduplication token, i.e. the same
// offset range. Fetch sizes after a restart differ (more messages are waiting, the batch size may be
// configured differently), so the range is written down before the insert: the consumer commits the
// batch's *first* offset again with the metadata {"to": lastOffset}. Committing that offset moves
// nothing, but whoever owns the partition next reads the fence with the committed offset and re-cuts its
// first batch to exactly [first, to], so a batch that was inserted but never committed is re-inserted
// with its original token and dropped by ClickHouse. The commit after the insert clears the metadata.
import type { Admin } from 'kafkajs';

export interface ReplayFence {
  from: string;
  to: string;
}

const FENCE_VERSION = 1;

export function fenceMetadata(lastOffset: string): string {
  return JSON.stringify({ fence: FENCE_VERSION, to: lastOffset });
}

export function parseFence(committedOffset: string, metadata: string | null | undefined): ReplayFence | undefined {
  if (!metadata || Number(committedOffset) < 0) return undefined;
  try {
    const parsed = JSON.parse(metadata) as { fence?: unknown; to?: unknown };
    if (parsed.fence !== FENCE_VERSION || typeof parsed.to !== 'string' || !/^\d+$/.test(parsed.to)) return undefined;
    if (BigInt(parsed.to) < BigInt(committedOffset)) return undefined;
    return { from: committedOffset, to: parsed.to };
  } catch {
    return undefined;
  }
}

/** The fences a group left on a topic's partitions, read once per partition after each assignment. */
export async function readFences(admin: Admin, groupId: string, topic: string): Promise<Map<number, ReplayFence>> {
  const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
  const fences = new Map<number, ReplayFence>();
  for (const { partition, offset, metadata } of offsets?.partitions ?? []) {
    const fence = parseFence(offset, metadata);
    if (fence) fences.set(partition, fence);
  }
  return fences;
}
