import type { BridgeConfig } from '../config.js';
import { Daemon } from '../daemon.js';
import { PreflightError } from '../errors.js';
import { createLogger } from '../log.js';

/** Shutdown grace: the contract promises exit within 10 s of SIGTERM. */
const SHUTDOWN_GRACE_MS = 8_000;

/**
 * `start`: run until a signal, then shut down gracefully. Exit codes: 0 clean stop, 1 failure,
 * 3 preflight problems (each logged as one line with its fix).
 */
export async function runStart(config: BridgeConfig): Promise<number> {
  const log = createLogger(config.log.level);
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
    if (error instanceof PreflightError) {
      for (const problem of error.problems) log.error(problem);
    } else {
      log.fatal({ err: error }, 'could not start');
    }
    await daemon.stop(1_000).catch(() => undefined);
    return error instanceof PreflightError ? 3 : 1;
  }
  await daemon.done;
  await stopping;
  log.info({ clean: daemon.fatalError === null }, 'stopped');
  return daemon.fatalError ? 1 : 0;
}
