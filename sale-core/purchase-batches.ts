// The purchases of one sale that reach this process in the same turn of its event loop go to Redis as one
// script call (RESERVE_UNITS), which runs them one after the other, each as if alone.
//
// Why: under a spike the most expensive single step of a purchase in this process was writing its command to
// Redis. Over loopback that write is a system call in which the kernel also delivers the bytes and wakes Redis,
// about as much CPU as the rest of the purchase's Redis work here (bench/README.md, "batched purchases"). A
// batch pays that write, the reply's read, and Redis's own per-command overhead once. ioredis's auto-pipelining
// does not help: it flushes on the next tick, after each request's own callback, so its batches are of one.
//
// A purchase alone waits only for the end of the current turn (setImmediate), never for a timer.
import type { Reply, ReserveUnitCall, SaleRedis } from './scripts.js';
import { reserveUnitsScript } from './scripts.js';

interface Waiting {
  call: ReserveUnitCall;
  resolve(reply: Reply): void;
  reject(error: unknown): void;
}

/**
 * A batch is capped so one script does not hold Redis for long: at ~10 µs of Redis time per purchase, 32 are
 * a third of a millisecond, during which every other command of every sale waits.
 */
export const MAX_PURCHASES_PER_BATCH = 32;

export class PurchaseBatches {
  private readonly waiting = new Map<string, Waiting[]>();
  private flushScheduled = false;

  constructor(
    private readonly redis: SaleRedis,
    private readonly maxBatch = MAX_PURCHASES_PER_BATCH,
  ) {}

  /** The purchase's reply from RESERVE_UNITS; rejects when its batch could not be run (Redis unavailable). */
  reserve(call: ReserveUnitCall): Promise<Reply> {
    return new Promise((resolve, reject) => {
      let batch = this.waiting.get(call.saleId);
      if (batch === undefined) {
        batch = [];
        this.waiting.set(call.saleId, batch);
      }
      batch.push({ call, resolve, reject });
      if (batch.length >= this.maxBatch) {
        this.waiting.delete(call.saleId);
        this.send(call.saleId, batch);
      } else if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(this.flush);
      }
    });
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    for (const [saleId, batch] of this.waiting) this.send(saleId, batch);
    this.waiting.clear();
  };

  private send(saleId: string, batch: Waiting[]): void {
    let sent: Promise<Reply[]>;
    try {
      sent = reserveUnitsScript(
        this.redis,
        saleId,
        batch.map((w) => w.call),
      );
    } catch (error) {
      for (const w of batch) w.reject(error);
      return;
    }
    sent.then(
      (replies) => {
        batch.forEach((w, i) => {
          const reply = replies[i];
          if (reply === undefined) w.reject(new Error(`RESERVE_UNITS answered ${replies.length} replies for ${batch.length} purchases`));
          else w.resolve(reply);
        });
      },
      (error: unknown) => {
        for (const w of batch) w.reject(error);
      },
    );
  }
}
