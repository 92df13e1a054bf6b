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
    // Which answered requests get a log line (common/http-requests.ts): `exceptions` (slow ones only) or `all`.
    accessLog: oneOf(env, 'ACCESS_LOG', 'exceptions', ['exceptions', 'all'] as const),
    slowRequestMs: integer(env, 'SLOW_REQUEST_MS', 1000, 1, 3_600_000),
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
    warehouseEndpoint: {
      // The embedded warehouse served over ClickHouse's HTTP protocol by its owner (analytics/warehouse-endpoint).
      // 18124, not 8123: the stack's own ClickHouse server is on 18123. Readers reach it at `url` (or CLICKHOUSE_URL).
      host: text(env, 'WAREHOUSE_HTTP_HOST', '127.0.0.1'),
      port: integer(env, 'WAREHOUSE_HTTP_PORT', 18124, 0, PORT_MAX),
      url: env.WAREHOUSE_HTTP_URL ? url(env, 'WAREHOUSE_HTTP_URL', '', ['http:', 'https:']) : undefined,
      analystPassword: secret(env, 'WAREHOUSE_ANALYST_PASSWORD', 'analyst-demo-password'),
      offersPassword: secret(env, 'WAREHOUSE_OFFERS_PASSWORD', 'dev-only-offers-password'),
      adminPassword: secret(env, 'WAREHOUSE_ADMIN_PASSWORD', 'dev-only-admin-password'),
      // More users: `name:role:scrypt$…` entries separated by commas (hashes only, never plain passwords).
      users: text(env, 'WAREHOUSE_USERS', ''),
      maxExecutionSeconds: integer(env, 'WAREHOUSE_MAX_EXECUTION_SECONDS', 60, 1, 86_400),
      maxResultRows: integer(env, 'WAREHOUSE_MAX_RESULT_ROWS', 50_000_000, 1, Number.MAX_SAFE_INTEGER),
      maxResultBytes: integer(env, 'WAREHOUSE_MAX_RESULT_BYTES', 8 * 2 ** 30, 1, Number.MAX_SAFE_INTEGER),
      maxMemoryBytes: integer(env, 'WAREHOUSE_MAX_MEMORY_BYTES', 2 * 2 ** 30, 1 << 20, Number.MAX_SAFE_INTEGER),
      maxThreads: integer(env, 'WAREHOUSE_MAX_THREADS', 1, 1, 256),
      queryNice: integer(env, 'WAREHOUSE_QUERY_NICE', 10, 0, 19),
      concurrentPerUser: integer(env, 'WAREHOUSE_CONCURRENT_PER_USER', 4, 1, 1000),
      concurrentTotal: integer(env, 'WAREHOUSE_CONCURRENT_TOTAL', 4, 1, 1000),
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
      // A partition with lag whose committed offset has not moved for this long makes ingest not ready.
      stuckAfterSeconds: integer(env, 'INGEST_STUCK_AFTER_SECONDS', 60, 1, 86_400),
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
      // The lighter shopper routes (session, login, events, order reads, catalog, stock): requests per
      // minute per client address and per shopper, counted in each sale-core process (sale-core/README.md).
      addressRequestsPerMinute: integer(env, 'SALE_RATE_ADDRESS_PER_MINUTE', 240, 1, 100_000_000),
      shopperRequestsPerMinute: integer(env, 'SALE_RATE_SHOPPER_PER_MINUTE', 120, 1, 100_000_000),
      // Distinct accounts one client address may bring into one sale's waiting room.
      queueAccountsPerAddress: integer(env, 'SALE_QUEUE_ACCOUNTS_PER_IP', 10, 1, 100_000_000),
      // Addresses or CIDRs of the load balancers in front (comma-separated): the client address is then read
      // from their X-Forwarded-For. Unset, it is the socket's peer, which behind a balancer is the balancer.
      trustedProxies: text(env, 'SALE_TRUST_PROXY', '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
      admissionRatePerSecond: integer(env, 'SALE_ADMISSION_RATE_PER_SECOND', 200, 1, 1_000_000),
      clickstreamBuffer: integer(env, 'SALE_CLICKSTREAM_BUFFER', 20_000, 100, 10_000_000),
      clickstreamLingerMs: integer(env, 'SALE_CLICKSTREAM_LINGER_MS', 50, 0, 10_000),
      expirySweepMs: integer(env, 'SALE_EXPIRY_SWEEP_MS', 500, 10, 60_000),
      relayIntervalMs: integer(env, 'SALE_RELAY_INTERVAL_MS', 50, 1, 10_000),
    },
    dashboards: {
      // The marketers' and data scientists' web app (dashboards/README.md).
      port: integer(env, 'DASHBOARDS_PORT', 8082, 0, PORT_MAX),
      host: text(env, 'DASHBOARDS_HOST', '127.0.0.1'),
      // Encrypts and signs the session cookie; anyone who knows it can forge a session.
      sessionSecret: secret(env, 'DASHBOARDS_SESSION_SECRET', 'dev-only-dashboards-session-secret'),
      adminEmail: text(env, 'DASHBOARDS_ADMIN_EMAIL', 'admin@flashsale.local'),
      adminPassword: secret(env, 'DASHBOARDS_ADMIN_PASSWORD', 'dev-admin-password'),
      // Where the Sales page creates and ends sales (sale-core's admin API, SALE_ADMIN_TOKEN).
      saleUrl: url(env, 'DASHBOARDS_SALE_URL', `http://127.0.0.1:${integer(env, 'SALE_PORT', 8080, 0, PORT_MAX)}`, ['http:', 'https:']),
      // Failed sign-ins allowed per account and per client address in the window, then 429.
      signinFailuresPerAccount: integer(env, 'DASHBOARDS_SIGNIN_FAILURES_PER_ACCOUNT', 5, 1, 1000),
      signinFailuresPerIp: integer(env, 'DASHBOARDS_SIGNIN_FAILURES_PER_IP', 20, 1, 100_000),
      signinWindowSeconds: integer(env, 'DASHBOARDS_SIGNIN_WINDOW_SECONDS', 900, 1, 86_400),
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
