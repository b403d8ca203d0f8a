import type pg from 'pg';
import { expect } from 'vitest';
import type { Daemon } from '../../src/daemon.js';
import type { Receiver } from './receiver.js';

/** Options as `webhook_options` columns; the tests write them with their webhook, in one transaction. */
export interface StoredOptions {
  on_fields?: string[];
  filter?: string;
  include_columns?: string[];
  exclude_columns?: string[];
  coalesce_seconds?: number;
}

export async function insertOptions(client: Pick<pg.ClientBase, 'query'>, webhookId: string, options: StoredOptions): Promise<void> {
  await client.query(
    `insert into webhook_bridge.webhook_options (webhook_id, on_fields, filter, include_columns, exclude_columns, coalesce_seconds) values ($1, $2, $3, $4, $5, $6)`,
    [
      webhookId,
      options.on_fields ?? null,
      options.filter ?? null,
      options.include_columns ?? null,
      options.exclude_columns ?? null,
      options.coalesce_seconds ?? null,
    ],
  );
}

/** The filtered-event counter of one webhook and reason, as /metrics would show it. */
export async function filteredCount(daemon: Daemon, webhookId: string, reason: string): Promise<number> {
  const metric = await daemon.metrics.registry.getSingleMetric('pgwb_events_filtered_total')!.get();
  return metric.values.find((v) => v.labels.webhook_id === webhookId && v.labels.reason === reason)?.value ?? 0;
}

/** How many events of one webhook coalescing folded into later ones, as /metrics would show it. */
export async function coalescedCount(daemon: Daemon, webhookId: string): Promise<number> {
  const metric = await daemon.metrics.registry.getSingleMetric('pgwb_events_coalesced_total')!.get();
  return metric.values.find((v) => v.labels.webhook_id === webhookId)?.value ?? 0;
}

/** A receiver got exactly these events; events of different records may arrive in any order. */
export function expectEvents(r: Receiver, expected: string[], names: (r: Receiver) => string[]): void {
  expect(names(r)).toEqual([...expected].sort());
}
