// The local stack's servers: Redis, Kafka (KRaft), PostgreSQL and a ClickHouse server (only for
// smoke-testing the server adapter; the warehouse itself is embedded chdb). Each lives under the
// stack's data folder on ports of its own, so it never collides with a system service.

import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { loadStackPorts, type StackPorts } from '../common/config.js';
import { createTopicsAndWait } from '../common/kafka.js';
import { ALL_TOPICS } from '../common/topics.js';
import {
  childrenOf,
  killHard,
  launchDetached,
  portInUse,
  removeFile,
  runningPid,
  StackError,
  sleep,
  stopPid,
  waitFor,
  waitGone,
  waitReaped,
} from './process.js';

const here = dirname(fileURLToPath(import.meta.url));
const KAFKA_VERSION = readFileSync(join(here, 'pom.xml'), 'utf8').match(/<kafka.version>([^<]+)</)?.[1] ?? '?';
const PG_BIN = '/usr/lib/postgresql/15/bin';

export interface ServiceStatus {
  name: string;
  running: boolean;
  healthy: boolean;
  pid?: number;
  port: number;
  detail?: string;
}

export interface Service {
  name: string;
  port: number;
  /** Starts the server unless ours already runs; resolves once it is healthy. */
  up(): Promise<void>;
  /** Stops the server if ours runs. `hard` is kill -9, for crash tests. */
  down(hard?: boolean): Promise<void>;
  status(): Promise<ServiceStatus>;
}

export function stackDir(): string {
  return resolve(process.env.STACK_DIR || join(here, '..', '.stack'));
}

/**
 * Where the main job (`main.ts --role all`) records its sale-core child: its pid and the main job's,
 * so a restarted main job can tell a sale core left behind by a dead one from one that still has its
 * parent. One file per sale port, since several main jobs may share the stack on different ports.
 */
export function saleCorePidFile(port: number): string {
  return join(stackDir(), 'main', `sale-core-${port}.pid`);
}

function ensureDir(path: string): string {
  mkdirSync(path, { recursive: true });
  return path;
}

async function refuseTakenPort(name: string, port: number, variable: string): Promise<void> {
  // A server we just killed frees its port a moment after its process is gone: give it 2 s before
  // calling the port someone else's.
  for (let waited = 0; await portInUse(port); waited += 100) {
    if (waited >= 2000) {
      throw new StackError(`port ${port} for ${name} is taken by another program: stop it, or set ${variable} to a free port`);
    }
    await sleep(100);
  }
}

function whichOrFail(binary: string, aptPackage: string): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/bin'])) {
    const candidate = join(dir, binary);
    if (existsSync(candidate)) return candidate;
  }
  throw new StackError(`${binary} is not installed: run \`npm start\` once as root, or apt-get install ${aptPackage}`);
}

function tcpSays(port: number, send: string, expect: string): Promise<boolean> {
  return new Promise((resolveCheck) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let received = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolveCheck(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write(send));
    socket.on('data', (chunk) => {
      received += chunk.toString();
      if (received.includes('\n')) done(received.startsWith(expect));
    });
  });
}

// ---------------------------------------------------------------- Redis

function redisService(ports: StackPorts, root: string): Service {
  const dir = join(root, 'redis');
  const pidFile = join(dir, 'redis.pid');
  const logFile = join(dir, 'redis.log');
  const port = ports.redis;
  const healthy = () => tcpSays(port, 'PING\r\n', '+PONG');
  return {
    name: 'redis',
    port,
    async up() {
      if (runningPid(pidFile, 'redis-server')) return waitFor('redis', healthy, 30_000, logFile);
      ensureDir(dir);
      await refuseTakenPort('redis', port, 'STACK_REDIS_PORT');
      const binary = whichOrFail('redis-server', 'redis-server');
      // appendfsync always: a reservation acknowledged to a shopper is on disk before the shopper hears of
      // it, so it survives kill -9 of Redis and a crash of the machine. With everysec, Redis answers while
      // a write waits behind a slow background fsync (up to 2 s), and kill -9 then loses those answers.
      // It costs the tail: bench/README.md ("fsync") measures it.
      launchDetached({
        command: binary,
        args: [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          dir,
          '--appendonly',
          'yes',
          '--appendfsync',
          'always',
          '--save',
          '',
          '--daemonize',
          'no',
          '--logfile',
          '',
          '--maxclients',
          '10000',
        ],
        logFile,
        pidFile,
      });
      await waitFor('redis', healthy, 30_000, logFile);
    },
    async down(hard = false) {
      const pid = runningPid(pidFile, 'redis-server');
      if (pid) hard ? killHard(pid) : await stopPid(pid, 10_000);
      if (hard && pid) await waitGone(pid);
      removeFile(pidFile);
    },
    async status() {
      const pid = runningPid(pidFile, 'redis-server');
      return { name: 'redis', running: !!pid, pid, port, healthy: !!pid && (await healthy()) };
    },
  };
}

