// The one way a reader of the warehouse gets a client: @clickhouse/client, pointed at a ClickHouse
// server when CLICKHOUSE_URL is set, otherwise at the warehouse endpoint the warehouse's owner serves
// (analytics/warehouse-endpoint). Readers never open chdb: chdb binds one data folder per process, and
// that process is the owner. The same code then runs against the embedded warehouse and a cluster.

import { type ClickHouseClient, ClickHouseLogLevel, createClient } from '@clickhouse/client';
import { config } from '../common/config.js';

export type WarehouseReaderRole = 'analyst' | 'offers' | 'admin';

/** The endpoint's URL from configuration: WAREHOUSE_HTTP_URL, else the loopback port it listens on. */
export function warehouseEndpointUrl(settings = config().warehouseEndpoint): string {
  if (settings.url) return settings.url;
  const host = settings.host === '0.0.0.0' || settings.host === '::' ? '127.0.0.1' : settings.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${settings.port}`;
}

export function createWarehouseReader(
  opts: { url?: string; username?: string; password?: string; database?: string; role?: WarehouseReaderRole } = {},
): ClickHouseClient {
  const all = config();
  const role = opts.role ?? 'analyst';
  const serverUrl = opts.url ?? all.warehouse.clickhouseUrl;
  const passwords: Record<WarehouseReaderRole, string> = {
    analyst: all.warehouseEndpoint.analystPassword,
    offers: all.warehouseEndpoint.offersPassword,
    admin: all.warehouseEndpoint.adminPassword,
  };
  // A ClickHouse server named by CLICKHOUSE_URL carries its own credentials (in the URL, or given here);
  // the endpoint's users are the roles, with their passwords from configuration.
  const credentials =
    opts.username !== undefined || opts.password !== undefined
      ? { username: opts.username ?? role, password: opts.password ?? '' }
      : serverUrl && !opts.url
        ? {}
        : { username: role, password: passwords[role] };
  return createClient({
    url: serverUrl ?? warehouseEndpointUrl(all.warehouseEndpoint),
    database: opts.database ?? all.warehouse.database,
    ...credentials,
    // Slightly past the endpoint's own time limit, so the warehouse's TIMEOUT_EXCEEDED arrives first.
    request_timeout: (all.warehouseEndpoint.maxExecutionSeconds + 30) * 1000,
    // Errors reach the caller as ClickHouseError; the client's own log would print them twice.
    log: { level: ClickHouseLogLevel.OFF },
  });
}
