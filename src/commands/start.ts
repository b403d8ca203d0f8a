import type { BridgeConfig } from '../config.js';
import { createPool } from '../database.js';
import { preflight } from '../check.js';
import { Daemon } from '../daemon.js';
import { createLogger } from '../log.js';

/** Shutdown grace: the contract promises exit within 10 s of SIGTERM. */
const SHUTDOWN_GRACE_MS = 8_000;

/** `start`: preflight, stream until a signal, shut down gracefully. Returns the exit code. */
export async function runStart(config: BridgeConfig): Promise<number> {
  const log = createLogger(config.log.level);
  const pool = createPool(config, 1);
  try {
    const report = await preflight(pool, config);
    for (const warning of report.warnings) log.warn(warning);
    if (report.problems.length > 0) {
      for (const problem of report.problems) log.error(problem);
      return 3;
    }
  } catch (error) {
    log.error({ err: error }, 'preflight could not run: check database.url (DATABASE_URL) and that Postgres is reachable');
    return 1;
  } finally {
    await pool.end().catch(() => undefined);
  }
  const daemon = new Daemon(config, log);
  let stopping: Promise<void> | null = null;
  const shutdown = (signal: string) => {
    if (stopping) return;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      log.error('graceful shutdown took too long; exiting');
      process.exit(1);
    }, SHUTDOWN_GRACE_MS + 1_500);
    force.unref();
    stopping = daemon.stop(SHUTDOWN_GRACE_MS);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('unhandledRejection', (error) => {
    log.fatal({ err: error }, 'unexpected failure; exiting without acknowledging further');
    process.exit(1);
  });
  try {
    await daemon.start();
  } catch (error) {
    log.fatal({ err: error }, 'could not start');
    await daemon.stop(1_000).catch(() => undefined);
    return 1;
  }
  await daemon.done;
  await (stopping ?? daemon.stop(SHUTDOWN_GRACE_MS));
  log.info({ clean: daemon.fatalError === null }, 'stopped');
  return daemon.fatalError ? 1 : 0;
}
