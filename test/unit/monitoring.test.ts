/**
 * The alerting rules and the Grafana dashboard in config/ use only metrics the daemon exports, and the
 * rules file is a valid Prometheus rules file. The exported names come from the daemon's own registry
 * (BridgeMetrics), so a renamed or removed metric fails here; every expression is parsed with
 * Prometheus' own PromQL grammar, so a syntax error fails here too.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parser } from '@prometheus-io/lezer-promql';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { BridgeMetrics } from '../../src/http/metrics.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (file: string): string => readFileSync(path.join(ROOT, file), 'utf8');

/** Series names the daemon exposes on /metrics: a histogram's are its _bucket, _sum and _count. */
async function exportedSeriesNames(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const metric of await new BridgeMetrics().registry.getMetricsAsJSON()) {
    if (String(metric.type) === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${metric.name}${suffix}`);
    else names.add(metric.name);
  }
  return names;
}

/** The series Prometheus itself writes for every scrape target. */
const SCRAPE_SERIES = new Set(['up']);

/** Metric names an expression selects; throws on a syntax error or a selector by __name__. */
function metricNames(expr: string): string[] {
  const tree = parser.parse(expr);
  const names: string[] = [];
  const errors: number[] = [];
  tree.iterate({
    enter(node) {
      if (node.type.isError) errors.push(node.from);
      if (node.name === 'Identifier' && node.node.parent?.name === 'VectorSelector') names.push(expr.slice(node.from, node.to));
      if (node.name === 'LabelName' && expr.slice(node.from, node.to) === '__name__') errors.push(node.from);
    },
  });
  if (errors.length > 0) throw new Error(`not valid PromQL (or selects by __name__) at offset ${errors[0]}: ${expr}`);
  if (names.length === 0) throw new Error(`selects no metric: ${expr}`);
  return names;
}

// Prometheus duration: e.g. 30s, 5m, 1h30m.
const DURATION = /^(\d+(ms|s|m|h|d|w|y))+$/;

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

const rulesFile = parseYaml(read('config/monitoring/alerts.yaml'));
const rules: Rule[] = rulesFile.groups.flatMap((g: any) => g.rules);
const dashboard = JSON.parse(read('config/monitoring/grafana-dashboard.json'));
const dashboardExprs: string[] = dashboard.panels.flatMap((p: any) => (p.targets ?? []).map((t: any) => t.expr));

describe('config/monitoring/alerts.yaml', () => {
  it('is a Prometheus rules file: groups of named alerting rules with expr, for, labels and annotations', () => {
    expect(Object.keys(rulesFile)).toEqual(['groups']);
    expect(Array.isArray(rulesFile.groups) && rulesFile.groups.length > 0).toBe(true);
    const groupNames = rulesFile.groups.map((g: any) => g.name);
    expect(new Set(groupNames).size).toBe(groupNames.length);
    for (const group of rulesFile.groups) {
      expect(typeof group.name).toBe('string');
      expect(
        Object.keys(group).filter((k) => !['name', 'interval', 'rules'].includes(k)),
        `keys of group ${group.name}`,
      ).toEqual([]);
      expect(group.rules.length).toBeGreaterThan(0);
      for (const rule of group.rules) {
        expect(
          Object.keys(rule).filter((k) => !['alert', 'expr', 'for', 'labels', 'annotations'].includes(k)),
          `keys of ${rule.alert}`,
        ).toEqual([]);
        expect(rule.alert).toMatch(/^[A-Za-z_][A-Za-z0-9_]*$/);
        expect(typeof rule.expr).toBe('string');
        if (rule.for !== undefined) expect(rule.for, `for of ${rule.alert}`).toMatch(DURATION);
        expect(['critical', 'warning', 'info'], `severity of ${rule.alert}`).toContain(rule.labels?.severity);
        for (const value of Object.values(rule.labels)) expect(typeof value).toBe('string');
        expect(rule.annotations?.summary, `summary of ${rule.alert}`).toMatch(/\S/);
        expect(rule.annotations?.description, `description of ${rule.alert}`).toMatch(/\S/);
      }
    }
    const alertNames = rules.map((r) => r.alert);
    expect(new Set(alertNames).size).toBe(alertNames.length);
  });

  it('every expression parses and uses only metrics the daemon exports', async () => {
    const exported = await exportedSeriesNames();
    for (const rule of rules) {
      for (const name of metricNames(rule.expr)) expect(exported.has(name) || SCRAPE_SERIES.has(name), `${rule.alert}: ${name}`).toBe(true);
    }
  });

  it('covers the failures that must page someone', () => {
    const using = (metric: string): string[] => rules.filter((r) => metricNames(r.expr).includes(metric)).map((r) => r.alert);
    expect(using('up'), 'a replica down').not.toEqual([]);
    // None up: absent() of a daemon metric, which fires whatever the scrape job is named.
    expect(
      rules.filter((r) => /^absent\(pgwb_[a-z_]+\)$/.test(r.expr)),
      'no replica up',
    ).toHaveLength(1);
    expect(using('pgwb_ready'), 'a replica not ready').not.toEqual([]);
    expect(using('pgwb_leader'), 'no leader').not.toEqual([]);
    expect(using('pgwb_slot_last_advance_seconds'), 'a slot that stops advancing').not.toEqual([]);
    expect(using('pgwb_slot_lag_bytes'), 'WAL piling up for the slot').not.toEqual([]);
    const walStatus = rules
      .filter((r) => metricNames(r.expr).includes('pgwb_slot_wal_status'))
      .map((r) => r.expr)
      .join('\n');
    expect(walStatus, 'a lost slot, and one about to be lost').toMatch(/status="lost"/);
    expect(walStatus).toMatch(/status="unreserved"/);
    expect(
      rules.filter((r) => /outcome="dead"/.test(r.expr)),
      'dead deliveries',
    ).not.toEqual([]);
    expect(using('pgwb_store_oldest_pending_seconds'), 'deliveries waiting for long').not.toEqual([]);
    expect(using('pgwb_webhooks_auto_disabled_total'), 'webhooks disabled by the bridge').not.toEqual([]);
    // "No leader" is the sum over the replicas.
    expect(
      rules.filter((r) => /^sum\b.*\(pgwb_leader\) == 0$/.test(r.expr)),
      'no leader',
    ).toHaveLength(1);
  });

  it('the Kubernetes PrometheusRule carries the same groups', () => {
    const [document] = parseAllDocuments(read('config/kubernetes/monitoring/prometheusrule.yaml'));
    const rule = document.toJS();
    expect(rule).toMatchObject({ apiVersion: 'monitoring.coreos.com/v1', kind: 'PrometheusRule' });
    expect(rule.spec).toEqual(rulesFile);
  });
});

describe('config/kubernetes/monitoring (kustomize component)', () => {
  const component = parseYaml(read('config/kubernetes/monitoring/kustomization.yaml'));
  const service = parseYaml(read('config/kubernetes/service.yaml'));

  it('is a Component listing its PrometheusRule and ServiceMonitor, and the base does not include it', () => {
    expect(component).toMatchObject({ apiVersion: 'kustomize.config.k8s.io/v1alpha1', kind: 'Component' });
    expect([...component.resources].sort()).toEqual(['prometheusrule.yaml', 'servicemonitor.yaml']);
    const base = parseYaml(read('config/kubernetes/kustomization.yaml'));
    expect(JSON.stringify(base)).not.toMatch(/monitoring/);
  });

  it('the ServiceMonitor scrapes the metrics Service under the job name the rules select', () => {
    const monitor = parseYaml(read('config/kubernetes/monitoring/servicemonitor.yaml'));
    expect(monitor.kind).toBe('ServiceMonitor');
    for (const [key, value] of Object.entries<string>(monitor.spec.selector.matchLabels)) expect(service.metadata.labels[key]).toBe(value);
    expect(monitor.spec.endpoints.map((e: any) => e.port)).toEqual([service.spec.ports.find((p: any) => p.name === 'metrics').name]);
    expect(monitor.spec.endpoints[0].path).toBe('/metrics');
    const job = service.metadata.labels[monitor.spec.jobLabel];
    const jobs = rules.flatMap((r) => [...r.expr.matchAll(/\bjob="([^"]+)"/g)].map((m) => m[1]));
    expect(jobs.length).toBeGreaterThan(0);
    expect(new Set(jobs)).toEqual(new Set([job]));
  });
});

describe('config/monitoring/grafana-dashboard.json', () => {
  it('every panel query and variable parses and uses only metrics the daemon exports', async () => {
    const exported = await exportedSeriesNames();
    expect(dashboardExprs.length).toBeGreaterThan(0);
    // Grafana's own variables ($__rate_interval, $job) are replaced before the query reaches Prometheus.
    const substituted = (expr: string) => expr.replace(/\$__rate_interval|\$__range/g, '5m').replace(/\$job/g, '.*');
    for (const expr of dashboardExprs) {
      for (const name of metricNames(substituted(expr))) expect(exported.has(name) || SCRAPE_SERIES.has(name), `${expr}: ${name}`).toBe(true);
    }
    for (const variable of dashboard.templating.list.filter((v: any) => v.type === 'query')) {
      const metric = /^label_values\(([^,]+),/.exec(variable.query)?.[1];
      expect(metric, variable.query).toBeDefined();
      for (const name of metricNames(metric!)) expect(exported.has(name), name).toBe(true);
    }
  });

  it('shows the slot, the store, the replicas and the deliveries', () => {
    const used = new Set(dashboardExprs.flatMap((e) => metricNames(e.replace(/\$__rate_interval|\$__range/g, '5m').replace(/\$job/g, '.*'))));
    for (const metric of [
      'pgwb_leader',
      'pgwb_ready',
      'pgwb_slot_lag_bytes',
      'pgwb_slot_last_advance_seconds',
      'pgwb_slot_wal_status',
      'pgwb_store_backlog',
      'pgwb_store_oldest_pending_seconds',
      'pgwb_delivery_attempts_total',
      'pgwb_webhooks_auto_disabled_total',
    ]) {
      expect(used, metric).toContain(metric);
    }
    const ids = dashboard.panels.map((p: any) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
