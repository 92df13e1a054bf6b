// Redis: an atomic Lua script, and data that survives kill -9 and a restart (AOF, fsync always) —
// stock and reservations depend on both.
import { afterAll, describe, expect, it } from 'vitest';
import { createRedis } from '../../common/redis.js';
import { type PrivateServer, startPrivateServer } from '../support/private-server.js';

// Takes one unit if any is left; returns the units left, or -1 when sold out.
const TAKE_UNIT = `
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left <= 0 then return -1 end
redis.call('DECR', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
return left - 1`;

let server: PrivateServer | undefined;
afterAll(async () => server?.dispose());

describe('Redis', () => {
  it('runs a Lua script atomically under concurrent callers', async () => {
    const redis = createRedis();
    const stock = `sale:{lua-${Date.now()}}:stock`;
    const taken = stock.replace(':stock', ':taken');
    await redis.set(stock, 50);
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => redis.eval(TAKE_UNIT, 2, stock, taken, `shopper-${i}`)));
    expect(results.filter((r) => r !== -1)).toHaveLength(50);
    expect(await redis.get(stock)).toBe('0');
    expect(await redis.llen(taken)).toBe(50);
    await redis.del(stock, taken);
    redis.disconnect();
  });

  it('keeps acknowledged writes through kill -9 and a restart', async () => {
    server = await startPrivateServer('redis');
    const redis = createRedis({}, server.url);
    await redis.set('sale:{restart}:stock', 500);
    for (let i = 0; i < 100; i++) await redis.eval(TAKE_UNIT, 2, 'sale:{restart}:stock', 'sale:{restart}:taken', `shopper-${i}`);
    redis.disconnect();

    await server.service.down(true); // SIGKILL: no chance to flush anything on the way out
    expect((await server.service.status()).running).toBe(false);
    await server.service.up();

    const after = createRedis({}, server.url);
    expect(await after.get('sale:{restart}:stock')).toBe('400');
    expect(await after.llen('sale:{restart}:taken')).toBe(100);
    after.disconnect();
  });
});
