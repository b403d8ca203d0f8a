import type { Command } from 'commander';
import type { ConfigFrom, WithClient } from './types.js';
import { webhooksTable, type BridgeConfig } from '../config.js';
import { NO_HOLD } from '../deliver/logFollower.js';
import { storedRow } from '../deliver/storedRow.js';
import { BridgeError } from '../errors.js';
import { parseDuration } from '../duration.js';
import { createLogger } from '../log.js';
import { eventForWebhook } from '../route/loggedEvent.js';
import type { Subscriber } from '../route/types.js';
import { insertNewDeliveries, listDeliveries, purgeDeliveries, redeliver } from '../store/deliveryStore.js';
import { logStart, readEventsCommittedBetween } from '../store/eventLog.js';
import type { NewStoredDelivery, Queryable } from '../store/types.js';
import { WebhookRegistry } from '../webhooks/registry.js';
import { printable } from './webhooks.js';
import { parseTimeOption } from './timeOption.js';

/** Rows deleted per statement by `deliveries purge`. */
const PURGE_BATCH_ROWS = 1_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Segments read per round by `deliveries replay` (2,000 events at most each): bounds its memory. */
const REPLAY_SEGMENTS = 4;
/** Rows per insert by `deliveries replay`: the daemon may start sending the first while the rest are read. */
const REPLAY_INSERT_ROWS = 1_000;
/** locked_by of replayed rows: never written, as they are inserted unclaimed. */
const REPLAY_WORKER = 'cli-replay';

/**
 * The webhook as the daemon sees it (the registry's loading and option compiling, quiet): a usage error
 * when it is missing, soft-deleted, disabled or invalid, since no lane would send what is queued.
 */
async function liveSubscriber(db: Queryable, config: BridgeConfig, webhookId: string): Promise<Subscriber> {
  const registry = new WebhookRegistry(db, config.schema, webhooksTable(config), createLogger('silent'));
  await registry.reload();
  const subscriber = registry.active.find((s) => s.id === webhookId);
  if (subscriber !== undefined) return subscriber;
  if (registry.disabled.has(webhookId)) {
    throw new BridgeError('ERR_USAGE', `webhook ${webhookId} is disabled; enable it first ("pg-webhook-bridge webhooks enable ${webhookId}"), then replay`);
  }
  const invalid = registry.invalid.find((w) => w.id === webhookId);
  if (invalid !== undefined) throw new BridgeError('ERR_USAGE', `webhook ${webhookId} is invalid (${printable(invalid.problem)}); fix its row, then replay`);
  throw new BridgeError('ERR_USAGE', `no active webhook with id ${webhookId} ("pg-webhook-bridge webhooks list" shows them)`);
}

export interface ReplayCounts {
  /** Events of the window the webhook takes (its operations, workspace and options). */
  matched: number;
  /** New pending rows. */
  queued: number;
  /** Left out by the webhook's options (--on-fields, --filter, columns). */
  filtered: number;
}

/**
 * Queues every event of the log committed in `window` that `subscriber` takes as a pending delivery
 * due now, under its own event id, for the webhook's current URL. The daemon's lane claims them as it
 * claims retries: each record's oldest first, so a record's events go out in commit order. An event
 * the store already holds for the webhook (a retry under way, a dead delivery) is left as it is.
 */
export async function queueReplay(db: Queryable, schema: string, subscriber: Subscriber, window: { since: Date; until: Date }): Promise<ReplayCounts> {
  const counts: ReplayCounts = { matched: 0, queued: 0, filtered: 0 };
  const runAt = new Date();
  let rows: NewStoredDelivery[] = [];
  const flush = async (): Promise<void> => {
    counts.queued += await insertNewDeliveries(db, schema, rows, REPLAY_WORKER);
    rows = [];
  };
  let after = { lsn: 0n, index: -1 };
  for (;;) {
    const batch = await readEventsCommittedBetween(db, schema, window, after, REPLAY_SEGMENTS);
    for (const logged of batch.events) {
      const outcome = eventForWebhook(logged, subscriber);
      if (outcome === null) continue;
      if ('filtered' in outcome) {
        counts.filtered++;
        continue;
      }
      counts.matched++;
      const delivery = { event: outcome.event, hold: NO_HOLD, targetUrl: subscriber.targetUrl, enqueuedAt: 0, finished: false };
      rows.push(storedRow(subscriber.id, delivery, { attempts: 0, runAt, outcome: null, lockedUntil: null, dead: false }));
      if (rows.length >= REPLAY_INSERT_ROWS) await flush();
    }
    if (batch.done) break;
    after = batch.next;
  }
  await flush();
  return counts;
}

