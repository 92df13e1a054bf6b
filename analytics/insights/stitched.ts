// A shopper is a person: the anonymous events before a login belong to the user who logged in from that
// anonymous id. Grouped by the raw shopper_id, a funnel loses most shoppers at the login step (the page and
// product views are anonymous, the queue and the purchase are not). Every funnel, retention and feature
// query reads the clickstream through this one stitched source, so they all agree on who a shopper is.
//
// `person` is the user id when the event has one; else the user the event's anon_id first logged in as (a
// `login` event carries both ids, in any sale: a device that logged in once is that user's device); else
// the anonymous id itself (`is_user` false: a shopper who never logged in, whom no offer can reach). Orders always carry the user id (buying needs a login), so order_facts'
// shopper_id is already the person.

/** The user each anonymous id first logged in as. */
export const ANON_TO_USER = `
  SELECT anon_id, argMin(assumeNotNull(user_id), ts) AS login_user
  FROM clickstream_events
  WHERE type = 'login' AND isNotNull(user_id)
  GROUP BY anon_id`;

/**
 * The clickstream with each event's `person`, as a subquery. `where` filters the events (on `e.`
 * columns, with bound parameters) before the join, so a sale's query reads only that sale's rows.
 */
export function stitchedClickstream(where: string): string {
  return `(
  SELECT e.event_id AS event_id, e.type AS type, e.ts AS ts, e.sale_id AS sale_id, e.session_id AS session_id,
         e.sku AS sku, e.channel AS channel, e.device AS device, e.ip_hash AS ip_hash, e.offer_id AS offer_id,
         e.bot_signals AS bot_signals, e.qty AS qty, e.price_cents AS price_cents,
         e.queue_position AS queue_position, e.reject_reason AS reject_reason,
         if(isNotNull(e.user_id), assumeNotNull(e.user_id), if(ids.login_user != '', ids.login_user, e.anon_id)) AS person,
         isNotNull(e.user_id) OR ids.login_user != '' AS is_user
  FROM clickstream_events AS e
  LEFT JOIN (${ANON_TO_USER}) AS ids ON ids.anon_id = e.anon_id
  WHERE ${where}
)`;
}
