// Server-sent events over fastify's raw response: the route hands the socket over (hijack) and writes
// `event:`/`data:` frames itself. A comment line every 15 s keeps proxies from closing an idle stream.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { answeredAsStream } from '../common/http-requests.js';

export interface EventStream {
  send(event: string, data: unknown): void;
  readonly closed: boolean;
  onClose(listener: () => void): void;
}

export function openEventStream(request: FastifyRequest, reply: FastifyReply): EventStream {
  answeredAsStream(reply);
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    connection: 'keep-alive',
    'x-content-type-options': 'nosniff',
  });
  raw.write('retry: 2000\n\n');
  let closed = false;
  const listeners: (() => void)[] = [];
  const keepAlive = setInterval(() => raw.write(': keep-alive\n\n'), 15_000);
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(keepAlive);
    for (const listener of listeners) listener();
  };
  request.raw.on('close', close);
  raw.on('close', close);
  return {
    send(event, data) {
      if (!closed) raw.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    get closed() {
      return closed;
    },
    onClose(listener) {
      if (closed) listener();
      else listeners.push(listener);
    },
  };
}
