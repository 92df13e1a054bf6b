// Who may do what, all by the ecosystem's plugins: an encrypted and signed session cookie
// (@fastify/secure-session: HttpOnly, SameSite=Strict), CSRF tokens checked on every state-changing
// request (@fastify/csrf-protection, the secret kept in that session), security headers with a content
// security policy (@fastify/helmet). Sign-in checks a scrypt hash and counts failures per account and per
// client address in PostgreSQL, so the limit holds across restarts and across several app processes.
import { createHash } from 'node:crypto';
import csrf from '@fastify/csrf-protection';
import helmet from '@fastify/helmet';
import secureSession from '@fastify/secure-session';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import Type from 'typebox';
import { dashboardError } from './errors.js';
import { type Account, type DashboardStore, decoyPasswordHash, type Role, verifyPassword } from './store.js';

declare module '@fastify/secure-session' {
  interface SessionData {
    account: Account;
    _csrf: string;
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    account?: Account;
  }
}

export interface AuthOptions {
  sessionSecret: string;
  /** Secure cookies only over HTTPS: on in production, off on the loopback development address. */
  secureCookie: boolean;
  signinFailuresPerAccount: number;
  signinFailuresPerIp: number;
  signinWindowSeconds: number;
}

const SESSION_HOURS = 12;
const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
// Reachable without a session: the sign-in page, its assets, the token it needs, and the ops routes.
const PUBLIC_PATHS = new Set(['/signin', '/api/csrf', '/api/signin', '/healthz', '/readyz', '/metrics', '/favicon.ico']);

export async function registerAuth(app: FastifyInstance, store: DashboardStore, o: AuthOptions): Promise<void> {
  await app.register(helmet, {
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        scriptSrc: ["'self'"],
        // Chart.js and preact set element styles through the DOM (allowed); no inline <style> or style="".
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:', 'blob:'],
        connectSrc: ["'self'"],
        fontSrc: ["'self'"],
        objectSrc: ["'none'"],
        baseUri: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
      },
    },
    // The app is served over plain HTTP on the loopback address in development: HSTS only in production.
    hsts: o.secureCookie,
  });
  await app.register(secureSession, {
    // A 32-byte key derived from the configured secret (the plugin wants exactly that length).
    key: createHash('sha256').update(o.sessionSecret).digest(),
    cookieName: 'flashsale_dashboards',
    expiry: SESSION_HOURS * 3600,
    cookie: { path: '/', httpOnly: true, sameSite: 'strict', secure: o.secureCookie, maxAge: SESSION_HOURS * 3600 },
  });
  await app.register(csrf, { sessionPlugin: '@fastify/secure-session' });
  // The plugin answers a bad token with its own error; say it in our words (the app's scope only).
  app.setErrorHandler((error: FastifyError) => {
    if (error.code?.startsWith('FST_CSRF_')) throw dashboardError('CSRF_INVALID');
    throw error;
  });

  // Order matters: CSRF first (a forged request learns nothing, not even whether a session exists), then
  // the session. Both are app-wide hooks so no route can forget them.
  app.addHook('onRequest', (request, reply, done) => {
    if (!STATE_CHANGING.has(request.method)) return done();
    app.csrfProtection(request, reply, done);
  });
  app.addHook('onRequest', async (request, reply) => {
    const account = request.session.get('account');
    if (account) request.account = account;
    const path = request.url.split('?')[0]!;
    if (account || PUBLIC_PATHS.has(path) || path.startsWith('/assets/')) return;
    if (path.startsWith('/api/')) throw dashboardError('SIGNIN_REQUIRED');
    return reply.redirect(`/signin?next=${encodeURIComponent(request.url)}`, 302);
  });

  app.get('/api/csrf', { schema: { hide: true } }, async (_request, reply) => ({ token: reply.generateCsrf() }));

  app.withTypeProvider<TypeBoxTypeProvider>().post(
    '/api/signin',
    {
      schema: {
        summary: 'Sign in with email and password',
        body: Type.Object(
          { email: Type.String({ minLength: 3, maxLength: 200 }), password: Type.String({ minLength: 1, maxLength: 200 }) },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const { email, password } = request.body;
      const subjects = { account: `account:${email.toLowerCase()}`, ip: `ip:${request.ip}` };
      const failures = await store.recentFailures([subjects.account, subjects.ip], o.signinWindowSeconds);
      if ((failures[subjects.account] ?? 0) >= o.signinFailuresPerAccount || (failures[subjects.ip] ?? 0) >= o.signinFailuresPerIp) {
        throw dashboardError('SIGNIN_LIMITED', undefined, { 'retry-after': String(o.signinWindowSeconds) });
      }
      const found = await store.accountWithHash(email);
      const matches = await verifyPassword(password, found?.password_hash ?? (await decoyPasswordHash()));
      if (!found || !matches) {
        await store.recordFailure([subjects.account, subjects.ip]);
        throw dashboardError('SIGNIN_FAILED');
      }
      await store.clearFailures(subjects.account);
      const account: Account = { id: found.id, email: found.email, name: found.name, role: found.role };
      // A fresh session (and CSRF secret) at sign-in: nothing from before it carries over.
      request.session.regenerate();
      request.session.set('account', account);
      return { account, csrf: reply.generateCsrf() };
    },
  );

  app.post('/api/signout', { schema: { hide: true } }, async (request) => {
    request.session.delete();
    return { signed_out: true };
  });

  app.get('/api/me', { schema: { hide: true } }, async (request) => ({ account: request.account }));
}

/** A preHandler that lets only the given roles through (admin passes every role check). */
export function requireRole(...roles: Role[]) {
  return async (request: FastifyRequest, _reply: FastifyReply) => {
    const account = request.account;
    if (!account) throw dashboardError('SIGNIN_REQUIRED');
    if (account.role !== 'admin' && !roles.includes(account.role)) throw dashboardError('ROLE_REQUIRED');
  };
}

export function signedInAccount(request: FastifyRequest): Account {
  if (!request.account) throw dashboardError('SIGNIN_REQUIRED');
  return request.account;
}
