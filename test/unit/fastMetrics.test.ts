import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FastCounter, FastHistogram } from '../../src/http/fastMetrics.js';

/** The fast metrics must scrape exactly as prom-client's own would for the same updates. */
describe('fast metrics scrape like prom-client', () => {
  it('a labelled histogram: same buckets, sum and count lines', async () => {
    const buckets = [0.001, 0.01, 0.1, 1];
    const values = [0.0005, 0.001, 0.002, 0.05, 0.1, 0.5, 3, 0.01];
    const reference = new Registry();
    const theirs = new Histogram({ name: 'h_seconds', help: 'h', labelNames: ['outcome'], buckets, registers: [reference] });
    const ours = new Registry();
    const mine = new FastHistogram('h_seconds', 'h', ['outcome'], buckets, ours);
    for (const [i, v] of values.entries()) {
      const outcome = i % 3 === 0 ? 'retry' : 'success';
      theirs.labels(outcome).observe(v);
      mine.series(outcome).observe(v);
    }
    const sorted = async (r: Registry) => (await r.metrics()).split('\n').sort();
    expect(await sorted(ours)).toEqual(await sorted(reference));
  });

  it('labelled counters, and reset()', async () => {
    const reference = new Registry();
    const theirs = new Counter({ name: 'c_total', help: 'c', labelNames: ['table', 'kind'], registers: [reference] });
    const ours = new Registry();
    const mine = new FastCounter('c_total', 'c', ['table', 'kind'], ours);
    theirs.labels('public.person', 'insert').inc();
    theirs.labels('public.person', 'insert').inc(2);
    theirs.labels('public.note', 'delete').inc();
    const person = mine.series('public.person', 'insert');
    person.inc();
    person.inc(2);
    mine.series('public.note', 'delete').inc();
    expect((await ours.metrics()).split('\n').sort()).toEqual((await reference.metrics()).split('\n').sort());
    expect(await ours.getSingleMetricAsString('c_total')).toContain('c_total{table="public.person",kind="insert"} 3');
    ours.resetMetrics();
    // Zeroed in place (prom-client drops the series): a series held by a caller keeps counting.
    expect(await ours.getSingleMetricAsString('c_total')).toContain('c_total{table="public.person",kind="insert"} 0');
    person.inc();
    expect(await ours.getSingleMetricAsString('c_total')).toContain('c_total{table="public.person",kind="insert"} 1');
  });
});
