// The dashboards: the marketers' pages and the analysts' SQL notebooks, one fastify app on its own port
// (DASHBOARDS_PORT). Accounts, notebooks and history live in PostgreSQL (store.ts); numbers come from the
// warehouse endpoint as the read-only analyst role; sales are made through the sale core's admin API.
import type { ClickHouseClient } from '@clickhouse/client';
import fastifyStatic from '@fastify/static';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { createWarehouseReader } from '../analytics/reader.js';
import { config } from '../common/config.js';
import { createServiceApp } from '../common/http.js';
import { createPostgresPool, type pg } from '../common/postgres.js';
import { createRedis } from '../common/redis.js';
import { registerAuth, requireRole } from './auth.js';
import { BUILD_DIR, ensureFrontendBuilt } from './build.js';
import { dashboardError } from './errors.js';
import { registerInsightRoutes } from './insight-routes.js';
import { registerLiveRoutes } from './live.js';
import { registerNotebookRoutes } from './notebooks.js';
import { type OfferJobs, offerJobsFromAnalytics, offerRulesForPage, registerOfferJobRoutes } from './offer-jobs.js';
import { limitConcurrency } from './reader-limit.js';
import { SaleCoreClient } from './sale-core-client.js';
import { DashboardStore, ROLES, type Role, type SeedAccount } from './store.js';

export interface DashboardsOptions {
  /** The warehouse as the read-only analyst role; default createWarehouseReader({ role: 'analyst' }). */
  reader?: ClickHouseClient;
  port?: number;
  host?: string;
  pool?: pg.Pool;
  /** PostgreSQL schema of the dashboards' tables (tests use one of their own). */
  pgSchema?: string;
  saleUrl?: string;
  saleAdminToken?: string;
  /** Offer jobs run from the Offers page; default: analytics' job as the `offers` warehouse role. null: none. */
  offerJobs?: OfferJobs | null;
  /** Demo accounts (one marketer, one analyst): development and test only, never in production. */
  demoAccounts?: boolean;
  admin?: { email: string; password: string };
  signin?: Partial<{ failuresPerAccount: number; failuresPerIp: number; windowSeconds: number }>;
}

export interface Dashboards {
  app: FastifyInstance;
  url: string;
  store: DashboardStore;
  close(): Promise<void>;
}

/** The demo accounts; their passwords are in dashboards/README.md, so they exist only outside production. */
export const DEMO_ACCOUNTS: readonly SeedAccount[] = [
  { email: 'marketer@flashsale.local', name: 'Demo marketer', role: 'marketer', password: 'demo-marketer-password' },
  { email: 'analyst@flashsale.local', name: 'Demo analyst', role: 'analyst', password: 'demo-analyst-password' },
];

