import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import type { ConfigFrom, WithClient } from './types.js';
import { webhooksTable } from '../config.js';
import { BridgeError, coerceError } from '../errors.js';
import { parseSubscriberRow } from '../route/subscribers.js';
import { COLUMNS_CONFLICT, describeOptions, MAX_COALESCE_SECONDS, validateOptions, type WebhookOptionsInput } from '../route/webhookOptions.js';
import { lastLoggedPosition, logStart, positionAtTime, saveCursor } from '../store/eventLog.js';
import type { Queryable } from '../store/types.js';
import { disableWebhook, enableWebhook, hasWorkspaceColumn, listWebhookRows, optionsOfRow, setWebhookOptions } from '../store/webhookState.js';
import { parseTimeOption } from './timeOption.js';

/** Secrets shorter than this show no character at all: three of eight would be most of a guess. */
const MASK_MIN_REVEAL_LENGTH = 16;

/** Shows enough of a secret to tell two apart, never enough to use it. */
export function maskSecret(secret: unknown): string {
  if (typeof secret !== 'string' || secret.length === 0) return '(none)';
  const prefix = secret.startsWith('whsec_') ? 'whsec_' : '';
  const key = secret.slice(prefix.length);
  const shown = key.length >= MASK_MIN_REVEAL_LENGTH ? key.slice(0, 3) : '';
  return `${prefix}${shown}…(${secret.length} chars)`;
}

/**
 * Text from the webhooks table as the terminal will show it: control characters (ESC sequences can
 * rewrite the screen) and bidirectional overrides (they reorder what is read) are written as \u escapes.
 * Rows are user input: in Twenty, any workspace member can write a webhook URL.
 */
export function printable(text: unknown): string {
  return String(text).replace(
    /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

interface AddOptions {
  url: string;
  operations: string;
  secret?: string;
  secretEnv?: string;
  secretStdin?: boolean;
  description?: string;
  workspaceId?: string;
  from?: string;
}

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Where a Twenty operator finds a workspace's id: the webhooks table with a "workspaceId" is Twenty's. */
const LIST_WORKSPACES_SQL = 'select id, "displayName" from core.workspace';
const FOREIGN_KEY_VIOLATION = '23503';

/**
 * A new webhook's log cursor at the first event committed at or after `from`, so the daemon feeds it
 * the log from there before it keeps up. Returns what to tell the user when the log does not reach
 * back to `from`, or null. Runs in the transaction that inserts the webhook: the daemon never sees the
 * webhook without its cursor (it would start it on live events only).
 */
async function startCursorAt(db: Queryable, schema: string, webhookId: string, from: Date): Promise<string | null> {
  const at = await positionAtTime(db, schema, from);
  if (at !== null) {
    await saveCursor(db, schema, webhookId, at, null);
    const start = await logStart(db, schema);
    if (start === null || start.commitTime <= from) return null;
    return `the event log starts at ${start.commitTime.toISOString()}, after ${from.toISOString()}: the webhook gets the events committed from then on (older ones are no longer kept: delivery.retentionHours)`;
  }
  const last = await lastLoggedPosition(db, schema);
  // Every event the log gets from now on is for it too: it reads them from the log, then keeps up.
  if (last !== null) await saveCursor(db, schema, webhookId, { lsn: last.lsn, index: last.index + 1 }, null);
  return `the event log holds no event committed at or after ${from.toISOString()}: the webhook gets the events committed from now on`;
}

/** --workspace-id as given, checked to be a uuid (lower case, as Postgres prints it); undefined when not given. */
function workspaceIdOption(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!UUID_PATTERN.test(value.trim())) {
    throw new BridgeError('ERR_USAGE', `--workspace-id must be a uuid (the workspace's id: ${LIST_WORKSPACES_SQL}), not ${JSON.stringify(value)}`);
  }
  return value.trim().toLowerCase();
}

/** The secret the user gave, from argv, an environment variable or stdin; undefined when none was given. */
async function secretFromOptions(opts: AddOptions): Promise<string | undefined> {
  const sources = [opts.secret !== undefined, opts.secretEnv !== undefined, opts.secretStdin === true].filter(Boolean).length;
  if (sources > 1) throw new BridgeError('ERR_USAGE', 'give at most one of --secret, --secret-env, --secret-stdin');
  if (opts.secretEnv !== undefined) {
    const value = process.env[opts.secretEnv];
    if (value === undefined) throw new BridgeError('ERR_USAGE', `--secret-env: environment variable ${opts.secretEnv} is not set`);
    return value;
  }
  if (opts.secretStdin === true) {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks)
      .toString('utf8')
      .replace(/\r?\n$/, '');
  }
  return opts.secret;
}

