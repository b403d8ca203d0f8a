/**
 * vitest globalSetup: one Postgres cluster for the whole run. Integration files share it and each makes
 * its own database (test/helpers/database.ts). Test files read the connection with `inject('pg')`; the
 * same values are in PGWB_TEST_* environment variables for code that runs outside vitest's context.
 *
 * The cluster is started only when a selected file lives under /integration/ (or in watch mode, where
 * later runs may select one), so `vitest run test/unit` stays cheap.
 */
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { ClusterSetupError, startCluster, type ClusterHandle } from './postgresCluster.js';

export interface ProvidedPgCluster {
  host: string;
  port: number;
  user: string;
  password: string;
  /** For restartCluster(): pg_ctl -D dataDir, with binDir/pg_ctl. */
  dataDir: string;
  binDir: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    pg: ProvidedPgCluster;
  }
}

/** Environment fallback for inject('pg'); read by clusterInfo() in database.ts. */
export const PG_ENV = {
  host: 'PGWB_TEST_HOST',
  port: 'PGWB_TEST_PORT',
  user: 'PGWB_TEST_USER',
  password: 'PGWB_TEST_PASSWORD',
  dataDir: 'PGWB_TEST_DATA_DIR',
  binDir: 'PGWB_TEST_BIN_DIR',
} as const satisfies Record<keyof ProvidedPgCluster, string>;

function needsCluster(project: TestProject): boolean {
  if (project.vitest.config.watch) return true;
  const paths = project.vitest.state.getPaths();
  // Unknown selection: be safe and start it.
  if (paths.length === 0) return true;
  return paths.some((file) => file.split(path.sep).join('/').includes('/integration/'));
}

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  if (!needsCluster(project)) return undefined;

  const startedAt = Date.now();
  let cluster: ClusterHandle | undefined = await startCluster().catch((error: unknown) => {
    if (!(error instanceof ClusterSetupError)) throw error;
    // One line saying what to do, instead of vitest's report of a failed setup with its stack trace.
    console.error(`integration tests: ${error.message}`);
    process.exit(1);
  });
  if (process.env.PGWB_TEST_VERBOSE) {
    console.log(`[globalSetup] Postgres on ${cluster.host}:${cluster.port} (${cluster.binDir}) in ${Date.now() - startedAt} ms`);
  }

  const info: ProvidedPgCluster = {
    host: cluster.host,
    port: cluster.port,
    user: cluster.user,
    password: cluster.password,
    dataDir: cluster.dataDir,
    binDir: cluster.binDir,
  };
  project.provide('pg', info);
  for (const [key, name] of Object.entries(PG_ENV)) process.env[name] = String(info[key as keyof ProvidedPgCluster]);

  return async () => {
    for (const name of Object.values(PG_ENV)) delete process.env[name];
    const running = cluster;
    cluster = undefined;
    await running?.stop();
  };
}
