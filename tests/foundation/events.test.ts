import { describe, expect, it } from 'vitest';
import { decodeEvent, EventContractError, encodeEvent, keyOf, newEventId, topicOf } from '../../common/events.js';

const pageView = () => ({
  event_id: newEventId(),
  type: 'page_view' as const,
  ts: Date.now(),
  sale_id: 'sale-1',
  user_id: null,
  anon_id: 'anon-1',
  session_id: 'sess-1',
  sku: null,
  channel: 'web' as const,
  device: 'mobile',
  ip_hash: '0123456789abcdef',
  path: '/sales/sale-1',
});

function reasonOf(action: () => unknown): string | undefined {
  try {
    action();
  } catch (error) {
    if (error instanceof EventContractError) return error.reason;
    throw error;
  }
  return undefined;
}

describe('event contract', () => {
  it('round-trips a valid event', () => {
    const event = pageView();
    expect(decodeEvent(encodeEvent(event))).toEqual(event);
  });

  it('event ids are UUIDv7 and ordered by time', () => {
    const a = newEventId(1_700_000_000_000);
    const b = newEventId(1_700_000_000_001);
    expect(a[14]).toBe('7');
    expect(a < b).toBe(true);
  });

  it('routes events to their topic and keys them by shopper', () => {
    expect(topicOf('page_view')).toBe('clickstream.v1');
    expect(topicOf('order_paid')).toBe('orders.v1');
    expect(keyOf(pageView())).toBe('anon-1');
    expect(keyOf({ ...pageView(), user_id: 'u-9' })).toBe('u-9');
  });

  it('rejects malformed JSON, unknown types, schema violations and the wrong topic', () => {
    expect(reasonOf(() => decodeEvent(Buffer.from('{not json')))).toBe('malformed_json');
    expect(reasonOf(() => decodeEvent(null))).toBe('malformed_json');
    expect(reasonOf(() => decodeEvent(Buffer.from(JSON.stringify({ ...pageView(), type: 'teleport' }))))).toBe('unknown_type');
    expect(reasonOf(() => decodeEvent(Buffer.from(JSON.stringify({ ...pageView(), ts: 'yesterday' }))))).toBe('schema_violation');
    expect(reasonOf(() => decodeEvent(Buffer.from(JSON.stringify({ ...pageView(), ip_hash: '10.0.0.1' }))))).toBe('schema_violation');
    expect(reasonOf(() => decodeEvent(Buffer.from(JSON.stringify({ ...pageView(), extra: 1 }))))).toBe('schema_violation');
    expect(reasonOf(() => decodeEvent(encodeEvent(pageView()), 'orders.v1'))).toBe('wrong_topic');
  });

  it('names the offending field in the message', () => {
    expect(() => decodeEvent(Buffer.from(JSON.stringify({ ...pageView(), channel: 'fax' })))).toThrow(/\/channel/);
  });

  it('refuses to encode an event that does not match its schema', () => {
    expect(() => encodeEvent({ ...pageView(), sale_id: '' })).toThrow(EventContractError);
  });
});
