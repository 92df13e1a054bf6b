// Running an offer job from the Offers page and watching it: the job itself is analytics' (segments,
// rules, hold-out, Redis offers); this file keeps the runs started here in memory with their progress
// and streams that progress to the page. A run survives a closed page; the list forgets it an hour
// after it finished.
import { randomUUID } from 'node:crypto';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import Type from 'typebox';
import type { WarehouseReader } from '../analytics/insights/index.js';
import { loadOfferRules, type OfferRule, runOfferJob } from '../analytics/offers/index.js';
import { requireRole, signedInAccount } from './auth.js';
import { dashboardError } from './errors.js';
import { SALE_ID } from './insight-routes.js';
import { openEventStream } from './sse.js';

export interface OfferJobProgress {
  run_id: string;
  step: string;
  done: number;
  total: number;
  finished: boolean;
  error: string | null;
}

export interface OfferJobRequest {
  runId: string;
  fromSales: string[];
  forSale: string;
  requestedBy: string;
}

/** What the dashboards need from the offer loop; main wiring passes analytics' implementation. */
export interface OfferJobs {
  /** The rules as a marketer reads them. */
  rules(): Promise<Record<string, unknown>[]>;
  /** Runs one job to the end, reporting each step. */
  run(request: OfferJobRequest, progress: (step: string, done: number, total: number) => void): Promise<void>;
  /** Lets go of what the jobs opened (warehouse client, Redis). */
  close?(): Promise<void>;
}

export function registerOfferJobRoutes(root: FastifyInstance, jobs: OfferJobs | undefined): void {
  const app = root.withTypeProvider<TypeBoxTypeProvider>();
  const runs = new Map<string, { progress: OfferJobProgress; listeners: Set<(p: OfferJobProgress) => void> }>();

  app.post(
    '/api/offers/runs',
    {
      preHandler: requireRole('marketer'),
      schema: {
        body: Type.Object(
          {
            from_sales: Type.Array(Type.String({ pattern: SALE_ID }), { minItems: 1, maxItems: 32 }),
            for_sale: Type.String({ pattern: SALE_ID }),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (request, reply) => {
      if (!jobs) throw dashboardError('OFFER_JOB_UNAVAILABLE');
      const runId = `dash-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '')}-${randomUUID().slice(0, 8)}`;
      const entry = {
        progress: { run_id: runId, step: 'queued', done: 0, total: 0, finished: false, error: null } as OfferJobProgress,
        listeners: new Set<(p: OfferJobProgress) => void>(),
      };
      runs.set(runId, entry);
      const publish = (change: Partial<OfferJobProgress>) => {
        entry.progress = { ...entry.progress, ...change };
        for (const listener of entry.listeners) listener(entry.progress);
      };
      const request_ = {
        runId,
        fromSales: request.body.from_sales,
        forSale: request.body.for_sale,
        requestedBy: signedInAccount(request).email,
      };
      jobs
        .run(request_, (step, done, total) => publish({ step, done, total }))
        .then(
          () => publish({ step: 'done', finished: true }),
          (error: Error) => publish({ step: 'failed', finished: true, error: error.message }),
        )
        .finally(() => setTimeout(() => runs.delete(runId), 3_600_000).unref());
      reply.code(202);
      return { run_id: runId };
    },
  );

  app.get(
    '/api/offers/runs/:run/stream',
    { preHandler: requireRole('marketer'), schema: { params: Type.Object({ run: Type.String({ pattern: '^[A-Za-z0-9_-]{1,80}$' }) }) } },
    async (request, reply) => {
      const entry = runs.get(request.params.run);
      if (!entry) throw dashboardError('OFFER_JOB_UNAVAILABLE', 'No such offer run started here (or it finished over an hour ago).');
      const stream = openEventStream(request, reply);
      const listener = (p: OfferJobProgress) => {
        stream.send('progress', p);
        if (p.finished) reply.raw.end();
      };
      entry.listeners.add(listener);
      stream.onClose(() => entry.listeners.delete(listener));
      listener(entry.progress);
    },
  );
}

/**
 * The offer loop's own job (analytics/offers) behind the page: the rules file as a marketer reads it, and
 * runOfferJob with the `offers` warehouse role (the only one that may write the offer tables) and Redis.
 */
export function offerJobsFromAnalytics(deps: { reader: WarehouseReader; redis: Redis; rulesFile?: string }): OfferJobs {
  return {
    rules: async () => offerRulesForPage(deps.rulesFile),
    async run(request, progress) {
      await runOfferJob({
        reader: deps.reader,
        redis: deps.redis,
        runId: request.runId,
        fromSales: request.fromSales,
        forSale: request.forSale,
        rules: loadOfferRules(deps.rulesFile),
        onProgress: progress,
      });
    },
  };
}

/** The rules file as a marketer reads it: one row per rule, conditions and offers in words. */
export function offerRulesForPage(file?: string): Record<string, unknown>[] {
  const rules = loadOfferRules(file);
  return rules.rules.map((rule) => ({
    id: rule.id,
    description: rule.description ?? '',
    when: describeCondition(rule.when),
    offer:
      rule.offer.kind === 'price'
        ? `${rule.offer.percent_off}% off${rule.offer.sku ? ` ${rule.offer.sku}` : ''}`
        : rule.offer.kind === 'early_access'
          ? `${rule.offer.minutes} min early access`
          : 'priority',
    budget: `${rule.budget.max_offers} offers${rule.budget.max_discount_cents === undefined ? '' : `, ${rule.budget.max_discount_cents / 100} off in total`}`,
    holdout_share: rules.holdout_share,
  }));
}

function describeCondition(when: OfferRule['when']): string {
  const parts: string[] = [];
  if (when.segments) parts.push(`segment ${when.segments.join(' or ')}`);
  if (when.events) parts.push(`after ${when.events.join(' or ')}`);
  if (when.min_sales_bought !== undefined) parts.push(`bought in ≥ ${when.min_sales_bought} sales`);
  if (when.min_spent_cents !== undefined) parts.push(`spent ≥ ${when.min_spent_cents / 100}`);
  if (when.min_missed_out !== undefined) parts.push(`missed out ≥ ${when.min_missed_out} times`);
  return parts.join(', ');
}
