/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self time per frame and per area (our stages, undici,
 * pg, logging, node internals, GC), so the bench can say where the daemon spends its CPU.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface FrameTime {
  frame: string;
  area: string;
  selfMs: number;
  /** Share of the non-idle time. */
  percent: number;
}

export interface ProfileSummary {
  file: string;
  skippedMs: number;
  totalMs: number;
  busyMs: number;
  idleMs: number;
  topFrames: FrameTime[];
  areas: Array<{ area: string; selfMs: number; percent: number }>;
}

/** Where a frame's code lives: `src/deliver/lane.ts`, `undici`, `pg`, `node:internal`, `(gc)`, ... */
export function areaOf(url: string, functionName: string): string {
  if (!url) {
    if (functionName === '(garbage collector)') return '(gc)';
    if (functionName === '(idle)') return '(idle)';
    if (functionName === '(program)') return '(program)';
    return '(native)';
  }
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (modules) {
    const name = modules[1];
    if (name === 'pino' || name === 'sonic-boom' || name === 'pino-std-serializers' || name === 'fast-redact' || name === 'thread-stream')
      return 'logging (pino)';
    if (name === 'pg' || name === 'pg-protocol' || name === 'pg-types' || name === 'pg-pool' || name === 'pgpass') return 'pg';
    return name;
  }
  const src = /\/(src\/.+?)(?:\?.*)?$/.exec(url);
  if (src) return src[1];
  if (url.startsWith('node:')) return url.replace(/^node:internal\/.*/, 'node:internal');
  return url.replace(/^file:\/\//, '');
}

function shortUrl(url: string): string {
  const modules = /node_modules\/(.+)$/.exec(url);
  if (modules) return modules[1];
  const src = /\/((?:src|test|bin)\/.+?)(?:\?.*)?$/.exec(url);
  if (src) return src[1];
  return url.replace(/^file:\/\//, '');
}

/**
 * `skipMs`: leave out the first milliseconds of the profile (process start, module loading through
 * tsx, preflight), so the summary describes the phase being measured.
 */
export function summariseProfile(file: string, top = 25, skipMs = 0): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map<number, ProfileNode>();
  for (const node of profile.nodes) byId.set(node.id, node);
  const selfByNode = new Map<number, number>();
  // timeDeltas[i] is the time between sample i-1 and sample i: charge it to sample i's frame.
  let elapsedUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0;
    elapsedUs += delta;
    if (elapsedUs < skipMs * 1000) continue;
    const id = profile.samples[i];
    selfByNode.set(id, (selfByNode.get(id) ?? 0) + delta);
  }
  const frames = new Map<string, { area: string; us: number }>();
  const areas = new Map<string, number>();
  let idleUs = 0;
  let totalUs = 0;
  for (const [id, us] of selfByNode) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    totalUs += us;
    const area = areaOf(url, functionName);
    if (area === '(idle)') {
      idleUs += us;
      continue;
    }
    // tsx-compiled sources report line 1 for everything: name the file only.
    const key = url ? `${functionName || '(anonymous)'} ${shortUrl(url)}${lineNumber > 0 ? `:${lineNumber + 1}` : ''}` : functionName;
    const entry = frames.get(key) ?? { area, us: 0 };
    entry.us += us;
    frames.set(key, entry);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const pct = (us: number): number => (busyUs > 0 ? (100 * us) / busyUs : 0);
  return {
    file,
    skippedMs: skipMs,
    totalMs: totalUs / 1000,
    busyMs: busyUs / 1000,
    idleMs: idleUs / 1000,
    topFrames: [...frames.entries()]
      .sort((a, b) => b[1].us - a[1].us)
      .slice(0, top)
      .map(([frame, { area, us }]) => ({ frame, area, selfMs: us / 1000, percent: pct(us) })),
    areas: [...areas.entries()].sort((a, b) => b[1] - a[1]).map(([area, us]) => ({ area, selfMs: us / 1000, percent: pct(us) })),
  };
}

export function formatProfile(summary: ProfileSummary, frames = 25): string {
  const lines = [
    `CPU profile ${summary.file}`,
    `  ${summary.totalMs.toFixed(0)} ms sampled after the first ${summary.skippedMs.toFixed(0)} ms (start-up), ${summary.busyMs.toFixed(0)} ms busy, ${summary.idleMs.toFixed(0)} ms idle`,
    '  self time by area (share of busy):',
    ...summary.areas.slice(0, 15).map((a) => `    ${a.percent.toFixed(1).padStart(5)}%  ${a.selfMs.toFixed(0).padStart(7)} ms  ${a.area}`),
    `  top ${frames} frames by self time:`,
    ...summary.topFrames.slice(0, frames).map((f) => `    ${f.percent.toFixed(1).padStart(5)}%  ${f.selfMs.toFixed(0).padStart(7)} ms  ${f.frame}`),
  ];
  return lines.join('\n');
}
