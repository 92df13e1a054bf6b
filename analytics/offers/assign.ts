// Who gets which offer, for the batch job and the real-time path alike (same rules, budget and hold-out).
//
// Precedence: rules are tried in the order of the rules file; a shopper gets the first rule whose condition
// matches and whose budget still has room. One offer per shopper per sale: a shopper who already has an offer
// (or a hold-out record) for the sale, from any run, is left alone. Bots never get an offer.
//
// Hold-out: sha256(run id + ':' + shopper id) read as a number in [0, 1) below the hold-out share puts the
// shopper in the hold-out: the same run always holds out the same shoppers. A held-out shopper is recorded
// with the rule they would have got (so uplift compares like with like) and gets nothing; they use no budget.
import { createHash } from 'node:crypto';
import type { SaleFacts, ShopperOffer } from '../../common/offers.js';
import type { Segment } from '../segments/score.js';
import type { OfferRule, OfferRules, OfferTrigger } from './rules.js';

export interface OfferCandidate {
  shopperId: string;
  segment: Segment | null;
  salesBought: number;
  spentCents: number;
  missedOut: number;
  /** Set on the real-time path: what just happened to the shopper. */
  trigger?: OfferTrigger;
}

export interface OfferDecision {
  shopperId: string;
  rule: OfferRule;
  holdout: boolean;
  /** Null for a hold-out. */
  offer: ShopperOffer | null;
  discountCents: number;
  expiresAtMs: number;
  why: string;
}

/** A number in [0, 1) fixed by run and shopper. */
export function holdoutDraw(runId: string, shopperId: string): number {
  return createHash('sha256').update(`${runId}:${shopperId}`).digest().readUInt32BE(0) / 2 ** 32;
}

export function isHeldOut(runId: string, shopperId: string, share: number): boolean {
  return holdoutDraw(runId, shopperId) < share;
}

export function offerIdFor(ruleId: string, runId: string): string {
  return `${ruleId}@${runId}`;
}

function matches(rule: OfferRule, c: OfferCandidate): string | null {
  const w = rule.when;
  const reasons: string[] = [];
  if (c.trigger) {
    if (!w.events?.includes(c.trigger)) return null;
    reasons.push(`real time: ${c.trigger.replace(/_/g, ' ')}`);
  } else {
    if (w.events && !w.segments) return null; // a real-time-only rule
    if (w.segments) {
      if (!c.segment || !w.segments.includes(c.segment)) return null;
      reasons.push(`segment ${c.segment}`);
    }
  }
  if (w.min_sales_bought !== undefined) {
    if (c.salesBought < w.min_sales_bought) return null;
    reasons.push(`bought in ${c.salesBought} sales`);
  }
  if (w.min_spent_cents !== undefined) {
    if (c.spentCents < w.min_spent_cents) return null;
    reasons.push(`spent ${c.spentCents} cents`);
  }
  if (w.min_missed_out !== undefined) {
    if (c.missedOut < w.min_missed_out) return null;
    reasons.push(`missed out ${c.missedOut} times`);
  }
  return reasons.join(', ');
}

/** What a rule's offer is in the target sale, and the most discount it can cost there. */
export function offerOf(rule: OfferRule, runId: string, sale: SaleFacts): { offer: ShopperOffer; discountCents: number } | null {
  const offerId = offerIdFor(rule.id, runId);
  const o = rule.offer;
  if (o.kind === 'priority')
    return { offer: { offer_id: offerId, kind: 'priority', sku: null, price: null, early_access_ms: null }, discountCents: 0 };
  if (o.kind === 'early_access') {
    return {
      offer: { offer_id: offerId, kind: 'early_access', sku: null, price: null, early_access_ms: o.minutes * 60_000 },
      discountCents: 0,
    };
  }
  // A price offer is on the named SKU, else on the sale's most expensive one (ties: the first by name).
  const sku =
    o.sku ??
    Object.keys(sale.prices)
      .sort()
      .reduce<string | null>((best, s) => (best === null || sale.prices[s]! > sale.prices[best]! ? s : best), null);
  if (sku === null || sale.prices[sku] === undefined) return null;
  const base = sale.prices[sku]!;
  const price = Math.floor((base * (100 - o.percent_off)) / 100);
  // The most it can cost: the discount on every unit the shopper may buy.
  const discountCents = (base - price) * (sale.limits[sku] ?? 1);
  return { offer: { offer_id: offerId, kind: 'price', sku, price, early_access_ms: null }, discountCents };
}

/** Budget used so far per rule in the target sale (offers actually made; hold-outs use none). */
export class OfferBudget {
  private readonly used = new Map<string, { offers: number; discountCents: number }>();

  spend(ruleId: string, discountCents: number): void {
    const u = this.used.get(ruleId) ?? { offers: 0, discountCents: 0 };
    u.offers += 1;
    u.discountCents += discountCents;
    this.used.set(ruleId, u);
  }

  hasRoom(rule: OfferRule, discountCents: number): boolean {
    const u = this.used.get(rule.id) ?? { offers: 0, discountCents: 0 };
    if (u.offers + 1 > rule.budget.max_offers) return false;
    const cap = rule.budget.max_discount_cents;
    return cap === undefined || u.discountCents + discountCents <= cap;
  }

  usage(ruleId: string): { offers: number; discountCents: number } {
    return { ...(this.used.get(ruleId) ?? { offers: 0, discountCents: 0 }) };
  }
}

/**
 * The decision for one shopper, or null when no rule applies (or the shopper is a bot). A decision that is
 * not a hold-out has already spent its budget.
 */
export function decideOffer(
  c: OfferCandidate,
  p: { runId: string; rules: OfferRules; sale: SaleFacts; budget: OfferBudget },
): OfferDecision | null {
  if (c.segment === 'bots') return null;
  const holdout = isHeldOut(p.runId, c.shopperId, p.rules.holdout_share);
  for (const rule of p.rules.rules) {
    const why = matches(rule, c);
    if (why === null) continue;
    const made = offerOf(rule, p.runId, p.sale);
    if (!made) continue;
    if (!p.budget.hasRoom(rule, made.discountCents)) continue;
    if (!holdout) p.budget.spend(rule.id, made.discountCents);
    return {
      shopperId: c.shopperId,
      rule,
      holdout,
      offer: holdout ? null : made.offer,
      discountCents: holdout ? 0 : made.discountCents,
      expiresAtMs: p.sale.endsAt + (rule.expires_after_sale_end_minutes ?? 60) * 60_000,
      why: holdout ? `${why}; held out (no offer) to measure uplift` : why,
    };
  }
  return null;
}