// ---------------------------------------------------------------- Kafka

function javaMajorVersion(): number {
  // `java -version` writes to stderr.
  const result = spawnSync('java', ['-version'], { encoding: 'utf8' });
  if (result.error) throw new StackError('Java is not installed: Kafka needs Java 17 or newer (apt-get install openjdk-17-jre-headless)');
  const match = `${result.stderr}${result.stdout}`.match(/version "(\d+)/);
  return match ? Number(match[1]) : 0;
}

/** The jars are shared by every broker this checkout starts, including tests' private ones. */
function kafkaLibs(): string {
  return join(stackDir(), 'kafka', `libs-${KAFKA_VERSION}`);
}

function kafkaService(ports: StackPorts, root: string): Service {
  const dir = join(root, 'kafka');
  const dataDir = join(dir, 'data');
  const pidFile = join(dir, 'kafka.pid');
  const logFile = join(dir, 'kafka.log');
  const propsFile = join(dir, 'server.properties');
  const port = ports.kafka;
  const marker = 'kafka.Kafka';
  const classpath = () => `${kafkaLibs()}/*`;
  const client = () =>
    new Kafka({
      clientId: 'stack',
      brokers: [`127.0.0.1:${port}`],
      logLevel: logLevel.NOTHING,
      connectionTimeout: 1000,
      requestTimeout: 3000,
      retry: { retries: 0 },
    });
  const healthy = async () => {
    if (!(await portInUse(port))) return false;
    const admin = client().admin();
    try {
      await admin.connect();
      await admin.describeCluster();
      return true;
    } catch {
      return false;
    } finally {
      await admin.disconnect().catch(() => {});
    }
  };
  const ensureTopics = async () => {
    const admin = new Kafka({ clientId: 'stack', brokers: [`127.0.0.1:${port}`], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      const existing = new Set(await admin.listTopics());
      const missing = ALL_TOPICS.filter((t) => !existing.has(t.name));
      if (missing.length > 0) {
        await createTopicsAndWait(
          admin,
          missing.map((t) => ({
            topic: t.name,
            numPartitions: t.partitions,
            replicationFactor: 1,
            configEntries: [{ name: 'retention.ms', value: String(t.retentionMs) }],
          })),
        );
      }
    } finally {
      await admin.disconnect();
    }
  };
  return {
    name: 'kafka',
    port,
    async up() {
      if (!runningPid(pidFile, marker)) {
        ensureDir(dataDir);
        if (javaMajorVersion() < 17) throw new StackError('Kafka needs Java 17 or newer: apt-get install openjdk-17-jre-headless');
        if (!existsSync(kafkaLibs()) || readdirSync(kafkaLibs()).length === 0) {
          throw new StackError(`the Kafka ${KAFKA_VERSION} jars are missing: run \`bash stack/prepare.sh\` (it fetches them with Maven)`);
        }
        await refuseTakenPort('kafka', port, 'STACK_KAFKA_PORT');
        await refuseTakenPort('the kafka controller', ports.kafkaController, 'STACK_KAFKA_CONTROLLER_PORT');
        writeFileSync(
          propsFile,
          [
            'process.roles=broker,controller',
            'node.id=1',
            `controller.quorum.voters=1@127.0.0.1:${ports.kafkaController}`,
            `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${ports.kafkaController}`,
            `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
            'controller.listener.names=CONTROLLER',
            'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
            `log.dirs=${dataDir}`,
            'num.partitions=6',
            'offsets.topic.replication.factor=1',
            'offsets.topic.num.partitions=6',
            'transaction.state.log.replication.factor=1',
            'transaction.state.log.min.isr=1',
            'auto.create.topics.enable=false',
            // A lone local broker: let the first consumer of a group start at once.
            'group.initial.rebalance.delay.ms=0',
            '',
          ].join('\n'),
        );
        if (!existsSync(join(dataDir, 'meta.properties'))) {
          const clusterId = execFileSync('java', ['-cp', classpath(), 'kafka.tools.StorageTool', 'random-uuid'], {
            encoding: 'utf8',
            stdio: ['ignore', 'pipe', 'ignore'],
          }).trim();
          execFileSync('java', ['-cp', classpath(), 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', propsFile], {
            stdio: ['ignore', 'ignore', 'pipe'],
          });
        }
        launchDetached({
          command: 'java',
          args: [
            '-Xms128m',
            '-Xmx512m',
            '-XX:+UseSerialGC',
            '-XX:TieredStopAtLevel=1',
            '-Djava.awt.headless=true',
            `-Dlog4j.configuration=file:${join(here, 'log4j.properties')}`,
            '-cp',
            classpath(),
            marker,
            propsFile,
          ],
          logFile,
          pidFile,
        });
      }
      await waitFor('kafka', healthy, 90_000, logFile);
      await ensureTopics();
    },
    async down(hard = false) {
      const pid = runningPid(pidFile, marker);
      if (pid) hard ? killHard(pid) : await stopPid(pid, 30_000);
      if (hard && pid) await waitGone(pid);
      removeFile(pidFile);
    },
    async status() {
      const pid = runningPid(pidFile, marker);
      return { name: 'kafka', running: !!pid, pid, port, healthy: !!pid && (await healthy()), detail: `Apache Kafka ${KAFKA_VERSION}` };
    },
  };
}

// ---------------------------------------------------------------- PostgreSQL

const isRoot = () => process.getuid?.() === 0;

function canPostgresReach(dir: string): boolean {
  if (!isRoot()) return true;
  try {
    execFileSync('runuser', ['-u', 'postgres', '--', 'test', '-x', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * PostgreSQL refuses to run as root, so as root we run it as the `postgres` user. That user must be
 * able to reach its data folder; when the checkout sits under a private home, the cluster moves to a
 * folder under /var/tmp named after the checkout (the same one on every start).
 */
export function postgresDir(root: string = stackDir()): string {
  const preferred = join(root, 'postgres');
  ensureDir(preferred);
  if (canPostgresReach(preferred)) return preferred;
  const tag = createHash('sha1').update(root).digest('hex').slice(0, 10);
  return ensureDir(`/var/tmp/flashsale-stack-${tag}/postgres`);
}

function postgresService(ports: StackPorts, root: string): Service {
  const port = ports.postgres;
  const paths = () => {
    const dir = postgresDir(root);
    return { dir, data: join(dir, 'data'), run: join(dir, 'run'), logFile: join(dir, 'postgres.log') };
  };
  const pgCtl = (args: string[]) => {
    const [cmd, full] = isRoot() ? ['runuser', ['-u', 'postgres', '--', `${PG_BIN}/pg_ctl`, ...args]] : [`${PG_BIN}/pg_ctl`, args];
    return execFileSync(cmd, full, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  };
  const runningPostmaster = () => {
    const { data } = paths();
    return runningPid(join(data, 'postmaster.pid'), 'postgres');
  };
  const query = async (sql: string) => {
    const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 1000 });
    await client.connect();
    try {
      return await client.query(sql);
    } finally {
      await client.end();
    }
  };
  const healthy = async () => (await query('SELECT 1 AS ok')).rows[0]?.ok === 1;
  return {
    name: 'postgres',
    port,
    async up() {
      if (!existsSync(`${PG_BIN}/postgres`)) {
        throw new StackError('PostgreSQL 15 is not installed: run `npm start` once as root, or apt-get install postgresql-15');
      }
      const { dir, data, run, logFile } = paths();
      if (!runningPostmaster()) {
        await refuseTakenPort('postgres', port, 'STACK_POSTGRES_PORT');
        ensureDir(run);
        if (isRoot()) {
          const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
          const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
          for (const path of [dir, run]) chownSync(path, uid, gid);
          if (existsSync(data)) chownSync(data, uid, gid);
        }
        if (!existsSync(join(data, 'PG_VERSION'))) {
          const initdb = [`${PG_BIN}/initdb`, '-D', data, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C.UTF-8'];
          const [cmd, args] = isRoot() ? ['runuser', ['-u', 'postgres', '--', ...initdb]] : [initdb[0] as string, initdb.slice(1)];
          execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
        }
        // Trust auth on loopback only: this is a private development cluster, never exposed.
        const options = [
          `-p ${port}`,
          '-c listen_addresses=127.0.0.1',
          `-c unix_socket_directories=${run}`,
          '-c max_connections=200',
          '-c shared_buffers=64MB',
          '-c fsync=on',
        ].join(' ');
        try {
          pgCtl(['-D', data, '-l', logFile, '-w', '-t', '60', '-o', options, 'start']);
        } catch (error) {
          throw new StackError(
            `postgres did not start; its log is ${logFile} (${String((error as { stderr?: string }).stderr ?? error)
              .trim()
              .split('\n')
              .pop()})`,
          );
        }
      }
      await waitFor('postgres', healthy, 60_000, logFile);
      const role = await query("SELECT 1 FROM pg_roles WHERE rolname = 'flashsale'");
      if (role.rowCount === 0) await query('CREATE ROLE flashsale LOGIN');
      const db = await query("SELECT 1 FROM pg_database WHERE datname = 'flashsale'");
      if (db.rowCount === 0) await query('CREATE DATABASE flashsale OWNER flashsale');
    },
    async down(hard = false) {
      const pid = runningPostmaster();
      if (!pid) return;
      if (hard) {
        // Its children (checkpointer, backends) leave on their own once the postmaster is gone; a new
        // postmaster refuses the data folder until they and the killed one are reaped.
        const children = childrenOf(pid);
        killHard(pid);
        await waitReaped([pid, ...children]);
        return;
      }
      try {
        pgCtl(['-D', paths().data, '-m', 'fast', '-w', '-t', '60', 'stop']);
      } catch {
        await stopPid(pid, 30_000);
      }
    },
    async status() {
      const pid = runningPostmaster();
      return {
        name: 'postgres',
        running: !!pid,
        pid,
        port,
        healthy: !!pid && (await healthy().catch(() => false)),
        detail: `data in ${paths().data}`,
      };
    },
  };
}

// ---------------------------------------------------------------- ClickHouse server

/**
 * Debian's clickhouse-server (18.16, the only server build these registries carry). The warehouse runs
 * on embedded chdb; this server exists so the @clickhouse/client adapter is tested against a real one.
 */
function clickhouseService(ports: StackPorts, root: string): Service {
  const dir = join(root, 'clickhouse');
  const pidFile = join(dir, 'clickhouse.pid');
  const logFile = join(dir, 'clickhouse.out');
  const configFile = join(dir, 'config.xml');
  const port = ports.clickhouseHttp;
  const healthy = async () => {
    const res = await fetch(`http://127.0.0.1:${port}/ping`, { signal: AbortSignal.timeout(1000) });
    return res.ok;
  };
  return {
    name: 'clickhouse-server',
    port,
    async up() {
      if (!runningPid(pidFile, 'clickhouse')) {
        const binary = whichOrFail('clickhouse-server', 'clickhouse-server');
        await refuseTakenPort('clickhouse-server', port, 'STACK_CLICKHOUSE_HTTP_PORT');
        await refuseTakenPort('clickhouse-server (native)', ports.clickhouseTcp, 'STACK_CLICKHOUSE_TCP_PORT');
        for (const sub of ['data', 'tmp', 'user_files', 'format_schemas', 'log']) ensureDir(join(dir, sub));
        writeFileSync(join(dir, 'users.xml'), CLICKHOUSE_USERS);
        writeFileSync(
          configFile,
          CLICKHOUSE_CONFIG.replaceAll('{dir}', dir).replace('{http}', String(port)).replace('{tcp}', String(ports.clickhouseTcp)),
        );
        launchDetached({ command: binary, args: [`--config-file=${configFile}`], logFile, pidFile });
      }
      await waitFor('clickhouse-server', healthy, 60_000, join(dir, 'log', 'server.log'));
    },
    async down(hard = false) {
      const pid = runningPid(pidFile, 'clickhouse');
      if (pid) hard ? killHard(pid) : await stopPid(pid, 20_000);
      if (hard && pid) await waitGone(pid);
      removeFile(pidFile);
    },
    async status() {
      const pid = runningPid(pidFile, 'clickhouse');
      return {
        name: 'clickhouse-server',
        running: !!pid,
        pid,
        port,
        healthy: !!pid && (await healthy().catch(() => false)),
        detail: 'ClickHouse 18.16 (adapter smoke tests only)',
      };
    },
  };
}

const CLICKHOUSE_CONFIG = `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{dir}/log/server.log</log><errorlog>{dir}/log/error.log</errorlog><size>10M</size><count>2</count></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>{dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>20</max_concurrent_queries>
</yandex>
`;

const CLICKHOUSE_USERS = `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>1000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`;

// ---------------------------------------------------------------- the stack

/**
 * The stack's services. Crash tests pass their own ports and folder to get a private server they
 * may kill without disturbing suites that run beside them on the shared stack.
 */
export function services(ports: StackPorts = loadStackPorts(), root: string = stackDir()): Record<ServiceName, Service> {
  return {
    redis: redisService(ports, root),
    postgres: postgresService(ports, root),
    'clickhouse-server': clickhouseService(ports, root),
    kafka: kafkaService(ports, root),
  };
}

export type ServiceName = 'redis' | 'postgres' | 'clickhouse-server' | 'kafka';
export const SERVICE_NAMES: ServiceName[] = ['redis', 'postgres', 'clickhouse-server', 'kafka'];

/** Brings the named services up side by side (Kafka's JVM start dominates); idempotent. */
export async function stackUp(names: ServiceName[] = SERVICE_NAMES): Promise<void> {
  ensureDir(stackDir());
  const all = services();
  await Promise.all(names.map((name) => all[name].up()));
}

export async function stackDown(names: ServiceName[] = SERVICE_NAMES): Promise<void> {
  const all = services();
  // Kafka first: it holds client connections the others do not care about.
  for (const name of [...names].reverse()) await all[name].down();
}

export async function stackStatus(): Promise<ServiceStatus[]> {
  const all = services();
  return Promise.all(SERVICE_NAMES.map((name) => all[name].status()));
}

export { StackError };
