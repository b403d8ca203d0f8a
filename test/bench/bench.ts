/**
 * `npm run bench`: the daemon's speed beside this machine's ceilings, measured in one run.
 *
 *   npm run bench                         full run (10-20 min)
 *   npm run bench -- --quick              scaled down, under 2 minutes
 *   npm run bench -- --json FILE          also write every figure as JSON
 *   npm run bench -- --profile DIR        keep the drain's CPU profile (.cpuprofile) in DIR
 *   npm run bench -- --only drain,latency run some phases only (names below); --keep keeps logs
 *   npm run bench -- --daemon-config '{"delivery.storeAfterMs":10000}'   extra config for every daemon
 *
 * Everything runs on this machine, on loopback: a throwaway Postgres (startCluster, own port, never
 * 5432), the receiver (test/bench/receiver.ts) in its own process, and each daemon as its own child
 * process started through the real CLI (`node bin/pg-webhook-bridge.js ... start`), with its own
 * schema, publication and slot. Phases:
 *
 *   ceilingB   rows/s a bare pg-logical-replication consumer that only counts (and pg_recvlogical,
 *              when one is installed) streams for the backlog
 *   drain      the backlog (changes committed BEFORE the daemon starts) delivered to one webhook
 *   naive      the same backlog through the consumer a user writes from pg-logical-replication's README
 *              (naiveConsumer.mjs: one awaited POST per change, auto-acknowledge): drain / naive
 *   profile    the same drain again under --cpu-prof: the profile's top frames
 *   ceilingA   signed POSTs/s from a plain undici loop at the daemon's concurrency, same body bytes;
 *              and a plain undici request() loop at 32 in flight: drain / that loop
 *   fanout     the backlog to 10 webhooks (10 origins); fanoutSameOrigin: 10 webhooks, one origin
 *   isolation  the backlog to a healthy webhook while a second one is dead (connection refused)
 *   walCost    WAL the daemon writes per change while it drains the backlog: retention 0, retention
 *              1 h, and retention 0 beside a dead webhook
 *   latency    commit-to-receipt p50/p95/p99 at a steady 1,000 and 5,000 changes/s
 *   memory     daemon peak RSS while a large backlog piles up behind a dead receiver, then while it
 *              drains once the receiver is back
 *   deadStore  a large backlog to a healthy webhook beside 1, then 10 dead ones: the store's size on
 *              disk against the events' compressed bytes, and peak RSS
 *
 * Every daemon phase also reports its event log (segments, events, compressed and plain bytes, the
 * table with TOAST and indexes) and its rows in `deliveries` ("via store": failed attempts and the
 * later events of their record).
 *
 * Every phase is bounded in time; the cluster, the receiver and every daemon are stopped at the end,
 * on failure and on Ctrl-C (and by a watchdog process if the bench itself is killed).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { loadConfig } from '../../src/config.js';
import { migrate } from '../../src/migrate.js';
import { startCluster, type ClusterHandle } from '../helpers/postgresCluster.js';
import type { CeilingAOptions, CeilingAResult } from './ceilingA.js';
import { formatProfile, summariseProfile, type ProfileSummary } from './cpuProfile.js';
import { CrmWriter, seed, seededRandom, writeBacklog, writePaced } from './crmWriter.js';
import { buildDaemon, spawnDaemon, spawnLogged, type DaemonProcess } from './daemonProcess.js';
import { CpuWindow, MemorySampler, readMemory, resetPeak, type CpuUse } from './procStats.js';
import type { LatencySummary, PortStats, ReceiverRequest } from './receiver.js';
import type { ReplicationCeilingOptions, ReplicationCeilingResult } from './replicationCeiling.js';
import { parseLsn } from '../../src/replication/lsn.js';
import { describeLog, readLogFigures, storeBytes, type LogFigures } from './logFigures.js';
import { sampleSlotLag, startHangingServer, type SlotLagSummary } from './slotLag.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HERE = fileURLToPath(new URL('./', import.meta.url));
const CRM_SCHEMA_SQL = readFileSync(path.join(ROOT, 'examples/crm-schema.sql'), 'utf8');
const HOST = '127.0.0.1';
const DATABASE = 'bench';
const SECRET = 'bench-secret-2f9c1e7a5b';
/** The daemon's default `delivery.concurrency`, used by ceiling A. */
const DAEMON_CONCURRENCY = 16;
/** In-flight requests of the plain `request()` loop the drain is compared with. */
const REQUEST_LOOP_CONCURRENCY = 32;
/** Targets: drain >= 0.8 x that loop, and >= 1.5 x the naive consumer. */
const TARGET_DRAIN_TO_REQUEST_LOOP = 0.8;
const TARGET_DRAIN_TO_NAIVE = 1.5;
/** deadStore: the store beside 10 dead webhooks is the size of the one beside 1 (within 10%), at most 1.5 x the events' compressed bytes. */
const TARGET_DEAD_STORE_10_TO_1 = 1.1;
const TARGET_STORE_TO_COMPRESSED = 1.5;
const TARGET_PEAK_RSS_MB = 200;
const FANOUT_WEBHOOKS = 10;
const POLL_MS = 100;
const READY_TIMEOUT_MS = 90_000;
const DEFAULT_LATENCY_RATES = [1_000, 5_000];
const LATENCY_WARMUP_MS = 2_000;
const PACED_CONNECTIONS = 4;
const DEFAULT_PACED_MAX_TRANSACTION = 10;
const BACKLOG_MAX_TRANSACTION = 1_000;
/** Retries every ~1 s (100 of them) in the memory phase, so the drain is not waiting on 5-minute backoffs. */
const MEMORY_RETRY_SCHEDULE_S = Array.from({ length: 100 }, () => 1);

// Postgres for benchmarking (on top of the test cluster's wal_level=logical, fsync=off,
// synchronous_commit=on): room in memory, no checkpoints in the middle of a phase.
const CLUSTER_FLAGS = [
  '-c',
  'shared_buffers=1GB',
  '-c',
  'wal_buffers=64MB',
  '-c',
  'max_wal_size=16GB',
  '-c',
  'min_wal_size=2GB',
  '-c',
  'checkpoint_timeout=1h',
  '-c',
  'logical_decoding_work_mem=256MB',
  '-c',
  'work_mem=16MB',
  '-c',
  'log_min_messages=warning',
];

const PHASES = [
  'ceilingB',
  'drain',
  'naive',
  'profile',
  'ceilingA',
  'fanout',
  'fanoutSameOrigin',
  'isolation',
  'walCost',
  'latency',
  'slotLag',
  'memory',
  'deadStore',
] as const;
type Phase = (typeof PHASES)[number];

interface Scale {
  backlog: number;
  seedPerTable: number;
  latencyMs: number;
  memoryBacklog: number;
  ceilingAMs: number;
  drainTimeoutMs: number;
  fanoutTimeoutMs: number;
  memoryStoreTimeoutMs: number;
  memoryDrainTimeoutMs: number;
  /** Changes of the deadStore phase's backlog (--backlog overrides it too). */
  deadStoreBacklog: number;
  deadStoreTimeoutMs: number;
}

const SCALES: Record<'full' | 'quick', Scale> = {
  full: {
    backlog: 100_000,
    seedPerTable: 20_000,
    latencyMs: 30_000,
    memoryBacklog: 1_000_000,
    ceilingAMs: 10_000,
    drainTimeoutMs: 300_000,
    fanoutTimeoutMs: 420_000,
    memoryStoreTimeoutMs: 1_200_000,
    memoryDrainTimeoutMs: 900_000,
    // Wanted: 1,000,000. Two drains of it at ~3,500-6,000/s on the 2-core VM take 6-10 minutes,
    // past the full run's ~15-minute budget; 250,000 takes about 2.5 minutes with its write.
    deadStoreBacklog: 250_000,
    deadStoreTimeoutMs: 600_000,
  },
  quick: {
    backlog: 10_000,
    seedPerTable: 2_000,
    latencyMs: 5_000,
    memoryBacklog: 50_000,
    ceilingAMs: 2_000,
    drainTimeoutMs: 60_000,
    // A slow fan-out is cut here and its rate taken over what arrived: keeps --quick under 2 minutes.
    fanoutTimeoutMs: 20_000,
    memoryStoreTimeoutMs: 120_000,
    memoryDrainTimeoutMs: 120_000,
    deadStoreBacklog: 50_000,
    deadStoreTimeoutMs: 120_000,
  },
};

interface Args {
  quick: boolean;
  json: string | null;
  profile: string | null;
  keep: boolean;
  only: Set<Phase>;
  /** Extra config keys for every daemon (experiments: `--daemon-config '{"delivery.memoryQueueLimit":256}'`). */
  daemonConfig: Record<string, unknown>;
  /** Overrides the backlog size (changes) of the scale. */
  backlog: number | null;
  latencyRates: number[];
  /** Largest transaction of the paced writer (changes); sizes are uniform in 1..N. */
  latencyMaxTransaction: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    quick: false,
    json: null,
    profile: null,
    keep: false,
    only: new Set(PHASES),
    daemonConfig: {},
    backlog: null,
    latencyRates: DEFAULT_LATENCY_RATES,
    latencyMaxTransaction: DEFAULT_PACED_MAX_TRANSACTION,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--quick') args.quick = true;
    else if (arg === '--keep') args.keep = true;
    else if (arg === '--json') args.json = path.resolve(argv[++i] ?? '');
    else if (arg === '--profile') args.profile = path.resolve(argv[++i] ?? '');
    else if (arg === '--backlog') args.backlog = Number(argv[++i]);
    else if (arg === '--latency-max-transaction') args.latencyMaxTransaction = Number(argv[++i]);
    else if (arg === '--latency-rates')
      args.latencyRates = (argv[++i] ?? '')
        .split(',')
        .map(Number)
        .filter((n) => n > 0);
    else if (arg === '--daemon-config') args.daemonConfig = JSON.parse(argv[++i] ?? '{}') as Record<string, unknown>;
    else if (arg === '--only') {
      const names = (argv[++i] ?? '').split(',').filter(Boolean);
      for (const name of names) if (!PHASES.includes(name as Phase)) throw new Error(`--only: unknown phase ${name} (phases: ${PHASES.join(', ')})`);
      args.only = new Set(names as Phase[]);
    } else if (arg === '--help' || arg === '-h') {
      console.log(
        'usage: npm run bench -- [--quick] [--json FILE] [--profile DIR] [--only PHASE,...] [--keep] [--backlog N] [--latency-rates 1000,5000] [--latency-max-transaction 10] [--daemon-config \'{"key":value}\']',
      );
      console.log(`phases: ${PHASES.join(', ')}`);
      process.exit(0);
    } else throw new Error(`unknown argument ${arg} (try --help)`);
  }
  return args;
}

// ---------------------------------------------------------------------------------------------------
// Child processes: tracked for cleanup, and listed in a file a watchdog reads if the bench is killed.

