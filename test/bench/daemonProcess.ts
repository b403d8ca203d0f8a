/**
 * The daemon under test, as a production install runs it: the compiled dist/ (`buildDaemon()` first,
 * started by `compiledDaemon.mjs`, the equivalent of `bin/pg-webhook-bridge.js` without tsx), a child
 * process whose output goes straight to a log file (not through the bench's event loop).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';

export interface DaemonOptions {
  root: string;
  /** Config keys -> values, passed as flags (`delivery.timeoutMs` -> `--delivery-timeout-ms`). */
  config: Record<string, unknown>;
  logFile: string;
  /** Write a V8 CPU profile into this directory when the process exits. */
  profileDir?: string;
}

export interface DaemonProcess {
  child: ChildProcess;
  pid: number;
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when killed). */
  stop(graceMs?: number): Promise<number | null>;
}

/** `delivery.timeoutMs` -> `--delivery-timeout-ms`, as the CLI derives its flags from config keys. */
export function flagFor(key: string): string {
  return `--${key.replace(/\./g, '-').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Compiles src/ into dist/ (`npm run build`), so the daemon runs as it does in production. */
export function buildDaemon(root: string): void {
  execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.build.json')], {
    cwd: root,
    stdio: 'inherit',
  });
}

export function spawnDaemon(options: DaemonOptions): DaemonProcess {
  const args: string[] = [];
  if (options.profileDir) args.push('--cpu-prof', '--cpu-prof-dir', options.profileDir);
  args.push(path.join(options.root, 'test/bench/compiledDaemon.mjs'));
  for (const [key, value] of Object.entries(options.config)) args.push(flagFor(key), typeof value === 'string' ? value : JSON.stringify(value));
  args.push('start');
  return spawnLogged(options.root, args, options.logFile);
}

/**
 * `node ARGS` as the daemon is started (same environment, output to a log file, SIGTERM to stop): also
 * the naive consumer the daemon is compared with, so both are measured alike.
 */
export function spawnLogged(root: string, args: string[], logFile: string): DaemonProcess {
  const log = openSync(logFile, 'a');
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  delete env.LOG_LEVEL;
  delete env.DATABASE_URL;
  const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', log, log], env });
  closeSync(log);
  if (child.pid === undefined) throw new Error(`could not start ${args.find((a) => a.endsWith('.mjs')) ?? 'node'}`);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let stopping: Promise<number | null> | null = null;
  return {
    child,
    pid: child.pid,
    exited,
    stop(graceMs = 15_000) {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        const code = await exited;
        clearTimeout(timer);
        return code;
      })();
      return stopping;
    },
  };
}
