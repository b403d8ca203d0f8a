import { Command, Option } from 'commander';
import pg from 'pg';
import { configKeys, flagForKey, loadConfig, type BridgeConfig } from './config.js';
import { clientConfig } from './database.js';
import { BridgeError, ConfigError } from './errors.js';
import { createLogger, maskDatabaseUrl } from './log.js';
import { VERSION } from './version.js';
import { registerDeliveryCommands } from './commands/deliveries.js';
import { registerWebhookCommands } from './commands/webhooks.js';
import { registerSlotCommands } from './commands/slot.js';
import { registerStatusCommand } from './commands/status.js';
import { registerVerifyCommand } from './commands/verify.js';
import { runStart } from './commands/start.js';
import { migrate } from './migrate.js';
import { preflight } from './check.js';

/** Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage, 3 preflight problems. */
export const EXIT = { ok: 0, failure: 1, config: 2, preflight: 3 } as const;

export function buildProgram(): Command {
  const program = new Command('pg-webhook-bridge')
    .description('Turns committed Postgres row changes into signed webhooks (logical replication, pgoutput).')
    .version(VERSION)
    .option('-c, --config <file>', 'JSON config file (or PG_WEBHOOK_BRIDGE_CONFIG)')
    .showHelpAfterError();
  // One flag per config key, generated from the schema: flags outrank env and file.
  for (const key of configKeys()) {
    // source.tables is kept as pairs inside convict; users write (and see) the map form.
    const shownDefault =
      key.key === 'source.tables' ? Object.fromEntries((key.default as Array<{ table: string; object: string }>).map((p) => [p.table, p.object])) : key.default;
    const shown = key.sensitive ? '' : ` (default: ${JSON.stringify(shownDefault)})`;
    program.addOption(new Option(`${flagForKey(key.key)} <value>`, `${key.doc}${shown}${key.env ? ` [env ${key.env}]` : ''}`));
  }

  program
    .command('start')
    .description('stream changes and deliver webhooks until SIGTERM')
    .action(async (_o, cmd: Command) => {
      process.exitCode = await runStart(configFrom(cmd));
    });

  program
    .command('migrate')
    .description('apply sql/ migrations, build the publication, set REPLICA IDENTITY FULL')
    .action(async (_o, cmd: Command) => {
      const config = configFrom(cmd);
      await withClient(config, async (client) => {
        const result = await migrate(client, config);
        console.log(`migrations applied: ${result.applied.length ? result.applied.join(', ') : 'none (up to date)'}`);
        console.log(`publication "${config.replication.publication}" covers: ${result.publicationTables.join(', ') || '(no watched table exists yet)'}`);
        if (result.replicaIdentityChanged.length) console.log(`REPLICA IDENTITY FULL set on: ${result.replicaIdentityChanged.join(', ')}`);
      });
    });

  program
    .command('check')
    .description('preflight: wal_level, privileges, publication, slot, replica identity')
    .action(async (_o, cmd: Command) => {
      const config = configFrom(cmd);
      await withClient(config, async (client) => {
        const report = await preflight(client, config);
        for (const w of report.warnings) console.log(`warning: ${w}`);
        for (const p of report.problems) console.log(`problem: ${p}`);
        if (report.problems.length === 0) console.log('ok: ready to stream');
        else process.exitCode = EXIT.preflight;
      });
    });

  registerWebhookCommands(program, configFrom, withClient);
  registerDeliveryCommands(program, configFrom, withClient);
  registerSlotCommands(program, configFrom, withClient);
  registerStatusCommand(program, configFrom, withClient);
  registerVerifyCommand(program);
  return program;
}

/** Config from the root command's flags, the environment and the file; exits 2 when invalid. */
export function configFrom(cmd: Command): BridgeConfig {
  const root = rootOf(cmd);
  const opts = root.opts() as Record<string, string | undefined>;
  const overrides: Record<string, unknown> = {};
  for (const key of configKeys()) {
    const name = flagForKey(key.key)
      .slice(2)
      .replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (opts[name] !== undefined) overrides[key.key] = opts[name];
  }
  return loadConfig({ file: opts.config, overrides });
}

function rootOf(cmd: Command): Command {
  let c = cmd;
  while (c.parent) c = c.parent;
  return c;
}

/** Runs `fn` with one connected client; connection failures become one actionable line. */
export async function withClient<T>(config: BridgeConfig, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(clientConfig(config));
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (cause) {
    throw new BridgeError(
      'ERR_CONNECT',
      `cannot connect to ${maskDatabaseUrl(config.database.url)}: ${(cause as Error).message}; check database.url (DATABASE_URL) and that Postgres is running`,
      { cause },
    );
  }
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(error.message);
      process.exitCode = EXIT.config;
    } else if (error instanceof BridgeError) {
      console.error(`error: ${error.message}`);
      process.exitCode = error.code === 'ERR_USAGE' ? EXIT.config : EXIT.failure;
    } else {
      console.error(`error: ${(error as Error).message}`);
      process.exitCode = EXIT.failure;
    }
  }
}

export { createLogger };
