import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { flagForKey, loadConfig } from '../../src/config.js';
import { databaseTlsWarning } from '../../src/configTls.js';
import { ConfigError } from '../../src/errors.js';

const dir = mkdtempSync(path.join(tmpdir(), 'pgwb-config-'));
let files = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function fileWith(content: unknown): string {
  const file = path.join(dir, `config-${files++}.json`);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  it('has the contract defaults', () => {
    const config = loadConfig({ env: {} });
    expect(config.schema).toBe('webhook_bridge');
    expect(config.replication.slot).toBe('pg_webhook_bridge');
    expect(config.delivery.timeoutMs).toBe(10_000);
    expect(config.delivery.retrySchedule).toEqual([5, 300, 1800, 7200, 18000, 36000, 36000]);
    expect(config.delivery.allowPrivateTargets).toBe(false);
    expect(Object.values(config.source.tables)).toEqual(['person', 'company', 'note', 'task']);
    expect(Object.isFrozen(config.delivery)).toBe(true);
  });

  it('precedence: flags > env > file > defaults', () => {
    const file = fileWith({ delivery: { timeoutMs: 1_000, concurrency: 3 }, log: { level: 'debug' } });
    const env = { PG_WEBHOOK_BRIDGE_DELIVERY_TIMEOUT_MS: '2000', DATABASE_URL: 'postgres://u:p@db:5433/crm' };
    const config = loadConfig({ file, env, overrides: { 'delivery.timeoutMs': '3000' } });
    expect(config.delivery.timeoutMs).toBe(3_000);
    expect(config.delivery.concurrency).toBe(3);
    expect(config.log.level).toBe('debug');
    expect(config.database.url).toBe('postgres://u:p@db:5433/crm');
    expect(loadConfig({ file, env }).delivery.timeoutMs).toBe(2_000);
    expect(loadConfig({ file, env: {} }).delivery.timeoutMs).toBe(1_000);
  });

  it('lists every bad key with its expected form', () => {
    const file = fileWith({ delivery: { timeoutMs: 'soon', retrySchedule: 'often' }, replication: { slot: 'Bad-Name' }, nonsense: 1 });
    const problems = problemsOf(() => loadConfig({ file, env: {} }));
    const text = problems.join('\n');
    expect(text).toMatch(/delivery\.timeoutMs/);
    expect(text).toMatch(/delivery\.retrySchedule/);
    expect(text).toMatch(/replication\.slot: must be a lower-case identifier/);
    expect(text).toMatch(/nonsense: unknown key/);
  });

  it('rejects a bad database URL without echoing its password', () => {
    const problems = problemsOf(() => loadConfig({ env: { DATABASE_URL: 'mysql://root:hunter2@x/y' } }));
    expect(problems.join('\n')).toMatch(/database\.url/);
    expect(problems.join('\n')).not.toMatch(/hunter2/);
  });

  it('refuses TLS settings in both database.url and database.ssl.*, since the URL would silently win', () => {
    const env = { DATABASE_URL: 'postgres://u:p@db/crm?sslmode=disable&application_name=x', PG_WEBHOOK_BRIDGE_DATABASE_SSL_MODE: 'verify-full' };
    const problems = problemsOf(() => loadConfig({ env }));
    expect(problems).toEqual([expect.stringMatching(/^database\.url: carries sslmode, which would replace database\.ssl\.\* \(mode verify-full\)/)]);
    expect(problems.join('\n')).not.toMatch(/p@|disable&/);
    // Either place alone is fine.
    expect(loadConfig({ env: { DATABASE_URL: env.DATABASE_URL } }).database.url).toBe(env.DATABASE_URL);
    expect(loadConfig({ env: { DATABASE_URL: 'postgres://u:p@db/crm', PG_WEBHOOK_BRIDGE_DATABASE_SSL_MODE: 'verify-full' } }).database.ssl.mode).toBe(
      'verify-full',
    );
  });

  it('a broken config file is one clear problem', () => {
    const file = fileWith('{ not json');
    expect(problemsOf(() => loadConfig({ file, env: {} })).join('\n')).toMatch(/config file .* JSON|Unexpected|Expected/);
  });

  it('table maps and lists come from env as JSON', () => {
    const config = loadConfig({
      env: { PG_WEBHOOK_BRIDGE_SOURCE_TABLES: '{"crm.deal":"opportunity"}', PG_WEBHOOK_BRIDGE_ALLOWED_CIDRS: '10.1.0.0/16,192.168.0.0/24' },
    });
    expect(config.source.tables).toEqual({ 'crm.deal': 'opportunity' });
    expect(config.delivery.allowedCidrs).toEqual(['10.1.0.0/16', '192.168.0.0/24']);
    expect(problemsOf(() => loadConfig({ env: { PG_WEBHOOK_BRIDGE_SOURCE_TABLES: '{"nodot":"x"}' } })).join()).toMatch(/source\.tables/);
  });

  describe('booleans accept exactly true, false, 1 and 0 (any case) from every source', () => {
    const BOOLEAN_KEYS = [
      ['delivery.allowPrivateTargets', 'PG_WEBHOOK_BRIDGE_ALLOW_PRIVATE_TARGETS'],
      ['payload.camelCase', 'PG_WEBHOOK_BRIDGE_PAYLOAD_CAMEL_CASE'],
    ] as const;
    const read = (config: ReturnType<typeof loadConfig>, key: string): unknown => key.split('.').reduce((node: any, part) => node[part], config);
    const accepted: Array<[string, boolean]> = [
      ['true', true],
      ['TRUE', true],
      ['True', true],
      ['1', true],
      ['false', false],
      ['FALSE', false],
      ['0', false],
    ];
    const refused = ['0 ', 'no', 'off', 'yes', 'on', '', ' ', 'f', 't', '2', 'null'];

    for (const [key, envName] of BOOLEAN_KEYS) {
      it(`${key}: environment, without and with a config file`, () => {
        const file = fileWith({});
        for (const [text, value] of accepted) {
          expect(read(loadConfig({ env: { [envName]: text } }), key), `${envName}=${text}`).toBe(value);
          expect(read(loadConfig({ file, env: { [envName]: text } }), key), `${envName}=${text} with a file`).toBe(value);
        }
        for (const text of refused) {
          for (const withFile of [undefined, file]) {
            const problems = problemsOf(() => loadConfig({ file: withFile, env: { [envName]: text } }));
            expect(problems, `${envName}=${JSON.stringify(text)}`).toEqual([
              expect.stringMatching(new RegExp(`^${key.replace('.', '\\.')}: must be true, false, 1 or 0`)),
            ]);
          }
        }
      });

      it(`${key}: flags`, () => {
        for (const [text, value] of accepted) expect(read(loadConfig({ env: {}, overrides: { [key]: text } }), key)).toBe(value);
        for (const text of refused) {
          expect(problemsOf(() => loadConfig({ env: {}, overrides: { [key]: text } })).join('\n'), JSON.stringify(text)).toMatch(
            new RegExp(`^${key.replace('.', '\\.')}: must be true, false, 1 or 0`),
          );
        }
      });

      it(`${key}: config file`, () => {
        const inFile = (value: unknown) => {
          const [section, name] = key.split('.');
          return fileWith({ [section]: { [name]: value } });
        };
        for (const [value, expected] of [
          [true, true],
          [false, false],
          ['true', true],
          ['0', false],
          ['FALSE', false],
        ] as const) {
          expect(read(loadConfig({ file: inFile(value), env: {} }), key), JSON.stringify(value)).toBe(expected);
        }
        for (const value of ['no', 'off', '', 'yes', 2, null, [], {}]) {
          expect(problemsOf(() => loadConfig({ file: inFile(value), env: {} })).join('\n'), JSON.stringify(value)).toMatch(
            new RegExp(`${key.replace('.', '\\.')}: must be true, false, 1 or 0`),
          );
        }
      });
    }
  });

  it('flags are derived from keys', () => {
    expect(flagForKey('delivery.timeoutMs')).toBe('--delivery-timeout-ms');
    expect(flagForKey('database.url')).toBe('--database-url');
  });

  it("Twenty mode defaults to Twenty's body and webhooks table; either can still be set", () => {
    const twenty = loadConfig({ env: { PG_WEBHOOK_BRIDGE_SOURCE_MODE: 'twenty' } });
    expect(twenty.payload.format).toBe('twenty');
    expect(twenty.webhooks.table).toBe('core.webhook');
    const explicit = loadConfig({
      env: { PG_WEBHOOK_BRIDGE_SOURCE_MODE: 'twenty', PG_WEBHOOK_BRIDGE_PAYLOAD_FORMAT: 'event', PG_WEBHOOK_BRIDGE_WEBHOOKS_TABLE: 'crm.hooks' },
    });
    expect(explicit.payload.format).toBe('event');
    expect(explicit.webhooks.table).toBe('crm.hooks');
    const tables = loadConfig({ env: {} });
    expect(tables.source.mode).toBe('tables');
    expect(tables.payload.format).toBe('event');
    expect(tables.webhooks.table).toBe('webhook_bridge.webhooks');
  });

  it("refuses Twenty's body without Twenty's metadata, and unknown modes", () => {
    expect(problemsOf(() => loadConfig({ env: { PG_WEBHOOK_BRIDGE_PAYLOAD_FORMAT: 'twenty' } })).join()).toMatch(/payload\.format.*source\.mode/);
    expect(problemsOf(() => loadConfig({ env: { PG_WEBHOOK_BRIDGE_SOURCE_MODE: 'crm' } })).join()).toMatch(/source\.mode/);
  });
});

