// The purchases of one sale that reach this process in the same turn of its event loop go to Redis as one
// script call (RESERVE_UNITS), which runs them one after the other, each as if alone.
//
// Why: in sale-core's profile under load, the largest single step of a purchase was writing its command to
// Redis (over loopback, a system call in which the kernel also delivers the bytes and wakes Redis). A batch
// pays that write, the reply's read, the client's command object and Redis's per-command and per-script
// overhead once: 98 → 88 µs of sale-core CPU and 53 → 43 µs of Redis CPU per purchase (bench/README.md,
// "Batched purchases"). ioredis's auto-pipelining also puts a turn's commands in one write, but each purchase
// stays a command of its own on both sides, and it measured slower than no pipelining at all.
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
 * A batch is capped so one script does not hold Redis for long: every other command of every sale waits while
 * it runs. At the few tens of µs of Redis time a purchase costs (bench/README.md), 32 stay around a millisecond.
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
