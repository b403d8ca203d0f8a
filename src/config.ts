import convict from 'convict';
import { existsSync, readFileSync } from 'node:fs';
import { quoteQualified } from './database.js';
import { parseBooleanText, safeJson, toTablePairs, type TablePair } from './configFormats.js';
import { urlTlsParameters } from './configTls.js';
import { ConfigError } from './errors.js';

/**
 * The whole configuration, one convict schema. Precedence: CLI flags > environment > config file >
 * defaults. `--help` and the README table are generated from this schema, so every key needs `doc`.
 */

const RETRY_SCHEDULE_S = [5, 300, 1800, 7200, 18000, 36000, 36000]; // 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h

export const configSchema = {
  database: {
    url: {
      doc: 'Connection URL of the CRM database (the replication connection uses the same credentials).',
      format: 'postgres-url',
      default: 'postgres://postgres@localhost:5432/postgres',
      env: 'DATABASE_URL',
      sensitive: true,
    },
    ssl: {
      mode: {
        doc: 'TLS to Postgres: disable, require (encrypt, no certificate check), verify-full (check CA and host name).',
        format: ['disable', 'require', 'verify-full'],
        default: 'disable',
        env: 'PG_WEBHOOK_BRIDGE_DATABASE_SSL_MODE',
      },
      caFile: {
        doc: 'PEM file with the CA that signed the server certificate (for verify-full).',
        format: String,
        default: '',
        env: 'PG_WEBHOOK_BRIDGE_DATABASE_SSL_CA_FILE',
      },
    },
  },
  schema: {
    doc: "The bridge's own schema: webhooks table, delivery store, state.",
    format: 'identifier',
    default: 'webhook_bridge',
    env: 'PG_WEBHOOK_BRIDGE_SCHEMA',
  },
  webhooks: {
    table: {
      doc: 'Schema-qualified subscribers table with Twenty\'s webhook columns; empty means "<schema>.webhooks" ("core.webhook" in Twenty mode).',
      format: String,
      default: '',
      env: 'PG_WEBHOOK_BRIDGE_WEBHOOKS_TABLE',
    },
  },
  replication: {
    slot: {
      doc: 'Name of the permanent logical replication slot (created if missing, never dropped).',
      format: 'identifier',
      default: 'pg_webhook_bridge',
      env: 'PG_WEBHOOK_BRIDGE_SLOT',
    },
    publication: {
      doc: 'Name of the publication on the watched tables (created by migrate).',
      format: 'identifier',
      default: 'pg_webhook_bridge',
      env: 'PG_WEBHOOK_BRIDGE_PUBLICATION',
    },
    heartbeatIntervalMs: {
      doc: 'How often, while no change arrives, a heartbeat message is written to WAL so the slot position can advance.',
      format: 'nat',
      default: 10_000,
      env: 'PG_WEBHOOK_BRIDGE_HEARTBEAT_INTERVAL_MS',
    },
    ackIntervalMs: {
      doc: 'How often the safe (fully delivered or logged) position is reported to Postgres.',
      format: 'nat',
      default: 500,
      env: 'PG_WEBHOOK_BRIDGE_ACK_INTERVAL_MS',
    },
  },
  source: {
    mode: {
      doc: 'What is watched: "tables" (the tables of source.tables) or "twenty" (every workspace, object and field that Twenty\'s core metadata describes; source.tables is then unused).',
      format: ['tables', 'twenty'],
      default: 'tables',
      env: 'PG_WEBHOOK_BRIDGE_SOURCE_MODE',
    },
    discoveryIntervalMs: {
      doc: 'Twenty mode: how often the core metadata is checked for new or changed workspaces, objects and fields; new tables join the publication then.',
      format: 'nat',
      default: 10_000,
      env: 'PG_WEBHOOK_BRIDGE_DISCOVERY_INTERVAL_MS',
    },
    tables: {
      doc: 'Watched tables: "schema.table" -> object name used in event names.',
      format: 'table-map',
      default: toTablePairs({
        'public.person': 'person',
        'public.company': 'company',
        'public.note': 'note',
        'public.task': 'task',
      }) as TablePair[],
      env: 'PG_WEBHOOK_BRIDGE_SOURCE_TABLES',
    },
    softDeleteColumn: {
      doc: 'Column whose setting/clearing turns an UPDATE into <object>.deleted / <object>.restored (empty disables).',
      format: String,
      default: 'deletedAt',
      env: 'PG_WEBHOOK_BRIDGE_SOFT_DELETE_COLUMN',
    },
  },
  payload: {
    format: {
      doc: 'Request body: "event" ({event, data, timestamp, id, updatedFields}) or "twenty" (the body Twenty\'s own webhooks send; needs source.mode "twenty"); empty means "twenty" in Twenty mode, else "event".',
      format: ['', 'event', 'twenty'],
      default: '',
      env: 'PG_WEBHOOK_BRIDGE_PAYLOAD_FORMAT',
    },
    camelCase: {
      doc: 'Map snake_case column names to camelCase keys in "data".',
      format: 'strict-boolean',
      default: false,
      env: 'PG_WEBHOOK_BRIDGE_PAYLOAD_CAMEL_CASE',
    },
  },
  http: {
    port: {
      doc: 'Port of the /healthz, /readyz and /metrics endpoints (0 disables them).',
      format: 'port',
      default: 8080,
      env: 'PG_WEBHOOK_BRIDGE_HTTP_PORT',
    },
    host: {
      doc: 'Address the health and metrics endpoints listen on.',
      format: String,
      default: '0.0.0.0',
      env: 'PG_WEBHOOK_BRIDGE_HTTP_HOST',
    },
  },
  delivery: {
    timeoutMs: {
      doc: 'Deadline of one delivery attempt (connect, send, response headers), in milliseconds.',
      format: 'nat',
      default: 10_000,
      env: 'PG_WEBHOOK_BRIDGE_DELIVERY_TIMEOUT_MS',
    },
    concurrency: {
      doc: 'Requests in flight at once per webhook.',
      format: 'nat',
      default: 16,
      env: 'PG_WEBHOOK_BRIDGE_DELIVERY_CONCURRENCY',
    },
    retrySchedule: {
      doc: 'Delays in seconds before each retry (+-20% jitter); after the last one a delivery is dead.',
      format: 'positive-int-array',
      default: RETRY_SCHEDULE_S,
      env: 'PG_WEBHOOK_BRIDGE_DELIVERY_RETRY_SCHEDULE',
    },
    allowPrivateTargets: {
      doc: 'Allow targets on loopback, private, link-local and other internal addresses (development only).',
      format: 'strict-boolean',
      default: false,
      env: 'PG_WEBHOOK_BRIDGE_ALLOW_PRIVATE_TARGETS',
    },
    allowedCidrs: {
      doc: 'Internal address ranges that targets may use even when private targets are refused, e.g. ["10.1.0.0/16"].',
      format: 'string-array',
      default: [] as string[],
      env: 'PG_WEBHOOK_BRIDGE_ALLOWED_CIDRS',
    },
    maxPayloadBytes: {
      doc: 'Largest request body; a larger event is sent in its truncated form (primary key only), and row values past this much text are read as their length only.',
      format: 'nat',
      default: 1_048_576,
      env: 'PG_WEBHOOK_BRIDGE_MAX_PAYLOAD_BYTES',
    },
    maxResponseBytes: {
      doc: 'How much of a response body is read (the rest is discarded).',
      format: 'nat',
      default: 65_536,
      env: 'PG_WEBHOOK_BRIDGE_MAX_RESPONSE_BYTES',
    },
    disableAfterHours: {
      doc: 'A webhook failing with no success for this long is disabled with a reason.',
      format: Number,
      default: 120,
      env: 'PG_WEBHOOK_BRIDGE_DISABLE_AFTER_HOURS',
    },
    memoryQueueLimit: {
      doc: 'Deliveries held in memory per webhook; past it the stream waits, and a webhook full with no attempt ending falls behind (reads the event log).',
      format: 'nat',
      default: 2_000,
      env: 'PG_WEBHOOK_BRIDGE_MEMORY_QUEUE_LIMIT',
    },
    memoryQueueBytes: {
      doc: 'Payload bytes held in memory per webhook; past it the stream waits, as for delivery.memoryQueueLimit.',
      format: 'nat',
      default: 64 * 1024 * 1024,
      env: 'PG_WEBHOOK_BRIDGE_MEMORY_QUEUE_BYTES',
    },
    storeAfterMs: {
      doc: 'A webhook with an attempt running this long, or a delivery waiting ten times as long, falls behind: it reads the event log from then on, so the slot can advance.',
      format: 'nat',
      default: 1_000,
      env: 'PG_WEBHOOK_BRIDGE_STORE_AFTER_MS',
    },
    retentionHours: {
      doc: 'How long the event log keeps every change, for `deliveries replay` and `webhooks add --from`; 0 writes a change only while some webhook is behind and deletes it once none needs it.',
      format: 'nat',
      default: 0,
      env: 'PG_WEBHOOK_BRIDGE_RETENTION_HOURS',
    },
    purgeDeadAfterDays: {
      doc: 'Dead deliveries (which hold whole rows: personal data) are deleted this many days after they died, checked hourly; 0 keeps them.',
      format: 'nat',
      default: 30,
      env: 'PG_WEBHOOK_BRIDGE_PURGE_DEAD_AFTER_DAYS',
    },
    storePollMs: {
      doc: 'How often failed deliveries in the durable store are polled for those that are due.',
      format: 'nat',
      default: 500,
      env: 'PG_WEBHOOK_BRIDGE_STORE_POLL_MS',
    },
  },
  log: {
    level: {
      doc: 'Log level: fatal, error, warn, info, debug, trace or silent.',
      format: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
      default: 'info',
      env: 'LOG_LEVEL',
    },
  },
};