describe('TLS warning for a database off this host', () => {
  const warningFor = (url: string, mode: string) => databaseTlsWarning(loadConfig({ env: { DATABASE_URL: url, PG_WEBHOOK_BRIDGE_DATABASE_SSL_MODE: mode } }));

  it('warns for disable and require when the host is not loopback', () => {
    expect(warningFor('postgres://u:p@db.example.com:5432/crm', 'disable')).toMatch(
      /^database\.ssl\.mode is disable and the database host db\.example\.com is not loopback: .*verify-full/,
    );
    expect(warningFor('postgres://u:p@10.0.0.5/crm', 'require')).toMatch(
      /^database\.ssl\.mode is require: .*10\.0\.0\.5.*certificate is not checked.*verify-full/,
    );
    expect(warningFor('postgres://u:p@[2001:db8::1]/crm', 'disable')).toMatch(/2001:db8::1/);
    expect(warningFor('postgres://u:hunter2@db.example.com/crm', 'disable')).not.toMatch(/hunter2/);
  });

  it('says nothing for loopback, a Unix socket, or verify-full', () => {
    for (const url of [
      'postgres://u@localhost/crm',
      'postgres://u@127.0.0.1:5433/crm',
      'postgres://u@127.8.9.1/crm',
      'postgres://u@[::1]/crm',
      'postgres:///crm?host=/var/run/postgresql',
      'postgres://u@%2Fvar%2Frun%2Fpostgresql/crm',
    ]) {
      expect(warningFor(url, 'disable'), url).toBeNull();
      expect(warningFor(url, 'require'), url).toBeNull();
    }
    expect(warningFor('postgres://u@db.example.com/crm', 'verify-full')).toBeNull();
  });
});
