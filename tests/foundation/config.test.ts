import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../common/config.js';

describe('config', () => {
  it('defaults point at the local stack', () => {
    const cfg = loadConfig({});
    expect(cfg.redis.url).toBe('redis://127.0.0.1:16379');
    expect(cfg.kafka.brokers).toEqual(['127.0.0.1:19092']);
    expect(cfg.postgres.url).toBe('postgres://flashsale@127.0.0.1:15432/flashsale');
    expect(cfg.warehouse.clickhouseUrl).toBeUndefined();
  });

  it('moving a stack port moves the client default with it', () => {
    expect(loadConfig({ STACK_REDIS_PORT: '17000' }).redis.url).toBe('redis://127.0.0.1:17000');
  });

  it.each([
    ['STACK_REDIS_PORT', 'abc', /STACK_REDIS_PORT must be a whole number/],
    ['STACK_KAFKA_PORT', '80', /STACK_KAFKA_PORT must be between 1024 and 65535/],
    ['REDIS_URL', 'http://x', /REDIS_URL must use redis: or rediss:/],
    ['DATABASE_URL', 'not a url', /DATABASE_URL must be a URL/],
    ['KAFKA_BROKERS', 'localhost', /KAFKA_BROKERS must list host:port pairs/],
    ['LOG_LEVEL', 'loud', /LOG_LEVEL must be one of/],
    ['ACCESS_LOG', 'verbose', /ACCESS_LOG must be one of/],
    ['SLOW_REQUEST_MS', '0', /SLOW_REQUEST_MS must be between 1 and/],
    ['CLICKHOUSE_URL', 'ftp://x', /CLICKHOUSE_URL must use http: or https:/],
  ])('a bad %s stops the start and names the variable', (variable, value, message) => {
    expect(() => loadConfig({ [variable]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [variable]: value })).toThrow(message);
  });

  it('refuses the development secrets in production, naming each one left unset', () => {
    // Modules add secrets of their own; find them the way an operator would, one refusal at a time.
    const secrets: Record<string, string> = {};
    for (let missing = 0; missing < 50; missing++) {
      try {
        loadConfig({ NODE_ENV: 'production', ...secrets });
        break;
      } catch (error) {
        const name = /^config: (\w+) must be set in production/.exec((error as Error).message)?.[1];
        if (!name) throw error;
        secrets[name] = `${name.toLowerCase()}-${'x'.repeat(16)}`;
      }
    }
    expect(Object.keys(secrets)).toEqual(expect.arrayContaining(['SALE_TOKEN_SECRET', 'SALE_ADMIN_TOKEN']));
    for (const name of Object.keys(secrets)) {
      expect(() => loadConfig({ NODE_ENV: 'production', ...secrets, [name]: '' })).toThrow(`config: ${name} must be set in production`);
    }
    const production = loadConfig({ NODE_ENV: 'production', ...secrets });
    expect(production.sale.adminToken).toBe(secrets.SALE_ADMIN_TOKEN);
    expect(production.sale.tokenSecret).toBe(secrets.SALE_TOKEN_SECRET);
    expect(() => loadConfig({ SALE_TOKEN_SECRET: 'short' })).toThrow(/SALE_TOKEN_SECRET must be at least 16 characters/);
  });
});
