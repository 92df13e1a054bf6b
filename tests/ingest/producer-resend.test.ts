// Why the ingest tests' producer is idempotent. kafkajs re-sends a whole produce request when the broker's
// answer is lost (or one partition of it fails for a retriable reason); a producer without an id then has
// the broker append the same events again at new offsets, which ingest stores as re-sent events (counted
// twice by the rollups, see ingest/README.md) and an exactly-once test reads as a double count.
import net from 'node:net';
import type { ISocketFactory, Kafka } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { createTestTopic, deleteTopics } from '../support/kafka.js';
import { connectedProducer, messagesIn } from './support/events.js';

const PRODUCE_API_KEY = 0;

/**
 * Sockets that lose the broker's answer to the first produce request sent after `loseNextAnswer()`: the
 * broker has appended the batch, the producer only sees its connection fail, and retries.
 */
function lossyConnections() {
  let armed = false;
  const socketFactory: ISocketFactory = ({ host, port, onConnect }) => {
    const socket = net.connect({ host, port }, onConnect);
    const lost = new Set<number>();
    let head = Buffer.alloc(0);
    const write = socket.write.bind(socket) as (chunk: unknown, ...rest: unknown[]) => boolean;
    // kafkajs writes one whole request per call: size, api key, api version, correlation id.
    socket.write = ((chunk: unknown, ...rest: unknown[]) => {
      if (armed && Buffer.isBuffer(chunk) && chunk.length >= 12 && chunk.readInt16BE(4) === PRODUCE_API_KEY) {
        lost.add(chunk.readInt32BE(8));
        armed = false;
      }
      return write(chunk, ...rest);
    }) as typeof socket.write;
    const emit = socket.emit.bind(socket) as (event: string | symbol, ...args: unknown[]) => boolean;
    socket.emit = ((event: string | symbol, ...args: unknown[]) => {
      if (event !== 'data' || lost.size === 0) return emit(event, ...args);
      // A response starts with its size and the request's correlation id: hold bytes until both are here.
      head = Buffer.concat([head, args[0] as Buffer]);
      if (head.length < 8) return true;
      if (lost.has(head.readInt32BE(4))) {
        socket.destroy(new Error('the produce answer was lost on the way'));
        return true;
      }
      const data = head;
      head = Buffer.alloc(0);
      return emit('data', data);
    }) as typeof socket.emit;
    return socket;
  };
  return {
    socketFactory,
    loseNextAnswer() {
      armed = true;
    },
  };
}

describe('the ingest tests producer', () => {
  let kafka: Kafka;
  const topics: string[] = [];
  beforeAll(() => {
    kafka = createKafka('producer-resend');
  });
  afterAll(async () => {
    await deleteTopics(topics, kafka).catch(() => {});
  });

  const sendWithLostAnswer = async (idempotent: boolean) => {
    const topic = await createTestTopic('resend.v1', 6, kafka);
    topics.push(topic);
    const lossy = lossyConnections();
    const client = createKafka('producer-resend-lossy', { socketFactory: lossy.socketFactory });
    const producer = idempotent ? await connectedProducer(client) : client.producer({ allowAutoTopicCreation: false });
    try {
      if (!idempotent) await producer.connect();
      // A first send opens the connection and loads the metadata, so the lost answer is the batch's.
      await producer.send({ topic, acks: -1, messages: [{ key: 'user-0', value: 'first' }] });
      lossy.loseNextAnswer();
      const messages = Array.from({ length: 200 }, (_, i) => ({ key: `user-${i % 50}`, value: `event-${i}` }));
      await producer.send({ topic, acks: -1, messages });
    } finally {
      await producer.disconnect();
    }
    return messagesIn(kafka, topic);
  };

  it('a plain kafkajs producer appends a batch twice when the broker answer is lost', async () => {
    // The request whose answer was lost is appended twice. kafkajs usually sends the 200 events as one request
    // (401 in all), but it may split them, and then only the lost request's share comes twice (one CI run: 373).
    const held = await sendWithLostAnswer(false);
    expect(held).toBeGreaterThan(201);
    expect(held).toBeLessThanOrEqual(401);
  });

  it('connectedProducer (idempotent) appends every event once all the same', async () => {
    expect(await sendWithLostAnswer(true)).toBe(201);
  });
});
