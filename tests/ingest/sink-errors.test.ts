// What ingest branches on when a write or a commit fails: whether a retry can help (warehouse and order
// store, read from the real engines' errors) and whether the group took this member's place away
// (kafkajs's errors, wrapped as kafkajs wraps them).
import { ClickHouseError } from '@clickhouse/client';
import { KafkaJSNonRetriableError, KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError } from 'kafkajs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { classifyWarehouseFailure, WarehouseError } from '../../analytics/warehouse/warehouse.js';
import { createPostgresPool } from '../../common/postgres.js';
import { orderStoreErrorOf } from '../../ingest/order-store.js';
import { isRefusedForGood } from '../../ingest/sink.js';
import { groupChangeOf } from '../../ingest/sink-consumer.js';
import { openTestWarehouse, type TestWarehouse } from './support/warehouse.js';

/** A broker error as kafkajs builds it from a response code. */
function brokerError(type: string, code: number, message: string): KafkaJSProtocolError {
  return new KafkaJSProtocolError(Object.assign(new Error(message), { type, code, retriable: false }));
}

describe('sink errors: retriable or refused for good', () => {
  let test: TestWarehouse;
  let pool: pg.Pool;
  beforeAll(async () => {
    test = await openTestWarehouse();
    pool = createPostgresPool({ max: 2 });
  });
  afterAll(async () => {
    await test?.dispose();
    await pool?.end();
  });

  const failureOf = (promise: Promise<unknown>) =>
    promise.then(
      () => {
        throw new Error('expected a failure');
      },
      (error: unknown) => error,
    );

  it('chdb: bad data is refused for good, a missing table is retriable', async () => {
    const badData = await failureOf(test.warehouse.insert('clickstream_events', [{ event_id: 'not-a-uuid' }]));
    expect(badData).toBeInstanceOf(WarehouseError);
    expect(badData).toMatchObject({ retriable: false, code: 'CANNOT_PARSE_UUID', clickhouseCode: 376 });
    expect(isRefusedForGood(badData)).toBe(true);

    const notMigrated = await failureOf(test.warehouse.insert('no_such_table', [{ a: 1 }]));
    expect(notMigrated).toMatchObject({ retriable: true, code: 'UNKNOWN_TABLE', clickhouseCode: 60 });
    expect(isRefusedForGood(notMigrated)).toBe(false);
  });

  it('server client errors and socket errors are read the same way', () => {
    const serverRefusal = new ClickHouseError({ message: 'Cannot parse input', code: '27', type: 'CANNOT_PARSE_INPUT_ASSERTION_FAILED' });
    expect(classifyWarehouseFailure(serverRefusal)).toEqual({
      code: 'CANNOT_PARSE_INPUT_ASSERTION_FAILED',
      clickhouseCode: 27,
      retriable: false,
    });
    const overload = new ClickHouseError({ message: 'Too many simultaneous queries', code: '202', type: 'TOO_MANY_SIMULTANEOUS_QUERIES' });
    expect(classifyWarehouseFailure(overload)).toEqual({ code: 'TOO_MANY_SIMULTANEOUS_QUERIES', clickhouseCode: 202, retriable: true });
    const fromText = new Error('Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED) (version 26.7)');
    expect(classifyWarehouseFailure(new Error('insert failed', { cause: fromText }))).toEqual({
      code: 'MEMORY_LIMIT_EXCEEDED',
      clickhouseCode: 241,
      retriable: true,
    });
    const refused = new WarehouseError('insert into t failed', { cause: new Error('Code: 469. DB::Exception: Constraint `c` violated') });
    expect(refused).toMatchObject({ code: 'VIOLATED_CONSTRAINT', retriable: false });
    const unreachable = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8123'), { code: 'ECONNREFUSED' });
    expect(new WarehouseError('warehouse query failed', { cause: unreachable })).toMatchObject({ code: 'CONNECTION', retriable: true });
  });

  it('PostgreSQL: classes 22 and 23 are refused for good, the rest retriable', async () => {
    const nul = orderStoreErrorOf(await failureOf(pool.query('SELECT $1::text AS t', ['a\u0000b'])));
    expect(nul).toMatchObject({ code: '22021', retriable: false });
    const divide = orderStoreErrorOf(await failureOf(pool.query('SELECT 1 / 0')));
    expect(divide).toMatchObject({ code: '22012', retriable: false });
    const missing = orderStoreErrorOf(await failureOf(pool.query('SELECT * FROM no_such_table_for_ingest')));
    expect(missing).toMatchObject({ code: '42P01', retriable: true });
    const serialization = orderStoreErrorOf(Object.assign(new Error('could not serialize access'), { code: '40001' }));
    expect(serialization).toMatchObject({ code: '40001', retriable: true });
    const down = orderStoreErrorOf(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
    expect(down).toMatchObject({ code: 'ECONNREFUSED', retriable: true });
    expect(isRefusedForGood(nul)).toBe(true);
    expect(isRefusedForGood(down)).toBe(false);
  });

  it('reads a group change through kafkajs wrappers whose own type is undefined', () => {
    const evicted = brokerError('UNKNOWN_MEMBER_ID', 25, 'The coordinator is not aware of this member');
    // As an OffsetCommit refusal reaches the caller: a non-retriable wrapper, its `type` undefined.
    const wrapped = new (KafkaJSNonRetriableError as unknown as new (e: Error, options: { cause: Error }) => Error)(evicted, {
      cause: evicted,
    });
    expect((wrapped as { type?: string }).type).toBeUndefined();
    expect(groupChangeOf(wrapped)).toBe('UNKNOWN_MEMBER_ID');
    const twice = new KafkaJSNumberOfRetriesExceeded(wrapped, { retryCount: 5, retryTime: 1000 });
    expect(groupChangeOf(twice)).toBe('UNKNOWN_MEMBER_ID');
    expect(groupChangeOf(brokerError('REBALANCE_IN_PROGRESS', 27, 'The group is rebalancing'))).toBe('REBALANCE_IN_PROGRESS');
    expect(groupChangeOf(brokerError('NOT_LEADER_FOR_PARTITION', 6, 'not the leader'))).toBeUndefined();
    expect(groupChangeOf(new Error('socket hang up'))).toBeUndefined();
  });
});
