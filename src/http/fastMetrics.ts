import type { Registry } from 'prom-client';

/**
 * Counters and histograms for the per-event hot path. prom-client's own ones hash the label object
 * on every inc()/observe(), even through a cached child, which cost ~6% of the daemon's CPU per event;
 * here a series is looked up once and each update is a field addition. prom-client's registry still
 * formats them on scrape (they implement what `registerMetric` expects: name, help, get(), reset()).
 */

type Labels = Record<string, string>;

/** What prom-client's registry reads from a metric on scrape. */
export interface ScrapedMetric {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  aggregator: 'sum';
  values: Array<{ metricName?: string; labels: Record<string, string | number>; value: number }>;
}

export class CounterSeries {
  value = 0;
  constructor(readonly labels: Labels) {}
  inc(by = 1): void {
    this.value += by;
  }
}

export class HistogramSeries {
  /** Count per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(
    readonly labels: Labels,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

abstract class FastMetric<S extends { labels: Labels }> {
  private readonly all = new Map<string, S>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    registry: Registry,
  ) {
    // registerMetric accepts anything with name/get/reset; the cast names prom-client's interface.
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  /** The series for these label values (in labelNames order): one map lookup, nothing hashed. */
  series(...values: string[]): S {
    const key = values.length === 1 ? values[0]! : values.join('\u0000');
    let found = this.all.get(key);
    if (found === undefined) {
      const labels: Labels = {};
      this.labelNames.forEach((name, i) => (labels[name] = values[i] ?? ''));
      found = this.make(labels);
      this.all.set(key, found);
    }
    return found;
  }

  protected get seriesList(): S[] {
    return [...this.all.values()];
  }

  /** Zeroes every series in place: callers keep series objects, so they must stay registered. */
  reset(): void {
    for (const series of this.all.values()) this.zero(series);
  }

  protected abstract make(labels: Labels): S;
  protected abstract zero(series: S): void;
}

export class FastCounter extends FastMetric<CounterSeries> {
  protected make(labels: Labels): CounterSeries {
    return new CounterSeries(labels);
  }

  protected zero(series: CounterSeries): void {
    series.value = 0;
  }

  get(): ScrapedMetric {
    return {
      name: this.name,
      help: this.help,
      type: 'counter',
      aggregator: 'sum',
      values: this.seriesList.map((s) => ({ labels: s.labels, value: s.value })),
    };
  }
}

export class FastHistogram extends FastMetric<HistogramSeries> {
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    private readonly buckets: readonly number[],
    registry: Registry,
  ) {
    super(name, help, labelNames, registry);
  }

  protected make(labels: Labels): HistogramSeries {
    return new HistogramSeries(labels, this.buckets);
  }

  protected zero(series: HistogramSeries): void {
    series.counts.fill(0);
    series.sum = 0;
    series.count = 0;
  }

  get(): ScrapedMetric {
    const values: ScrapedMetric['values'] = [];
    for (const s of this.seriesList) {
      let cumulative = 0;
      this.buckets.forEach((bound, i) => {
        cumulative += s.counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { le: bound, ...s.labels }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', ...s.labels }, value: s.count });
      values.push({ metricName: `${this.name}_sum`, labels: s.labels, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: s.labels, value: s.count });
    }
    return {
      name: this.name,
      help: this.help,
      type: 'histogram',
      aggregator: 'sum',
      values,
    };
  }
}
