import type { Command } from 'commander';
import type { ConfigFrom, WithClient } from './types.js';
import { BridgeError } from '../errors.js';
import { parseDuration } from '../duration.js';
import { listDeliveries, purgeDeliveries, redeliver } from '../store/deliveryStore.js';

/** Rows deleted per statement by `deliveries purge`. */
const PURGE_BATCH_ROWS = 1_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

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
}
