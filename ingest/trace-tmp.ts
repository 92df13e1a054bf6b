// TEMPORARY: rebalance investigation trace (to be removed).
import { appendFileSync } from 'node:fs';
const file = process.env.INGEST_TRACE;
const t0 = Date.now();
export function trace(what: string, data: Record<string, unknown>): void {
  if (!file) return;
  appendFileSync(file, `${JSON.stringify({ t: Date.now() - t0, what, ...data })}\n`);
}