/** Why the log may not hold the whole window, or null when it does. */
function logCoverageWarning(start: { commitTime: Date } | null, since: Date, retentionHours: number): string | null {
  const retention =
    retentionHours === 0
      ? 'delivery.retentionHours is 0: the log keeps a change only while some webhook is behind; set it above 0 to keep every change for replay'
      : `delivery.retentionHours is ${retentionHours}: older changes are deleted`;
  if (start === null) return `the event log is empty, so nothing can be replayed (${retention})`;
  if (start.commitTime > since) {
    return `the event log starts at ${start.commitTime.toISOString()}: events committed from ${since.toISOString()} until then are no longer held and are not replayed (${retention})`;
  }
  return null;
}

export function registerDeliveryCommands(program: Command, configFrom: ConfigFrom, withClient: WithClient): void {
  const deliveries = program.command('deliveries').description('inspect and replay stored deliveries');

  deliveries
    .command('list')
    .description('deliveries in the durable store (failing, backlogged or dead)')
    .option('--status <status>', 'pending or dead')
    .option('--webhook <id>', 'only this webhook')
    .option('--limit <n>', 'at most this many', '100')
    .option('--json', 'print JSON')
    .action(async (opts: { status?: string; webhook?: string; limit: string; json?: boolean }, cmd: Command) => {
      const config = configFrom(cmd);
      if (opts.status && opts.status !== 'pending' && opts.status !== 'dead') throw new BridgeError('ERR_USAGE', '--status must be pending or dead');
      await withClient(config, async (client) => {
        const rows = await listDeliveries(client, config.schema, {
          status: opts.status as 'pending' | 'dead' | undefined,
          webhookId: opts.webhook,
          limit: Number(opts.limit),
        });
        if (opts.json) {
          console.log(
            JSON.stringify(
              rows.map(({ body: _body, ...rest }) => rest),
              null,
              2,
            ),
          );
          return;
        }
        if (rows.length === 0) console.log('no stored deliveries');
        for (const d of rows) {
          console.log(
            `${d.id}  ${d.status.padEnd(7)}  ${d.eventName.padEnd(20)}  event=${d.eventId}  webhook=${d.webhookId}  attempts=${d.attempts}  next=${d.status === 'pending' ? d.runAt.toISOString() : '-'}  ${d.lastError ?? ''}`,
          );
        }
      });
    });

  deliveries
    .command('purge')
    .description('delete stored deliveries (they hold whole rows); pending ones deleted here are not sent')
    .option('--status <status>', 'pending or dead')
    .option('--older-than <duration>', 'created more than this long ago, e.g. 30d, 12h, 45m')
    .option('--webhook <id>', 'only this webhook')
    .action(async (opts: { status?: string; olderThan?: string; webhook?: string }, cmd: Command) => {
      const config = configFrom(cmd);
      if (opts.status === undefined && opts.olderThan === undefined && opts.webhook === undefined) {
        throw new BridgeError('ERR_USAGE', 'give at least one of --status, --older-than, --webhook (all of them must match)');
      }
      if (opts.status !== undefined && opts.status !== 'pending' && opts.status !== 'dead')
        throw new BridgeError('ERR_USAGE', '--status must be pending or dead');
      const olderThanMs = opts.olderThan === undefined ? null : parseDuration(opts.olderThan);
      if (olderThanMs === null && opts.olderThan !== undefined)
        throw new BridgeError('ERR_USAGE', `--older-than "${opts.olderThan}" is not a duration (e.g. 30d, 12h, 45m)`);
      if (opts.webhook !== undefined && !UUID.test(opts.webhook)) throw new BridgeError('ERR_USAGE', `--webhook ${opts.webhook} is not a webhook id (a UUID)`);
      await withClient(config, async (client) => {
        const filter = {
          status: opts.status as 'pending' | 'dead' | undefined,
          webhookId: opts.webhook,
          createdBefore: olderThanMs === null ? undefined : new Date(Date.now() - olderThanMs),
        };
        let deleted = 0;
        for (;;) {
          const batch = await purgeDeliveries(client, config.schema, filter, PURGE_BATCH_ROWS);
          deleted += batch;
          if (batch < PURGE_BATCH_ROWS) break;
        }
        console.log(`${deleted} deliver${deleted === 1 ? 'y' : 'ies'} deleted`);
      });
    });

  deliveries
    .command('redeliver [id]')
    .description('make a stored delivery (or, with --webhook, every dead/failed one since --since) due now with a fresh retry budget')
    .option('--webhook <id>', 'the webhook whose deliveries to replay')
    .option('--since <time>', 'ISO time; with --webhook', '1970-01-01T00:00:00Z')
    .action(async (id: string | undefined, opts: { webhook?: string; since: string }, cmd: Command) => {
      const config = configFrom(cmd);
      if (!id && !opts.webhook) throw new BridgeError('ERR_USAGE', 'give a delivery id, or --webhook <id> [--since TIME]');
      const since = new Date(opts.since);
      if (Number.isNaN(since.getTime())) throw new BridgeError('ERR_USAGE', `--since ${opts.since} is not a time (use ISO 8601)`);
      await withClient(config, async (client) => {
        const count = await redeliver(client, config.schema, { id, webhookId: opts.webhook, since });
        if (id && count === 0) throw new BridgeError('ERR_USAGE', `no stored delivery with id ${id}`);
        console.log(`${count} deliver${count === 1 ? 'y' : 'ies'} scheduled for redelivery`);
      });
    });

  deliveries
    .command('replay')
    .description(
      'send a webhook again every event committed in a time window that the event log still holds (delivery.retentionHours), with the same event ids',
    )
    .requiredOption('--webhook <id>', 'the webhook to send them to')
    .requiredOption('--since <time>', 'ISO 8601: events committed at or after this time, e.g. 2026-03-01T14:00:00Z')
    .option('--until <time>', 'ISO 8601: events committed at or before this time (default: now)')
    .action(async (opts: { webhook: string; since: string; until?: string }, cmd: Command) => {
      const config = configFrom(cmd);
      if (!UUID.test(opts.webhook)) throw new BridgeError('ERR_USAGE', `--webhook ${opts.webhook} is not a webhook id (a UUID)`);
      const webhookId = opts.webhook.toLowerCase();
      const since = parseTimeOption('--since', opts.since);
      const until = opts.until === undefined ? new Date() : parseTimeOption('--until', opts.until);
      if (until < since) throw new BridgeError('ERR_USAGE', `--until ${until.toISOString()} is before --since ${since.toISOString()}`);
      await withClient(config, async (client) => {
        const subscriber = await liveSubscriber(client, config, webhookId);
        const coverage = logCoverageWarning(await logStart(client, config.schema), since, config.delivery.retentionHours);
        if (coverage !== null) console.log(`warning: ${coverage}`);
        if (subscriber.options?.filterProblem != null) {
          console.log(`warning: webhook ${webhookId}'s filter does not compile (${printable(subscriber.options.filterProblem)}): it takes no event`);
        }
        const counts = await queueReplay(client, config.schema, subscriber, { since, until });
        const window = `committed from ${since.toISOString()} to ${until.toISOString()}`;
        if (counts.matched === 0 && counts.filtered === 0 && coverage === null) {
          console.log(`warning: the event log holds no event for webhook ${webhookId} ${window}`);
        }
        console.log(`${counts.queued} event${counts.queued === 1 ? '' : 's'} ${window} queued for webhook ${webhookId} (${printable(subscriber.targetUrl)})`);
        const stored = counts.matched - counts.queued;
        if (stored > 0) {
          console.log(
            `${stored} of them already had a stored delivery, left as it is (a pending one goes out on its schedule; "pg-webhook-bridge deliveries redeliver" sends dead ones)`,
          );
        }
        if (counts.filtered > 0) console.log(`${counts.filtered} left out by the webhook's options ("pg-webhook-bridge webhooks list" shows them)`);
      });
    });
}
