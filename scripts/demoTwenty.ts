/**
 * `npm run demo -- --twenty`: the bridge as a sidecar of a Twenty database. An embedded Postgres holds
 * a database shaped like Twenty's with two workspaces ("Acme" and "Globex", each its own schema),
 * each with a webhook in core.webhook pointing at its own local receiver (Acme's signed, Globex's with
 * an empty secret, as Twenty's Zapier app makes them). Each received event is printed with the
 * receiver it reached: every workspace's events reach only its own receiver.
 */
import http from 'node:http';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { Daemon } from '../src/daemon.js';
import { createLogger } from '../src/log.js';
import { migrate } from '../src/migrate.js';
import { verifySignature } from '../src/verify.js';
import { startCluster } from '../test/helpers/postgresCluster.js';
import { createTwentyWorkspace, TWENTY_CORE_SQL, type TwentyWorkspace } from '../test/fixtures/twentyDatabase.js';

const DEMO_TIMEOUT_MS = 60_000;
const ACME_SECRET = 'b5a4938271605f4e3d2c1b0a9f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6';

export async function runTwentyDemo(options: { exitAfter: number | null; verbose: boolean }): Promise<never> {
  console.log('starting an embedded Postgres with wal_level=logical ...');
  const cluster = await startCluster();
  const url = cluster.adminUrl('postgres');
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  await db.query(TWENTY_CORE_SQL);
  const acme = await createTwentyWorkspace(db, { displayName: 'Acme', registration: 'databaseSchema' });
  const globex = await createTwentyWorkspace(db, { displayName: 'Globex', registration: 'dataSource' });
  const names = new Map([
    [acme.id, 'Acme'],
    [globex.id, 'Globex'],
  ]);
  console.log(`Twenty-shaped database: workspaces Acme (${acme.schema}) and Globex (${globex.schema})`);

  let received = 0;
  let failed = 0;
  let finishing = false;
  const receivers: http.Server[] = [];
  const startReceiver = async (owner: string, secret: string): Promise<string> => {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const event = JSON.parse(body) as { eventName: string; workspaceId: string; record: Record<string, any>; updatedFields?: string[] };
        // A signed webhook's requests must verify; an unsigned one's must carry no signature.
        const check = secret
          ? verifySignature(body, req.headers, secret)
          : req.headers['x-twenty-webhook-signature']
            ? { valid: false as const, reason: 'unexpected signature' }
            : { valid: true as const, scheme: 'unsigned' };
        const ownWorkspace = names.get(event.workspaceId) === owner;
        const ok = check.valid && ownWorkspace;
        res.writeHead(ok ? 200 : 401).end();
        if (ok) received++;
        else failed++;
        const label = event.record.name?.firstName ?? event.record.name ?? event.record.title ?? '';
        const verdict = !ownWorkspace
          ? `WRONG WORKSPACE (${names.get(event.workspaceId)})`
          : check.valid
            ? secret
              ? 'verified'
              : 'unsigned'
            : `NOT VERIFIED: ${check.reason}`;
        console.log(
          `[${owner} receiver] ${event.eventName.padEnd(16)} ${verdict.padEnd(9)} ${JSON.stringify(label)}${event.updatedFields ? `  updatedFields=${JSON.stringify(event.updatedFields)}` : ''}`,
        );
        if (failed > 0) void finish(1);
        else if (options.exitAfter !== null && received >= options.exitAfter) void finish(0);
      });
    });
    receivers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as { port: number }).port}/twenty`;
  };
  const acmeUrl = await startReceiver('Acme', ACME_SECRET);
  const globexUrl = await startReceiver('Globex', '');
  await db.query(
    `insert into core.webhook ("targetUrl", operations, secret, "workspaceId") values ($1, '{*.*}', $2, $3), ($4, '{person.*,company.*}', '', $5)`,
    [acmeUrl, ACME_SECRET, acme.id, globexUrl, globex.id],
  );

  const config = loadConfig({
    env: {},
    overrides: {
      'database.url': url,
      'source.mode': 'twenty',
      'http.port': 0,
      // The receivers are on loopback; in production private targets stay refused.
      'delivery.allowPrivateTargets': true,
      'log.level': options.verbose ? 'info' : 'warn',
    },
  });
  await migrate(db, config);
  const daemon = new Daemon(config, createLogger(config.log.level));
  await daemon.start();
  console.log('daemon streaming in Twenty mode; writing records in both workspaces ...\n');

  const timeout = setTimeout(
    () => {
      console.error(`demo: only ${received} events after ${DEMO_TIMEOUT_MS / 1000} s`);
      void finish(1);
    },
    options.exitAfter !== null ? DEMO_TIMEOUT_MS : 2 ** 31 - 1,
  );

  const write = async (ws: TwentyWorkspace, round: number, who: string): Promise<void> => {
    const company = await db.query(
      `insert into ${ws.schema}.company (name, "domainNamePrimaryLinkUrl", "annualRecurringRevenueAmountMicros", "annualRecurringRevenueCurrencyCode") values ($1, $2, 5000000000, 'USD') returning id`,
      [`${who} Corp ${round}`, `https://${who.toLowerCase()}.example`],
    );
    const person = await db.query(
      `insert into ${ws.schema}.person ("nameFirstName", "nameLastName", "emailsPrimaryEmail", "companyId") values ($1, 'Doe', $2, $3) returning id`,
      [`${who} person ${round}`, `p${round}@${who.toLowerCase()}.example`, company.rows[0].id],
    );
    await db.query(`insert into ${ws.schema}.task (title, status) values ($1, 'TODO')`, [`${who} task ${round}`]);
    await db.query(`update ${ws.schema}.person set "jobTitle" = 'CTO', "updatedAt" = now() where id = $1`, [person.rows[0].id]);
    await db.query(`update ${ws.schema}.person set "deletedAt" = now() where id = $1`, [person.rows[0].id]);
  };
  let round = 0;
  const writeRound = () => {
    round++;
    void write(acme, round, 'Acme')
      .then(() => write(globex, round, 'Globex'))
      .catch((error: Error) => console.error('writer:', error.message));
  };
  const writer = setInterval(() => {
    if (!finishing) writeRound();
  }, 2_000);
  writeRound();

  async function finish(code: number): Promise<void> {
    if (finishing) return;
    finishing = true;
    clearInterval(writer);
    clearTimeout(timeout);
    console.log(`\n${received} events, each at its own workspace's receiver${failed ? `; ${failed} FAILED` : ''}; shutting down`);
    await daemon.stop(3_000).catch(() => undefined);
    await db.end().catch(() => undefined);
    for (const server of receivers) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    await cluster.stop();
    process.exit(code);
  }
  process.on('SIGINT', () => void finish(0));
  process.on('SIGTERM', () => void finish(0));
  // Ends through finish(), which exits the process.
  return new Promise<never>(() => undefined);
}
