/**
 * No value is too large: rows with a 300 MB and a 600 MB text value, under the heap cap the Kubernetes
 * manifest ships, go out in the truncated form (primary key only) and the changes after them follow.
 * The daemon runs through the real CLI in a child process, so the heap cap and its memory are its own;
 * Postgres is a private cluster, so the gigabytes it handles here weigh on no other test file's server.
 */
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addWebhook, eventually, prepareDatabase, slotStreaming, spawnBridge, type BridgeProcess } from '../helpers/bridge.js';
import type { TestDatabase } from '../helpers/database.js';
import { startCluster, type ClusterHandle } from '../helpers/postgresCluster.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

const HEAP_CAP = '--max-old-space-size=384'; // as config/kubernetes/deployment.yaml sets it
const MB = 1_000_000;
const LARGEST_ROW_MB = 600;

/** Peak resident memory of a process, from /proc (Linux). */
function peakRssMb(pid: number): number | null {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Math.round(Number(match[1]) / 1024) : null;
  } catch {
    return null;
  }
}

describe('a row with a value of hundreds of megabytes', () => {
  let cluster: ClusterHandle;
  let db: TestDatabase;
  let receiver: Receiver;
  let bridge: BridgeProcess | null = null;

  beforeAll(async () => {
    cluster = await startCluster();
    const pool = new pg.Pool({ connectionString: cluster.adminUrl('postgres'), max: 3 });
    pool.on('error', () => undefined);
    db = { url: cluster.adminUrl('postgres'), name: 'huge_row', pool, drop: () => pool.end() };
    await prepareDatabase(db);
    receiver = await startReceiver();
  });

  afterAll(async () => {
    bridge?.child.kill('SIGKILL');
    await bridge?.exited;
    await receiver?.close();
    await db?.drop();
    await cluster?.stop();
  });

  it(`is sent truncated with ${HEAP_CAP}, and the next change follows`, async () => {
    await addWebhook(db, receiver.url, ['note.*']);
    bridge = spawnBridge(db, { 'log.level': 'warn' }, ['start'], { NODE_OPTIONS: HEAP_CAP });
    const output = () => bridge!.output().slice(-3_000);
    await eventually(
      () => slotStreaming(db.pool),
      () => `the bridge to stream; output:\n${output()}`,
      30_000,
    );
    const exited = bridge.exited.then((code) => {
      throw new Error(`the daemon exited (${code}); output:\n${output()}`);
    });
    exited.catch(() => undefined); // raced below; a SIGTERM at the end makes it reject too

    const ids: Record<string, string> = {};
    for (const [title, bytes] of [
      ['huge 300', 300 * MB],
      ['huge 600', LARGEST_ROW_MB * MB],
    ] as const) {
      const { rows } = await db.pool.query(`insert into note (title, "bodyV2") values ($1, repeat('x', $2)) returning id::text`, [title, bytes]);
      ids[title] = rows[0].id;
    }
    // The old image holds the 300 MB value; the new one sends it as unchanged TOAST, taken from the old.
    await db.pool.query(`update note set title = 'huge 300 renamed' where id = $1`, [ids['huge 300']]);
    const { rows } = await db.pool.query(`insert into note (title) values ('normal') returning id::text`);
    ids.normal = rows[0].id;

    await Promise.race([receiver.waitForCount(4, 300_000), exited]);
    const events = receiver.requests.map((q) => q.json as { event: string; data: Record<string, unknown>; truncated?: boolean; id: string });
    expect(events.map((e) => [e.event, e.data, e.truncated])).toEqual([
      ['note.created', { id: ids['huge 300'], truncated: true }, true],
      ['note.created', { id: ids['huge 600'], truncated: true }, true],
      ['note.updated', { id: ids['huge 300'], truncated: true }, true],
      ['note.created', expect.objectContaining({ id: ids.normal, title: 'normal' }), undefined],
    ]);
    expect(bridge.child.exitCode).toBeNull();
    const peak = peakRssMb(bridge.child.pid!);
    console.log(`daemon peak RSS ${peak} MB for rows of 300 and 600 MB (heap cap ${HEAP_CAP})`);
    // The largest row message is 600 MB: held once, plus what the daemon needs anyway (~110 MB idle).
    if (peak !== null) expect(peak).toBeLessThan(LARGEST_ROW_MB + 300);

    bridge.child.kill('SIGTERM');
    expect(await bridge.exited).toBe(0);
    bridge = null;
  });
});
