// A private server of the stack's kind on its own port and folder, for crash tests that kill or stop
// a server mid-test: the shared stack that other suites use stays untouched.

import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';

import { join } from 'node:path';
import { loadStackPorts } from '../../common/config.js';
import { type Service, type ServiceName, services, stackDir } from '../../stack/services.js';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface PrivateServer {
  service: Service;
  port: number;
  /** redis://… or host:port (Kafka) or postgres://… for the private server. */
  url: string;
  root: string;
  /** Stops the server and removes its folder. */
  dispose(): Promise<void>;
}

export async function startPrivateServer(name: Exclude<ServiceName, 'clickhouse-server'>): Promise<PrivateServer> {
  // Under the stack folder, not /tmp: PostgreSQL's user must be able to reach it.
  const root = mkdtempSync(join(stackDir(), `private-${name}-`));
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
    port,
    url,
    root,
    async dispose() {
      await service.down();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
