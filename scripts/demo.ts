/**
 * `npm run demo`: the whole bridge on one machine, nothing to install beyond `npm ci`.
 * An embedded Postgres (wal_level=logical) on a free port, the CRM tables, a local receiver that
 * verifies every signature, the daemon, and a writer making changes. Each received event is printed
 * on one line. Runs until Ctrl-C; `--exit-after N` exits 0 after N verified events (1 on a failed
 * verification or after 60 s).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { Daemon } from '../src/daemon.js';
import { createLogger } from '../src/log.js';
import { migrate } from '../src/migrate.js';
import { verifySignature } from '../src/verify.js';
import { ClusterSetupError, startCluster } from '../test/helpers/postgresCluster.js';
import { runTwentyDemo } from './demoTwenty.js';

const DEMO_TIMEOUT_MS = 60_000;
const SECRET = 'whsec_' + Buffer.from('pg-webhook-bridge demo secret!!').toString('base64');

const { values } = parseArgs({ options: { 'exit-after': { type: 'string' }, verbose: { type: 'boolean' }, twenty: { type: 'boolean' } } });
const exitAfter = values['exit-after'] ? Number(values['exit-after']) : null;
if (values.twenty) await runTwentyDemo({ exitAfter, verbose: values.verbose === true });

console.log('starting an embedded Postgres with wal_level=logical ...');
const cluster = await startCluster().catch((error: unknown) => {
  // This machine cannot run the demo's Postgres: the message says what to do; a stack trace would not.
  if (!(error instanceof ClusterSetupError)) throw error;
  console.error(`demo: ${error.message}`);
  process.exit(1);
});
const url = cluster.adminUrl('postgres');
let received = 0;
let failed = 0;
let finishing = false;

const receiver = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    // Both schemes are checked on their own: the Twenty headers, then the Standard Webhooks ones.
    const twenty = verifySignature(body, pick(req.headers, /^x-twenty-webhook-/), SECRET);
    const standard = verifySignature(body, pick(req.headers, /^webhook-/), SECRET);
    const check = !twenty.valid ? twenty : !standard.valid ? standard : { valid: true as const, scheme: 'twenty + standard webhooks' };
    res.writeHead(check.valid ? 200 : 401).end();
    const event = JSON.parse(body) as { event: string; id: string; data: Record<string, unknown> };
    const label = 'name' in event.data ? event.data.name : (event.data.firstName ?? event.data.title);
    if (check.valid) received++;
    else failed++;
    console.log(
      `${event.event.padEnd(18)} id=${event.id}  ${check.valid ? `verified (${check.scheme})` : `NOT VERIFIED: ${check.reason}`}  ${JSON.stringify(label)}`,
    );
    if (failed > 0) void finish(1);
    else if (exitAfter !== null && received >= exitAfter) void finish(0);
  });
});
await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
const receiverUrl = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/webhook`;

const config = loadConfig({
  env: {},
  overrides: {
    'database.url': url,
    'http.port': 0,
    // The receiver is on loopback; in production private targets stay refused.
    'delivery.allowPrivateTargets': true,
    'log.level': values.verbose ? 'info' : 'warn',
  },
});
const db = new pg.Client({ connectionString: url });
await db.connect();
await db.query(readFileSync(new URL('../examples/crm-schema.sql', import.meta.url), 'utf8'));
await migrate(db, config);
await db.query(`insert into webhook_bridge.webhooks ("targetUrl", operations, secret, description) values ($1, '{*.*}', $2, 'demo receiver')`, [
  receiverUrl,
  SECRET,
]);
console.log(`receiver at ${receiverUrl}; webhook registered for *.* (secret ${SECRET.slice(0, 10)}...)`);

const daemon = new Daemon(config, createLogger(config.log.level));
await daemon.start();
console.log('daemon streaming; writing CRM changes ...\n');

const timeout = setTimeout(
  () => {
    console.error(`demo: only ${received} verified events after ${DEMO_TIMEOUT_MS / 1000} s`);
    void finish(1);
  },
  exitAfter !== null ? DEMO_TIMEOUT_MS : 2 ** 31 - 1,
);

function pick(headers: http.IncomingHttpHeaders, pattern: RegExp): http.IncomingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => pattern.test(name)));
}

async function writeSomeChanges(round: number): Promise<void> {
  const company = await db.query(`insert into company (name, "domainName", employees) values ($1, $2, $3) returning id`, [
    `Acme ${round}`,
    `acme${round}.example`,
    10 + round,
  ]);
  const person = await db.query(`insert into person ("firstName", "lastName", email, "companyId") values ($1, 'Doe', $2, $3) returning id`, [
    `Alice ${round}`,
    `alice${round}@example.com`,
    company.rows[0].id,
  ]);
  await db.query(`insert into note (title, "bodyV2") values ($1, 'Met at the conference')`, [`Call with Alice ${round}`]);
  await db.query(`insert into task (title, "dueAt") values ($1, now() + interval '1 day')`, [`Follow up ${round}`]);
  await db.query(`update person set email = $1, "updatedAt" = now() where id = $2`, [`alice.doe${round}@example.com`, person.rows[0].id]);
  await db.query(`update company set employees = employees + 1 where id = $1`, [company.rows[0].id]);
  await db.query(`update task set status = 'DONE' where title = $1`, [`Follow up ${round}`]);
  await db.query(`update note set "deletedAt" = now() where title = $1`, [`Call with Alice ${round}`]);
}

let round = 0;
const writer = setInterval(() => {
  if (!finishing) void writeSomeChanges(++round).catch((error) => console.error('writer:', error.message));
}, 2_000);
void writeSomeChanges(++round);

async function finish(code: number): Promise<void> {
  if (finishing) return;
  finishing = true;
  clearInterval(writer);
  clearTimeout(timeout);
  console.log(`\n${received} verified events${failed ? `, ${failed} FAILED verification` : ''}; shutting down`);
  await daemon.stop(3_000).catch(() => undefined);
  await db.end().catch(() => undefined);
  receiver.closeAllConnections();
  await new Promise((resolve) => receiver.close(resolve));
  await cluster.stop();
  process.exit(code);
}

process.on('SIGINT', () => void finish(0));
process.on('SIGTERM', () => void finish(0));
