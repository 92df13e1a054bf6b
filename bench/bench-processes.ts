// What the sale benches (sale-purchase.ts, spike.ts) share: the servers of bench/sale-servers.ts started as
// processes of their own, their CPU read from /proc, and Kafka topics of the bench's own.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Admin } from 'kafkajs';
import { createTopicsAndWait } from '../common/kafka.js';

const here = new URL('.', import.meta.url).pathname;

/** A bench script (`script` in this folder) under tsx, in a process of its own; its stdout is piped. */
export function spawnBenchScript(script: string, args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []): ChildProcess {
  return spawn(process.execPath, [...nodeArgs, '--import', 'tsx', `${here}${script}`, ...args], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

/**
 * A server of bench/sale-servers.ts (`kind`), once it printed `READY <url> <pids>`. `pids` are the serving
 * processes whose CPU and memory count: the one process, or the cluster workers and their primary.
 */
export async function startSaleServer(
  kind: string,
  args: string[],
  env: Record<string, string>,
  nodeArgs: string[],
): Promise<{ url: string; child: ChildProcess; pids: number[] }> {
  // Servers log as they do in production (the default level, info, unless LOG_LEVEL says otherwise), so a
  // bench measures what ships: ACCESS_LOG=all, say, shows what per-request lines would cost.
  const child = spawnBenchScript('sale-servers.ts', [kind, '0', ...args], { LOG_LEVEL: process.env.LOG_LEVEL ?? 'info', ...env }, nodeArgs);
  const [url, pids] = await new Promise<[string, number[]]>((resolve, reject) => {
    let out = '';
    const onData = (chunk: Buffer) => {
      out += chunk;
      const match = /READY (\S+) (\S+)/.exec(out);
      if (!match) return;
      // From here the server's output (its logs) is read and dropped, not kept.
      child.stdout!.off('data', onData);
      child.stdout!.resume();
      resolve([match[1]!, match[2]!.split(',').map(Number)]);
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${kind} server exited (${code}) before it was ready`)));
  });
  return { url, child, pids: [...new Set([child.pid!, ...pids])] };
}

/** SIGTERM, and SIGKILL if the process has not exited within 8 s. */
export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 8000))]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

/** CPU time (user + system, ms) a process has used so far. */
export function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime, stime in clock ticks (100/s)
}

/** Orders and clickstream topics of the bench's own, named by `suffix` (the shared ones stay clean); delete them afterwards. */
export async function createBenchTopics(admin: Admin, suffix: string): Promise<{ orders: string; clickstream: string }> {
  const topics = { orders: `bench.orders.${suffix}`, clickstream: `bench.clickstream.${suffix}` };
  await createTopicsAndWait(
    admin,
    Object.values(topics).map((topic) => ({ topic, numPartitions: 3 })),
  );
  return topics;
}

// Rounds. This machine's speed moves from one phase to the next (its other tenants): one pair of phases of the
// same code put sale-core anywhere between 3.0x and 4.5x the bare route's CPU per request, the catalog between
// 0.55 and 1.12 of its throughput. So the benches measure each pair in rounds, alternate which side goes first
// (a host that speeds up or slows down during the run then favours neither), and report the median.

/** A round's steps in order: as given in rounds 1, 3, … (`round` counts from 0), reversed in rounds 2, 4, …. */
export function inRoundOrder<T>(round: number, steps: T[]): T[] {
  return round % 2 === 0 ? steps : [...steps].reverse();
}

/** The median of a figure measured once per round (a ratio, µs per request), and the list for the report. */
export function medianOf(values: number[], digits = 2): { median: number; spread: string } {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, spread: values.length > 1 ? ` (median of ${values.map((v) => v.toFixed(digits)).join(', ')})` : '' };
}
