/**
 * Ceiling A: how many signed POSTs per second a plain undici loop gets through to the bench receiver,
 * in a fresh process like the daemon's. Same signing (src/deliver/sign.ts), same body bytes as the
 * daemon's events, same connection model (one Agent, `concurrency` keep-alive sockets per origin, no
 * pipelining) and `concurrency` requests in flight per target, as the daemon's `delivery.concurrency`.
 *
 * Two loops:
 * - `dispatch`: `agent.dispatch()` with a minimal handler, the API the daemon's sender uses: the
 *   ceiling the daemon is judged against.
 * - `request`: undici's `request()` (body stream, abort plumbing): what a plain client gets; about
 *   half the rate on this machine. At 16 in flight it is shown for scale; at 32 in flight it is the
 *   loop the daemon's drain is compared with (drain >= 0.8 x).
 *
 *   node --import tsx test/bench/ceilingA.ts '<json CeilingAOptions>'   -> prints one JSON line
 */
import { Agent, request, type Dispatcher } from 'undici';
import { signRequest } from '../../src/deliver/sign.js';

export interface CeilingAOptions {
  targets: string[];
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  body: string;
  secret: string;
  mode: 'dispatch' | 'request';
}

export interface CeilingAResult {
  mode: 'dispatch' | 'request';
  requests: number;
  failures: number;
  seconds: number;
  perSecond: number;
  /** CPU this client process used while measuring, in cores. */
  clientCores: number;
}

/** One POST through `agent.dispatch`; resolves with the status (0 on error). */
function dispatchOnce(agent: Agent, origin: string, path: string, headers: Record<string, string>, body: string): Promise<number> {
  return new Promise((resolve) => {
    let status = 0;
    const handler: Dispatcher.DispatchHandler = {
      // Present so undici takes this for a new-style (controller) handler, as the daemon's is.
      onRequestStart() {},
      onResponseStart(_controller, statusCode) {
        status = statusCode;
      },
      onResponseData() {},
      onResponseEnd() {
        resolve(status);
      },
      onResponseError() {
        resolve(0);
      },
    };
    agent.dispatch({ origin, path, method: 'POST', headers, body }, handler);
  });
}

async function main(): Promise<void> {
  const options = JSON.parse(process.argv[2]) as CeilingAOptions;
  const agent = new Agent({ connections: options.concurrency, pipelining: 1, keepAliveTimeout: 4_000 });
  let measuring = false;
  let stop = false;
  let requests = 0;
  let failures = 0;
  let sequence = 0;

  const worker = async (url: string): Promise<void> => {
    const { origin, pathname } = new URL(url);
    while (!stop) {
      const headers = signRequest(options.body, options.secret, `ceiling-${process.pid}-${sequence++}`, Date.now(), 'pg-webhook-bridge-bench');
      let status: number;
      if (options.mode === 'dispatch') status = await dispatchOnce(agent, origin, pathname, headers, options.body);
      else {
        try {
          const response = await request(url, { method: 'POST', headers, body: options.body, dispatcher: agent });
          await response.body.dump();
          status = response.statusCode;
        } catch {
          status = 0;
        }
      }
      if (measuring) {
        if (status >= 200 && status < 300) requests++;
        else failures++;
      }
    }
  };

  const workers: Array<Promise<void>> = [];
  for (const url of options.targets) for (let i = 0; i < options.concurrency; i++) workers.push(worker(url));
  await new Promise((resolve) => setTimeout(resolve, options.warmupMs));
  measuring = true;
  const started = performance.now();
  const cpu0 = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, options.durationMs));
  measuring = false;
  const cpu = process.cpuUsage(cpu0);
  const seconds = (performance.now() - started) / 1000;
  stop = true;
  await Promise.all(workers);
  await agent.close();
  const result: CeilingAResult = {
    mode: options.mode,
    requests,
    failures,
    seconds,
    perSecond: requests / seconds,
    clientCores: (cpu.user + cpu.system) / 1e6 / seconds,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((error) => {
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
