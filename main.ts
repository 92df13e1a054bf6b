// `npm start`: the platform's main job. One runtime, several roles:
//
//   --role all     (default) bring the local stack up, run the sale core in a child process and ingest
//                  in this process, which owns the embedded chdb warehouse (chdb binds one data folder
//                  per process, so the warehouse owner must be exactly one process)
//   --role sale    the shopper API alone (stateless; SALE_PROCESSES workers share the port, and any
//                  number of such processes may run behind a load balancer)
//   --role ingest  Kafka → warehouse and order store; with CLICKHOUSE_URL several may share the groups
//   --role dashboards  the marketers' and analysts' web app (DASHBOARDS_PORT), reading the warehouse endpoint
//   --role offers  real-time offers: shoppers refused for stock get an offer for the follow-up sale
//
// `all` also runs the dashboards and the real-time offers in the main process, so one `npm start` gives
// shoppers, marketers and data scientists each something to open.
//
// Roles other than `all` never start servers: they connect to what the configuration names, and they
// never load `stack/` (local tooling).
//
// Processes: a child dies with its parent (it watches its IPC channel, or tsx's launcher), a restarted
// `all` finds the sale core an earlier one left behind and replaces it, and a role whose port is taken
// says by whom in one line and exits with EXIT_DO_NOT_RESTART instead of being restarted in a loop.

import { type ChildProcess, fork } from 'node:child_process';
import cluster from 'node:cluster';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { basename, dirname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { ConfigError, config } from './common/config.js';
import { createServiceApp } from './common/http.js';
import { createLogger } from './common/logger.js';

const ROLES = ['all', 'sale', 'ingest', 'dashboards', 'offers'] as const;
type Role = (typeof ROLES)[number];
const MAIN_SCRIPT = fileURLToPath(import.meta.url);
const log = createLogger('main');

/**
 * The exit code of a process that cannot start and has said why in one line (a bad variable, a taken
 * port), or that gave up restarting its workers. Restarting it would only repeat the line (EX_CONFIG of
 * sysexits; a systemd unit says RestartPreventExitStatus=78).
 */
const EXIT_DO_NOT_RESTART = 78;

/** A start that cannot go on, said in one line a person can act on. */
class StartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartError';
  }
}

function roleFromArgs(argv: string[]): Role {
  const index = argv.indexOf('--role');
  const role = index >= 0 ? argv[index + 1] : 'all';
  if (!ROLES.includes(role as Role)) throw new ConfigError('--role', `must be one of ${ROLES.join(', ')}, got "${role}"`);
  return role as Role;
}

// ---------------------------------------------------------------- ports

