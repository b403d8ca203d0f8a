/**
 * Setup file of every integration test file: whatever a file opens (pools, receivers, servers,
 * replication streams, daemons) it must have closed when its last test is done.
 */
import { afterAll, beforeAll } from 'vitest';
import { assertNoLeakedHandles, captureHandles, type HandleBaseline } from './leakGuard.js';

let handles: HandleBaseline;
beforeAll(() => {
  handles = captureHandles();
});
afterAll(async () => {
  await assertNoLeakedHandles(handles);
});
