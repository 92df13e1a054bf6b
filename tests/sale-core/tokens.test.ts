// Token signatures are compared character by character (tokens.ts sameText): every position counts.
import { expect, it } from 'vitest';
import { checkTicket, issueTicket } from '../../sale-core/tokens.js';

it('a ticket verifies only with its own signature, whatever character of it differs', () => {
  const secret = 'tokens-test-secret';
  const ticket = issueTicket({ saleId: 's-1', userId: 'u-1', position: 3, expiresAt: Date.now() + 60_000 }, secret);
  expect(checkTicket(ticket, 's-1', 'u-1', secret)).toMatchObject({ ok: true, ticket: { userId: 'u-1', position: 3 } });
  const dot = ticket.indexOf('.');
  const signature = ticket.slice(dot + 1);
  const other = (c: string) => (c === 'A' ? 'B' : 'A');
  for (const at of [0, 1, Math.floor(signature.length / 2), signature.length - 2]) {
    const altered = signature.slice(0, at) + other(signature[at]!) + signature.slice(at + 1);
    expect(checkTicket(`${ticket.slice(0, dot)}.${altered}`, 's-1', 'u-1', secret)).toEqual({ ok: false, code: 'TICKET_INVALID' });
  }
  for (const wrongLength of [signature.slice(0, -1), `${signature}A`, '']) {
    expect(checkTicket(`${ticket.slice(0, dot)}.${wrongLength}`, 's-1', 'u-1', secret)).toEqual({ ok: false, code: 'TICKET_INVALID' });
  }
});