/** Command line of a running process (Linux /proc), split into its arguments. */
function argsOf(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return undefined;
  }
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so read after the last ')'.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/** The process listening on a TCP port, read from /proc; undefined when it cannot be told (not Linux, not ours to see). */
function portHolder(port: number): number | undefined {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const fields = line.trim().split(/\s+/);
      const localPort = Number.parseInt(fields[1]?.split(':')[1] ?? '', 16);
      if (fields[3] === '0A' && localPort === port && fields[9] && fields[9] !== '0') inodes.add(fields[9]);
    }
  }
  if (inodes.size === 0) return undefined;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${entry}/fd/${fd}`))?.[1];
        if (inode && inodes.has(inode)) return Number(entry);
      } catch {}
    }
  }
  return undefined;
}

/** The role a process runs when it runs this script (given relative to its own working folder or not). */
function roleOf(pid: number): string | undefined {
  const args = argsOf(pid) ?? [];
  let cwd = '/';
  try {
    cwd = readlinkSync(`/proc/${pid}/cwd`);
  } catch {}
  if (!args.some((arg) => resolve(cwd, arg) === MAIN_SCRIPT)) return undefined;
  const at = args.indexOf('--role');
  return at >= 0 ? args[at + 1] : 'all';
}

/** Who holds a port, in words: a process of this checkout by its role, anything else by its command. */
function describeHolder(port: number): string {
  const pid = portHolder(port);
  const args = pid === undefined ? undefined : argsOf(pid);
  if (pid === undefined || args === undefined) return 'taken by another program';
  const role = roleOf(pid);
  if (role !== undefined) {
    const parent = parentOf(pid);
    if (role === 'sale' && parent !== undefined && roleOf(parent) === 'all') {
      return `held by pid ${pid}, the sale core of the main job running as pid ${parent}`;
    }
    return `held by pid ${pid}, ${role === 'all' ? 'a main job' : `a \`--role ${role}\` process`} of this checkout`;
  }
  // Leave out the runtime's own options (tsx's --require/--import …) so the line names the program.
  const shown = [basename(args[0] ?? '?')];
  for (let i = 1; i < args.length; i++) {
    if (['--require', '-r', '--import', '--loader'].includes(args[i] as string)) i++;
    else if (!args[i]?.startsWith('-') || shown.length > 1) shown.push(args[i] as string);
  }
  const command = shown.join(' ');
  return `held by pid ${pid} (${command.length > 80 ? `${command.slice(0, 77)}...` : command})`;
}

function portIsFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    // Only "in use" counts as taken; any other error (a host that is not ours) is for the real listen to report.
    probe.once('error', (error: NodeJS.ErrnoException) => resolve(error.code !== 'EADDRINUSE'));
    probe.listen({ port, host, exclusive: true }, () => probe.close(() => resolve(true)));
  });
}

// A process we just stopped frees its port a moment after it exits: look again with growing pauses
// before calling the port taken (about 4 s in all).
const PORT_PAUSES_MS = [0, 250, 500, 1000, 2000];

function portTaken(port: number, variable: string, tries: string): StartError {
  return new StartError(`port ${port} (${variable}) is ${describeHolder(port)}${tries}: stop it, or set ${variable} to a free port`);
}

/** Resolves once the port is free; a port still taken after the last pause is a StartError naming its holder. */
async function claimPort(port: number, host: string, variable: string): Promise<void> {
  if (port === 0) return; // any free port
  for (const pause of PORT_PAUSES_MS) {
    await sleep(pause);
    if (await portIsFree(port, host)) return;
  }
  const seconds = PORT_PAUSES_MS.reduce((sum, ms) => sum + ms, 0) / 1000;
  throw portTaken(port, variable, `, still after ${seconds} s`);
}

/** Someone took the port between claimPort and the listen: the same one line. */
function portTakenOr(error: unknown, port: number, variable: string): unknown {
  return (error as NodeJS.ErrnoException)?.code === 'EADDRINUSE' ? portTaken(port, variable, '') : error;
}

async function listenOn(app: FastifyInstance, port: number, host: string, variable: string): Promise<string> {
  try {
    return await app.listen({ port, host });
  } catch (error) {
    throw portTakenOr(error, port, variable);
  }
}

// ---------------------------------------------------------------- stopping

/**
 * Calls `then` once the process that started this one is gone. A child forked with an IPC channel sees
 * the channel close, even when its parent died by kill -9. Without a channel, only tsx's launcher is
 * watched (by the parent pid changing): it relays signals to us, so once it is gone nothing would stop
 * us; a shell that started us in the background may end without us following it.
 */
function onParentGone(then: (why: string) => void): void {
  if (process.connected) {
    process.once('disconnect', () => then('the process that started this one is gone'));
    return;
  }
  const parent = process.ppid;
  const launcher = argsOf(parent) ?? [];
  if (!launcher.some((arg) => basename(arg) === 'tsx' || arg.endsWith('/tsx/dist/cli.mjs'))) return;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    then('the tsx launcher that started this process is gone');
  }, 1000);
  timer.unref();
}

/**
 * Stops the service once, on SIGTERM, SIGINT or the loss of its parent, then exits. Later signals are
 * ignored, so a second Ctrl-C does not cut a drain short.
 */
function shutdownOnce(what: string, stop: () => Promise<void>): (reason: string, exitCode?: number) => void {
  let stopping = false;
  const shutdown = (reason: string, exitCode = 0) => {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, `stopping ${what}`);
    stop().then(
      () => process.exit(exitCode),
      (error: unknown) => {
        log.error({ err: error }, `stopping ${what} failed`);
        process.exit(1);
      },
    );
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => shutdown(signal));
  onParentGone((why) => shutdown(why));
  return shutdown;
}

/** SIGTERM, then SIGKILL if the process has not exited within the grace period. */
async function stopChild(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * When a process we keep running dies: start it again after a growing pause (0.5 s, 1 s, 2 s), and give
 * up after four deaths in a row that each came within a minute of a start, since a crash loop only
 * hides its cause. A process that exited with EXIT_DO_NOT_RESTART is not started again.
 */
class RestartPolicy {
  private quickDeaths = 0;

  afterDeath(startedAt: number, code: number | null, signal: string | null): { restartInMs: number } | { giveUp: string } {
    if (code === EXIT_DO_NOT_RESTART) return { giveUp: 'it cannot start (its own line above says why)' };
    this.quickDeaths = Date.now() - startedAt < 60_000 ? this.quickDeaths + 1 : 1;
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    if (this.quickDeaths >= 4) return { giveUp: `it died ${this.quickDeaths} times in a row within a minute of starting (last: ${how})` };
    return { restartInMs: 500 * 2 ** (this.quickDeaths - 1) };
  }
}

// ---------------------------------------------------------------- roles

/** A sale core told its parent (the main job) that it listens. */
interface SaleListening {
  kind: 'sale-listening';
  url: string;
}

async function runSale(): Promise<void> {
  if (cluster.isWorker) return serveSale(); // the primary claimed the port and holds it for all workers
  const { port, host } = config().sale;
  await claimPort(port, host, 'SALE_PORT');
  const processes = config().runtime.saleProcesses;
  if (processes > 1) return runSaleWorkers(processes);
  return serveSale();
}

async function serveSale(): Promise<void> {
  const { startSaleCore } = await import('./sale-core/index.js');
  const { port } = config().sale;
  const sale = await startSaleCore({ handleSignals: false }).catch((error: unknown) => {
    throw portTakenOr(error, port, 'SALE_PORT');
  });
  log.info({ url: sale.url }, 'sale core listening');
  shutdownOnce('the sale core', () => sale.close());
  if (cluster.isPrimary) process.send?.({ kind: 'sale-listening', url: sale.url } satisfies SaleListening);
}

/** Workers share the port (the primary hands out connections); each is a full stateless sale core. */
function runSaleWorkers(processes: number): void {
  const restarts = new RestartPolicy();
  const startedAt = new Map<number, number>();
  let stopping = false;
  let reported = false;
  const startWorker = () => {
    const worker = cluster.fork();
    startedAt.set(worker.id, Date.now());
  };
  const stopWorkers = async () => {
    stopping = true;
    const workers = Object.values(cluster.workers ?? {}).filter((w) => w !== undefined);
    await Promise.all(workers.map((worker) => stopChild(worker.process)));
  };
  cluster.on('listening', (_worker, address) => {
    if (reported) return;
    reported = true;
    process.send?.({ kind: 'sale-listening', url: `http://${address.address}:${address.port}` } satisfies SaleListening);
  });
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    const next = restarts.afterDeath(startedAt.get(worker.id) ?? 0, code, signal);
    startedAt.delete(worker.id);
    if ('giveUp' in next) {
      log.error({ pid: worker.process.pid, code, signal }, `a sale-core worker died; giving up: ${next.giveUp}`);
      shutdown('a sale-core worker gave up', EXIT_DO_NOT_RESTART);
      return;
    }
    log.error({ pid: worker.process.pid, code, signal, restartInMs: next.restartInMs }, 'a sale-core worker died; starting another');
    setTimeout(() => stopping || startWorker(), next.restartInMs);
  });
  const shutdown = shutdownOnce('the sale-core workers', stopWorkers);
  for (let i = 0; i < processes; i++) startWorker();
}