interface SetOptions {
  onFields?: string;
  filter?: string;
  includeColumns?: string;
  excludeColumns?: string;
  coalesce?: string;
}

/** A comma-separated list option: '' clears it (null). */
function nameList(value: string): string[] | null {
  const names = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return names.length === 0 ? null : names;
}

/** The options `webhooks set` was given, as changes: a key absent keeps the stored value, null clears it. */
function optionChanges(opts: SetOptions): Partial<WebhookOptionsInput> {
  const changes: Partial<WebhookOptionsInput> = {};
  if (opts.onFields !== undefined) changes.onFields = nameList(opts.onFields);
  if (opts.filter !== undefined) changes.filter = opts.filter.trim() === '' ? null : opts.filter;
  if (opts.includeColumns !== undefined) changes.includeColumns = nameList(opts.includeColumns);
  if (opts.excludeColumns !== undefined) changes.excludeColumns = nameList(opts.excludeColumns);
  if (opts.coalesce !== undefined) {
    const text = opts.coalesce.trim();
    if (text !== '' && !/^\d+$/.test(text)) {
      throw new BridgeError(
        'ERR_USAGE',
        `--coalesce must be a whole number of seconds from 0 (off) to ${MAX_COALESCE_SECONDS}, not ${JSON.stringify(opts.coalesce)}`,
      );
    }
    const seconds = text === '' ? 0 : Number(text);
    changes.coalesceSeconds = seconds === 0 ? null : seconds;
  }
  return changes;
}

/** What `webhooks list` shows of a row's options: null when none is set. */
function listedOptions(row: Record<string, unknown>): WebhookOptionsInput | null {
  const options = optionsOfRow(row);
  return Object.values(options).every((v) => v === null) ? null : options;
}

