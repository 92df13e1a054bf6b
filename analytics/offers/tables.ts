// The warehouse tables the offer loop owns and writes. The warehouse endpoint lets the `offers` role insert
// into these and nothing else, so this list is the one place that grants it: a new offer table is added here.
export const OFFER_TABLES = ['shopper_segments', 'offer_runs', 'offers'] as const;

export type OfferTable = (typeof OFFER_TABLES)[number];
