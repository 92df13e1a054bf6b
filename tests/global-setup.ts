// Brings the local stack up before any suite runs (idempotent: a running stack is reused). `npm test`
// has already done so in its pretest step, where a missing prerequisite prints one line, not a trace;
// this covers `npx vitest` run directly.
// It is left running afterwards so the next `npm test` starts warm; .ci/run stops it.
import { stackUp } from '../stack/services.js';

export default async function setup(): Promise<void> {
  await stackUp();
}
