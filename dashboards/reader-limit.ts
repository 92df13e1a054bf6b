// The warehouse endpoint caps queries per user (running or waiting; one more is answered 429), and
// every dashboard page and notebook runs as the one analyst user. So the app queues its own queries
// under a smaller cap instead of letting a busy live page be refused: pages and notebooks get separate
// queues, so a long notebook query never holds up the live sale.
import type { ClickHouseClient } from '@clickhouse/client';

export function limitConcurrency(client: ClickHouseClient, concurrent: number): ClickHouseClient {
  let running = 0;
  const waiting: (() => void)[] = [];
  const acquire = async () => {
    if (running >= concurrent) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
  };
  const release = () => {
    running--;
    waiting.shift()?.();
  };
  // The result is read (json/text/stream) after query() resolves; a slot is held until the body is read,
  // so the wrapper reads JSON results itself when asked for them and releases after.
  const query = (async (params: Parameters<ClickHouseClient['query']>[0]) => {
    await acquire();
    let result: Awaited<ReturnType<ClickHouseClient['query']>>;
    try {
      result = await client.query(params);
    } catch (error) {
      release();
      throw error;
    }
    let released = false;
    const once = () => {
      if (!released) {
        released = true;
        release();
      }
    };
    const wrapped: Record<string, unknown> = {
      json: () => result.json().finally(once),
      text: () => result.text().finally(once),
      close: () => {
        once();
        result.close();
      },
    };
    return delegate(result, wrapped);
  }) as ClickHouseClient['query'];
  return delegate(client, { query });
}

/** A proxy answering `overrides` itself and everything else from `target` (bound, so private fields work). */
function delegate<T extends object>(target: T, overrides: Record<string, unknown>): T {
  return new Proxy(target, {
    get(object, property) {
      if (typeof property === 'string' && property in overrides) return overrides[property];
      const value = Reflect.get(object, property, object);
      return typeof value === 'function' ? value.bind(object) : value;
    },
  });
}
