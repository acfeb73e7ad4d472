/**
 * What the benches read about their own process: CPU seconds, its own (`process.cpuUsage`, which
 * needs no permission) and, on Linux, its waited-for children's (from /proc/self/stat: cutime,
 * cstime, in clock ticks of 1/100 s; Deno reads /proc/self only with --allow-all, NaN otherwise),
 * the 1-minute load average, and the kernel's high-water mark of resident memory (VmHWM), which
 * also catches peaks inside synchronous code no sampler sees.
 * @module
 */
import process from "node:process";

function statTicks(): number[] | undefined {
  try {
    const stat = Deno.readTextFileSync("/proc/self/stat");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + system, every thread, workers included) this process has used. */
export function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** CPU seconds (user + system) of this process's children that it has waited for. */
export function childCpuSeconds(): number {
  const f = statTicks();
  return f ? (f[13] + f[14]) / 100 : NaN;
}

/** The 1-minute load average. */
export function loadAverage(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return NaN;
  }
}

/** The most resident memory this process has held, in bytes (`VmHWM`). */
export function peakRssBytes(): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}
