// Offers applied: the offer jobs (analytics) write a shopper's offer for a sale into Redis; the catalog shows
// it, the purchase script applies it atomically, and events carry its offer_id. The key layout and the
// read/write functions are shared with analytics, so they live in common/offers.ts.
export { readOffer, type ShopperOffer, writeOffer } from '../common/offers.js';