/** The embedded warehouse's owner serves it over HTTP; with a ClickHouse server there is no endpoint. */
async function claimWarehouseEndpointPort(): Promise<void> {
  if (config().warehouse.clickhouseUrl) return;
  const { port, host } = config().warehouseEndpoint;
  await claimPort(port, host, 'WAREHOUSE_HTTP_PORT');
}

/** Ingest and its ops app (health, readiness, metrics); resolves to the function that stops it. */
async function runIngest(): Promise<() => Promise<void>> {
  const { ingestPort: port, opsHost: host } = config().runtime;
  // Before the warehouse opens: a second process stops here with one line, not on the chdb folder
  // that the first one holds.
  await claimPort(port, host, 'INGEST_PORT');
  await claimWarehouseEndpointPort();
  const { openWarehouse } = await import('./analytics/warehouse/index.js');
  const { startIngest } = await import('./ingest/index.js');
  const warehouse = await openWarehouse();
  const ingest = await startIngest({ warehouse });
  // The embedded warehouse's owner also serves it to every reader (ClickHouse HTTP, WAREHOUSE_HTTP_PORT).
  const { startWarehouseEndpoint } = await import('./analytics/warehouse-endpoint/index.js');
  const endpoint = warehouse.kind === 'chdb' ? await startWarehouseEndpoint({ warehouse }) : undefined;
  // Ingest serves no shoppers; this app is only its health and metrics.
  // Not ready while a partition is stuck (its committed offset still while messages wait), not only when the warehouse is gone.
  const ops = await createServiceApp({
    name: 'ingest',
    ready: async () => ingest.health().stuckPartitions.length === 0 && (await warehouse.ping()),
  });
  const stop = async () => {
    await ops.close();
    await endpoint?.close();
    await ingest.close(); // finishes or abandons the batch in flight, never commits past what was written
    await warehouse.close();
  };
  try {
    const url = await listenOn(ops, port, host, 'INGEST_PORT');
    log.info({ url, warehouse: warehouse.kind }, 'ingest running');
  } catch (error) {
    await stop();
    throw error;
  }
  return stop;
}

