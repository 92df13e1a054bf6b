// Shopper identity: signed session tokens. A visitor gets an anonymous session (anon id); logging in
// issues a token for the same session and anon id with the user id, and the login event stitches the
// anonymous clickstream to the shopper. Login here is simulated (no password check): the identity
// provider is outside this service.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { type SaleContext, shopperContext } from './context.js';
import { SALE_ID_PATTERN } from './keys.js';
import { shopperRouteLimits } from './rate-limits.js';
import { issueSession, newAnonymousSession } from './tokens.js';
import { track } from './track.js';

const SessionAnswer = Type.Object({
  token: Type.String(),
  session_id: Type.String(),
  anon_id: Type.String(),
  user_id: Type.Union([Type.String(), Type.Null()]),
  expires_at: Type.Integer(),
});

export const sessionRoutes: FastifyPluginAsyncTypebox<{ sc: SaleContext }> = async (app, { sc }) => {
  app.post(
    '/session',
    {
      // Sessions cost nothing to mint, so a flood of them is limited per address.
      onRequest: shopperRouteLimits(sc.settings, ['address']),
      schema: {
        tags: ['shopper'],
        summary: 'Start an anonymous session',
        security: [],
        response: { 200: SessionAnswer },
        errorStatuses: [429],
      },
    },
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
      onRequest: shopperRouteLimits(sc.settings, ['address', 'shopper']),
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
        // The token is optional: with one, the session keeps its anon id and session id.
        security: [{}, { ShopperSession: [] }],
        response: { 200: SessionAnswer },
        errorStatuses: [429],
      },
    },
    async (request) => {
      const { user_id, sale_id } = request.body;
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
};
