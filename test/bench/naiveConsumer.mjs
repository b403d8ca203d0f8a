// The consumer a user writes from pg-logical-replication's README, for the bench's `naive` phase: what
// the daemon's drain is compared with. Plain JavaScript run by plain `node`, no tsx, so that its CPU and
// RSS are measured as the compiled daemon's are.
//
//   node test/bench/naiveConsumer.mjs '{"url":...,"slot":...,"publication":...,"target":...}'
//
// As the README shows it: `LogicalReplicationService` with the default acknowledgement settings
// (`auto: true`, `timeoutSeconds: 10`: every message is acknowledged once its handler returns, delivered
// or not), `flowControl.enabled` so that the `await` in the data handler really waits (without it the
// library does not await the handler, and every change would be POSTed at once, unbounded), and one
// JSON POST per insert/update/delete with undici's `request()` on its default global dispatcher
// (keep-alive), awaited one at a time. No store, no retries, no signing, no batching: a failed POST is
// logged and the change is gone. The `webhook-id` header (commit LSN and position in the transaction)
// is there because the bench's receiver counts distinct ids.
//
// Runs until SIGTERM (the bench stops it once the receiver has every change).
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import { setTimeout } from 'node:timers';
import { request } from 'undici';

const options = JSON.parse(process.argv[2]);

const service = new LogicalReplicationService({ connectionString: options.url }, { flowControl: { enabled: true } });
const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [options.publication] });

let commitLsn = '';
let timestamp = '';
let position = 0;

service.on('data', async (_lsn, message) => {
  if (message.tag === 'begin') {
    commitLsn = message.commitLsn;
    // commitTime: microseconds since the Unix epoch, as a BigInt.
    timestamp = new Date(Number(message.commitTime / 1000n)).toISOString();
    position = 0;
    return;
  }
  if (message.tag !== 'insert' && message.tag !== 'update' && message.tag !== 'delete') return;
  const id = `${commitLsn}-${position++}`;
  const body = JSON.stringify({
    id,
    event: `${message.relation.name}.${message.tag}`,
    table: `${message.relation.schema}.${message.relation.name}`,
    timestamp,
    data: message.tag === 'delete' ? (message.old ?? message.key) : message.new,
  });
  const response = await request(options.target, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'webhook-id': id },
    body,
  });
  await response.body.dump();
  if (response.statusCode >= 300) console.error(`POST ${id}: HTTP ${response.statusCode}`);
});

service.on('error', (error) => console.error(error));

let stopping = false;
// The README's subscribe loop: reconnect 100 ms after the stream ends.
(function proc() {
  if (stopping) return;
  service
    .subscribe(plugin, options.slot)
    .catch((e) => console.error(e))
    .then(() => setTimeout(proc, 100));
})();

process.on('SIGTERM', () => {
  stopping = true;
  service.destroy().finally(() => process.exit(0));
});
