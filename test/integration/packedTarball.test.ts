import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * What a user of a release gets: the package packed from the tracked files alone (no dist/ left over
 * from a local build), installed into an empty project, imported and run.
 */
describe('the packed package', () => {
  const scratch = mkdtempSync(path.join(tmpdir(), 'pgwb-pack-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it('builds on pack, installs, exports verifySignature with its types, and runs its bin', async () => {
    const tree = path.join(scratch, 'tree');
    const { stdout: tracked } = await run('git', ['ls-files', '-z'], { cwd: ROOT });
    for (const file of tracked.split('\0').filter(Boolean)) cpSync(path.join(ROOT, file), path.join(tree, file), { recursive: true });
    // The build needs the dev dependencies (typescript): the checkout's, not a second install.
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(tree, 'node_modules'), 'dir');
    const { stdout: packed } = await run('npm', ['pack', '--json', '--pack-destination', scratch], { cwd: tree, maxBuffer: 16 * 1024 * 1024 });
    const [{ filename, files }] = JSON.parse(packed.slice(packed.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const paths = files.map((f) => f.path);
    expect(paths).toEqual(
      expect.arrayContaining(['dist/index.js', 'dist/index.d.ts', 'dist/cli.js', 'bin/pg-webhook-bridge.js', 'sql/000001_schema.sql', 'package.json']),
    );
    expect(paths.filter((p) => p.startsWith('src/') || p.startsWith('test/'))).toEqual([]);

    const app = path.join(scratch, 'app');
    mkdirSync(app);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'receiver-app', private: true, type: 'module' }));
    await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(scratch, filename)], { cwd: app, maxBuffer: 16 * 1024 * 1024 });
    expect(readdirSync(path.join(app, 'node_modules/pg-webhook-bridge/dist'))).toContain('verify.js');

    const script = `
      import { createHmac } from 'node:crypto';
      import { verifySignature } from 'pg-webhook-bridge';
      const body = '{"id":"e1"}', secret = 'receiver-secret', ts = String(Date.now());
      const sig = createHmac('sha256', secret).update(ts + ':' + body).digest('hex');
      const ok = verifySignature(body, { 'x-twenty-webhook-timestamp': ts, 'x-twenty-webhook-signature': sig }, secret);
      const bad = verifySignature(body, { 'x-twenty-webhook-timestamp': ts, 'x-twenty-webhook-signature': sig }, 'other-secret');
      console.log(JSON.stringify({ ok: ok.valid, bad: bad.valid }));`;
    const { stdout: verified } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: app });
    expect(JSON.parse(verified)).toEqual({ ok: true, bad: false });

    const { stdout: help } = await run(path.join(app, 'node_modules/.bin/pg-webhook-bridge'), ['--help'], { cwd: app });
    expect(help).toMatch(/migrate/);
    expect(help).toMatch(/--source-mode/);
  });
});
