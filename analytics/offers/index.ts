// The offer loop: rules, the batch offer job, real-time offers during a sale, and the uplift report.
export {
  decideOffer,
  holdoutDraw,
  isHeldOut,
  OfferBudget,
  type OfferCandidate,
  type OfferDecision,
  offerIdFor,
  offerOf,
} from './assign.js';
export { OfferJobError, type OfferJobOptions, type OfferJobResult, type OfferJobStep, runOfferJob } from './job.js';
export { type RealtimeOffers, type RealtimeOffersOptions, SaleBehaviour, startRealtimeOffers, triggerOf } from './realtime.js';
export {
  DEFAULT_RULES_FILE,
  loadOfferRules,
  OFFER_TRIGGERS,
  type OfferRule,
  type OfferRules,
  OfferRulesError,
  type OfferTrigger,
  parseOfferRules,
} from './rules.js';
export { OFFER_TABLES, type OfferTable } from './tables.js';
export { MIN_BUYERS, MIN_GROUP, type RuleUplift, upliftOf, upliftReport } from './uplift.js';
