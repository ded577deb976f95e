// What the kernel says about a server process (and its cluster workers): CPU time, peak RSS, children.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let clockTicks;
/** Clock ticks per second for /proc/<pid>/stat times (getconf CLK_TCK; 100 on Linux). */
export function clkTck() {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

function statFields(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces: fields after it start after the last ')'.
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime of one process, in microseconds (0 if it is gone). */
export function cpuMicros(pid) {
  try {
    const f = statFields(pid);
    // After ')': f[0] is field 3 (state); utime is field 14, stime field 15.
    return ((Number(f[11]) + Number(f[12])) * 1e6) / clkTck();
  } catch {
    return 0;
  }
}

/**
 * utime + stime of one process's main thread (its tid is its pid) and of all its other threads together (V8's GC and
 * compiler helpers, libuv's pool, worker threads such as the SQLite writer), in microseconds.
 */
export function threadCpuMicros(pid) {
  // /proc/<pid>/task/<pid>/stat has the same layout as /proc/<pid>/stat, for the main thread alone.
  const main = cpuMicros(`${pid}/task/${pid}`);
  return { main, other: Math.max(0, cpuMicros(pid) - main) };
}

/** Direct children of `pid` (cluster workers of a primary), from /proc/<pid>/task/<tid>/children or a /proc scan. */
export function childPids(pid) {
  const found = new Set();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      for (const c of text.split(/\s+/).filter(Boolean)) found.add(Number(c));
    }
    return [...found];
  } catch {
    // Kernels without CONFIG_PROC_CHILDREN: scan every process's parent.
  }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (Number(statFields(entry)[1]) === pid) found.add(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return [...found];
}

/** A process's status field in kB (VmHWM = peak resident set, VmRSS = current). */
export function statusKb(pid, field) {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** The server's processes: the one spawned, plus its children (cluster workers) when there are any. */
export function processTree(pid) {
  return [pid, ...childPids(pid)];
}

/** CPU microseconds summed over the given pids. */
export function cpuOf(pids) {
  return pids.reduce((sum, p) => sum + cpuMicros(p), 0);
}

/** Peak RSS of the given pids in MB: the largest single process and the sum over them. */
export function peakRss(pids) {
  const each = pids.map((p) => statusKb(p, 'VmHWM') / 1024);
  return { maxMb: Math.max(0, ...each), sumMb: each.reduce((a, b) => a + b, 0), perProcessMb: each };
}

/** Machine-wide CPU ticks from /proc/stat: busy (not idle or iowait) and steal (time the hypervisor gave elsewhere). */
export function machineTicks() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal = 0] = f;
    return { busy: user + nice + system + irq + softirq, idle: idle + iowait, steal, total: f.slice(0, 8).reduce((a, b) => a + b, 0) };
  } catch {
    return undefined;
  }
}

/** Shares of machine time between two machineTicks() readings. */
export function machineShare(a, b) {
  if (!a || !b) return undefined;
  const total = b.total - a.total || 1;
  return { busy: (b.busy - a.busy) / total, steal: (b.steal - a.steal) / total };
}

/** Node 22's one "SQLite is an experimental feature" warning is noise in a bench script; any other still prints. */
export function quietSqliteWarning() {
  process.removeAllListeners('warning');
  process.on('warning', (w) => {
    if (!String(w.message).startsWith('SQLite is an experimental feature')) console.warn(w);
  });
}
