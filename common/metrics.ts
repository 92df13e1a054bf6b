// Prometheus metrics (prom-client). One registry per process; every service serves it at /metrics.
// Metric names are prefixed `flashsale_` and owned by the module that updates them.
import client from 'prom-client';

export const registry = new client.Registry();
let defaultsCollected = false;

/** Process metrics (RSS, event-loop lag, GC) once per process. */
export function collectProcessMetrics(): void {
  if (defaultsCollected) return;
  defaultsCollected = true;
  client.collectDefaultMetrics({ register: registry, prefix: 'flashsale_' });
}

function existing<T>(name: string): T | undefined {
  return registry.getSingleMetric(name) as T | undefined;
}

// Getters rather than constructors: a module may be loaded twice in tests, and prom-client refuses
// to register the same name twice.
export function counter<L extends string = string>(cfg: client.CounterConfiguration<L>): client.Counter<L> {
  return existing(cfg.name) ?? new client.Counter({ ...cfg, registers: [registry] });
}

export function gauge<L extends string = string>(cfg: client.GaugeConfiguration<L>): client.Gauge<L> {
  return existing(cfg.name) ?? new client.Gauge({ ...cfg, registers: [registry] });
}

export function histogram<L extends string = string>(cfg: client.HistogramConfiguration<L>): client.Histogram<L> {
  return existing(cfg.name) ?? new client.Histogram({ ...cfg, registers: [registry] });
}

export { client as promClient };
