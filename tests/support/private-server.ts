// A private server of the stack's kind on its own port and folder, for crash tests that kill or stop
// a server mid-test: the shared stack that other suites use stays untouched.

import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { loadStackPorts } from '../../common/config.js';
import { postgresDir, type Service, type ServiceName, services, stackDir } from '../../stack/services.js';

// Below Linux's ephemeral range (32768–60999): a port from that range can be taken as the local end
// of some outgoing connection while a crash test has its server down, and the restart then fails.
const PRIVATE_PORTS = { from: 20_000, to: 32_000 };
// Test files run side by side, one per vitest worker. A port free when one file looked can be one that
// another file has just let go of and is about to take again (the main-job test restarts its main job
// on the same ports), so each worker draws from a slice of its own, and a file never gets a port twice.
const SLICES = 4;
const handedOut = new Set<number>();

function listensOn(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function workerSlice(): { from: number; to: number } {
  const worker = Number(process.env.VITEST_POOL_ID ?? 1);
  const slice = Number.isInteger(worker) && worker > 0 ? (worker - 1) % SLICES : 0;
  const width = Math.floor((PRIVATE_PORTS.to - PRIVATE_PORTS.from) / SLICES);
  const from = PRIVATE_PORTS.from + slice * width;
  return { from, to: from + width };
}

/** A free loopback port outside the ephemeral range, for a private server or a test's own service. */
export async function freePort(): Promise<number> {
  const { from, to } = workerSlice();
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = from + Math.floor(Math.random() * (to - from));
    if (handedOut.has(port)) continue;
    if (await listensOn(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port found between ${from} and ${to}`);
}

export interface PrivateServer {
  service: Service;
  /** redis://… or host:port (Kafka) or postgres://… for the private server. */
  url: string;
  /** Stops the server and removes its folders. */
  dispose(): Promise<void>;
}

export async function startPrivateServer(name: Exclude<ServiceName, 'clickhouse-server'>): Promise<PrivateServer> {
  // Under the stack folder, not /tmp, and open to others (mkdtemp makes it 0700): PostgreSQL runs as its
  // own user and must reach its data. When the checkout itself is private, the stack puts PostgreSQL's
  // folder under /var/tmp instead (postgresDir), and dispose removes that one too.
  const root = mkdtempSync(join(stackDir(), `private-${name}-`));
  chmodSync(root, 0o755);
  const folders = [root, ...(name === 'postgres' ? [dirname(postgresDir(root))] : [])];
  const port = await freePort();
  const controller = await freePort();
  const ports = { ...loadStackPorts(), redis: port, kafka: port, kafkaController: controller, postgres: port };
  const service = services(ports, root)[name];
  await service.up();
  const url =
    name === 'redis'
      ? `redis://127.0.0.1:${port}`
      : name === 'kafka'
        ? `127.0.0.1:${port}`
        : `postgres://flashsale@127.0.0.1:${port}/flashsale`;
  return {
    service,
    url,
    async dispose() {
      await service.down();
      for (const folder of folders) rmSync(folder, { recursive: true, force: true });
    },
  };
}
