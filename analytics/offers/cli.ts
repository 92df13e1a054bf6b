// The marketer's command line for offers:
//   npm run offers -- run --from <sale>[,<sale>…] --for <sale> [--run-id <id>] [--rules <file>]
//   npm run offers -- report --sale <id>
// `run` segments the shoppers of the past sales and writes their offers for the target sale; the same command
// run again is the same run (its id is derived from the sales and the rules), so it completes a run that died
// and does nothing once the run is done. `report` prints the uplift of every rule for a finished sale.
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import Table from 'cli-table3';
import { createRedis } from '../../common/redis.js';
import { createWarehouseReader } from '../reader.js';
import type { OfferJobStep } from './job.js';
import { DEFAULT_RULES_FILE, loadOfferRules, OfferRulesError } from './rules.js';
import { upliftReport } from './uplift.js';

const USAGE = `usage:
  npm run offers -- run --from <sale>[,<sale>…] --for <sale> [--run-id <id>] [--rules <file>]
  npm run offers -- report --sale <id>`;

const STEP_LABELS: Record<OfferJobStep, string> = {
  segments: 'segments written',
  decide: 'decided',
  record: 'decisions recorded',
  redis: 'offers in Redis',
};

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const money = (cents: number) => (cents / 100).toFixed(2);

async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { from: { type: 'string' }, for: { type: 'string' }, 'run-id': { type: 'string' }, rules: { type: 'string' } },
  });
  if (!values.from || !values.for) throw new UsageError('run needs --from <sale>[,<sale>…] and --for <sale>');
  const fromSales = values.from
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const rulesFile = values.rules ?? DEFAULT_RULES_FILE;
  const rules = loadOfferRules(rulesFile);
  const runId =
    values['run-id'] ?? `${values.for}.${createHash('sha256').update(JSON.stringify({ fromSales, rules })).digest('hex').slice(0, 10)}`;

  // Loaded here, not at the top: the job pulls in danfojs (seconds to load), which `report` does not need.
  const { runOfferJob } = await import('./job.js');
  const reader = createWarehouseReader({ role: 'offers' });
  const redis = createRedis();
  const bars = new cliProgress.MultiBar(
    { format: ' {step} |{bar}| {value}/{total}', hideCursor: true, clearOnComplete: false, noTTYOutput: true, notTTYSchedule: 2000 },
    cliProgress.Presets.shades_classic,
  );
  const shown = new Map<OfferJobStep, cliProgress.SingleBar>();
  try {
    process.stdout.write(`offer run ${runId}: shoppers of ${fromSales.join(', ')} → offers for ${values.for} (rules: ${rulesFile})\n`);
    const result = await runOfferJob({
      reader,
      redis,
      runId,
      fromSales,
      forSale: values.for,
      rules,
      onProgress: (step, done, total) => {
        let bar = shown.get(step);
        if (!bar) {
          bar = bars.create(Math.max(total, 1), 0, { step: STEP_LABELS[step].padEnd(18) });
          shown.set(step, bar);
        }
        bar.setTotal(Math.max(total, 1));
        bar.update(done);
      },
    });
    bars.stop();
    if (result.alreadyDone) process.stdout.write(`run ${runId} was already done: nothing written again.\n`);
    const segments = new Table({ head: ['segment', 'shoppers'] });
    for (const s of result.segments) segments.push([s.segment, s.shoppers]);
    const offers = new Table({ head: ['rule', 'offers', 'held out', 'discount budget used'] });
    for (const r of result.byRule) offers.push([r.rule_id, r.offers, r.holdouts, money(r.discount_cents)]);
    process.stdout.write(`${segments.toString()}\n${offers.toString()}\n`);
    process.stdout.write(
      `${result.offers} offers, ${result.holdouts} held out, ${result.shoppers} shoppers; ${(result.timings.totalMs / 1000).toFixed(1)} s\n`,
    );
  } finally {
    bars.stop();
    redis.disconnect();
    await reader.close();
  }
}

async function report(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { sale: { type: 'string' } } });
  if (!values.sale) throw new UsageError('report needs --sale <id>');
  const reader = createWarehouseReader({ role: 'offers' });
  try {
    const rows = await upliftReport(reader, { saleId: values.sale });
    if (rows.length === 0) {
      process.stdout.write(`no offers were made for sale ${values.sale}.\n`);
      return;
    }
    const table = new Table({
      head: [
        'rule',
        'offered',
        'held out',
        'shown',
        'redeemed',
        'conv. offered',
        'conv. held out',
        'difference (95% CI)',
        'revenue/shopper offered',
        'held out',
      ],
    });
    for (const r of rows) {
      const ci = Number.isFinite(r.ci95_low)
        ? `${pct(r.difference)} (${pct(r.ci95_low)} … ${pct(r.ci95_high)})`
        : `${pct(r.difference)} (no interval)`;
      table.push([
        r.rule_id,
        r.offered,
        r.holdout,
        r.shown,
        r.redeemed,
        pct(r.offered_conversion),
        pct(r.holdout_conversion),
        ci,
        money(r.offered_revenue_per_shopper_cents),
        money(r.holdout_revenue_per_shopper_cents),
      ]);
    }
    process.stdout.write(`uplift of the offers for sale ${values.sale}\n${table.toString()}\n`);
    for (const r of rows) if (r.warning) process.stdout.write(`${r.rule_id}: ${r.warning}\n`);
  } finally {
    await reader.close();
  }
}

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === 'run') await run(rest);
    else if (command === 'report') await report(rest);
    else throw new UsageError(command ? `unknown command "${command}"` : 'name a command');
    return 0;
  } catch (error) {
    if (error instanceof UsageError) process.stderr.write(`${error.message}\n${USAGE}\n`);
    else if (error instanceof OfferRulesError || (error as { name?: string }).name === 'OfferJobError')
      process.stderr.write(`${(error as Error).message}\n`);
    else process.stderr.write(`offers: ${(error as Error).message}\n`);
    return error instanceof UsageError ? 2 : 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
