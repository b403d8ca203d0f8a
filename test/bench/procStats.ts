/**
 * What the bench reads about processes from Linux /proc: memory of the daemon (VmRSS, VmHWM), CPU time
 * of the daemon and of the Postgres cluster (postmaster and its children), and of the whole machine.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';

const CLOCK_TICKS_PER_S = 100; // USER_HZ on Linux

export interface MemoryReading {
  rssMb: number;
  /** Peak RSS since the process started or since resetPeak(). */
  hwmMb: number;
}

export function readMemory(pid: number): MemoryReading | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
    return { rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024 };
  } catch {
    return null;
  }
}

/** Resets VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`), so a later peak is this phase's own. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** utime + stime of one process, in seconds; with `reaped`, also that of its exited, reaped children. */
export function processCpuSeconds(pid: number, reaped = false): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After "pid (comm) ": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    const own = Number(fields[11]) + Number(fields[12]);
    return (reaped ? own + Number(fields[13]) + Number(fields[14]) : own) / CLOCK_TICKS_PER_S;
  } catch {
    return 0;
  }
}

/** CPU seconds of `root` and every live process whose parent is `root` (Postgres: postmaster + backends). */
export function treeCpuSeconds(root: number): number {
  let total = processCpuSeconds(root, true);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === root) total += (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

/** Busy and total CPU seconds of the machine (all cores) from /proc/stat. */
export function machineCpuSeconds(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const values = line.split(/\s+/).slice(1).map(Number);
  const total = values.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = values[3] + values[4]; // idle + iowait
  return { busy: (total - idle) / CLOCK_TICKS_PER_S, total: total / CLOCK_TICKS_PER_S };
}

/**
 * CPU use over a window: call start() then stop(); cores are in units of one core (2.0 = both cores of a
 * 2-core machine busy the whole time).
 */
export class CpuWindow {
  private startedAt = 0;
  private daemon0 = 0;
  private postgres0 = 0;
  private machine0 = { busy: 0, total: 0 };
  private receiver0 = 0;
  private self0 = process.cpuUsage();

  constructor(
    private readonly daemonPid: number | null,
    private readonly postmasterPid: number | null,
  ) {}

  start(receiverCpuUs: number): void {
    this.startedAt = performance.now();
    this.daemon0 = this.daemonPid ? processCpuSeconds(this.daemonPid) : 0;
    this.postgres0 = this.postmasterPid ? treeCpuSeconds(this.postmasterPid) : 0;
    this.machine0 = machineCpuSeconds();
    this.receiver0 = receiverCpuUs;
    this.self0 = process.cpuUsage();
  }

  stop(receiverCpuUs: number): CpuUse {
    const seconds = (performance.now() - this.startedAt) / 1000;
    const machine = machineCpuSeconds();
    const self = process.cpuUsage(this.self0);
    const cores = (cpuSeconds: number): number => (seconds > 0 ? cpuSeconds / seconds : 0);
    return {
      seconds,
      daemonCores: this.daemonPid ? cores(processCpuSeconds(this.daemonPid) - this.daemon0) : 0,
      postgresCores: this.postmasterPid ? cores(treeCpuSeconds(this.postmasterPid) - this.postgres0) : 0,
      receiverCores: cores((receiverCpuUs - this.receiver0) / 1e6),
      benchCores: cores((self.user + self.system) / 1e6),
      machineBusyCores: cores(machine.busy - this.machine0.busy),
    };
  }
}

export interface CpuUse {
  seconds: number;
  daemonCores: number;
  postgresCores: number;
  receiverCores: number;
  /** The bench process itself (the paced writer in the latency phase). */
  benchCores: number;
  machineBusyCores: number;
}

/** Samples a process's memory every `intervalMs`; keeps the highest VmRSS seen. */
export class MemorySampler {
  maxRssMb = 0;
  samples = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly pid: number) {}

  start(intervalMs = 100): this {
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.sample();
    return this;
  }

  sample(): MemoryReading | null {
    const reading = readMemory(this.pid);
    if (reading) {
      this.samples++;
      if (reading.rssMb > this.maxRssMb) this.maxRssMb = reading.rssMb;
    }
    return reading;
  }

  /** Stops sampling; returns the sampled maximum and the kernel's peak (VmHWM). */
  stop(): { maxRssMb: number; hwmMb: number } {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const last = this.sample();
    return { maxRssMb: this.maxRssMb, hwmMb: last?.hwmMb ?? 0 };
  }
}
