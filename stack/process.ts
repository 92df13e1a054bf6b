// Starting and stopping the stack's own server processes. Every process we start leaves a pid file
// beside its data; stopping checks that the pid still runs the same program before signalling it,
// so `stack:down` stops exactly what the stack started and never a stranger that reused the pid.

import { spawn } from 'node:child_process';
import { existsSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';

export class StackError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StackError';
  }
}

export function readPid(pidFile: string): number | undefined {
  if (!existsSync(pidFile)) return undefined;
  // PostgreSQL's postmaster.pid holds more lines after the pid.
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]?.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

function commandLineOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return undefined;
  }
}

/** True while the process runs; a zombie (dead, not yet reaped by its parent) counts as gone. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state …": comm may hold spaces and parentheses, so read after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The pid from the file, if that process is alive and its command line contains `marker`. */
export function runningPid(pidFile: string, marker: string): number | undefined {
  const pid = readPid(pidFile);
  if (pid === undefined) return undefined;
  const cmd = commandLineOf(pid);
  if (cmd === undefined || !cmd.includes(marker)) return undefined;
  return isAlive(pid) ? pid : undefined;
}

/** The direct children of a running process (from /proc). */
export function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) children.push(Number(entry));
    } catch {}
  }
  return children;
}

/**
 * Resolves once none of the processes exists any more, zombies included, or after the timeout. A server
 * that checks its own lock file (PostgreSQL) counts a killed process that is not yet reaped as running.
 */
export async function waitReaped(pids: number[], timeoutMs = 10_000): Promise<void> {
  const exists = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const deadline = Date.now() + timeoutMs;
  while (pids.some(exists) && Date.now() < deadline) await sleep(25);
}

/** Resolves once the process is gone (after kill -9, its port and files are free then), or after the timeout. */
export async function waitGone(pid: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(25);
}

interface Launch {
  command: string;
  args: string[];
  logFile: string;
  pidFile: string;
}

/** Starts a detached server that outlives this process; its output goes to its log file. */
export function launchDetached(launch: Launch): number {
  const out = openSync(launch.logFile, 'a');
  const child = spawn(launch.command, launch.args, { detached: true, stdio: ['ignore', out, out] });
  if (child.pid === undefined) throw new StackError(`could not start ${launch.command}; see ${launch.logFile}`);
  child.unref();
  writeFileSync(launch.pidFile, String(child.pid));
  return child.pid;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** SIGTERM, wait for a clean exit, SIGKILL after the grace period. */
export async function stopPid(pid: number, graceMs: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(100);
  if (isAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
    while (isAlive(pid)) await sleep(50);
  }
}

export function killHard(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {}
}

export function removeFile(path: string): void {
  rmSync(path, { force: true });
}

/** True when something already listens on the loopback port. */
export function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(true));
    server.once('listening', () => server.close(() => resolve(false)));
    server.listen(port, '127.0.0.1');
  });
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, logFile: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await sleep(200);
  }
  throw new StackError(`${what} did not become healthy within ${timeoutMs / 1000}s; its log is ${logFile}`);
}
