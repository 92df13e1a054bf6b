// A bounded map for the per-process caches of the hot paths (verified sessions and places, token buckets):
// two generations of Maps. When the newer one is full, the older one is dropped and the newer becomes the older;
// a key found in the older one moves back into the newer. So a key asked for at least once a generation stays,
// and the rest go a whole generation at a time, in O(1) per call. Keeping least-recently-used order by deleting
// and re-inserting keys in one Map, as LocalBuckets did, made V8 rebuild the table so often that a call cost
// ~50 µs with 100,000 keys in it (bench/README.md).
export class GenerationalMap<V> {
  private newer = new Map<string, V>();
  private older = new Map<string, V>();

  constructor(private readonly perGeneration: number) {}

  get(key: string): V | undefined {
    const value = this.newer.get(key);
    if (value !== undefined) return value;
    const old = this.older.get(key);
    if (old !== undefined) this.set(key, old);
    return old;
  }

  set(key: string, value: V): void {
    if (this.newer.size >= this.perGeneration) {
      this.older = this.newer;
      this.newer = new Map();
    }
    this.newer.set(key, value);
  }
}
