// Starting and stopping the stack's own server processes. Every process we start leaves a pid file
// beside its data; stopping checks that the pid still runs the same program before signalling it,
// so `stack:down` stops exactly what the stack started and never a stranger that reused the pid.

import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

/** The pid from the file, if that process is alive and its command line contains `marker`. */
export function runningPid(pidFile: string, marker: string): number | undefined {
  const pid = readPid(pidFile);
  if (pid === undefined) return undefined;
  const cmd = commandLineOf(pid);
  if (cmd === undefined || !cmd.includes(marker)) return undefined;
  // A zombie still has a cmdline until reaped; treat it as gone.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.split(') ')[1]?.startsWith('Z')) return undefined;
  } catch {
    return undefined;
  }
  return pid;
}

export interface Launch {
  command: string;
  args: string[];
  logFile: string;
  pidFile: string;
  env?: NodeJS.ProcessEnv;
  /** Run as this system user (root starting PostgreSQL, which refuses to run as root). */
  asUser?: string;
}

/** Starts a detached server that outlives this process; its output goes to its log file. */
export function launchDetached(launch: Launch): number {
  const out = openSync(launch.logFile, 'a');
  const [command, args] = launch.asUser
    ? ['runuser', ['-u', launch.asUser, '--', launch.command, ...launch.args]]
    : [launch.command, launch.args];
  const child = spawn(command, args, {
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, ...launch.env },
  });
  if (child.pid === undefined) throw new StackError(`could not start ${launch.command}; see ${launch.logFile}`);
  child.unref();
  writeFileSync(launch.pidFile, String(child.pid));
  return child.pid;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** SIGTERM, wait for a clean exit, SIGKILL after the grace period. */
export async function stopPid(pid: number, graceMs: number): Promise<void> {
  const alive = () => {
    try {
      process.kill(pid, 0);
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return !stat.split(') ')[1]?.startsWith('Z');
    } catch {
      return false;
    }
  };
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (alive() && Date.now() < deadline) await sleep(100);
  if (alive()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
    while (alive()) await sleep(50);
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