const children = new Set<ChildProcess>();
let pidFile = '';

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  writePids();
  child.on('exit', () => {
    children.delete(child);
    writePids();
  });
  return child;
}

function writePids(): void {
  if (!pidFile) return;
  try {
    writeFileSync(
      pidFile,
      [...children]
        .map((c) => c.pid)
        .filter(Boolean)
        .join('\n'),
    );
  } catch {
    // the work directory is being removed
  }
}

function killChildrenSync(): void {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone
    }
  }
}

// Detached: if the bench dies by SIGKILL, kill the daemons and the receiver it left behind.
const WATCHDOG_SOURCE = `
const fs = require('node:fs');
const [owner, pidFile] = process.argv.slice(1);
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; } };
setInterval(() => {
  if (!fs.existsSync(pidFile)) process.exit(0);
  if (alive(Number(owner))) return;
  for (const pid of fs.readFileSync(pidFile, 'utf8').split('\\n').filter(Boolean)) { try { process.kill(Number(pid), 'SIGKILL'); } catch {} }
  try { fs.rmSync(pidFile); } catch {}
  process.exit(0);
}, 500);
`;

function startWatchdog(file: string): void {
  const child = spawn(process.execPath, ['-e', WATCHDOG_SOURCE, String(process.pid), file], { detached: true, stdio: 'ignore' });
  child.unref();
}

// ---------------------------------------------------------------------------------------------------
// The receiver process.

interface ReceiverStats {
  ports: Record<number, PortStats>;
  latency: LatencySummary;
  bodies: string[];
  cpuUs: number;
}

class ReceiverProcess {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();

  private constructor(readonly child: ChildProcess) {
    child.on('message', (message: { id: number; ok: boolean; error?: string }) => {
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.ok) waiter.resolve(message);
      else waiter.reject(new Error(`receiver: ${message.error}`));
    });
    child.on('exit', () => {
      for (const waiter of this.pending.values()) waiter.reject(new Error('receiver exited'));
      this.pending.clear();
    });
  }

  static async start(): Promise<ReceiverProcess> {
    const child = track(
      spawn(
        process.execPath,
        [
          ...(process.env.PGWB_BENCH_RECEIVER_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.PGWB_BENCH_RECEIVER_PROF] : []),
          '--import',
          'tsx',
          path.join(HERE, 'receiver.ts'),
        ],
        { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
      ),
    );
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`receiver exited with ${code} before it was ready`)));
    });
    return new ReceiverProcess(child);
  }

  private request<T>(message: ReceiverRequest extends infer R ? (R extends ReceiverRequest ? Omit<R, 'id'> : never) : never): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ ...message, id });
    });
  }

  async listen(port = 0): Promise<number> {
    return (await this.request<{ port: number }>({ cmd: 'listen', port })).port;
  }

  close(port: number): Promise<void> {
    return this.request({ cmd: 'close', port });
  }

  reset(): Promise<void> {
    return this.request({ cmd: 'reset' });
  }

  /** Counts; `withLatency` adds the latency summary, which sorts every sample: not while measuring. */
  stats(withLatency = false): Promise<ReceiverStats> {
    return this.request<ReceiverStats>({ cmd: 'stats', latency: withLatency });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.send({ id: this.nextId++, cmd: 'exit' });
    await Promise.race([exited, sleep(2_000)]);
    this.child.kill('SIGKILL');
  }
}

// ---------------------------------------------------------------------------------------------------
// Helpers.

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function wallNow(): number {
  return performance.timeOrigin + performance.now();
}

/** A loopback port nobody listens on (bind, read, close): a target that refuses connections. */
async function deadPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Runs a bench helper script (tsx) to completion; parses the last stdout line as JSON. */
function runScript<T>(script: string, input: unknown, timeoutMs: number, onSpawn?: (child: ChildProcess) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = track(
      spawn(process.execPath, ['--import', 'tsx', path.join(HERE, script), JSON.stringify(input)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }),
    );
    onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const line = stdout.trim().split('\n').pop() ?? '';
      if (code === 0 && line.startsWith('{')) resolve(JSON.parse(line) as T);
      else reject(new Error(`${script} exited with ${code}: ${stderr.slice(-2_000)}`));
    });
  });
}

function findPgRecvlogical(binDir: string): string | null {
  const candidates = [path.join(binDir, 'pg_recvlogical'), ...(process.env.PATH ?? '').split(':').map((dir) => path.join(dir, 'pg_recvlogical'))];
  try {
    for (const dir of readdirSync('/usr/lib/postgresql')) candidates.push(path.join('/usr/lib/postgresql', dir, 'bin', 'pg_recvlogical'));
  } catch {
    // none installed there
  }
  return candidates.find((file) => existsSync(file)) ?? null;
}

/**
 * Busy cores not accounted for by the processes of the phase: other work on the machine (another test
 * run, say) competing for the two cores. Much above ~0.1 means the phase's figures are disturbed.
 */
function otherCores(c: CpuUse): number {
  return Math.max(0, c.machineBusyCores - c.daemonCores - c.postgresCores - c.receiverCores - c.benchCores);
}

const fmt = {
  int: (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? '-' : Math.round(n).toLocaleString('en-US')),
  rate: (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? '-' : `${Math.round(n).toLocaleString('en-US')}/s`),
  times: (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? '-' : `${n.toFixed(2)}x`),
  pct: (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? '-' : `${(n * 100).toFixed(1)}%`),
  ms: (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? '-' : `${n.toFixed(1)} ms`),
  mb: (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? '-' : `${n.toFixed(0)} MB`),
  /** Bytes as MB, with decimals below 10 MB. */
  size: (bytes: number | undefined): string =>
    bytes === undefined || !Number.isFinite(bytes) ? '-' : `${(bytes / 1024 ** 2).toFixed(bytes < 10 * 1024 ** 2 ? 2 : 0)} MB`,
  cores: (c: CpuUse | undefined, first = 'daemon'): string =>
    c
      ? `cores: ${first} ${c.daemonCores.toFixed(2)}, postgres ${c.postgresCores.toFixed(2)}, receiver ${c.receiverCores.toFixed(2)}, bench ${c.benchCores.toFixed(2)}, other ${otherCores(c).toFixed(2)}, machine ${c.machineBusyCores.toFixed(2)}`
      : '',
};

function log(message: string): void {
  const t = new Date().toISOString().slice(11, 19);
  process.stderr.write(`[bench ${t}] ${message}\n`);
}

// ---------------------------------------------------------------------------------------------------
// Results.

interface DeliveryMeasure {
  /** Deliveries counted (distinct per webhook and event) at the ports that were waited for. */
  delivered: number;
  expected: number;
  complete: boolean;
  duplicates: number;
  /** First to last receipt, over all awaited ports. */
  seconds: number;
  perSecond: number;
  /** From spawning the daemon to its first delivery (process start, tsx, preflight, slot). */
  startupSeconds: number;
  perPort?: Array<{ port: number; delivered: number; perSecond: number }>;
  cpu?: CpuUse;
  peakRssMb?: number;
  /** Rows the daemon inserted into `deliveries` during the phase (0: no attempt failed). */
  storeInserts?: number;
  /** Its event log, cursors and deliveries once it stopped. */
  log?: LogFigures;
  /** The phase hit its time bound before every delivery arrived: the rate is over what did. */
  capped?: boolean;
}

/** The argument of naiveConsumer.mjs (plain JavaScript, so declared here). */
interface NaiveConsumerOptions {
  url: string;
  slot: string;
  publication: string;
  /** Where every change is POSTed. */
  target: string;
}

/** WAL the daemon wrote while it drained the pre-committed backlog (nothing else runs then). */
interface WalCostRun {
  label: string;
  changes: number;
  walBytes: number;
  /** walBytes / changes. */
  walBytesPerChange: number;
  /** Spawn to the healthy webhook's last delivery and, where the log is written, its last event logged. */
  seconds: number;
  healthy: DeliveryMeasure;
}

/** One deadStore run: the backlog while `dead` webhooks refuse connections beside a healthy one. */
interface DeadStoreRun {
  dead: number;
  healthy: DeliveryMeasure;
  /** The slot's confirmed_flush_lsn passed the backlog's end (everything logged and acknowledged). */
  confirmedPassed: boolean;
  /** From spawn to that point. */
  seconds: number;
  /** event_log + deliveries + log_cursors, with TOAST and indexes. */
  storeBytes: number;
  storeToCompressed: number;
  peakRssMb: number;
  hwmMb: number;
  log: LogFigures;
}

type CeilingAEntry = CeilingAResult & { targets: number; concurrency: number; bodyBytes: number; cpu?: CpuUse };

interface Results {
  startedAt: string;
  mode: 'full' | 'quick';
  machine: Record<string, unknown>;
  settings: Record<string, unknown>;
  backlog?: { changes: number; transactions: number; seconds: number; perSecond: number; meanBodyBytes?: number };
  /** The ceiling: `agent.dispatch` loop, 1 target x 16 in flight. */
  ceilingA?: CeilingAEntry;
  /** The same to the 10 fan-out targets (10 origins x 16). */
  ceilingA10?: CeilingAEntry;
  /** undici `request()` loop, 1 target x 16: for scale. */
  ceilingARequest?: CeilingAEntry;
  /** undici `request()` loop, 1 target x 32 in flight: what the drain is compared with. */
  requestLoop?: CeilingAEntry;
  ceilingB?: { library?: ReplicationCeilingResult; pgRecvlogical?: { rows: number; seconds: number; rowsPerSecond: number; version: string } };
  /** `ratioToRequestLoop`, `ratioToNaive`: drain events/s over requestLoop's requests/s, over naive's events/s. */
  drain?: DeliveryMeasure & { ratioToCeilingA?: number; ratioToRequestLoop?: number; ratioToNaive?: number };
  /** The README-style consumer (naiveConsumer.mjs) on the same backlog; `cpu.daemonCores` is its own process. */
  naive?: DeliveryMeasure & { meanBodyBytes?: number; client: string };
  drainProfiled?: DeliveryMeasure & { profile?: ProfileSummary; profileFile?: string };
  fanout?: DeliveryMeasure & { ratioToCeilingA?: number };
  fanoutSameOrigin?: DeliveryMeasure & { ratioToCeilingA?: number };
  isolation?: { healthy: DeliveryMeasure; alonePerSecond?: number; ratio?: number; deadStoredRows?: number };
  latency?: Record<
    string,
    {
      rate: number;
      written: number;
      achievedRate: number;
      delivered: number;
      latency: LatencySummary;
      cpu?: CpuUse;
      walsenderLagKb?: { max: number; mean: number };
      storeInserts?: number;
      log?: LogFigures;
    }
  >;
  memory?: {
    events: number;
    backlogged?: {
      writeSeconds: number;
      writeRate: number;
      storedSeconds: number;
      storedPerSecond: number;
      peakRssMb: number;
      hwmMb: number;
      /** Rows in `deliveries` and their table's size. */
      storeRows: number;
      storeMb: number;
      log: LogFigures;
      maxSlotLagMb: number;
      complete: boolean;
      cpu?: CpuUse;
    };
    draining?: { delivered: number; seconds: number; perSecond: number; peakRssMb: number; hwmMb: number; complete: boolean; cpu?: CpuUse; log?: LogFigures };
    retrySchedule: string;
  };
  /** Extra WAL per change: retention 0 (`retain0`), delivery.retentionHours 1 (`retain1h`), retention 0 with a dead webhook beside (`dead0`). */
  walCost?: Partial<Record<'retain0' | 'retain1h' | 'dead0', WalCostRun>>;
  slotLag?: { rate: number; written: number; lagMs: SlotLagSummary; healthyLatency: LatencySummary; cpu: CpuUse; log?: LogFigures };
  deadStore?: { changes: number; writeSeconds: number; dead1?: DeadStoreRun; dead10?: DeadStoreRun; ratio10To1?: number };
  targets?: Array<{ figure: string; value: string; target: string; met: boolean | null }>;
  errors: Record<string, string>;
  totalSeconds?: number;
}

