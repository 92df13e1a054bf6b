// `npm start`: the platform's main job. One runtime, several roles:
//
//   --role all     (default) bring the local stack up, run the sale core in a child process and ingest
//                  in this process, which owns the embedded chdb warehouse (chdb binds one data folder
//                  per process, so the warehouse owner must be exactly one process)
//   --role sale    the shopper API alone (stateless; SALE_PROCESSES workers share the port, and any
//                  number of such processes may run behind a load balancer)
//   --role ingest  Kafka → warehouse and order store; with CLICKHOUSE_URL several may share the groups
//
// Roles other than `all` never start servers: they connect to what the configuration names.

import { type ChildProcess, fork } from 'node:child_process';
import cluster from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { ConfigError, config } from './common/config.js';
import { closeOnSignals, createServiceApp } from './common/http.js';
import { createLogger } from './common/logger.js';
import { StackError, stackStatus, stackUp } from './stack/services.js';

const ROLES = ['all', 'sale', 'ingest'] as const;
type Role = (typeof ROLES)[number];
const log = createLogger('main');

function roleFromArgs(argv: string[]): Role {
  const index = argv.indexOf('--role');
  const role = index >= 0 ? argv[index + 1] : 'all';
  if (!ROLES.includes(role as Role)) throw new ConfigError('--role', `must be one of ${ROLES.join(', ')}, got "${role}"`);
  return role as Role;
}

async function runSale(): Promise<void> {
  const processes = config().runtime.saleProcesses;
  if (processes > 1 && cluster.isPrimary) {
    // Workers share the port (the primary hands out connections); each is a full stateless sale core.
    let stopping = false;
    for (let i = 0; i < processes; i++) cluster.fork();
    cluster.on('exit', (worker, code, signal) => {
      if (stopping) return;
      log.error({ pid: worker.process.pid, code, signal }, 'a sale-core worker died; starting another');
      cluster.fork();
    });
    for (const name of ['SIGTERM', 'SIGINT'] as const) {
      process.once(name, () => {
        stopping = true;
        for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
      });
    }
    return;
  }
  const { startSaleCore } = await import('./sale-core/index.js');
  const sale = await startSaleCore({ handleSignals: true });
  log.info({ url: sale.url }, 'sale core listening');
}

async function runIngest(): Promise<() => Promise<void>> {
  const { openWarehouse } = await import('./analytics/warehouse/index.js');
  const { startIngest } = await import('./ingest/index.js');
  const warehouse = await openWarehouse();
  const ingest = await startIngest({ warehouse });
  // Ingest serves no shoppers; this app is only its health and metrics.
  const ops = await createServiceApp({ name: 'ingest', ready: () => warehouse.ping() });
  const url = await ops.listen({ port: config().runtime.ingestPort, host: config().runtime.opsHost });
  log.info({ url, warehouse: warehouse.kind }, 'ingest running');
  const stop = async () => {
    await ingest.close(); // finishes or abandons the batch in flight, never commits past what was written
    await warehouse.close();
  };
  closeOnSignals(ops, stop);
  return stop;
}

/** Keeps a child process running a role; it is restarted if it dies and stopped when this one stops. */
function superviseRole(role: Role): void {
  let stopping = false;
  let child: ChildProcess | undefined;
  const spawnChild = () => {
    child = fork(fileURLToPath(import.meta.url), ['--role', role], { execArgv: process.execArgv });
    child.on('exit', (code, signal) => {
      if (stopping) return;
      log.error({ role, code, signal }, 'a child process died; restarting it');
      setTimeout(spawnChild, 500);
    });
  };
  const stop = () => {
    stopping = true;
    child?.kill('SIGTERM');
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, stop);
  process.once('exit', stop);
  spawnChild();
}

async function runAll(): Promise<void> {
  const started = Date.now();
  await stackUp();
  const statuses = await stackStatus();
  for (const s of statuses) log.info({ service: s.name, port: s.port, healthy: s.healthy }, 'stack service');
  log.info({ seconds: (Date.now() - started) / 1000 }, 'local stack ready');
  await runIngest();
  superviseRole('sale');
}

async function main(): Promise<void> {
  config(); // a bad variable stops the start here, with its name
  const role = roleFromArgs(process.argv.slice(2));
  if (role === 'all') await runAll();
  else if (role === 'sale') await runSale();
  else await runIngest();
}

main().catch((error: unknown) => {
  const oneLine = error instanceof StackError || error instanceof ConfigError;
  console.error(oneLine ? `start: ${(error as Error).message}` : error);
  process.exit(1);
});
