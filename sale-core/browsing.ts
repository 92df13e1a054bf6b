// What shoppers do before buying (page views, product views, add-to-cart), reported by the shop's
// front end. They go to the clickstream; a product view is also remembered for the sale, because a
// purchase without any prior view is a bot signal.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { type SaleContext, shopperContext } from './context.js';
import { saleError } from './errors.js';
import { SALE_ID_PATTERN, SKU_PATTERN, saleKeys } from './keys.js';
import { shopperRouteLimits } from './rate-limits.js';
import { track } from './track.js';

const BrowsingEvent = Type.Union([
  Type.Object({ type: Type.Literal('page_view'), path: Type.String({ minLength: 1, maxLength: 512 }) }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('product_view'), sku: Type.String({ pattern: SKU_PATTERN }) }, { additionalProperties: false }),
  Type.Object(
    { type: Type.Literal('add_to_cart'), sku: Type.String({ pattern: SKU_PATTERN }), qty: Type.Integer({ minimum: 1, maximum: 100 }) },
    { additionalProperties: false },
  ),
]);

export const browsingRoutes: FastifyPluginAsyncTypebox<{ sc: SaleContext }> = async (app, { sc }) => {
  app.post(
    '/sales/:saleId/events',
    {
      onRequest: shopperRouteLimits(sc.settings, ['address', 'shopper']),
      schema: {
        tags: ['shopper'],
        summary: 'Report a page view, product view or add-to-cart',
        params: Type.Object({ saleId: Type.String({ pattern: SALE_ID_PATTERN }) }),
        body: BrowsingEvent,
        security: [{ ShopperSession: [] }],
        response: { 202: Type.Object({ accepted: Type.Boolean() }, { description: 'Accepted for the clickstream.' }) },
        errorStatuses: [429, 503],
      },
    },
    async (request, reply) => {
      const { saleId } = request.params;
      const body = request.body;
      const ctx = shopperContext(request, sc.settings)!;
      const { skus } = await sc.catalog.require(saleId);
      if (body.type === 'page_view') {
        track(sc, ctx, saleId, null, { type: 'page_view', path: body.path });
      } else {
        const product = skus.get(body.sku);
        if (!product) throw saleError('SKU_NOT_FOUND');
        if (body.type === 'product_view') {
          track(sc, ctx, saleId, body.sku, { type: 'product_view', price: product.price });
          // Fire-and-forget: a lost "viewed" mark only adds a false bot signal, never blocks a sale.
          sc.redis.sadd(saleKeys(saleId).viewed, ctx.session.sessionId).catch(() => {});
        } else {
          track(sc, ctx, saleId, body.sku, { type: 'add_to_cart', price: product.price, qty: body.qty });
        }
      }
      reply.code(202).send({ accepted: true });
    },
  );
};
