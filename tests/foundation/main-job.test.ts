// The main job's processes (issue 12): `main.ts --role all` run for real, as `npm start` runs it (tsx's
// launcher, then the main job, which forks the sale core). kill -9 of the main job must not leave its
// sale core running on the sale port; a restarted main job serves again without a restart loop, a second
// one on the same ports says so in one line and stops, and a sale core that outlived its main job is
// found and replaced. kill -9 of tsx's launcher stops the main job too, and a role whose port another
// program holds names it in one line and exits 78 (not to be restarted). The shared stack is already up,
// so each start reuses it.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlive, portInUse } from '../../stack/process.js';
import { saleCorePidFile, stackDir } from '../../stack/services.js';
import { freePort } from '../support/private-server.js';
import { until as pollUntil } from '../support/until.js';

const root = join(import.meta.dirname, '..', '..');
const mainScript = join(root, 'main.ts');

interface MainJob {
  launcher: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<number | null>;
}

let salePort: number;
let ingestPort: number;
let warehousePort: number;
let dashboardsPort: number;
let chdbDir: string;
const jobs: MainJob[] = [];
const pidsSeen = new Set<number>();

beforeAll(async () => {
  [salePort, ingestPort, warehousePort, dashboardsPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  chdbDir = mkdtempSync(join(stackDir(), 'chdb-main-job-'));
});

afterAll(async () => {
  // Whatever a failed test left running: the launchers, and main jobs and sale cores of ours by pid.
  for (const job of jobs) if (job.launcher.exitCode === null) job.launcher.kill('SIGKILL');
  for (const pid of pidsSeen) {
    try {
      if (isAlive(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(mainScript)) process.kill(pid, 'SIGKILL');
    } catch {} // gone in the meantime
  }
  rmSync(chdbDir, { recursive: true, force: true });
});

function startMainJob(args: string[] = [], env: NodeJS.ProcessEnv = {}): MainJob {
  // Consumer groups of this start only: a group shared with a main job just killed would make ingest
  // wait out the dead member's session timeout, which is not what these tests are about.
  const run = randomUUID().slice(0, 8);
  const launcher = spawn(join(root, 'node_modules', '.bin', 'tsx'), [mainScript, ...args], {
    cwd: root,
    env: {
      ...process.env,
      LOG_LEVEL: 'warn',
      SALE_PORT: String(salePort),
      INGEST_PORT: String(ingestPort),
      WAREHOUSE_HTTP_PORT: String(warehousePort),
      DASHBOARDS_PORT: String(dashboardsPort),
      CHDB_DIR: chdbDir,
      INGEST_WAREHOUSE_GROUP: `main-job-test-warehouse-${run}`,
      INGEST_ORDER_STORE_GROUP: `main-job-test-orders-${run}`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const job: MainJob = {
    launcher,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => launcher.once('exit', (code) => resolve(code))),
  };
  launcher.stdout?.on('data', (chunk) => (job.stdout += chunk));
  launcher.stderr?.on('data', (chunk) => (job.stderr += chunk));
  jobs.push(job);
  return job;
}

/** Polls until `probe` answers; a time-out shows what every main job of the test said. */
const until = <T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000) =>
  pollUntil(what, probe, timeoutMs, {
    everyMs: 100,
    explain: () => jobs.map((job, i) => `main job ${i}:\n${job.stdout.slice(-1500)}${job.stderr.slice(-1500)}`).join('\n'),
  });

/** The launcher's exit code, or a failure naming what the jobs said when it does not exit in time. */
async function exitOf(job: MainJob, timeoutMs: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the main job did not exit within ${timeoutMs / 1000}s:\n${job.stdout}${job.stderr}`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([job.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

const answers = async (url: string) => ((await fetch(url)).ok ? true : undefined);

/** The sale core and the main job that started it, from the main job's pid file. */
function recorded(): { saleCore: number; mainJob: number } | undefined {
  const file = saleCorePidFile(salePort);
  if (!existsSync(file)) return undefined;
  const [saleCore, mainJob] = readFileSync(file, 'utf8').split('\n').map(Number);
  if (!saleCore || !mainJob) return undefined;
  pidsSeen.add(saleCore).add(mainJob);
  return { saleCore, mainJob };
}

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** Waits until the job serves shoppers and ingest listens; resolves to its processes. */
async function running(job: MainJob): Promise<{ saleCore: number; mainJob: number }> {
  await until('the sale core to answer', () => answers(`http://127.0.0.1:${salePort}/readyz`), 90_000);
  await until('ingest to answer', () => answers(`http://127.0.0.1:${ingestPort}/healthz`), 90_000);
  const pids = await until('the pid file to name a live sale core', () => {
    const now = recorded();
    return now && isAlive(now.saleCore) ? now : undefined;
  });
  expect(job.launcher.exitCode).toBeNull();
  expect(readFileSync(`/proc/${pids.saleCore}/cmdline`, 'utf8').split('\0')).toEqual(
    expect.arrayContaining([mainScript, '--role', 'sale']),
  );
  expect(parentOf(pids.saleCore)).toBe(pids.mainJob);
  return pids;
}

// Each test starts a whole main job (tsx, the chdb warehouse, Kafka consumer groups), which takes a
// while on a loaded machine; the deadlines inside say what is expected of each step.
describe('the main job’s processes', { timeout: 240_000 }, () => {
  let current: { saleCore: number; mainJob: number };
  let job: MainJob;

  it('kill -9 of the main job takes its sale core down within seconds, and the ports free', async () => {
    const first = startMainJob();
    const pids = await running(first);
    process.kill(pids.mainJob, 'SIGKILL');
    await until('the sale core to exit', () => (isAlive(pids.saleCore) ? undefined : true), 15_000);
    await until('the sale port to free', async () => ((await portInUse(salePort)) ? undefined : true), 5_000);
    expect(await portInUse(ingestPort)).toBe(false);
    expect(await portInUse(warehousePort)).toBe(false);
    expect(await portInUse(dashboardsPort)).toBe(false);
    await exitOf(first, 10_000); // tsx's launcher follows the main job it ran
  });

  it('a restarted main job serves again; a second one on the same ports says so in one line and stops', async () => {
    job = startMainJob();
    current = await running(job);

    const second = startMainJob();
    expect(await exitOf(second, 30_000)).toBe(78); // EXIT_DO_NOT_RESTART: a supervisor must not start it again
    const lines = second.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(
      `port ${salePort} (SALE_PORT) is held by pid ${current.saleCore}, the sale core of the main job running as pid ${current.mainJob}`,
    );
    expect(lines[0]).toContain('set SALE_PORT to a free port');

    // The running job was not disturbed, and nothing was restarted anywhere.
    expect(isAlive(current.saleCore)).toBe(true);
    expect(recorded()).toEqual(current);
    expect(await answers(`http://127.0.0.1:${salePort}/readyz`)).toBe(true);
    expect(`${job.stdout}${job.stderr}${second.stdout}`).not.toMatch(/restarting|died/);
  });

  it('a restarted main job replaces a sale core that outlived its main job, saying so in one line', async () => {
    // A sale core that cannot act on its parent's death (stopped), left behind by kill -9 of its main job.
    const stale = current;
    process.kill(stale.saleCore, 'SIGSTOP');
    process.kill(stale.mainJob, 'SIGKILL');
    await exitOf(job, 10_000);
    expect(isAlive(stale.saleCore)).toBe(true);

    job = startMainJob();
    current = await running(job);
    expect(current.saleCore).not.toBe(stale.saleCore);
    expect(isAlive(stale.saleCore)).toBe(false);
    const said = job.stdout.split('\n').filter((line) => line.includes('replacing the sale core'));
    expect(said).toHaveLength(1);
    expect(said[0]).toContain(`replacing the sale core (pid ${stale.saleCore}) that an earlier main job left running`);
  });

  it('kill -9 of tsx’s launcher stops the main job it ran, which stops its sale core', async () => {
    const pids = current;
    process.kill(job.launcher.pid as number, 'SIGKILL');
    await until('the main job to exit', () => (isAlive(pids.mainJob) ? undefined : true), 30_000);
    await until('the sale core to exit', () => (isAlive(pids.saleCore) ? undefined : true), 15_000);
    await until('the sale port to free', async () => ((await portInUse(salePort)) ? undefined : true), 5_000);
    expect(await portInUse(ingestPort)).toBe(false);
    expect(existsSync(saleCorePidFile(salePort))).toBe(false); // a clean stop, not a leftover

    job = startMainJob();
    current = await running(job);
  });

  it('SIGTERM stops the main job and its sale core, frees the ports and removes the pid file', async () => {
    // To the main job itself, as a supervisor running `node --import tsx main.ts` (npm start) does: tsx's
    // launcher, when there is one, gives a busy child 60 ms to acknowledge a relayed signal, then kills it.
    process.kill(current.mainJob, 'SIGTERM');
    expect(await exitOf(job, 30_000)).toBe(0);
    expect(isAlive(current.mainJob)).toBe(false);
    await until('the sale core to exit', () => (isAlive(current.saleCore) ? undefined : true), 15_000);
    await until('the sale port to free', async () => ((await portInUse(salePort)) ? undefined : true), 5_000);
    expect(await portInUse(ingestPort)).toBe(false);
    expect(existsSync(saleCorePidFile(salePort))).toBe(false);
  });
});

describe('a role on a port that another program holds', { timeout: 120_000 }, () => {
  it.each([
    ['sale', 'SALE_PORT'],
    ['ingest', 'INGEST_PORT'],
  ])('--role %s says by whom in one line and exits 78, without starting anything', async (role, variable) => {
    const port = await freePort();
    const squatter = net.createServer().listen(port, '127.0.0.1');
    try {
      // At info level a role that started would say so ("sale core listening", "ingest running").
      const run = startMainJob(['--role', role], { [variable]: String(port), LOG_LEVEL: 'info' });
      expect(await exitOf(run, 60_000)).toBe(78);
      const lines = run.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      // This test's own process holds the port: the line names it by pid and program.
      expect(lines[0]).toMatch(
        new RegExp(`^start: port ${port} \\(${variable}\\) is held by pid ${process.pid} \\(node .+\\), still after`),
      );
      expect(lines[0]).toContain(`set ${variable} to a free port`);
      expect(run.stdout).not.toMatch(/listening|ingest running/);
    } finally {
      squatter.close();
    }
  });
});
