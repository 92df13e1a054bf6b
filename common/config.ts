// The one place configuration comes from: environment variables, validated once at start.
// Defaults point at the local stack (stack/), so a fresh checkout runs with no settings at all.
// A bad value stops the start with a message that names the variable.

export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`config: ${variable} ${problem}`);
    this.name = 'ConfigError';
  }
}

export type Env = Record<string, string | undefined>;

export function text(env: Env, name: string, fallback: string): string {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  return raw;
}

export function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

export function url(env: Env, name: string, fallback: string, protocols: string[]): string {
  const raw = text(env, name, fallback);
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, `must be a URL like ${fallback}, got "${raw}"`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must use ${protocols.join(' or ')}, got "${parsed.protocol}"`);
  }
  return raw;
}

export function hostPorts(env: Env, name: string, fallback: string): string[] {
  const list = text(env, name, fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const entry of list) {
    if (!/^[\w.-]+:\d{1,5}$/.test(entry)) throw new ConfigError(name, `must list host:port pairs separated by commas, got "${entry}"`);
  }
  if (list.length === 0) throw new ConfigError(name, 'must name at least one host:port');
  return list;
}

function oneOf<T extends string>(env: Env, name: string, fallback: T, allowed: readonly T[]): T {
  const raw = text(env, name, fallback);
  if (!allowed.includes(raw as T)) throw new ConfigError(name, `must be one of ${allowed.join(', ')}, got "${raw}"`);
  return raw as T;
}

/** A secret with a development default that production must replace: a known key signs anyone's tickets. */
export function secret(env: Env, name: string, devDefault: string): string {
  const raw = env[name];
  if (raw === undefined || raw === '') {
    if (env.NODE_ENV === 'production') throw new ConfigError(name, 'must be set in production (the development default is public)');
    return devDefault;
  }
  if (raw.length < 16) throw new ConfigError(name, 'must be at least 16 characters');
  return raw;
}

const PORT_MIN = 1024;
const PORT_MAX = 65535;

/** Ports of the local stack; the client URLs below default to them, so moving a port moves both. */
export function loadStackPorts(env: Env = process.env) {
  return {
    redis: integer(env, 'STACK_REDIS_PORT', 16379, PORT_MIN, PORT_MAX),
    kafka: integer(env, 'STACK_KAFKA_PORT', 19092, PORT_MIN, PORT_MAX),
    kafkaController: integer(env, 'STACK_KAFKA_CONTROLLER_PORT', 19093, PORT_MIN, PORT_MAX),
    postgres: integer(env, 'STACK_POSTGRES_PORT', 15432, PORT_MIN, PORT_MAX),
    clickhouseHttp: integer(env, 'STACK_CLICKHOUSE_HTTP_PORT', 18123, PORT_MIN, PORT_MAX),
    clickhouseTcp: integer(env, 'STACK_CLICKHOUSE_TCP_PORT', 19000, PORT_MIN, PORT_MAX),
  };
}

export type StackPorts = ReturnType<typeof loadStackPorts>;

export function loadConfig(env: Env = process.env) {
  const ports = loadStackPorts(env);
  const dataDir = text(env, 'STACK_DIR', `${process.cwd()}/.stack`);
  const clickhouseUrl = env.CLICKHOUSE_URL ? url(env, 'CLICKHOUSE_URL', '', ['http:', 'https:']) : undefined;
  return {
    env: oneOf(env, 'NODE_ENV', 'development', ['development', 'test', 'production'] as const),
    logLevel: oneOf(env, 'LOG_LEVEL', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
    stack: { dataDir, ports },
    redis: { url: url(env, 'REDIS_URL', `redis://127.0.0.1:${ports.redis}`, ['redis:', 'rediss:']) },
    kafka: {
      brokers: hostPorts(env, 'KAFKA_BROKERS', `127.0.0.1:${ports.kafka}`),
      clientId: text(env, 'KAFKA_CLIENT_ID', 'flash-sale'),
    },
    postgres: {
      url: url(env, 'DATABASE_URL', `postgres://flashsale@127.0.0.1:${ports.postgres}/flashsale`, ['postgres:', 'postgresql:']),
      poolSize: integer(env, 'PG_POOL_SIZE', 10, 1, 500),
    },
    warehouse: {
      // Embedded chdb unless a ClickHouse server is named; see analytics/warehouse.
      clickhouseUrl,
      chdbDir: text(env, 'CHDB_DIR', `${dataDir}/chdb`),
      database: text(env, 'CLICKHOUSE_DATABASE', 'flashsale'),
    },
    runtime: {
      // main.ts: how many sale-core workers share the sale port, and where ingest serves its health/metrics.
      saleProcesses: integer(env, 'SALE_PROCESSES', 1, 1, 64),
      ingestPort: integer(env, 'INGEST_PORT', 8081, 0, PORT_MAX),
      opsHost: text(env, 'OPS_HOST', '127.0.0.1'),
    },
    ingest: {
      // Consumer groups, one per sink; several ingest processes may share them (CLICKHOUSE_URL mode).
      warehouseGroupId: text(env, 'INGEST_WAREHOUSE_GROUP', 'ingest-warehouse'),
      orderStoreGroupId: text(env, 'INGEST_ORDER_STORE_GROUP', 'ingest-order-store'),
      // A batch closes at this many rows per partition or after this linger, whichever comes first.
      batchMaxRows: integer(env, 'INGEST_BATCH_MAX_ROWS', 20_000, 1, 1_000_000),
      batchLingerMs: integer(env, 'INGEST_BATCH_LINGER_MS', 200, 0, 60_000),
      // The broker holds a fetch until this many bytes are ready (or the linger passes): the batch size.
      batchMinBytes: integer(env, 'INGEST_BATCH_MIN_BYTES', 1 << 20, 1, 64 << 20),
    },
    sale: {
      // The shopper API (sale-core). Secrets have dev defaults so a fresh checkout runs; set them in production.
      port: integer(env, 'SALE_PORT', 8080, 0, PORT_MAX),
      host: text(env, 'SALE_HOST', '127.0.0.1'),
      tokenSecret: secret(env, 'SALE_TOKEN_SECRET', 'dev-only-sale-token-secret-change-me'),
      adminToken: secret(env, 'SALE_ADMIN_TOKEN', 'dev-admin-token'),
      sessionTtlSeconds: integer(env, 'SALE_SESSION_TTL_SECONDS', 86_400, 60, 30 * 86_400),
      ticketTtlSeconds: integer(env, 'SALE_TICKET_TTL_SECONDS', 120, 5, 3600),
      ipRatePerSecond: integer(env, 'SALE_RATE_IP_PER_SECOND', 50, 1, 1_000_000),
      ipBurst: integer(env, 'SALE_RATE_IP_BURST', 100, 1, 1_000_000),
      shopperRatePerSecond: integer(env, 'SALE_RATE_SHOPPER_PER_SECOND', 5, 1, 1_000_000),
      shopperBurst: integer(env, 'SALE_RATE_SHOPPER_BURST', 10, 1, 1_000_000),
      admissionRatePerSecond: integer(env, 'SALE_ADMISSION_RATE_PER_SECOND', 200, 1, 1_000_000),
      clickstreamBuffer: integer(env, 'SALE_CLICKSTREAM_BUFFER', 20_000, 100, 10_000_000),
      clickstreamLingerMs: integer(env, 'SALE_CLICKSTREAM_LINGER_MS', 50, 0, 10_000),
      expirySweepMs: integer(env, 'SALE_EXPIRY_SWEEP_MS', 500, 10, 60_000),
      relayIntervalMs: integer(env, 'SALE_RELAY_INTERVAL_MS', 50, 1, 10_000),
    },
  };
}

// Modules add their own section to loadConfig (sale:, ingest:, …) using the readers above, so every
// variable is validated in one pass at start.

export type Config = ReturnType<typeof loadConfig>;

let loaded: Config | undefined;

/** The process-wide configuration, validated on first use. */
export function config(): Config {
  loaded ??= loadConfig();
  return loaded;
}
