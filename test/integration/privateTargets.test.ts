import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addWebhook, eventually, prepareDatabase, runCli, slotStreaming, spawnBridge, type BridgeProcess } from '../helpers/bridge.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { startReceiver, type Receiver } from '../helpers/receiver.js';

const ENV_NAME = 'PG_WEBHOOK_BRIDGE_ALLOW_PRIVATE_TARGETS';
const WARNING = /delivery\.allowPrivateTargets is on: webhooks may target loopback/;

/** The SSRF switch as a user sets it: through the environment of the real CLI, with no config file. */
describe('delivery.allowPrivateTargets from the environment', () => {
  let db: TestDatabase;
  let rx: Receiver;
  let bridge: BridgeProcess | undefined;

  beforeAll(async () => {
    db = await createTestDatabase('private_targets');
    await prepareDatabase(db);
    rx = await startReceiver();
    await addWebhook(db, rx.url);
  });

  afterAll(async () => {
    bridge?.child.kill('SIGKILL');
    await bridge?.exited;
    await rx?.close();
    await db?.drop();
  });

  it('refuses "no", "off", "yes" and an empty value before connecting, naming the key (exit 2)', async () => {
    for (const value of ['no', 'off', 'yes', '']) {
      const result = await runCli(['--database-url', 'postgres://nobody@127.0.0.1:1/none', 'check'], { [ENV_NAME]: value, PG_WEBHOOK_BRIDGE_CONFIG: '' });
      expect(result.code, `${ENV_NAME}=${JSON.stringify(value)}: ${result.stderr}`).toBe(2);
      expect(result.stderr).toMatch(/delivery\.allowPrivateTargets: must be true, false, 1 or 0/);
      expect(result.stderr).not.toMatch(/cannot connect/);
    }
  });

  it('"0" keeps the guard on: a loopback target is refused and receives nothing, and no warning is logged', async () => {
    // No allowed CIDR either, so only the switch could let 127.0.0.1 through.
    bridge = spawnBridge(db, { 'delivery.allowedCidrs': [] }, ['start'], { [ENV_NAME]: '0', PG_WEBHOOK_BRIDGE_CONFIG: '' });
    await eventually(
      () => slotStreaming(db.pool),
      () => `the bridge to stream; output:\n${bridge!.output()}`,
    );
    await db.pool.query(`insert into person ("firstName") values ('guarded')`);
    await eventually(
      () => /"reason":"blocked_address"/.test(bridge!.output()),
      () => `a refused attempt; output:\n${bridge!.output()}`,
    );
    expect(rx.requests.filter((r) => r.json?.data?.firstName === 'guarded')).toHaveLength(0);
    expect(bridge.output()).not.toMatch(WARNING);
    bridge.child.kill('SIGTERM');
    expect(await bridge.exited).toBe(0);
    bridge = undefined;
  });

  it('"1" lets it through and says so in a warning at start', async () => {
    bridge = spawnBridge(db, { 'delivery.allowedCidrs': [] }, ['start'], { [ENV_NAME]: '1', PG_WEBHOOK_BRIDGE_CONFIG: '' });
    await eventually(
      () => WARNING.test(bridge!.output()),
      () => `the warning; output:\n${bridge!.output()}`,
    );
    await eventually(
      () => slotStreaming(db.pool),
      () => `the bridge to stream; output:\n${bridge!.output()}`,
    );
    await db.pool.query(`insert into person ("firstName") values ('allowed')`);
    await rx.waitFor((reqs) => reqs.some((r) => r.json?.data?.firstName === 'allowed'));
    bridge.child.kill('SIGTERM');
    expect(await bridge.exited).toBe(0);
    bridge = undefined;
  });
});