/**
 * The main job's sale core from an earlier run, when that run died without stopping it (kill -9 of a
 * main job older than the parent watch, or a child that hung). Its pid file names it and the main job
 * that started it; it is ours when its command line is this script's `--role sale`, and stale when
 * that main job is no longer its parent. A sale core whose main job still runs is left alone.
 */
async function replaceStaleSaleCore(pidFile: string): Promise<void> {
  const { readPid, removeFile, runningPid, stopPid } = await import('./stack/process.js');
  const pid = runningPid(pidFile, `${MAIN_SCRIPT} --role sale`);
  if (pid === undefined) {
    if (readPid(pidFile) !== undefined) removeFile(pidFile); // gone, or the pid now runs something else
    return;
  }
  const recordedParent = Number(readFileSync(pidFile, 'utf8').split('\n')[1]);
  if (parentOf(pid) === recordedParent) return;
  log.warn({ pid, pidFile }, `replacing the sale core (pid ${pid}) that an earlier main job left running`);
  try {
    process.kill(pid, 'SIGCONT'); // a stopped process acts on SIGTERM only once it runs again
  } catch {}
  await stopPid(pid, 15_000);
  removeFile(pidFile);
}

/** Removes the pid file if it still names `pid` (a restarted child may have written its own since). */
function forgetPid(pidFile: string, pid: number | undefined): void {
  try {
    if (readFileSync(pidFile, 'utf8').split('\n')[0] === String(pid)) rmSync(pidFile);
  } catch {}
}

/** Keeps the sale core running in a child process, recorded in its pid file while it runs. */
function superviseSaleCore(pidFile: string, giveUp: (why: string) => void): { stop(): Promise<void> } {
  const restarts = new RestartPolicy();
  let stopping = false;
  let child: ChildProcess | undefined;
  let restartTimer: NodeJS.Timeout | undefined;
  const spawnChild = () => {
    const startedAt = Date.now();
    const current = fork(MAIN_SCRIPT, ['--role', 'sale'], { execArgv: process.execArgv });
    child = current;
    mkdirSync(dirname(pidFile), { recursive: true });
    writeFileSync(pidFile, `${current.pid}\n${process.pid}\n`);
    current.on('message', (message: Partial<SaleListening>) => {
      if (message?.kind === 'sale-listening') log.info({ pid: current.pid, url: message.url }, 'sale core running');
    });
    current.on('exit', (code, signal) => {
      forgetPid(pidFile, current.pid);
      if (stopping) return;
      const next = restarts.afterDeath(startedAt, code, signal);
      if ('giveUp' in next) {
        giveUp(`the sale core stopped and will not be started again: ${next.giveUp}`);
        return;
      }
      log.error({ code, signal, restartInMs: next.restartInMs }, 'the sale core died; restarting it');
      restartTimer = setTimeout(spawnChild, next.restartInMs);
    });
  };
  // Last resort when this process ends without a shutdown (an uncaught error): the child also sees its
  // IPC channel close, this only makes it quicker.
  process.once('exit', () => child?.kill('SIGTERM'));
  spawnChild();
  return {
    async stop() {
      stopping = true;
      clearTimeout(restartTimer);
      if (child) await stopChild(child);
    },
  };
}