// ---------------------------------------------------------------------------------------------------

class Bench {
  cluster!: ClusterHandle;
  receiver!: ReceiverProcess;
  admin!: pg.Pool;
  ports: number[] = [];
  postmasterPid: number | null = null;
  writer!: CrmWriter;
  writerRandom = seededRandom(7);
  /** The isolation phase's dead webhook: nothing listens there. */
  deadPortIsolation = 0;
  /** WAL position right after the backlog's last commit (pg_recvlogical's --endpos). */
  backlogEndLsn = 0n;
  /** A real event body of the drain, of about the mean size: what ceiling A sends. */
  sampleBody: string | null = null;
  readonly results: Results;
  readonly scale: Scale;

  constructor(
    readonly args: Args,
    readonly workdir: string,
  ) {
    this.scale = { ...SCALES[args.quick ? 'quick' : 'full'] };
    if (args.backlog) {
      this.scale.backlog = args.backlog;
      this.scale.deadStoreBacklog = args.backlog;
    }
    this.results = {
      startedAt: new Date().toISOString(),
      mode: args.quick ? 'quick' : 'full',
      machine: {
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model,
        memoryGb: Math.round(os.totalmem() / 1024 ** 3),
        kernel: os.release(),
        node: process.version,
      },
      settings: {
        ...this.scale,
        daemonConfig: args.daemonConfig,
        daemonConcurrency: DAEMON_CONCURRENCY,
        fanoutWebhooks: FANOUT_WEBHOOKS,
        latencyRates: args.latencyRates,
        latencyMaxTransaction: args.latencyMaxTransaction,
        clusterFlags: CLUSTER_FLAGS.filter((f) => f !== '-c'),
      },
      errors: {},
    };
  }

  url(database = DATABASE): string {
    return this.cluster.adminUrl(database);
  }

  has(phase: Phase): boolean {
    return this.args.only.has(phase);
  }

