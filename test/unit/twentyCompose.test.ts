/**
 * The docker-compose example for running beside Twenty: no Docker engine here, so the file is parsed
 * and checked against the CLI's commands and the config schema, as the Kubernetes manifests are.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { configKeys, loadConfig } from '../../src/config.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FILE = `${ROOT}examples/twenty/docker-compose.bridge.yml`;
const compose = parse(readFileSync(FILE, 'utf8')) as { services: Record<string, any> };
const { db, 'bridge-migrate': migrateService, bridge } = compose.services;

/** Compose interpolation with the defaults the file gives (`${NAME:-default}`). */
function interpolate(value: string): string {
  return value.replace(/\$\{([A-Z_]+)(?::-([^}]*))?\}/g, (_, _name: string, fallback?: string) => fallback ?? '');
}

function environment(service: any): Record<string, string> {
  return Object.fromEntries(Object.entries(service.environment as Record<string, string>).map(([k, v]) => [k, interpolate(String(v))]));
}

describe('examples/twenty/docker-compose.bridge.yml', () => {
  it("turns on logical replication on Twenty's db service and caps retained WAL", () => {
    const command = (db.command as string[]).join(' ');
    expect(command).toMatch(/-c wal_level=logical/);
    expect(command).toMatch(/-c max_slot_wal_keep_size=\S+/);
  });

  it('runs migrate once, then start, from the same image', () => {
    expect(migrateService.command).toEqual(['migrate']);
    expect(migrateService.restart).toBe('no');
    expect(bridge.command).toEqual(['start']);
    expect(bridge.image).toBe(migrateService.image);
    expect(bridge.depends_on['bridge-migrate'].condition).toBe('service_completed_successfully');
    expect(migrateService.depends_on.db.condition).toBe('service_healthy');
  });

  it('configures Twenty mode with environment variables the config schema knows, and the config loads', () => {
    const known = new Set(configKeys().map((k) => k.env));
    for (const service of [migrateService, bridge]) {
      const env = environment(service);
      for (const name of Object.keys(env)) expect(known, name).toContain(name);
      const config = loadConfig({ env });
      expect(config.source.mode).toBe('twenty');
      expect(config.webhooks.table).toBe('core.webhook');
      expect(config.payload.format).toBe('twenty');
      expect(new URL(config.database.url).hostname).toBe('db');
      expect(new URL(config.database.url).pathname).toBe('/default');
    }
  });

  it('publishes the health and metrics port and gives the daemon time for its graceful stop', () => {
    const config = loadConfig({ env: environment(bridge) });
    expect(bridge.ports).toContain(`${config.http.port}:${config.http.port}`);
    expect(Number.parseInt(bridge.stop_grace_period, 10)).toBeGreaterThan(10);
  });

  it('names only commands the CLI has', () => {
    const help = execFileSync(process.execPath, ['bin/pg-webhook-bridge.js', '--help'], { cwd: ROOT, encoding: 'utf8' });
    const commands = new Set([...help.slice(help.indexOf('Commands:')).matchAll(/^ {2}([a-z]+)/gm)].map((m) => m[1]));
    for (const command of [migrateService.command[0], bridge.command[0]]) expect(commands).toContain(command);
  });
});
