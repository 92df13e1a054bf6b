// Shopper identity: signed session tokens. A visitor gets an anonymous session (anon id); logging in
// issues a token for the same session and anon id with the user id, and the login event stitches the
// anonymous clickstream to the shopper. Login here is simulated (no password check): the identity
// provider is outside this service.
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { type SaleContext, shopperContext } from './context.js';
import { SALE_ID_PATTERN } from './keys.js';
import { issueSession, newAnonymousSession } from './tokens.js';
import { track } from './track.js';

const SessionAnswer = Type.Object({
  token: Type.String(),
  session_id: Type.String(),
  anon_id: Type.String(),
  user_id: Type.Union([Type.String(), Type.Null()]),
  expires_at: Type.Integer(),
});

export function registerSessionRoutes(app: FastifyInstance, sc: SaleContext): void {
  app.post(
    '/session',
    { schema: { tags: ['shopper'], summary: 'Start an anonymous session', response: { 200: SessionAnswer } } },
    async () => {
      const session = newAnonymousSession(sc.settings.sessionTtlSeconds);
      return {
        token: issueSession(session, sc.settings.tokenSecret),
        session_id: session.sessionId,
        anon_id: session.anonId,
        user_id: null,
        expires_at: session.expiresAt,
      };
    },
  );

  app.post(
    '/session/login',
    {
      schema: {
        tags: ['shopper'],
        summary: 'Log in (simulated): the session keeps its anon id and gains a user id',
        body: Type.Object(
          {
            user_id: Type.String({ pattern: '^[A-Za-z0-9._-]{1,64}$' }),
            sale_id: Type.Optional(Type.String({ pattern: SALE_ID_PATTERN })),
          },
          { additionalProperties: false },
        ),
        response: { 200: SessionAnswer },
      },
    },
    async (request) => {
      const { user_id, sale_id } = request.body as { user_id: string; sale_id?: string };
      const ctx = shopperContext(request, sc.settings, false);
      const base = ctx?.session ?? newAnonymousSession(sc.settings.sessionTtlSeconds);
      const session = { ...base, userId: user_id, expiresAt: Date.now() + sc.settings.sessionTtlSeconds * 1000 };
      if (ctx && sale_id) track(sc, { ...ctx, session }, sale_id, null, { type: 'login' });
      return {
        token: issueSession(session, sc.settings.tokenSecret),
        session_id: session.sessionId,
        anon_id: session.anonId,
        user_id,
        expires_at: session.expiresAt,
      };
    },
  );
}