  daemonConfig(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      'database.url': this.url(),
      schema: `bench_${name}`,
      'replication.slot': `bench_${name}`,
      'replication.publication': `bench_${name}`,
      'http.port': 0,
      'delivery.allowedCidrs': ['127.0.0.0/8'],
      'log.level': 'info',
      ...this.args.daemonConfig,
      ...extra,
    };
  }

  /** The bridge's schema, webhooks table and publication for one daemon, as `pg-webhook-bridge migrate` would. */
  async prepareDaemon(name: string, targets: string[]): Promise<void> {
    const config = loadConfig({ env: {}, overrides: this.daemonConfig(name) });
    const client = await this.admin.connect();
    try {
      await migrate(client, config);
      for (const url of targets)
        await client.query(`insert into bench_${name}.webhooks ("targetUrl", operations, secret) values ($1, '{*.*}', $2)`, [url, SECRET]);
    } finally {
      client.release();
    }
  }

  async createSlot(name: string): Promise<void> {
    await this.admin.query(`select pg_create_logical_replication_slot($1, 'pgoutput')`, [name]);
  }

  async dropSlot(name: string): Promise<void> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const { rows } = await this.admin.query('select active from pg_replication_slots where slot_name = $1', [name]);
      if (rows.length === 0) return;
      if (!rows[0].active) {
        await this.admin.query('select pg_drop_replication_slot($1)', [name]).catch(() => undefined);
        return;
      }
      await sleep(100);
    }
  }

  async slotState(name: string): Promise<{ active: boolean; confirmed: bigint; lagBytes: number } | null> {
    const { rows } = await this.admin.query(
      `select active, confirmed_flush_lsn::text as c, (pg_current_wal_lsn() - confirmed_flush_lsn)::float8 as lag from pg_replication_slots where slot_name = $1`,
      [name],
    );
    if (rows.length === 0) return null;
    return { active: rows[0].active, confirmed: rows[0].c ? parseLsn(rows[0].c) : 0n, lagBytes: Number(rows[0].lag ?? 0) };
  }

  async currentLsn(): Promise<bigint> {
    const { rows } = await this.admin.query('select pg_current_wal_lsn()::text as l');
    return parseLsn(rows[0].l);
  }

  startDaemon(name: string, extra: Record<string, unknown> = {}, profileDir?: string): DaemonProcess {
    const daemon = spawnDaemon({ root: ROOT, config: this.daemonConfig(name, extra), logFile: path.join(this.workdir, `daemon-${name}.log`), profileDir });
    track(daemon.child);
    return daemon;
  }

  logTail(name: string, lines = 15): string {
    try {
      return readFileSync(path.join(this.workdir, `daemon-${name}.log`), 'utf8')
        .trim()
        .split('\n')
        .slice(-lines)
        .join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Waits until the daemon streams its slot (the slot is active). */
  async waitStreaming(name: string, daemon: DaemonProcess): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (daemon.child.exitCode !== null) throw new Error(`daemon ${name} exited with ${daemon.child.exitCode}:\n${this.logTail(name)}`);
      const state = await this.slotState(`bench_${name}`);
      if (state?.active) return;
      await sleep(50);
    }
    throw new Error(`daemon ${name} did not stream within ${READY_TIMEOUT_MS} ms:\n${this.logTail(name)}`);
  }

  /**
   * Waits until every awaited port has `expected` distinct deliveries (or the deadline), then measures
   * first-to-last receipt over those ports.
   */
  async waitDeliveries(
    expected: Map<number, number>,
    timeoutMs: number,
    daemon: DaemonProcess | null,
    spawnedAt: number,
    name: string,
  ): Promise<DeliveryMeasure> {
    const deadline = Date.now() + timeoutMs;
    let stats = await this.receiver.stats();
    const total = (s: ReceiverStats): number => [...expected.keys()].reduce((sum, port) => sum + Math.min(s.ports[port]?.unique ?? 0, expected.get(port)!), 0);
    const want = [...expected.values()].reduce((a, b) => a + b, 0);
    let lastProgress = Date.now();
    let lastTotal = 0;
    while (total(stats) < want && Date.now() < deadline) {
      if (daemon && daemon.child.exitCode !== null) throw new Error(`daemon ${name} exited with ${daemon.child.exitCode}:\n${this.logTail(name)}`);
      await sleep(POLL_MS);
      stats = await this.receiver.stats();
      const now = total(stats);
      if (now !== lastTotal) {
        lastTotal = now;
        lastProgress = Date.now();
      } else if (Date.now() - lastProgress > 10_000 && Date.now() - lastProgress < 10_000 + POLL_MS * 2) {
        log(`  ${name}: no progress for 10 s at ${fmt.int(now)}/${fmt.int(want)}`);
      }
    }
    return this.measure(stats, expected, spawnedAt);
  }

  measure(stats: ReceiverStats, expected: Map<number, number>, spawnedAt: number): DeliveryMeasure {
    let delivered = 0;
    let count = 0;
    let first = Infinity;
    let last = 0;
    const perPort: DeliveryMeasure['perPort'] = [];
    for (const [port] of expected) {
      const s = stats.ports[port];
      if (!s || s.unique === 0) {
        perPort.push({ port, delivered: 0, perSecond: 0 });
        continue;
      }
      delivered += s.unique;
      count += s.count;
      first = Math.min(first, s.firstAt);
      last = Math.max(last, s.lastAt);
      perPort.push({ port, delivered: s.unique, perSecond: s.unique > 1 ? (s.unique - 1) / ((s.lastAt - s.firstAt) / 1000) : 0 });
    }
    const want = [...expected.values()].reduce((a, b) => a + b, 0);
    const seconds = delivered > 0 ? (last - first) / 1000 : 0;
    return {
      delivered,
      expected: want,
      complete: delivered >= want,
      duplicates: count - delivered,
      seconds,
      perSecond: seconds > 0 ? (delivered - 1) / seconds : 0,
      startupSeconds: delivered > 0 ? (first - spawnedAt) / 1000 : 0,
      perPort: perPort.length > 1 ? perPort : undefined,
    };
  }

  // -------------------------------------------------------------------------------------------------

  async setup(): Promise<void> {
    log(`starting Postgres (${this.args.quick ? 'quick' : 'full'} run; work directory ${this.workdir})`);
    this.cluster = await startCluster({ extraFlags: CLUSTER_FLAGS });
    this.postmasterPid = Number(readFileSync(path.join(this.cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]) || null;
    const bootstrap = new pg.Client({ connectionString: this.url('postgres') });
    await bootstrap.connect();
    const { rows } = await bootstrap.query('show server_version');
    this.results.machine.postgres = rows[0].server_version;
    await bootstrap.query(`create database ${DATABASE}`);
    await bootstrap.end();
    this.admin = new pg.Pool({ connectionString: this.url(), max: 6 });
    this.admin.on('error', () => undefined);
    await this.admin.query(CRM_SCHEMA_SQL);
    this.receiver = await ReceiverProcess.start();
    for (let i = 0; i < FANOUT_WEBHOOKS; i++) this.ports.push(await this.receiver.listen(0));
    this.writer = new CrmWriter(this.writerRandom);
  }

  /** Seeds rows, creates every backlog phase's slot, then commits the backlog: all of it is waiting in WAL. */
  async prepareBacklog(): Promise<void> {
    const hook = (port: number, suffix = ''): string => `http://${HOST}:${port}/hook${suffix}`;
    this.deadPortIsolation = await deadPort();
    const daemons: Array<[string, string[]]> = [];
    if (this.has('drain') || this.has('ceilingA')) daemons.push(['drain', [hook(this.ports[0])]]);
    if (this.has('profile')) daemons.push(['profile', [hook(this.ports[0])]]);
    if (this.has('fanout')) daemons.push(['fanout', this.ports.map((p) => hook(p))]);
    if (this.has('fanoutSameOrigin')) daemons.push(['fanoutsame', this.ports.map((_, i) => hook(this.ports[0], `/${i}`))]);
    if (this.has('isolation')) {
      // The same drain alone, run right before: the ratio compares two runs seconds apart, not ones
      // minutes apart on a machine whose load drifts.
      daemons.push(['isolationalone', [hook(this.ports[0])]]);
      daemons.push(['isolation', [hook(this.ports[0]), hook(this.deadPortIsolation)]]);
    }
    if (this.has('walCost')) {
      daemons.push(['walcost', [hook(this.ports[0])]]);
      daemons.push(['walcostretain', [hook(this.ports[0])]]);
      daemons.push(['walcostdead', [hook(this.ports[0]), hook(this.deadPortIsolation)]]);
    }
    for (const [name, targets] of daemons) await this.prepareDaemon(name, targets);
    await this.admin.query(`create publication bench_ceiling for table public.person, public.company, public.note, public.task`);

    log(`seeding ${fmt.int(this.scale.seedPerTable * 4)} rows (not part of the backlog)`);
    const client = await this.admin.connect();
    try {
      await seed(client, this.writer, this.scale.seedPerTable * 4);
      for (const [name] of daemons) await this.createSlot(`bench_${name}`);
      if (this.has('naive')) await this.createSlot('bench_naive');
      if (this.has('ceilingB')) {
        await this.createSlot('bench_ceiling_lib');
        await this.createSlot('bench_ceiling_recv');
      }
      log(`writing the backlog: ${fmt.int(this.scale.backlog)} changes in transactions of 1-${BACKLOG_MAX_TRANSACTION}`);
      const written = await writeBacklog(client, this.writer, this.writerRandom, this.scale.backlog, BACKLOG_MAX_TRANSACTION);
      this.backlogEndLsn = await this.currentLsn();
      this.results.backlog = { ...written, perSecond: written.changes / written.seconds };
      log(`  ${fmt.int(written.changes)} changes in ${fmt.int(written.transactions)} transactions, ${written.seconds.toFixed(1)} s`);
    } finally {
      client.release();
    }
  }

  async runCeilingB(): Promise<void> {
    log('ceiling B: bare pg-logical-replication consumer (counts rows, parses nothing)');
    const library = await runScript<ReplicationCeilingResult>(
      'replicationCeiling.ts',
      {
        url: this.url(),
        slot: 'bench_ceiling_lib',
        publication: 'bench_ceiling',
        expectedRows: this.scale.backlog,
        timeoutMs: 300_000,
      } satisfies ReplicationCeilingOptions,
      320_000,
    );
    this.results.ceilingB = { library };
    log(`  ${fmt.int(library.rows)} rows in ${library.seconds.toFixed(2)} s: ${fmt.rate(library.rowsPerSecond)}`);
    await this.dropSlot('bench_ceiling_lib');

    const recvlogical = findPgRecvlogical(this.cluster.binDir);
    if (!recvlogical) {
      log('  pg_recvlogical not found: skipped');
    } else {
      const version = execFileSync(recvlogical, ['--version'], { encoding: 'utf8' }).trim();
      const started = performance.now();
      await new Promise<void>((resolve, reject) => {
        const child = track(
          spawn(
            recvlogical,
            [
              '-d',
              `host=${HOST} port=${this.cluster.port} user=${this.cluster.user} dbname=${DATABASE}`,
              '--slot',
              'bench_ceiling_recv',
              '--start',
              '--no-loop',
              '-o',
              'proto_version=1',
              '-o',
              'publication_names=bench_ceiling',
              '--endpos',
              formatLsn(this.backlogEndLsn),
              '-F',
              '0',
              '-f',
              '/dev/null',
            ],
            { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, PGPASSWORD: this.cluster.password } },
          ),
        );
        let stderr = '';
        child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
        child.on('exit', (code) => {
          clearTimeout(timer);
          if (code === 0) resolve();
          else reject(new Error(`pg_recvlogical exited with ${code}: ${stderr}`));
        });
      });
      const seconds = (performance.now() - started) / 1000;
      this.results.ceilingB!.pgRecvlogical = { rows: this.scale.backlog, seconds, rowsPerSecond: this.scale.backlog / seconds, version };
      log(`  pg_recvlogical (${version}): ${seconds.toFixed(2)} s: ${fmt.rate(this.scale.backlog / seconds)}`);
    }
    await this.dropSlot('bench_ceiling_recv');
  }

  /** One daemon drains the prepared backlog; `expected` deliveries per receiver port. */
  async runDrain(
    name: string,
    expected: Map<number, number>,
    timeoutMs: number,
    profileDir?: string,
    start: () => DaemonProcess = () => this.startDaemon(name, {}, profileDir),
    /** Runs once the deliveries are in, before the daemon is stopped. */
    beforeStop?: (daemon: DaemonProcess) => Promise<void>,
  ): Promise<DeliveryMeasure & { streamingAfterMs: number }> {
    await this.receiver.reset();
    const spawnedAt = wallNow();
    const daemon = start();
    const memory = new MemorySampler(daemon.pid).start(100);
    let measure: (DeliveryMeasure & { streamingAfterMs: number }) | null = null;
    try {
      await this.waitStreaming(name, daemon);
      const streamingAfterMs = wallNow() - spawnedAt;
      const cpu = new CpuWindow(daemon.pid, this.postmasterPid);
      cpu.start((await this.receiver.stats()).cpuUs);
      measure = { ...(await this.waitDeliveries(expected, timeoutMs, daemon, spawnedAt, name)), streamingAfterMs };
      measure.cpu = cpu.stop((await this.receiver.stats()).cpuUs);
      measure.peakRssMb = memory.stop().hwmMb;
      measure.capped = !measure.complete;
      await beforeStop?.(daemon);
      return measure;
    } finally {
      memory.stop();
      const code = await daemon.stop();
      if (code !== 0) log(`  daemon ${name} exited with ${code}`);
      if (measure) {
        measure.storeInserts = await this.storeInserts(name);
        // The naive consumer has no store.
        if (name !== 'naive') measure.log = await readLogFigures(this.admin, `bench_${name}`);
      }
      await this.dropSlot(`bench_${name}`);
    }
  }

  /** Rows inserted into a daemon's delivery store so far (statistics are flushed when its backends exit). */
  async storeInserts(name: string): Promise<number> {
    const { rows } = await this.admin.query(
      `select coalesce(sum(n_tup_ins), 0)::float8 as n from pg_stat_user_tables where schemaname = $1 and relname = 'deliveries'`,
      [`bench_${name}`],
    );
    return Number(rows[0].n);
  }

  async runDrainPhase(): Promise<void> {
    log(`drain: ${fmt.int(this.scale.backlog)} backlogged changes to one webhook`);
    const measure = await this.runDrain('drain', new Map([[this.ports[0], this.scale.backlog]]), this.scale.drainTimeoutMs);
    const stats = await this.receiver.stats();
    const port = stats.ports[this.ports[0]];
    if (port && port.count > 0 && this.results.backlog) this.results.backlog.meanBodyBytes = port.bytes / port.count;
    this.sampleBody = pickBody(stats.bodies, port ? port.bytes / port.count : 0);
    this.results.drain = measure;
    log(`  ${describe(measure)}`);
  }

  /**
   * The same backlog through naiveConsumer.mjs (plain node, its own slot on the ceiling's publication of
   * the same four tables), measured as the drain is: first to last receipt, its process's CPU and RSS.
   */
  async runNaive(): Promise<void> {
    const name = 'naive';
    log(`naive: ${fmt.int(this.scale.backlog)} backlogged changes through a README-style pg-logical-replication consumer (one awaited POST per change)`);
    const options: NaiveConsumerOptions = {
      url: this.url(),
      slot: `bench_${name}`,
      publication: 'bench_ceiling',
      target: `http://${HOST}:${this.ports[0]}/naive`,
    };
    const measure = await this.runDrain(name, new Map([[this.ports[0], this.scale.backlog]]), this.scale.drainTimeoutMs, undefined, () => {
      const child = spawnLogged(ROOT, [path.join(HERE, 'naiveConsumer.mjs'), JSON.stringify(options)], path.join(this.workdir, `daemon-${name}.log`));
      track(child.child);
      return child;
    });
    const port = (await this.receiver.stats()).ports[this.ports[0]];
    this.results.naive = {
      ...measure,
      // It has no store; runDrain counted a table that does not exist.
      storeInserts: undefined,
      meanBodyBytes: port && port.count > 0 ? port.bytes / port.count : undefined,
      client: 'undici request(), global dispatcher',
    };
    log(`  ${describe(measure, 'naive')}; mean body ${fmt.int(this.results.naive.meanBodyBytes)} B`);
  }

  async runProfilePhase(): Promise<void> {
    const dir = this.args.profile ?? path.join(this.workdir, 'profile');
    mkdirSync(dir, { recursive: true });
    const before = new Set(readdirSync(dir));
    log(`drain under --cpu-prof (profile into ${dir})`);
    const measure: NonNullable<Results['drainProfiled']> & { streamingAfterMs: number } = await this.runDrain(
      'profile',
      new Map([[this.ports[0], this.scale.backlog]]),
      this.scale.drainTimeoutMs,
      dir,
    );
    // One file per thread (tsx runs its module hooks in a second one): the main thread is thread 0.
    const written = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile') && !before.has(f));
    const file = written.find((f) => /\.0\.\d+\.cpuprofile$/.test(f)) ?? written[0];
    if (file) {
      measure.profileFile = path.join(dir, file);
      measure.profile = summariseProfile(measure.profileFile, 30, measure.streamingAfterMs);
    } else log('  no .cpuprofile written (did the daemon exit cleanly?)');
    this.results.drainProfiled = measure;
    log(`  ${describe(measure)}`);
  }

  async runCeilingA(): Promise<void> {
    const body = this.sampleBody ?? syntheticBody();
    type Run = { key: 'ceilingA' | 'ceilingA10' | 'ceilingARequest' | 'requestLoop'; targets: number; mode: CeilingAOptions['mode']; concurrency: number };
    const runs: Run[] = [
      { key: 'ceilingA', targets: 1, mode: 'dispatch', concurrency: DAEMON_CONCURRENCY },
      { key: 'ceilingA10', targets: FANOUT_WEBHOOKS, mode: 'dispatch', concurrency: DAEMON_CONCURRENCY },
      // Only for scale, so --quick leaves it out.
      ...(this.args.quick ? [] : [{ key: 'ceilingARequest', targets: 1, mode: 'request', concurrency: DAEMON_CONCURRENCY } satisfies Run]),
      // The plain loop the drain is judged against (drain >= 0.8 x), in both modes.
      { key: 'requestLoop', targets: 1, mode: 'request', concurrency: REQUEST_LOOP_CONCURRENCY },
    ];
    for (const { key, targets, mode, concurrency } of runs) {
      log(`ceiling A: undici ${mode} loop, ${targets} target(s) x ${concurrency} in flight, ${Buffer.byteLength(body)}-byte signed bodies`);
      await this.receiver.reset();
      const cpu = new CpuWindow(null, this.postmasterPid);
      cpu.start((await this.receiver.stats()).cpuUs);
      const result = await runScript<CeilingAResult>(
        'ceilingA.ts',
        {
          targets: this.ports.slice(0, targets).map((p) => `http://${HOST}:${p}/ceiling`),
          concurrency,
          warmupMs: 1_000,
          durationMs: this.scale.ceilingAMs,
          body,
          secret: SECRET,
          mode,
        } satisfies CeilingAOptions,
        this.scale.ceilingAMs + 60_000,
      );
      const usage = cpu.stop((await this.receiver.stats()).cpuUs);
      // The window also covers the client's start-up; its own figure is over the measured seconds only.
      usage.daemonCores = result.clientCores;
      this.results[key] = { ...result, targets, concurrency, bodyBytes: Buffer.byteLength(body), cpu: usage };
      log(
        `  ${fmt.rate(result.perSecond)} (${fmt.int(result.requests)} in ${result.seconds.toFixed(1)} s, ${result.failures} failures; client ${result.clientCores.toFixed(2)} cores)`,
      );
    }
  }

  async runFanout(sameOrigin: boolean): Promise<void> {
    const name = sameOrigin ? 'fanoutsame' : 'fanout';
    log(`fan-out: ${fmt.int(this.scale.backlog)} changes to ${FANOUT_WEBHOOKS} webhooks (${sameOrigin ? 'one origin' : `${FANOUT_WEBHOOKS} origins`})`);
    const expected = sameOrigin ? new Map([[this.ports[0], this.scale.backlog * FANOUT_WEBHOOKS]]) : new Map(this.ports.map((p) => [p, this.scale.backlog]));
    const measure = await this.runDrain(name, expected, this.scale.fanoutTimeoutMs);
    if (sameOrigin) this.results.fanoutSameOrigin = measure;
    else this.results.fanout = measure;
    log(`  ${describe(measure)}`);
  }

  async runIsolation(): Promise<void> {
    log(`isolation: ${fmt.int(this.scale.backlog)} changes to a healthy webhook and a dead one (connection refused)`);
    const alone = await this.runDrain('isolationalone', new Map([[this.ports[0], this.scale.backlog]]), this.scale.drainTimeoutMs);
    log(`  alone: ${describe(alone)}`);
    const healthy = await this.runDrain(
      'isolation',
      new Map([[this.ports[0], this.scale.backlog]]),
      this.scale.drainTimeoutMs,
      process.env.PGWB_BENCH_ISOLATION_PROF,
    );
    this.results.isolation = { healthy, alonePerSecond: alone.perSecond, deadStoredRows: healthy.log?.deliveries };
    log(`  healthy: ${describe(healthy)}; the dead webhook's store: ${describeLog(healthy.log)}`);
    // Counted, now cleared: left behind, their autovacuum and the checkpoint of their WAL ran during the
    // latency phase that follows (p99 at 1,000/s: 29.2 ms in a full run, 5.0 ms with the phase alone).
    await this.admin.query('truncate bench_isolation.deliveries, bench_isolation.event_log, bench_isolation.log_cursors');
    await this.admin.query('checkpoint');
  }

  /**
   * How soon the slot confirms each commit at a steady 1,000 changes/s while, beside a healthy webhook,
   * one refuses connections and one accepts them and never answers.
   */
  async runSlotLag(): Promise<void> {
    const name = 'slotlag';
    const rate = 1_000;
    const hanging = await startHangingServer();
    const targets = [`http://${HOST}:${this.ports[0]}/hook`, `http://${HOST}:${await deadPort()}/hook`, `http://${HOST}:${hanging.port}/hook`];
    await this.prepareDaemon(name, targets);
    const daemon = this.startDaemon(name);
    const pool = new pg.Pool({ connectionString: this.url(), max: PACED_CONNECTIONS });
    pool.on('error', () => undefined);
    try {
      await this.waitStreaming(name, daemon);
      log(`slotLag: steady ${fmt.int(rate)} changes/s for ${(this.scale.latencyMs / 1000).toFixed(0)} s to a healthy, a dead and a hanging webhook`);
      await this.receiver.reset();
      const cpu = new CpuWindow(daemon.pid, this.postmasterPid);
      cpu.start((await this.receiver.stats()).cpuUs);
      const lag = sampleSlotLag(this.admin, `bench_${name}`);
      const written = await writePaced(pool, rate, this.scale.latencyMs, {
        connections: PACED_CONNECTIONS,
        maxTransaction: this.args.latencyMaxTransaction,
        seed: 4_242,
      });
      const lagMs = await lag.stop(30_000);
      await this.waitDeliveries(new Map([[this.ports[0], written.changes]]), 60_000, daemon, wallNow(), name);
      const usage = cpu.stop((await this.receiver.stats()).cpuUs);
      const stats = await this.receiver.stats(true);
      const figures = await readLogFigures(this.admin, `bench_${name}`).catch(() => undefined);
      this.results.slotLag = { rate, written: written.changes, lagMs, healthyLatency: stats.latency, cpu: usage, log: figures };
      log(
        `  slot confirmed each moment's WAL after p50 ${fmt.ms(lagMs.p50)}, p99 ${fmt.ms(lagMs.p99)}, max ${fmt.ms(lagMs.max)} (${fmt.int(lagMs.samples)} samples, ${lagMs.unconfirmed} unconfirmed); ` +
          `healthy webhook p50 ${fmt.ms(stats.latency.p50)}, p99 ${fmt.ms(stats.latency.p99)}; ${describeLog(figures)}; ${fmt.cores(usage)}`,
      );
    } finally {
      await pool.end().catch(() => undefined);
      await daemon.stop();
      await hanging.close();
      await this.dropSlot(`bench_${name}`);
    }
  }

  async runLatency(): Promise<void> {
    const name = 'latency';
    await this.prepareDaemon(name, [`http://${HOST}:${this.ports[0]}/hook`]);
    const daemon = this.startDaemon(name, {}, process.env.PGWB_BENCH_LATENCY_PROF);
    const pool = new pg.Pool({ connectionString: this.url(), max: PACED_CONNECTIONS });
    pool.on('error', () => undefined);
    const latency: NonNullable<Results['latency']> = {};
    this.results.latency = latency;
    try {
      await this.waitStreaming(name, daemon);
      for (const rate of this.args.latencyRates) {
        const key = `r${rate}`;
        try {
          log(`latency: steady ${fmt.int(rate)} changes/s for ${(this.scale.latencyMs / 1000).toFixed(0)} s (after ${LATENCY_WARMUP_MS / 1000} s warm-up)`);
          await this.receiver.reset();
          const warm = await writePaced(pool, rate, LATENCY_WARMUP_MS, {
            connections: PACED_CONNECTIONS,
            maxTransaction: this.args.latencyMaxTransaction,
            seed: rate,
          });
          await this.waitDeliveries(new Map([[this.ports[0], warm.changes]]), 30_000, daemon, wallNow(), name);
          await this.receiver.reset();
          const cpu = new CpuWindow(daemon.pid, this.postmasterPid);
          cpu.start((await this.receiver.stats()).cpuUs);
          const lag = this.sampleWalsenderLag(`bench_${name}`);
          const written = await writePaced(pool, rate, this.scale.latencyMs, {
            connections: PACED_CONNECTIONS,
            maxTransaction: this.args.latencyMaxTransaction,
            seed: rate * 7,
          });
          const walsenderLagKb = await lag.stop();
          const measure = await this.waitDeliveries(new Map([[this.ports[0], written.changes]]), 60_000, daemon, wallNow(), name);
          const usage = cpu.stop((await this.receiver.stats()).cpuUs);
          const stats = await this.receiver.stats(true);
          latency[key] = {
            rate,
            written: written.changes,
            achievedRate: written.achievedRate,
            delivered: measure.delivered,
            latency: stats.latency,
            cpu: usage,
            walsenderLagKb,
          };
          log(
            `  wrote ${fmt.rate(written.achievedRate)}, delivered ${fmt.int(measure.delivered)}/${fmt.int(written.changes)}: p50 ${fmt.ms(stats.latency.p50)}, p95 ${fmt.ms(stats.latency.p95)}, p99 ${fmt.ms(stats.latency.p99)}, max ${fmt.ms(stats.latency.max)}; ` +
              `WAL not yet sent to the daemon: max ${fmt.int(walsenderLagKb.max)} kB, mean ${fmt.int(walsenderLagKb.mean)} kB; ${fmt.cores(usage)}`,
          );
        } catch (error) {
          this.results.errors[`latency ${rate}`] = (error as Error).message;
          log(`  failed: ${(error as Error).message}`);
        }
      }
    } finally {
      await pool.end().catch(() => undefined);
      await daemon.stop();
      const inserts = await this.storeInserts(name).catch(() => 0);
      const figures = await readLogFigures(this.admin, `bench_${name}`).catch(() => undefined);
      for (const entry of Object.values(latency)) Object.assign(entry, { storeInserts: inserts, log: figures });
      await this.dropSlot(`bench_${name}`);
    }
  }

  /**
   * Samples, every 100 ms, how much WAL the walsender of `slot` has not yet sent (current WAL position
   * minus pg_stat_replication.sent_lsn): large means Postgres-side decoding (or a daemon not reading) is
   * where latency builds up; small means the delay is inside the daemon.
   */
  sampleWalsenderLag(slot: string): { stop(): Promise<{ max: number; mean: number }> } {
    let running = true;
    let max = 0;
    let sum = 0;
    let n = 0;
    const loop = (async () => {
      while (running) {
        const { rows } = await this.admin
          .query(
            `select (pg_current_wal_lsn() - r.sent_lsn)::float8 as lag from pg_stat_replication r join pg_replication_slots s on s.active_pid = r.pid where s.slot_name = $1`,
            [slot],
          )
          .catch(() => ({ rows: [] as Array<{ lag: number }> }));
        if (rows.length > 0) {
          const lag = Math.max(0, Number(rows[0].lag)) / 1024;
          max = Math.max(max, lag);
          sum += lag;
          n++;
        }
        await sleep(100);
      }
    })();
    return {
      async stop() {
        running = false;
        await loop;
        return { max, mean: n > 0 ? sum / n : 0 };
      },
    };
  }

  async runMemory(): Promise<void> {
    const name = 'memory';
    const events = this.scale.memoryBacklog;
    const port = await deadPort();
    await this.prepareDaemon(name, [`http://${HOST}:${port}/hook`]);
    const result: NonNullable<Results['memory']> = {
      events,
      retrySchedule: `${MEMORY_RETRY_SCHEDULE_S.length} retries, ${MEMORY_RETRY_SCHEDULE_S[0]} s apart`,
    };
    this.results.memory = result;
    // Heartbeats every second: the slot position tells within ~2 s when the whole backlog is stored.
    const daemon = this.startDaemon(name, { 'delivery.retrySchedule': MEMORY_RETRY_SCHEDULE_S, 'replication.heartbeatIntervalMs': 1_000 });
    try {
      await this.waitStreaming(name, daemon);
      log(`memory: ${fmt.int(events)} changes behind a dead receiver (port ${port}, connection refused)`);
      const memory = new MemorySampler(daemon.pid).start(100);
      const cpu = new CpuWindow(daemon.pid, this.postmasterPid);
      cpu.start((await this.receiver.stats()).cpuUs);
      let maxLag = 0;
      let watching = true;
      const lagWatcher = (async () => {
        while (watching) {
          const state = await this.slotState(`bench_${name}`).catch(() => null);
          if (state) maxLag = Math.max(maxLag, state.lagBytes);
          await sleep(1_000);
        }
      })();
      const started = performance.now();
      const client = await this.admin.connect();
      let written;
      try {
        let nextLog = 0;
        written = await writeBacklog(client, this.writer, this.writerRandom, events, BACKLOG_MAX_TRANSACTION, (n) => {
          if (n >= nextLog) {
            const m = readMemory(daemon.pid);
            log(`  written ${fmt.int(n)}; daemon RSS ${fmt.mb(m?.rssMb)}`);
            nextLog += Math.max(10_000, Math.floor(events / 10));
          }
        });
      } finally {
        client.release();
      }
      const endLsn = await this.currentLsn();
      log(`  backlog committed in ${written.seconds.toFixed(1)} s; waiting until the daemon has stored it all (slot confirmed past ${formatLsn(endLsn)})`);
      const deadline = Date.now() + this.scale.memoryStoreTimeoutMs;
      let complete = false;
      let nextLog = Date.now() + 10_000;
      while (Date.now() < deadline) {
        if (daemon.child.exitCode !== null) throw new Error(`daemon exited with ${daemon.child.exitCode}:\n${this.logTail(name)}`);
        const state = await this.slotState(`bench_${name}`);
        if (state && state.confirmed >= endLsn) {
          complete = true;
          break;
        }
        if (Date.now() >= nextLog) {
          nextLog = Date.now() + 10_000;
          log(`  slot lag ${fmt.mb((state?.lagBytes ?? 0) / 1024 ** 2)}, daemon RSS ${fmt.mb(readMemory(daemon.pid)?.rssMb)}`);
        }
        await sleep(250);
      }
      const storedSeconds = (performance.now() - started) / 1000;
      watching = false;
      await lagWatcher;
      const backlogCpu = cpu.stop((await this.receiver.stats()).cpuUs);
      const peak = memory.stop();
      const figures = await readLogFigures(this.admin, `bench_${name}`);
      result.backlogged = {
        writeSeconds: written.seconds,
        writeRate: written.changes / written.seconds,
        storedSeconds,
        storedPerSecond: figures.events / storedSeconds,
        peakRssMb: peak.maxRssMb,
        hwmMb: peak.hwmMb,
        storeRows: figures.deliveries,
        storeMb: figures.deliveriesTableBytes / 1024 ** 2,
        log: figures,
        maxSlotLagMb: maxLag / 1024 ** 2,
        complete,
        cpu: backlogCpu,
      };
      log(
        `  logged ${fmt.int(figures.events)} events ${complete ? '' : '(INCOMPLETE) '}after ${storedSeconds.toFixed(1)} s: ${describeLog(figures)}; peak RSS ${fmt.mb(peak.hwmMb)} (sampled max ${fmt.mb(peak.maxRssMb)}), max slot lag ${fmt.mb(maxLag / 1024 ** 2)}`,
      );

      log('  receiver back: draining the store');
      await this.receiver.reset();
      const hwmReset = resetPeak(daemon.pid);
      const drainMemory = new MemorySampler(daemon.pid).start(100);
      const drainCpu = new CpuWindow(daemon.pid, this.postmasterPid);
      drainCpu.start((await this.receiver.stats()).cpuUs);
      const backAt = wallNow();
      await this.receiver.listen(port);
      const drained = await this.waitDeliveriesWithProgress(new Map([[port, events]]), this.scale.memoryDrainTimeoutMs, daemon, name, drainMemory);
      const drainUsage = drainCpu.stop((await this.receiver.stats()).cpuUs);
      const drainPeak = drainMemory.stop();
      const seconds = drained.delivered > 0 ? (wallNow() - backAt) / 1000 : 0;
      result.draining = {
        delivered: drained.delivered,
        seconds: drained.complete ? drained.seconds + drained.startupSeconds : seconds,
        perSecond: drained.perSecond,
        peakRssMb: drainPeak.maxRssMb,
        hwmMb: hwmReset ? drainPeak.hwmMb : drainPeak.maxRssMb,
        complete: drained.complete,
        cpu: drainUsage,
        log: await readLogFigures(this.admin, `bench_${name}`),
      };
      log(
        `  drained ${fmt.int(drained.delivered)}/${fmt.int(events)} ${drained.complete ? '' : '(INCOMPLETE) '}at ${fmt.rate(drained.perSecond)}; peak RSS while draining ${fmt.mb(result.draining.hwmMb)}`,
      );
    } finally {
      await daemon.stop();
      await this.receiver.close(port).catch(() => undefined);
      await this.dropSlot(`bench_${name}`);
    }
  }

  /**
   * WAL written per change while the daemon drains the pre-committed backlog to one healthy webhook:
   * with retention 0 (nothing logged), with delivery.retentionHours 1 (every change logged), and with
   * retention 0 beside a dead webhook (every change logged for it). Only the daemon runs meanwhile, so
   * the WAL position's advance is its own: its log, cursors, deliveries, heartbeats.
   */
  async runWalCost(): Promise<void> {
    const changes = this.scale.backlog;
    const results: NonNullable<Results['walCost']> = {};
    this.results.walCost = results;
    // Autovacuum of the backlog's dead rows (and the hint bits it sets) would count as the daemon's WAL.
    await this.admin.query('vacuum (analyze) public.person, public.company, public.note, public.task');
    const runs = [
      { key: 'retain0', name: 'walcost', label: 'retention 0, 1 healthy webhook', extra: {}, logged: false },
      { key: 'retain1h', name: 'walcostretain', label: 'delivery.retentionHours 1, 1 healthy webhook', extra: { 'delivery.retentionHours': 1 }, logged: true },
      { key: 'dead0', name: 'walcostdead', label: 'retention 0, 1 healthy + 1 dead webhook', extra: {}, logged: true },
    ] as const;
    for (const run of runs) {
      try {
        log(`walCost: ${fmt.int(changes)} backlogged changes, ${run.label}`);
        const before = await this.currentLsn();
        let after = before;
        let doneAt = 0;
        const spawnedAt = wallNow();
        const healthy = await this.runDrain(
          run.name,
          new Map([[this.ports[0], changes]]),
          this.scale.drainTimeoutMs,
          undefined,
          () => this.startDaemon(run.name, run.extra),
          async () => {
            // The healthy webhook may be done before the last segment is committed.
            if (run.logged) await this.waitLogged(run.name, changes, 60_000);
            after = await this.currentLsn();
            doneAt = wallNow();
          },
        );
        const walBytes = Number(after - before);
        results[run.key] = { label: run.label, changes, walBytes, walBytesPerChange: walBytes / changes, seconds: (doneAt - spawnedAt) / 1000, healthy };
        log(`  WAL ${fmt.size(walBytes)}: ${fmt.int(walBytes / changes)} B/change; ${describeLog(healthy.log)}; ${describe(healthy)}`);
      } catch (error) {
        this.results.errors[`walCost ${run.key}`] = (error as Error).message;
        log(`  failed: ${(error as Error).message}`);
      }
    }
  }

  /** Waits until a daemon's event log holds `events` events (or the deadline). */
  async waitLogged(name: string, events: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const { rows } = await this.admin.query(`select coalesce(sum(event_count), 0)::float8 as n from bench_${name}.event_log`);
      if (rows[0].n >= events) return true;
      await sleep(POLL_MS);
    }
    log(`  ${name}: the event log did not reach ${fmt.int(events)} events within ${timeoutMs / 1000} s`);
    return false;
  }

  /**
   * One backlog, committed before the daemons start, delivered beside 1 and then 10 dead webhooks
   * (connection refused): once the healthy one has everything and the slot has passed the backlog, the
   * store's size on disk against the events' compressed bytes, and the daemon's peak RSS.
   */
  async runDeadStore(): Promise<void> {
    const changes = this.scale.deadStoreBacklog;
    const hook = (port: number, suffix: string): string => `http://${HOST}:${port}/${suffix}`;
    const deadCounts = [1, 10] as const;
    for (const dead of deadCounts) {
      const targets = [hook(this.ports[0], 'deadstore')];
      for (let i = 0; i < dead; i++) targets.push(hook(await deadPort(), `dead${i}`));
      await this.prepareDaemon(`deadstore${dead}`, targets);
      await this.createSlot(`bench_deadstore${dead}`);
    }
    log(`deadStore: writing ${fmt.int(changes)} changes in transactions of 1-${BACKLOG_MAX_TRANSACTION} (both daemons' slots wait)`);
    const client = await this.admin.connect();
    let written;
    try {
      written = await writeBacklog(client, this.writer, this.writerRandom, changes, BACKLOG_MAX_TRANSACTION);
    } finally {
      client.release();
    }
    const endLsn = await this.currentLsn();
    const result: NonNullable<Results['deadStore']> = { changes, writeSeconds: written.seconds };
    this.results.deadStore = result;
    for (const dead of deadCounts) {
      try {
        log(`deadStore: ${fmt.int(changes)} backlogged changes to 1 healthy webhook beside ${dead} dead`);
        result[`dead${dead}`] = await this.deadStoreRun(dead, changes, endLsn);
      } catch (error) {
        this.results.errors[`deadStore ${dead} dead`] = (error as Error).message;
        log(`  failed: ${(error as Error).message}`);
        await this.dropSlot(`bench_deadstore${dead}`);
      }
    }
    if (result.dead1 && result.dead10) result.ratio10To1 = result.dead10.storeBytes / result.dead1.storeBytes;
  }

  async deadStoreRun(dead: number, changes: number, endLsn: bigint): Promise<DeadStoreRun> {
    const name = `deadstore${dead}`;
    let passed = false;
    let figures: LogFigures | undefined;
    let hwmMb = 0;
    let doneAt = 0;
    const spawnedAt = wallNow();
    const healthy = await this.runDrain(
      name,
      new Map([[this.ports[0], changes]]),
      this.scale.deadStoreTimeoutMs,
      undefined,
      // Heartbeats every second: the slot passes the backlog's end within ~2 s of the last event logged.
      () => this.startDaemon(name, { 'replication.heartbeatIntervalMs': 1_000 }),
      async (daemon) => {
        const deadline = Date.now() + this.scale.deadStoreTimeoutMs;
        while (!passed && Date.now() < deadline) {
          const state = await this.slotState(`bench_${name}`);
          passed = state !== null && state.confirmed >= endLsn;
          if (!passed) await sleep(250);
        }
        doneAt = wallNow();
        figures = await readLogFigures(this.admin, `bench_${name}`);
        hwmMb = readMemory(daemon.pid)?.hwmMb ?? 0;
      },
    );
    if (!figures) throw new Error(`${name}: no store figures`);
    const bytes = storeBytes(figures);
    const run: DeadStoreRun = {
      dead,
      healthy,
      confirmedPassed: passed,
      seconds: (doneAt - spawnedAt) / 1000,
      storeBytes: bytes,
      storeToCompressed: bytes / figures.compressedBytes,
      peakRssMb: Math.max(hwmMb, healthy.peakRssMb ?? 0),
      hwmMb,
      log: figures,
    };
    log(
      `  store ${fmt.size(bytes)} = ${fmt.times(run.storeToCompressed)} the events' ${fmt.size(figures.compressedBytes)} compressed; ${describeLog(figures)}; ` +
        `slot ${passed ? 'passed' : 'DID NOT pass'} the backlog after ${run.seconds.toFixed(1)} s; peak RSS ${fmt.mb(run.peakRssMb)}; healthy: ${describe(healthy)}`,
    );
    return run;
  }

  /** waitDeliveries with a progress line every 15 s (the store drain can be long). */
  async waitDeliveriesWithProgress(
    expected: Map<number, number>,
    timeoutMs: number,
    daemon: DaemonProcess,
    name: string,
    memory: MemorySampler,
  ): Promise<DeliveryMeasure> {
    const startedAt = wallNow();
    const ticker = setInterval(() => {
      void this.receiver.stats().then((s) => {
        const delivered = [...expected.keys()].reduce((sum, p) => sum + (s.ports[p]?.unique ?? 0), 0);
        log(`  delivered ${fmt.int(delivered)} after ${((wallNow() - startedAt) / 1000).toFixed(0)} s; daemon RSS ${fmt.mb(memory.sample()?.rssMb)}`);
      });
    }, 15_000);
    try {
      return await this.waitDeliveries(expected, timeoutMs, daemon, startedAt, name);
    } finally {
      clearInterval(ticker);
    }
  }

  // -------------------------------------------------------------------------------------------------

  judge(): void {
    const r = this.results;
    const a = r.ceilingA?.perSecond;
    if (a) {
      if (r.drain) r.drain.ratioToCeilingA = r.drain.perSecond / a;
      if (r.fanout) r.fanout.ratioToCeilingA = r.fanout.perSecond / a;
      if (r.fanoutSameOrigin) r.fanoutSameOrigin.ratioToCeilingA = r.fanoutSameOrigin.perSecond / a;
    }
    if (r.drain && r.requestLoop?.perSecond) r.drain.ratioToRequestLoop = r.drain.perSecond / r.requestLoop.perSecond;
    if (r.drain && r.naive?.perSecond) r.drain.ratioToNaive = r.drain.perSecond / r.naive.perSecond;
    if (r.isolation?.alonePerSecond) r.isolation.ratio = r.isolation.healthy.perSecond / r.isolation.alonePerSecond;
    const targets: NonNullable<Results['targets']> = [];
    const add = (figure: string, value: number | undefined, shown: string, target: string, ok: (v: number) => boolean): void => {
      targets.push({ figure, value: shown, target, met: value === undefined || !Number.isFinite(value) ? null : ok(value) });
    };
    add('drain to 1 webhook / ceiling A', r.drain?.ratioToCeilingA, fmt.pct(r.drain?.ratioToCeilingA), '>= 80%', (v) => v >= 0.8);
    add(
      `drain / request() loop, 1 x ${REQUEST_LOOP_CONCURRENCY}`,
      r.drain?.ratioToRequestLoop,
      fmt.times(r.drain?.ratioToRequestLoop),
      `>= ${TARGET_DRAIN_TO_REQUEST_LOOP}x`,
      (v) => v >= TARGET_DRAIN_TO_REQUEST_LOOP,
    );
    add('drain / naive consumer', r.drain?.ratioToNaive, fmt.times(r.drain?.ratioToNaive), `>= ${TARGET_DRAIN_TO_NAIVE}x`, (v) => v >= TARGET_DRAIN_TO_NAIVE);
    add('fan-out to 10 webhooks / ceiling A', r.fanout?.ratioToCeilingA, fmt.pct(r.fanout?.ratioToCeilingA), '>= 70%', (v) => v >= 0.7);
    const l1 = r.latency?.r1000?.latency;
    const l5 = r.latency?.r5000?.latency;
    add('p50 at 1,000/s', l1?.p50, fmt.ms(l1?.p50), '<= 5 ms', (v) => v <= 5);
    add('p99 at 1,000/s', l1?.p99, fmt.ms(l1?.p99), '<= 25 ms', (v) => v <= 25);
    add('p99 at 5,000/s', l5?.p99, fmt.ms(l5?.p99), '<= 100 ms', (v) => v <= 100);
    const peak = r.memory?.backlogged?.hwmMb;
    add(`peak RSS, ${fmt.int(r.memory?.events)} backlogged`, peak, fmt.mb(peak), `<= ${TARGET_PEAK_RSS_MB} MB`, (v) => v <= TARGET_PEAK_RSS_MB);
    add('healthy webhook with a dead one / alone', r.isolation?.ratio, fmt.pct(r.isolation?.ratio), '>= 90%', (v) => v >= 0.9);
    const slot = r.slotLag?.lagMs;
    add('slot confirms a commit, 1,000/s beside a dead and a hanging webhook (max)', slot?.max, fmt.ms(slot?.max), '<= 1,000 ms', (v) => v <= 1_000);
    const ds = r.deadStore;
    add(
      'deadStore: store beside 10 dead / beside 1',
      ds?.ratio10To1,
      fmt.times(ds?.ratio10To1),
      `the same (<= ${TARGET_DEAD_STORE_10_TO_1}x)`,
      (v) => v <= TARGET_DEAD_STORE_10_TO_1,
    );
    for (const run of [ds?.dead1, ds?.dead10]) {
      if (!run) continue;
      add(
        `deadStore ${run.dead} dead: store / compressed events`,
        run.storeToCompressed,
        fmt.times(run.storeToCompressed),
        `<= ${TARGET_STORE_TO_COMPRESSED}x`,
        (v) => v <= TARGET_STORE_TO_COMPRESSED,
      );
      add(`deadStore ${run.dead} dead: peak RSS`, run.peakRssMb, fmt.mb(run.peakRssMb), `<= ${TARGET_PEAK_RSS_MB} MB`, (v) => v <= TARGET_PEAK_RSS_MB);
    }
    r.targets = targets;
  }

  table(): string {
    const r = this.results;
    const rows: Array<[string, string, string]> = [];
    const row = (figure: string, value: string, note = ''): void => void rows.push([figure, value, note]);
    const section = (title: string): void => void rows.push([`-- ${title}`, '', '']);
    section('load');
    if (r.backlog)
      row(
        'backlog written',
        `${fmt.int(r.backlog.changes)} changes`,
        `${fmt.int(r.backlog.transactions)} txns (1-${BACKLOG_MAX_TRANSACTION} rows), ${fmt.rate(r.backlog.perSecond)}, mean body ${fmt.int(r.backlog.meanBodyBytes)} B`,
      );
    section('ceilings');
    if (r.ceilingA)
      row(
        'A: signed POSTs/s, 1 target x 16',
        fmt.rate(r.ceilingA.perSecond),
        `undici dispatch loop, ${r.ceilingA.bodyBytes} B body; ${fmt.cores(r.ceilingA.cpu, 'client')}`,
      );
    if (r.ceilingA10) row('A: signed POSTs/s, 10 targets x 16', fmt.rate(r.ceilingA10.perSecond), fmt.cores(r.ceilingA10.cpu, 'client'));
    if (r.ceilingARequest)
      row('A: undici request() loop, 1 x 16', fmt.rate(r.ceilingARequest.perSecond), `for scale; ${fmt.cores(r.ceilingARequest.cpu, 'client')}`);
    if (r.requestLoop)
      row(
        `undici request() loop, 1 x ${r.requestLoop.concurrency}`,
        fmt.rate(r.requestLoop.perSecond),
        `signed, ${r.requestLoop.bodyBytes} B body; ${fmt.cores(r.requestLoop.cpu, 'client')}`,
      );
    if (r.ceilingB?.library)
      row(
        'B: rows/s, pg-logical-replication',
        fmt.rate(r.ceilingB.library.rowsPerSecond),
        `counts only; first row after ${r.ceilingB.library.firstRowSeconds.toFixed(2)} s`,
      );
    if (r.ceilingB?.pgRecvlogical) row('B: rows/s, pg_recvlogical', fmt.rate(r.ceilingB.pgRecvlogical.rowsPerSecond), r.ceilingB.pgRecvlogical.version);
    section('daemon');
    const delivery = (label: string, m: DeliveryMeasure | undefined, ratio?: number, ratioOf = 'A', who = 'daemon'): void => {
      if (!m) return;
      const got = `${fmt.int(m.delivered)}/${fmt.int(m.expected)}${m.complete ? '' : ' (time cap)'}${m.duplicates ? `, ${m.duplicates} dup` : ''}`;
      row(
        label,
        fmt.rate(m.perSecond),
        `${ratio !== undefined ? `${fmt.pct(ratio)} of ${ratioOf}; ` : ''}${got}${m.storeInserts !== undefined ? `, via store ${fmt.int(m.storeInserts)}` : ''}${m.log ? `, ${describeLog(m.log)}` : ''}, startup ${m.startupSeconds.toFixed(1)} s, RSS ${fmt.mb(m.peakRssMb)}; ${fmt.cores(m.cpu, who)}`,
      );
    };
    delivery('drain: events/s, 1 webhook', r.drain, r.drain?.ratioToCeilingA);
    if (r.drain?.ratioToRequestLoop !== undefined)
      row(`drain / request() loop 1 x ${REQUEST_LOOP_CONCURRENCY}`, fmt.times(r.drain.ratioToRequestLoop), `target >= ${TARGET_DRAIN_TO_REQUEST_LOOP}x`);
    if (r.naive) delivery('naive consumer: events/s', r.naive, undefined, undefined, 'naive');
    if (r.drain?.ratioToNaive !== undefined)
      row(
        'drain / naive consumer',
        fmt.times(r.drain.ratioToNaive),
        `target >= ${TARGET_DRAIN_TO_NAIVE}x; naive: ${r.naive?.client}, mean body ${fmt.int(r.naive?.meanBodyBytes)} B`,
      );
    delivery('drain under --cpu-prof', r.drainProfiled);
    delivery('fan-out: deliveries/s, 10 origins', r.fanout, r.fanout?.ratioToCeilingA);
    delivery('fan-out: deliveries/s, 1 origin', r.fanoutSameOrigin, r.fanoutSameOrigin?.ratioToCeilingA);
    if (r.isolation) delivery('isolation: healthy beside dead', r.isolation.healthy, r.isolation.ratio, 'alone');
    if (r.isolation?.ratio !== undefined)
      row(
        'isolation: ratio to alone',
        fmt.pct(r.isolation.ratio),
        `alone (run just before) ${fmt.rate(r.isolation.alonePerSecond ?? 0)}; dead webhook's deliveries rows ${fmt.int(r.isolation.deadStoredRows)}`,
      );
    for (const entry of Object.values(r.latency ?? {})) {
      row(
        `latency at ${fmt.int(entry.rate)}/s: p50/p95/p99`,
        `${entry.latency.p50.toFixed(1)}/${entry.latency.p95.toFixed(1)}/${entry.latency.p99.toFixed(1)} ms`,
        `max ${fmt.ms(entry.latency.max)}, p50 first/last fifth ${fmt.ms(entry.latency.p50FirstFifth)}/${fmt.ms(entry.latency.p50LastFifth)}, n=${fmt.int(entry.latency.n)}, wrote ${fmt.rate(entry.achievedRate)}, unsent WAL max ${fmt.int(entry.walsenderLagKb?.max)} kB; via store ${fmt.int(entry.storeInserts)}, ${describeLog(entry.log)} (whole phase); ${fmt.cores(entry.cpu)}`,
      );
    }
    const m = r.memory;
    if (m?.backlogged) {
      row(
        `memory: peak RSS, ${fmt.int(m.events)} behind dead`,
        fmt.mb(m.backlogged.hwmMb),
        `logged ${fmt.int(m.backlogged.log.events)}${m.backlogged.complete ? '' : ' INCOMPLETE'} in ${m.backlogged.storedSeconds.toFixed(0)} s (${fmt.rate(m.backlogged.storedPerSecond)}; written at ${fmt.rate(m.backlogged.writeRate)}), ${describeLog(m.backlogged.log)}, deliveries table ${fmt.size(m.backlogged.log.deliveriesTableBytes)}, max slot lag ${fmt.mb(m.backlogged.maxSlotLagMb)}; ${fmt.cores(m.backlogged.cpu)}`,
      );
    }
    if (m?.draining) {
      row(
        'memory: peak RSS while draining',
        fmt.mb(m.draining.hwmMb),
        `drained ${fmt.int(m.draining.delivered)}${m.draining.complete ? '' : ' INCOMPLETE'} at ${fmt.rate(m.draining.perSecond)} (log path; retries ${m.retrySchedule}); after: ${describeLog(m.draining.log)}; ${fmt.cores(m.draining.cpu)}`,
      );
    }
    for (const run of Object.values(r.walCost ?? {})) {
      row(
        `walCost: WAL/change, ${run.label}`,
        `${fmt.int(run.walBytesPerChange)} B`,
        `${fmt.size(run.walBytes)} over ${fmt.int(run.changes)} changes in ${run.seconds.toFixed(1)} s; ${describeLog(run.healthy.log)}; drain ${fmt.rate(run.healthy.perSecond)}, RSS ${fmt.mb(run.healthy.peakRssMb)}; ${fmt.cores(run.healthy.cpu)}`,
      );
    }
    for (const run of [r.deadStore?.dead1, r.deadStore?.dead10]) {
      if (!run) continue;
      row(
        `deadStore: store, 1 healthy + ${run.dead} dead`,
        fmt.size(run.storeBytes),
        `${fmt.times(run.storeToCompressed)} the events' ${fmt.size(run.log.compressedBytes)} compressed (event_log ${fmt.size(run.log.logTableBytes)}, deliveries ${fmt.size(run.log.deliveriesTableBytes)}, cursors ${fmt.size(run.log.cursorsTableBytes)}); ${describeLog(run.log)}; slot ${run.confirmedPassed ? 'passed' : 'DID NOT pass'} the backlog after ${run.seconds.toFixed(0)} s; peak RSS ${fmt.mb(run.peakRssMb)}`,
      );
      delivery(`deadStore: healthy beside ${run.dead} dead`, run.healthy);
    }
    if (r.deadStore?.ratio10To1 !== undefined)
      row(
        'deadStore: store 10 dead / 1 dead',
        fmt.times(r.deadStore.ratio10To1),
        `${fmt.int(r.deadStore.changes)} changes (written in ${r.deadStore.writeSeconds.toFixed(0)} s); target: the same`,
      );
    section('targets');
    for (const t of r.targets ?? []) row(t.figure, t.value, `${t.target}: ${t.met === null ? 'not measured' : t.met ? 'met' : 'MISSED'}`);
    const width = Math.max(...rows.map((x) => x[0].length));
    const valueWidth = Math.max(...rows.map((x) => x[1].length));
    return rows.map(([a, b, c]) => (a.startsWith('-- ') ? `\n${a}` : `${a.padEnd(width)}  ${b.padStart(valueWidth)}  ${c}`)).join('\n');
  }

  async teardown(): Promise<void> {
    for (const child of children) if (child !== this.receiver?.child) child.kill('SIGKILL');
    await this.receiver?.stop().catch(() => undefined);
    await this.admin?.end().catch(() => undefined);
    await this.cluster?.stop().catch(() => undefined);
  }
}

