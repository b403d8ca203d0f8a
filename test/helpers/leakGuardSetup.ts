/**
 * Setup file of every integration test file: whatever a file opens (pools, receivers, servers,
 * replication streams, daemons) it must have closed when its last test is done.
 */
import { Agent, setGlobalDispatcher, type Dispatcher } from 'undici';
import { afterAll, beforeAll } from 'vitest';
import { assertNoLeakedHandles, captureHandles, type HandleBaseline } from './leakGuard.js';

/** The dispatcher behind Node's built-in fetch(): Node's bundled undici registers it under this symbol. */
const FETCH_DISPATCHER = Symbol.for('undici.globalDispatcher.1');

/**
 * fetch() keeps each connection open for about 4 s after its response, for reuse. Those sockets belong
 * to the runtime's pool, not to the test: close the pool (a fresh one serves later fetches) so that
 * what is still open after it is a handle the test itself forgot.
 */
async function closeFetchPool(): Promise<void> {
  const pooled = (globalThis as Record<symbol, Dispatcher | undefined>)[FETCH_DISPATCHER];
  if (pooled === undefined) return;
  setGlobalDispatcher(new Agent());
  await pooled.close();
}

let handles: HandleBaseline;
beforeAll(() => {
  handles = captureHandles();
});
afterAll(async () => {
  await closeFetchPool();
  await assertNoLeakedHandles(handles);
});