export function registerWebhookCommands(program: Command, configFrom: ConfigFrom, withClient: WithClient): void {
  const webhooks = program.command('webhooks').description('manage subscribers (the webhooks table)');

  webhooks
    .command('add')
    .description('add a webhook; a secret is generated and printed once when none is given')
    .requiredOption('--url <url>', 'target URL (http or https)')
    .option('--operations <list>', 'comma-separated object.action filters, e.g. person.*,*.deleted', '*.*')
    .option(
      '--secret <secret>',
      'signing secret (prefix whsec_ for Standard Webhooks headers too); visible in ps and shell history: prefer --secret-env or --secret-stdin',
    )
    .option('--secret-env <name>', 'read the secret from this environment variable')
    .option('--secret-stdin', 'read the secret from standard input (one trailing newline is dropped)')
    .option('--description <text>', 'free text')
    .option(
      '--workspace-id <uuid>',
      `the Twenty workspace whose changes the webhook receives: required when the webhooks table has a "workspaceId" column (Twenty's core.webhook), refused otherwise; ${LIST_WORKSPACES_SQL} lists them`,
    )
    .option(
      '--from <time>',
      'ISO 8601: the webhook first gets the events committed since this time that the event log still holds (needs delivery.retentionHours above 0), then new ones',
    )
    .action(async (opts: AddOptions, cmd: Command) => {
      const config = configFrom(cmd);
      const workspaceId = workspaceIdOption(opts.workspaceId);
      const from = opts.from === undefined ? undefined : parseTimeOption('--from', opts.from);
      if (from !== undefined && config.delivery.retentionHours === 0) {
        throw new BridgeError(
          'ERR_USAGE',
          '--from needs delivery.retentionHours above 0: with 0 the event log keeps a change only while some webhook is behind, so it holds no history to start from; set it (as the daemon has it) and give the daemon time to keep changes',
        );
      }
      const operations = opts.operations
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      const given = await secretFromOptions(opts);
      const secret = given ?? randomBytes(32).toString('hex');
      const check = parseSubscriberRow({ id: 'new', targetUrl: opts.url, operations, secret });
      if (!check.ok) throw new BridgeError('ERR_USAGE', check.problem);
      await withClient(config, async (client) => {
        const table = webhooksTable(config);
        const workspaceColumn = await hasWorkspaceColumn(client, table);
        if (workspaceColumn && workspaceId === undefined) {
          throw new BridgeError(
            'ERR_USAGE',
            `--workspace-id is required: each webhook of ${config.webhooks.table} belongs to one workspace ("workspaceId") and receives only its changes; list the workspaces with: ${LIST_WORKSPACES_SQL}`,
          );
        }
        if (!workspaceColumn && workspaceId !== undefined) {
          throw new BridgeError(
            'ERR_USAGE',
            `--workspace-id: the webhooks table ${config.webhooks.table} has no "workspaceId" column (Twenty's core.webhook has one: source.mode "twenty"); leave the flag out`,
          );
        }
        // Twenty's core.webhook has no default for "workspaceId" (NOT NULL, a foreign key to core.workspace);
        // createdAt, updatedAt and id have defaults there as in the bridge's own table.
        const columns = ['"targetUrl"', 'operations', 'secret', 'description', ...(workspaceColumn ? ['"workspaceId"'] : [])];
        const values: unknown[] = [opts.url, operations, secret, opts.description ?? null, ...(workspaceColumn ? [workspaceId] : [])];
        let rows: Array<Record<string, unknown>>;
        let fromWarning: string | null = null;
        await client.query('begin');
        try {
          ({ rows } = await client.query(
            `insert into ${table} (${columns.join(', ')}) values (${values.map((_, i) => `$${i + 1}`).join(', ')}) returning id::text${workspaceColumn ? ', "workspaceId"::text' : ''}`,
            values,
          ));
          if (from !== undefined) fromWarning = await startCursorAt(client, config.schema, String(rows[0]!.id), from);
          await client.query('commit');
        } catch (thrown) {
          const error = coerceError(thrown);
          await client.query('rollback').catch(() => undefined);
          if ((error as { code?: unknown }).code === FOREIGN_KEY_VIOLATION && workspaceId !== undefined) {
            throw new BridgeError('ERR_USAGE', `no workspace ${workspaceId}: list the workspaces with: ${LIST_WORKSPACES_SQL}`, { cause: error });
          }
          throw error;
        }
        const where = workspaceColumn ? ` in workspace ${String(rows[0]!.workspaceId)}` : '';
        console.log(`added webhook ${String(rows[0]!.id)} -> ${opts.url} (${operations.join(',')})${where}`);
        if (fromWarning !== null) console.log(`warning: ${fromWarning}`);
        else if (from !== undefined) console.log(`it gets the events committed since ${from.toISOString()} first (from the event log), then new ones`);
        if (given === undefined) console.log(`secret (shown once, keep it for your receiver): ${secret}`);
        else if (given === '') console.log('empty secret: requests to this webhook are unsigned (anyone who can reach the URL can forge them)');
      });
    });

  webhooks
    .command('list')
    .description('every webhook with its state, last success and last error')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const config = configFrom(cmd);
      await withClient(config, async (client) => {
        const table = webhooksTable(config);
        const workspaceColumn = await hasWorkspaceColumn(client, table);
        const rows = await listWebhookRows(client, config.schema, table, workspaceColumn);
        const list = rows.map((row) => {
          const parsed = parseSubscriberRow(row);
          const state = row.deletedAt ? 'deleted' : !parsed.ok ? 'invalid' : row.disabled_at ? 'disabled' : 'active';
          return {
            id: row.id,
            state,
            url: row.targetUrl,
            // Only where the table has the column: other tables' output stays as it was.
            ...(workspaceColumn ? { workspaceId: (row.workspaceId as string | null) ?? null } : {}),
            operations: row.operations,
            secret: maskSecret(row.secret),
            problem: parsed.ok ? (row.disabled_reason ?? null) : parsed.problem,
            ignoredOperations: parsed.ok ? parsed.ignoredOperations : [],
            lastSuccessAt: row.last_success_at ?? null,
            lastError: row.last_error ?? null,
            lastErrorAt: row.last_error_at ?? null,
            options: listedOptions(row),
          };
        });
        if (opts.json) console.log(JSON.stringify(list, null, 2));
        else if (list.length === 0) console.log('no webhooks; add one with "pg-webhook-bridge webhooks add --url <url>"');
        else {
          for (const w of list) {
            console.log(
              `${printable(w.id)}  ${w.state.padEnd(8)}  ${printable(String(w.url).slice(0, 80))}  ops=${printable(JSON.stringify(w.operations))}  secret=${printable(w.secret)}`,
            );
            if (w.workspaceId !== undefined) console.log(`    workspace: ${printable(w.workspaceId ?? '(none)')}`);
            if (w.problem) console.log(`    ${w.state === 'disabled' ? 'disabled because' : 'problem'}: ${printable(w.problem)}`);
            if (w.ignoredOperations.length > 0) console.log(`    ignored operations (not "object.action"): ${printable(JSON.stringify(w.ignoredOperations))}`);
            if (w.state === 'active' && w.secret === '(none)') console.log('    requests are unsigned (empty secret)');
            if (w.options !== null) console.log(`    options: ${printable(describeOptions(w.options))}`);
            console.log(
              `    last success: ${w.lastSuccessAt ? new Date(w.lastSuccessAt as string).toISOString() : 'never'}; last error: ${printable(w.lastError ?? 'none')}`,
            );
          }
        }
      });
    });

  webhooks
    .command('remove <id>')
    .description('soft-delete a webhook (sets "deletedAt"): it receives nothing more')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const config = configFrom(cmd);
      await withClient(config, async (client) => {
        const { rowCount } = await client.query(
          `update ${webhooksTable(config)} set "deletedAt" = now(), "updatedAt" = now() where id::text = $1 and "deletedAt" is null`,
          [id],
        );
        if (rowCount === 0) throw new BridgeError('ERR_USAGE', `no active webhook with id ${id} ("pg-webhook-bridge webhooks list" shows them)`);
        console.log(`removed webhook ${id}`);
      });
    });

  webhooks
    .command('set <id>')
    .description("set a webhook's options (kept in the bridge's own schema); an empty value clears one, e.g. --filter ''")
    .option('--on-fields <list>', 'comma-separated fields: updated events go only when one of them changed (others are not filtered)')
    .option('--filter <expr>', 'CEL expression on the event body, e.g. \'data.firstName.startsWith("vip")\'; events where it is false or fails are not sent')
    .option('--include-columns <list>', 'comma-separated keys of data/record to send (all others removed)')
    .option('--exclude-columns <list>', 'comma-separated keys of data/record to remove')
    .option(
      '--coalesce <seconds>',
      `hold updates of one record until this many seconds pass without a newer one, then send one (0 to ${MAX_COALESCE_SECONDS}; 0: off)`,
    )
    .action(async (id: string, opts: SetOptions, cmd: Command) => {
      const config = configFrom(cmd);
      const changes = optionChanges(opts);
      if (Object.keys(changes).length === 0) {
        throw new BridgeError('ERR_USAGE', 'give at least one of --on-fields, --filter, --include-columns, --exclude-columns, --coalesce');
      }
      await withClient(config, async (client) => {
        const rows = (await listWebhookRows(client, config.schema, webhooksTable(config))).filter((row) => row.id === id);
        if (rows.length === 0) throw new BridgeError('ERR_USAGE', `no webhook with id ${id} ("pg-webhook-bridge webhooks list" shows them)`);
        const merged: WebhookOptionsInput = { ...optionsOfRow(rows[0]!), ...changes };
        const problems = validateOptions(merged);
        const conflict = problems.indexOf(COLUMNS_CONFLICT);
        if (conflict >= 0 && !('includeColumns' in changes && 'excludeColumns' in changes)) {
          const stored = 'includeColumns' in changes ? '--exclude-columns' : '--include-columns';
          problems[conflict] = `${COLUMNS_CONFLICT}: webhook ${id} has ${stored} set; clear it in the same command (${stored} '')`;
        }
        if (problems.length > 0) throw new BridgeError('ERR_USAGE', problems.join('\n'));
        await setWebhookOptions(client, config.schema, id, changes);
        const shown = describeOptions(merged);
        console.log(`webhook ${id} options: ${shown === '' ? '(none)' : printable(shown)}`);
      });
    });

  for (const [name, enable] of [
    ['enable', true],
    ['disable', false],
  ] as const) {
    webhooks
      .command(`${name} <id>`)
      .description(
        enable
          ? 're-enable a webhook the bridge or an operator disabled'
          : 'stop deliveries to a webhook: events committed while disabled are not sent; stored ones resume on enable',
      )
      .action(async (id: string, _opts: unknown, cmd: Command) => {
        const config = configFrom(cmd);
        await withClient(config, async (client) => {
          const exists = await client.query(`select 1 from ${webhooksTable(config)} where id::text = $1`, [id]);
          if (exists.rowCount === 0) throw new BridgeError('ERR_USAGE', `no webhook with id ${id}`);
          if (enable) await enableWebhook(client, config.schema, id);
          else await disableWebhook(client, config.schema, id, 'disabled by an operator');
          console.log(`${enable ? 'enabled' : 'disabled'} webhook ${id}`);
        });
      });
  }
}