function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** The sampled body whose size is closest to the mean: ceiling A sends what the daemon sends. */
function pickBody(bodies: string[], meanBytes: number): string | null {
  if (bodies.length === 0) return null;
  return bodies.reduce((best, b) => (Math.abs(Buffer.byteLength(b) - meanBytes) < Math.abs(Buffer.byteLength(best) - meanBytes) ? b : best));
}

/** A person.updated payload of typical size, when no drain ran to sample real ones. */
function syntheticBody(): string {
  return JSON.stringify({
    event: 'person.updated',
    data: {
      id: '6f1c2b1e-5d3a-4a7e-9a53-0c1d2e3f4a5b',
      firstName: 'Alice',
      lastName: 'Moreau',
      email: 'alice.moreau.4242@example.com',
      phone: '+1 555 123 4567',
      jobTitle: 'account manager '.repeat(22),
      city: 'harbor42',
      companyId: '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d',
      createdAt: '2026-02-10T15:30:50.123Z',
      updatedAt: '2026-02-10T15:31:50.123Z',
      deletedAt: null,
    },
    timestamp: '2026-02-10T15:31:50.123Z',
    id: '000000000A1B2C3D-00000001',
    updatedFields: ['city', 'updatedAt'],
  });
}

function describe(m: DeliveryMeasure, who = 'daemon'): string {
  return `${fmt.int(m.delivered)}/${fmt.int(m.expected)}${m.complete ? '' : ' (stopped at the time cap)'} in ${m.seconds.toFixed(2)} s: ${fmt.rate(m.perSecond)}; startup ${m.startupSeconds.toFixed(1)} s; peak RSS ${fmt.mb(m.peakRssMb)}; ${fmt.cores(m.cpu, who)}`;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const startedAt = performance.now();
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'pgwb-bench-'));
  pidFile = path.join(workdir, 'children.pids');
  writePids();
  startWatchdog(pidFile);
  const bench = new Bench(args, workdir);
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`${signal}: stopping daemons, receiver and Postgres`);
    killChildrenSync();
    // The cluster's own exit handler stops Postgres synchronously.
    if (!args.keep) rmSync(workdir, { recursive: true, force: true });
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', killChildrenSync);

  const step = async (phase: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (error) {
      bench.results.errors[phase] = (error as Error).message;
      log(`${phase} failed: ${(error as Error).message}`);
    }
  };

  let failed = false;
  try {
    log('building dist/ (the daemon runs compiled, as in production)');
    buildDaemon(ROOT);
    await bench.setup();
    const needsBacklog = (['ceilingB', 'drain', 'naive', 'profile', 'ceilingA', 'fanout', 'fanoutSameOrigin', 'isolation', 'walCost'] as Phase[]).some((p) =>
      bench.has(p),
    );
    if (needsBacklog) await bench.prepareBacklog();
    if (bench.has('ceilingB')) await step('ceilingB', () => bench.runCeilingB());
    if (bench.has('drain') || bench.has('ceilingA')) await step('drain', () => bench.runDrainPhase());
    if (bench.has('naive')) await step('naive', () => bench.runNaive());
    if (bench.has('profile')) await step('profile', () => bench.runProfilePhase());
    if (bench.has('ceilingA')) await step('ceilingA', () => bench.runCeilingA());
    if (bench.has('fanout')) await step('fanout', () => bench.runFanout(false));
    if (bench.has('fanoutSameOrigin')) await step('fanoutSameOrigin', () => bench.runFanout(true));
    if (bench.has('isolation')) await step('isolation', () => bench.runIsolation());
    // Drains the backlog written before every phase: must run before phases that write more.
    if (bench.has('walCost')) await step('walCost', () => bench.runWalCost());
    if (bench.has('latency')) await step('latency', () => bench.runLatency());
    if (bench.has('slotLag')) await step('slotLag', () => bench.runSlotLag());
    if (bench.has('memory')) await step('memory', () => bench.runMemory());
    // Last: its own backlog is written with only its slots waiting.
    if (bench.has('deadStore')) await step('deadStore', () => bench.runDeadStore());
  } catch (error) {
    failed = true;
    bench.results.errors.setup = (error as Error).stack ?? String(error);
    log(`failed: ${(error as Error).stack ?? error}`);
  } finally {
    await bench.teardown();
  }

  bench.results.totalSeconds = (performance.now() - startedAt) / 1000;
  bench.judge();
  const r = bench.results;
  console.log(
    `\npg-webhook-bridge benchmark (${r.mode}), ${r.machine.cpus} x ${r.machine.cpuModel}, ${r.machine.memoryGb} GB, Node ${r.machine.node}, Postgres ${r.machine.postgres ?? '?'}; ${(r.totalSeconds ?? 0).toFixed(0)} s`,
  );
  console.log(bench.table());
  const profile = r.drainProfiled?.profile;
  if (profile) console.log(`\n${formatProfile(profile, 25)}`);
  const errors = Object.entries(r.errors);
  if (errors.length) {
    console.log('\nerrors:');
    for (const [phase, message] of errors) console.log(`  ${phase}: ${message.split('\n').slice(0, 8).join('\n    ')}`);
  }
  if (args.json) {
    mkdirSync(path.dirname(args.json), { recursive: true });
    writeFileSync(args.json, `${JSON.stringify(r, null, 2)}\n`);
    console.log(`\nfigures written to ${args.json}`);
  }
  // Logs and the default profile go with the work directory; a --profile DIR is kept.
  if (args.keep) console.log(`logs kept in ${workdir}`);
  else rmSync(workdir, { recursive: true, force: true });
  process.exitCode = failed || errors.length > 0 ? 1 : 0;
}

main().catch((error) => {
  process.stderr.write(`${(error as Error).stack ?? error}\n`);
  killChildrenSync();
  process.exit(1);
});