async function runAll(): Promise<void> {
  const { saleCorePidFile, stackStatus, stackUp } = await import('./stack/services.js');
  const started = Date.now();
  await stackUp();
  const statuses = await stackStatus();
  for (const s of statuses) log.info({ service: s.name, port: s.port, healthy: s.healthy }, 'stack service');
  log.info({ seconds: (Date.now() - started) / 1000 }, 'local stack ready');

  const { port, host } = config().sale;
  const pidFile = saleCorePidFile(port);
  await replaceStaleSaleCore(pidFile);
  // Every port before anything starts, so a second main job stops with one line and touches nothing.
  await claimPort(port, host, 'SALE_PORT');
  await claimPort(config().runtime.ingestPort, config().runtime.opsHost, 'INGEST_PORT');
  await claimWarehouseEndpointPort();
  await claimPort(config().dashboards.port, config().dashboards.host, 'DASHBOARDS_PORT');
  // The sale core first: shoppers need not wait while ingest rejoins its consumer groups (after a
  // kill -9 that waits for the dead members' session timeout).
  const stops: (() => Promise<void>)[] = [];
  let stopping = false;
  const saleCore = superviseSaleCore(pidFile, (why) => {
    log.error(why);
    shutdown('the sale core gave up', EXIT_DO_NOT_RESTART);
  });
  const shutdown = shutdownOnce('the main job', async () => {
    stopping = true;
    await saleCore.stop();
    // Readers before the warehouse they read: the reverse of the start order.
    for (const stop of stops.reverse()) await stop();
  });
  // A stop may come while the rest still starts (Ctrl-C during a slow start): what finishes starting after
  // it is stopped at once, and a start that fails because the stop took its warehouse away is no failure.
  const start = async (part: () => Promise<() => Promise<void>>) => {
    if (stopping) return;
    try {
      const stop = await part();
      if (stopping) await stop();
      else stops.push(stop);
    } catch (error) {
      if (!stopping) throw error;
    }
  };
  await start(runIngest);
  // Both read the warehouse through the endpoint that ingest's process now serves, so they start after it.
  await start(startDashboardsApp);
  await start(startOfferConsumer);
}

async function startDashboardsApp(): Promise<() => Promise<void>> {
  const { startDashboards } = await import('./dashboards/index.js');
  const dashboards = await startDashboards();
  log.info({ url: dashboards.url }, 'dashboards listening');
  return () => dashboards.close();
}

async function startOfferConsumer(): Promise<() => Promise<void>> {
  const { createWarehouseReader } = await import('./analytics/reader.js');
  const { startRealtimeOffers } = await import('./analytics/offers/index.js');
  const { createRedis } = await import('./common/redis.js');
  const reader = createWarehouseReader({ role: 'offers' });
  const redis = createRedis();
  try {
    const offers = await startRealtimeOffers({ reader, redis });
    log.info('real-time offers running');
    return async () => {
      await offers.stop();
      await reader.close();
      redis.disconnect();
    };
  } catch (error) {
    await reader.close();
    redis.disconnect();
    throw error;
  }
}

/** The dashboards web app (dashboards/README.md): stateless, reads the warehouse endpoint and PostgreSQL. */
async function runDashboards(): Promise<void> {
  const { port, host } = config().dashboards;
  await claimPort(port, host, 'DASHBOARDS_PORT');
  shutdownOnce('dashboards', await startDashboardsApp());
}

async function main(): Promise<void> {
  // chdb runs every query and insert on a libuv worker for its whole length: with the default 4, two long
  // warehouse-endpoint queries leave ingest's six insert lanes two threads (bench/README.md). libuv reads
  // this once, when the pool first starts, so it is set before anything (stackUp included) uses the pool.
  process.env.UV_THREADPOOL_SIZE ??= '16';
  config(); // a bad variable stops the start here, with its name
  const role = roleFromArgs(process.argv.slice(2));
  if (role === 'all') await runAll();
  else if (role === 'sale') await runSale();
  else if (role === 'dashboards') await runDashboards();
  else if (role === 'offers') shutdownOnce('real-time offers', await startOfferConsumer());
  else shutdownOnce('ingest', await runIngest());
}

/** The one line for a start that cannot go on, or undefined for a failure worth its stack trace. */
function startProblem(error: unknown): string | undefined {
  if (error instanceof StartError || error instanceof ConfigError || (error as Error)?.name === 'StackError')
    return (error as Error).message;
  // A port taken between the look and the listen, by a server that listens itself (the warehouse endpoint).
  const { code, port } = error as { code?: string; port?: number };
  if (code === 'EADDRINUSE' && typeof port === 'number')
    return `port ${port} is ${describeHolder(port)}: stop it, or move this service to a free port`;
  return undefined;
}

main().catch((error: unknown) => {
  const problem = startProblem(error);
  console.error(problem === undefined ? error : `start: ${problem}`);
  process.exit(problem === undefined ? 1 : EXIT_DO_NOT_RESTART);
});
