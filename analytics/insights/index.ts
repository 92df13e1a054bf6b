// Every insight query, one typed function each (documented in README.md beside this file). Readers pass a
// @clickhouse/client from createWarehouseReader() (analytics/reader.ts).

export { type FlaggedShopper, flaggedShoppers, type IpHashCluster, ipHashClusters } from './bots.js';
export { FUNNEL_STEPS, type FunnelBreakdown, type FunnelRow, type FunnelStep, saleFunnel } from './funnel.js';
export {
  type BotFlaggedAttempts,
  botFlaggedAttempts,
  type MinuteOfWaitingRoom,
  type PipelineFreshness,
  pipelineFreshness,
  type RejectionCount,
  rejectionsByReason,
  type SecondOfSales,
  type SkuSellOut,
  type SkuStock,
  salesVelocity,
  timeToSellOut,
  unitsLeftPerSku,
  waitingRoom,
} from './live-sale.js';
export { type OfferOutcome, offerOutcomes } from './offers.js';
export { InsightError, type WarehouseReader } from './query.js';
export {
  type CartAbandoner,
  cartAbandoners,
  latePayersAndLapsed,
  type MissedOutShopper,
  missedOutShoppers,
  type NewVsReturning,
  newVsReturning,
  type PaymentOutcome,
  type RepeatBuyer,
  type RetentionPoint,
  repeatBuyers,
  retentionAcrossSales,
} from './shoppers.js';
export { ANON_TO_USER, stitchedClickstream } from './stitched.js';
