// Offer rules: what a marketer writes (analytics/offers/rules.json by default) and the one place they are
// checked. A file that does not pass is refused whole, with every problem listed by where it is, so a typo
// can never half-apply. See analytics/insights/README.md, "Offer rules", for the marketer's guide.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Type from 'typebox';
import { Compile } from 'typebox/compile';
import { SEGMENTS } from '../segments/score.js';

export const DEFAULT_RULES_FILE = join(dirname(fileURLToPath(import.meta.url)), 'rules.json');

/** Real-time triggers: a refusal for stock (at the purchase or the queue) and a reservation that lapsed unpaid. */
export const OFFER_TRIGGERS = ['refused_for_stock', 'reservation_lapsed'] as const;
export type OfferTrigger = (typeof OFFER_TRIGGERS)[number];

const SegmentName = Type.Enum(SEGMENTS, { description: `one of ${SEGMENTS.join(', ')}` });

const Condition = Type.Object(
  {
    segments: Type.Optional(Type.Array(SegmentName, { minItems: 1, uniqueItems: true })),
    events: Type.Optional(Type.Array(Type.Enum(OFFER_TRIGGERS), { minItems: 1, uniqueItems: true })),
    min_sales_bought: Type.Optional(Type.Integer({ minimum: 0 })),
    min_spent_cents: Type.Optional(Type.Integer({ minimum: 0 })),
    min_missed_out: Type.Optional(Type.Integer({ minimum: 0 })),
  },
  { additionalProperties: false },
);

const PriceOffer = Type.Object(
  {
    kind: Type.Literal('price'),
    percent_off: Type.Integer({ minimum: 1, maximum: 90 }),
    sku: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' })),
  },
  { additionalProperties: false },
);
const EarlyAccessOffer = Type.Object(
  { kind: Type.Literal('early_access'), minutes: Type.Integer({ minimum: 1, maximum: 24 * 60 }) },
  { additionalProperties: false },
);
const PriorityOffer = Type.Object({ kind: Type.Literal('priority') }, { additionalProperties: false });

const Rule = Type.Object(
  {
    id: Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,39}$' }),
    description: Type.Optional(Type.String({ maxLength: 500 })),
    when: Condition,
    offer: Type.Union([PriceOffer, EarlyAccessOffer, PriorityOffer]),
    budget: Type.Object(
      {
        max_offers: Type.Integer({ minimum: 0 }),
        max_discount_cents: Type.Optional(Type.Integer({ minimum: 0 })),
      },
      { additionalProperties: false },
    ),
    expires_after_sale_end_minutes: Type.Optional(Type.Integer({ minimum: 0, maximum: 60 * 24 * 30 })),
  },
  { additionalProperties: false },
);

export const OfferRulesFile = Type.Object(
  {
    holdout_share: Type.Optional(Type.Number({ minimum: 0, maximum: 0.9 })),
    rules: Type.Array(Rule, { minItems: 1, maxItems: 200 }),
  },
  { additionalProperties: false },
);

export type OfferRule = Type.Static<typeof Rule>;
export type OfferRules = { holdout_share: number; rules: OfferRule[] };

const check = Compile(OfferRulesFile);

export class OfferRulesError extends Error {
  readonly code = 'OFFER_RULES_INVALID';
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`offer rules in ${source} are not valid, nothing was run:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'OfferRulesError';
  }
}

/** Checks rules (parsed JSON) and fills the defaults; throws OfferRulesError listing every problem. */
export function parseOfferRules(value: unknown, source = 'the rules'): OfferRules {
  if (!check.Check(value)) {
    const problems = check.Errors(value).map((e) => `${e.instancePath || '(top level)'}: ${e.message}`);
    throw new OfferRulesError(source, [...new Set(problems)].slice(0, 20));
  }
  const problems: string[] = [];
  const seen = new Set<string>();
  value.rules.forEach((rule, i) => {
    const at = `/rules/${i} (${rule.id})`;
    if (seen.has(rule.id)) problems.push(`${at}: another rule has the id "${rule.id}"; ids must be unique`);
    seen.add(rule.id);
    const w = rule.when;
    if (!w.segments && !w.events && w.min_sales_bought === undefined && w.min_spent_cents === undefined && w.min_missed_out === undefined) {
      problems.push(`${at}: "when" names no condition; give segments, events or a minimum (an empty condition would offer to everyone)`);
    }
    if (w.segments?.includes('bots')) problems.push(`${at}: bots never get offers; remove "bots" from segments`);
    if (rule.offer.kind === 'price' && rule.budget.max_discount_cents === undefined) {
      problems.push(`${at}: a price offer needs budget.max_discount_cents (the most discount this rule may give in total)`);
    }
  });
  if (problems.length > 0) throw new OfferRulesError(source, problems);
  return { holdout_share: value.holdout_share ?? 0.1, rules: value.rules };
}

export function loadOfferRules(file = DEFAULT_RULES_FILE): OfferRules {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new OfferRulesError(file, [`cannot read it as JSON: ${(error as Error).message}`]);
  }
  return parseOfferRules(parsed, file);
}
