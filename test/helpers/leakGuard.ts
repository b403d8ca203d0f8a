/**
 * Leak guard: the handles we own (servers, sockets: pools, receivers, replication connections) must
 * all be closed when a test file or test is done.
 *
 *   let handles: HandleBaseline;
 *   beforeAll(() => { handles = captureHandles(); });
 *   afterAll(() => assertNoLeakedHandles(handles));
 *
 * Counts come from process.getActiveResourcesInfo() (types of resources keeping the event loop
 * alive). Closing is asynchronous (a FIN from the peer, pool.end()), so the check polls briefly.
 */

import { Server, Socket } from 'node:net';

/** Handle types we create: TCP servers (receivers, metrics) and TCP sockets (pg, undici, receivers). */
export const WATCHED_HANDLE_TYPES = ['TCPServerWrap', 'TCPSocketWrap'] as const;

const GRACE_MS = 2_000;
const POLL_MS = 25;

export type HandleBaseline = Record<string, number>;

function countResources(): HandleBaseline {
  const counts: HandleBaseline = {};
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1;
  return counts;
}

/** Snapshot of the active resource counts, by type. */
export function captureHandles(): HandleBaseline {
  return countResources();
}

function grown(baseline: HandleBaseline, types: readonly string[]): string[] {
  const now = countResources();
  return types.filter((type) => (now[type] ?? 0) > (baseline[type] ?? 0)).map((type) => `${type}: ${baseline[type] ?? 0} -> ${now[type]}`);
}

/**
 * Where each open socket and server points, to tell which pool or server was left open. Node exposes
 * the handles themselves only through this undocumented call; it is used for the message alone.
 */
function describeSockets(): string {
  const handles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles?.() ?? [];
  const described = handles.flatMap((handle) => {
    if (handle instanceof Socket) return [`socket ${handle.localAddress}:${handle.localPort} -> ${handle.remoteAddress}:${handle.remotePort}`];
    if (handle instanceof Server) return [`server ${JSON.stringify(handle.address())}`];
    return [];
  });
  return described.length === 0 ? 'none found' : described.join('; ');
}

/**
 * Rejects if any watched handle type has more active handles than in `baseline` after up to
 * `graceMs` (default 2 s) of waiting for them to close.
 */
export async function assertNoLeakedHandles(baseline: HandleBaseline, options: { graceMs?: number; types?: readonly string[] } = {}): Promise<void> {
  const types = options.types ?? WATCHED_HANDLE_TYPES;
  const deadline = Date.now() + (options.graceMs ?? GRACE_MS);
  let leaks = grown(baseline, types);
  while (leaks.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    leaks = grown(baseline, types);
  }
  if (leaks.length > 0) {
    throw new Error(
      `leaked handles (still open ${options.graceMs ?? GRACE_MS} ms after the test): ${leaks.join(', ')}; open sockets: ${describeSockets()}. ` +
        'Close every pool (pool.end / db.drop), receiver (close), server and replication stream you opened.',
    );
  }
}