type Schema = typeof configSchema;
type Leaf = { default: unknown };
type ValueOf<S> = S extends Leaf ? S['default'] : { readonly [K in keyof S]: ValueOf<S[K]> };
type RawConfig = ValueOf<Schema>;
export type BridgeConfig = Omit<RawConfig, 'source'> & {
  readonly source: Omit<RawConfig['source'], 'tables'> & { readonly tables: Readonly<Record<string, string>> };
};

/** Every leaf key of the schema, dotted, with its definition (for --help, flags and the README). */
export function configKeys(): Array<{ key: string; doc: string; default: unknown; env?: string; sensitive?: boolean }> {
  const out: Array<{ key: string; doc: string; default: unknown; env?: string; sensitive?: boolean }> = [];
  const walk = (node: Record<string, unknown>, prefix: string): void => {
    for (const [name, child] of Object.entries(node)) {
      const key = prefix ? `${prefix}.${name}` : name;
      const def = child as Record<string, unknown>;
      if ('doc' in def && 'default' in def) {
        out.push({ key, doc: String(def.doc), default: def.default, env: def.env as string | undefined, sensitive: def.sensitive === true });
      } else walk(def, key);
    }
  };
  walk(configSchema as unknown as Record<string, unknown>, '');
  return out;
}

/** `delivery.timeoutMs` -> `--delivery-timeout-ms`. */
export function flagForKey(key: string): string {
  return `--${key.replace(/\./g, '-').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

export interface LoadConfigOptions {
  /** Path of a JSON config file; falls back to PG_WEBHOOK_BRIDGE_CONFIG. */
  file?: string;
  /** Values from CLI flags, by dotted key; they win over everything else. */
  overrides?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
}

/**
 * Loads, validates and freezes the configuration. Throws ConfigError listing every bad key with its
 * expected form; nothing connects before this succeeds.
 */
export function loadConfig(options: LoadConfigOptions = {}): BridgeConfig {
  const env = options.env ?? process.env;
  const config = convict(configSchema, { env, args: [] });
  const problems: string[] = [];
  const file = options.file ?? env.PG_WEBHOOK_BRIDGE_CONFIG;
  if (file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (cause) {
      throw new ConfigError([`config file ${file}: ${(cause as Error).message}`], { cause });
    }
    // Environment variables outrank the file: load the file, then re-apply the environment on top.
    const fileTables = (parsed as { source?: { tables?: unknown } } | null)?.source;
    if (fileTables && 'tables' in fileTables) fileTables.tables = toTablePairs(fileTables.tables);
    config.load(parsed as object);
    const known = new Set(configKeys().map((k) => k.key));
    for (const { key, env: name } of configKeys()) {
      if (name && env[name] !== undefined) config.set(key as never, coerceEnv(key, env[name]!) as never);
    }
    for (const key of leafKeys(parsed)) {
      if (!known.has(key)) problems.push(`${key}: unknown key in ${file} (known keys: see "pg-webhook-bridge --help")`);
    }
  }
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    if (value === undefined) continue;
    try {
      config.set(key as never, coerceEnv(key, value) as never);
    } catch (cause) {
      problems.push(`${key}: ${(cause as Error).message}`);
    }
  }
  try {
    // Unknown keys are found by leafKeys() above: convict's strict mode would also reject the dotted
    // table names inside source.tables, which are data, not keys.
    config.validate({ allowed: 'warn', output: () => undefined });
  } catch (cause) {
    problems.push(
      ...String((cause as Error).message)
        .split('\n')
        .filter(Boolean)
        .map(describeConvictProblem),
    );
  }
  const caFile = config.get('database.ssl.caFile' as never) as string;
  if (caFile && !existsSync(caFile)) problems.push(`database.ssl.caFile: ${caFile} does not exist (a PEM file with the CA certificate)`);
  const tlsInUrl = urlTlsParameters(config.get('database.url' as never) as string);
  const sslMode = config.get('database.ssl.mode' as never) as string;
  if (tlsInUrl.length > 0 && (sslMode !== 'disable' || caFile)) {
    // The pg driver lets the URL's TLS parameters replace database.ssl.* entirely: `sslmode=disable`
    // would silently turn a configured verify-full off.
    problems.push(
      `database.url: carries ${tlsInUrl.join(', ')}, which would replace database.ssl.* (mode ${sslMode}); keep TLS settings in database.ssl.* only`,
    );
  }
  const mode = config.get('source.mode' as never) as string;
  if (mode === 'tables' && config.get('payload.format' as never) === 'twenty') {
    problems.push('payload.format: "twenty" needs Twenty\'s metadata (object ids, workspaces): set source.mode to "twenty", or use payload.format "event"');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const raw = config.getProperties() as RawConfig;
  const tables = Object.fromEntries(raw.source.tables.map(({ table, object }) => [table, object]));
  // Defaults that depend on the mode are settled here, once: every reader sees the effective value.
  const twenty = raw.source.mode === 'twenty';
  const payload = { ...raw.payload, format: raw.payload.format || (twenty ? 'twenty' : 'event') };
  const webhooks = { ...raw.webhooks, table: raw.webhooks.table || (twenty ? TWENTY_WEBHOOKS_TABLE : `${raw.schema}.webhooks`) };
  return deepFreeze({ ...raw, source: { ...raw.source, tables }, payload, webhooks });
}

/** Where Twenty keeps its webhooks (one row per webhook, with its "workspaceId"). */
export const TWENTY_WEBHOOKS_TABLE = 'core.webhook';

/** Values that arrive as text (env, flags) are coerced the way convict coerces env values. */
function coerceEnv(key: string, value: unknown): unknown {
  if (key === 'source.tables') return toTablePairs(typeof value === 'string' ? safeJson(value) : value);
  if (typeof value !== 'string') return value;
  const def = configKeys().find((k) => k.key === key);
  if (!def) return value;
  if (typeof def.default === 'number') return Number(value);
  if (typeof def.default === 'boolean') return parseBooleanText(value);
  if (Array.isArray(def.default)) {
    const numeric = typeof (def.default as unknown[])[0] === 'number';
    return value.trim().startsWith('[')
      ? safeJson(value)
      : value
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
          .map((s) => (numeric ? Number(s) : s));
  }
  if (typeof def.default === 'object' && def.default !== null) return safeJson(value);
  return value;
}

function describeConvictProblem(line: string): string {
  // convict says e.g. "delivery.timeoutMs: must be a positive integer: value was \"abc\"";
  // secrets must not be echoed back, so values of sensitive keys are cut.
  for (const { key, sensitive } of configKeys()) {
    if (sensitive && line.startsWith(`${key}:`)) return line.replace(/: value was .*$/, '');
  }
  return line.replace(/^configuration param '([^']+)' not declared in the schema$/, '$1: unknown key');
}

function leafKeys(value: unknown, prefix = ''): string[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return prefix ? [prefix] : [];
  const keys: string[] = [];
  for (const [name, child] of Object.entries(value)) {
    const key = prefix ? `${prefix}.${name}` : name;
    // source.tables is a map whose keys are user data, not schema keys.
    if (key === 'source.tables') keys.push(key);
    else keys.push(...leafKeys(child, key));
  }
  return keys;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** The subscribers table, schema-qualified and quoted for SQL. */
export function webhooksTable(config: BridgeConfig): string {
  const { schema, table } = webhooksRelation(config);
  return quoteQualified(schema, table);
}

/** The subscribers table as the replication stream names it. */
export function webhooksRelation(config: BridgeConfig): { schema: string; table: string } {
  const name = config.webhooks.table;
  const dot = name.indexOf('.');
  return { schema: name.slice(0, dot), table: name.slice(dot + 1) };
}