const shell = (title: string) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title><link rel="stylesheet" href="/assets/app.css"></head>
<body><div id="root"></div><script type="module" src="/assets/app.js"></script></body></html>`;

export async function startDashboards(options: DashboardsOptions = {}): Promise<Dashboards> {
  const settings = config().dashboards;
  const ownPool = !options.pool;
  const pool = options.pool ?? createPostgresPool({ max: 5 });
  const store = new DashboardStore(pool, options.pgSchema);
  await store.ensure();
  const admin = options.admin ?? { email: settings.adminEmail, password: settings.adminPassword };
  const demo = options.demoAccounts ?? config().env !== 'production';
  await store.seedAccounts([
    { email: admin.email, name: 'Administrator', role: 'admin', password: admin.password },
    ...(demo ? DEMO_ACCOUNTS : []),
  ]);
  await ensureFrontendBuilt();

  const ownReader = !options.reader;
  const reader = options.reader ?? createWarehouseReader({ role: 'analyst' });
  const pagesReader = limitConcurrency(reader, 2);
  const notebookReader = limitConcurrency(reader, 1);
  const offerJobs = options.offerJobs === undefined ? lazyOfferJobs() : (options.offerJobs ?? undefined);
  const saleCore = new SaleCoreClient(options.saleUrl ?? settings.saleUrl, options.saleAdminToken ?? config().sale.adminToken);
  const app = await createServiceApp({
    name: 'dashboards',
    description: 'Dashboards for marketers and SQL notebooks for data scientists.',
    ready: async () => (await pool.query('SELECT 1')).rowCount === 1,
    bodyLimit: 256 * 1024,
    // Staff traffic: lines per request are cheap here, and the trail of which address opened what.
    logEveryRequest: true,
  });
  // Everything of the app in one encapsulated scope, so its security hooks and error wording cover exactly its routes.
  await app.register(async (scope) => {
    await registerAuth(scope, store, {
      sessionSecret: settings.sessionSecret,
      secureCookie: config().env === 'production',
      signinFailuresPerAccount: options.signin?.failuresPerAccount ?? settings.signinFailuresPerAccount,
      signinFailuresPerIp: options.signin?.failuresPerIp ?? settings.signinFailuresPerIp,
      signinWindowSeconds: options.signin?.windowSeconds ?? settings.signinWindowSeconds,
    });
    await scope.register(fastifyStatic, { root: BUILD_DIR, prefix: '/assets/', index: false, maxAge: 0, etag: true });
    const page = shell('Flash sale dashboards');
    scope.get('/', { schema: { hide: true } }, async (_request, reply) => reply.type('text/html').send(page));
    scope.get('/signin', { schema: { hide: true } }, async (_request, reply) =>
      reply.type('text/html').send(shell('Sign in · Flash sale dashboards')),
    );

    registerInsightRoutes(scope, { store, reader: pagesReader, saleCore, offerJobs });
    registerLiveRoutes(scope, pagesReader, saleCore);
    registerNotebookRoutes(scope, store, notebookReader);
    registerOfferJobRoutes(scope, offerJobs);
    registerAccountRoutes(scope, store);
  });

  const url = await app.listen({ port: options.port ?? settings.port, host: options.host ?? settings.host });
  return {
    app,
    url,
    store,
    async close() {
      await app.close();
      await offerJobs?.close?.();
      if (ownReader) await reader.close();
      if (ownPool) await pool.end();
    },
  };
}

/** Opens the `offers` warehouse role and Redis only when a marketer first runs a job (or reads the rules). */
function lazyOfferJobs(): OfferJobs {
  let opened: { jobs: OfferJobs; close(): Promise<void> } | undefined;
  const open = () => {
    if (!opened) {
      const reader = createWarehouseReader({ role: 'offers' });
      const redis = createRedis();
      opened = {
        jobs: offerJobsFromAnalytics({ reader, redis }),
        async close() {
          await reader.close();
          redis.disconnect();
        },
      };
    }
    return opened.jobs;
  };
  return {
    rules: async () => offerRulesForPage(),
    run: (request, progress) => open().run(request, progress),
    close: async () => opened?.close(),
  };
}

function registerAccountRoutes(root: FastifyInstance, store: DashboardStore): void {
  const app = root.withTypeProvider<TypeBoxTypeProvider>();
  const admin = { preHandler: requireRole('admin') };
  app.get('/api/admin/accounts', admin, async () => ({ accounts: await store.listAccounts() }));
  app.post(
    '/api/admin/accounts',
    {
      ...admin,
      schema: {
        body: Type.Object(
          {
            email: Type.String({ minLength: 3, maxLength: 200, pattern: '^[^@\\s]+@[^@\\s]+$' }),
            name: Type.String({ minLength: 1, maxLength: 200 }),
            role: Type.Union(ROLES.map((r) => Type.Literal(r))),
            password: Type.String({ minLength: 12, maxLength: 200 }),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      const created = await store.createAccount({ ...request.body, role: request.body.role as Role });
      if (!created) throw dashboardError('ACCOUNT_EXISTS');
      reply.code(201);
      return created;
    },
  );
}
