// Bots: the shoppers and sessions the platform flagged as automated, what they took or tried to take, and
// the IP hashes many shoppers share (a farm behind one address shows up as a cluster).

import { requireSale, selectRows, type WarehouseReader } from './query.js';
import { stitchedClickstream } from './stitched.js';

export interface FlaggedShopper {
  shopper_id: string;
  signals: string[];
  sessions: number;
  flagged_sessions: number;
  events: number;
  purchase_attempts: number;
  units_reserved: number;
  units_paid: number;
  ip_hashes: number;
}

/** Shoppers with at least one flagged event in the sale, their sessions, and what they took or tried to take. */
export async function flaggedShoppers(reader: WarehouseReader, p: { saleId: string; limit?: number }): Promise<FlaggedShopper[]> {
  return selectRows<FlaggedShopper>(
    reader,
    `SELECT c.person AS shopper_id, c.signals AS signals, c.sessions AS sessions, c.flagged_sessions AS flagged_sessions,
            c.events AS events, c.purchase_attempts AS purchase_attempts,
            ifNull(o.units_reserved, 0) AS units_reserved, ifNull(o.units_paid, 0) AS units_paid, c.ip_hashes AS ip_hashes
     FROM (
       SELECT person, arraySort(groupUniqArrayArray(bot_signals)) AS signals,
              uniqExact(session_id) AS sessions, uniqExactIf(session_id, notEmpty(bot_signals)) AS flagged_sessions,
              uniqExact(event_id) AS events, uniqExactIf(event_id, type = 'purchase_attempt') AS purchase_attempts,
              uniqExact(ip_hash) AS ip_hashes
       FROM ${stitchedClickstream('e.sale_id = {saleId:String}')}
       GROUP BY person HAVING notEmpty(signals)
     ) AS c
     LEFT JOIN (
       SELECT shopper_id, sumIf(qty, status = 'reserved') AS units_reserved, sumIf(qty, status = 'paid') AS units_paid
       FROM (SELECT DISTINCT event_id, shopper_id, status, qty FROM order_facts WHERE sale_id = {saleId:String})
       GROUP BY shopper_id
     ) AS o ON o.shopper_id = c.person
     ORDER BY purchase_attempts DESC, shopper_id LIMIT {limit:UInt32}
     SETTINGS join_use_nulls = 1`,
    { saleId: requireSale(p.saleId), limit: p.limit ?? 10_000 },
    ['sessions', 'flagged_sessions', 'events', 'purchase_attempts', 'units_reserved', 'units_paid', 'ip_hashes'],
  );
}

export interface IpHashCluster {
  ip_hash: string;
  shoppers: number;
  sessions: number;
  flagged_shoppers: number;
  purchase_attempts: number;
}

/** IP hashes shared by at least `minShoppers` (default 3) shoppers in the sale, biggest first. */
export async function ipHashClusters(
  reader: WarehouseReader,
  p: { saleId: string; minShoppers?: number; limit?: number },
): Promise<IpHashCluster[]> {
  return selectRows<IpHashCluster>(
    reader,
    `SELECT ip_hash, uniqExact(person) AS shoppers, uniqExact(session_id) AS sessions,
            uniqExactIf(person, notEmpty(bot_signals)) AS flagged_shoppers,
            uniqExactIf(event_id, type = 'purchase_attempt') AS purchase_attempts
     FROM ${stitchedClickstream('e.sale_id = {saleId:String}')}
     GROUP BY ip_hash HAVING shoppers >= {minShoppers:UInt32}
     ORDER BY shoppers DESC, ip_hash LIMIT {limit:UInt32}`,
    { saleId: requireSale(p.saleId), minShoppers: p.minShoppers ?? 3, limit: p.limit ?? 1000 },
    ['shoppers', 'sessions', 'flagged_shoppers', 'purchase_attempts'],
  );
}
