/**
 * The calls the cache benchmarks time on the same rows (`cache_bench.ts`, the bench's cache figure
 * and its WebGPU column), and how they are timed against each other: a plain `run`,
 * `runWithCache` with no filter and the cache disposed as the call returns (`using`: activations
 * never read are never copied to the host), and the same with every activation read to the host
 * (what a cache kept for good costs in the end).
 * @module
 */
import type { HookedTransformer } from "../mod.ts";
import { median } from "./peers/common.ts";
import { cpuSeconds } from "./process_stats.ts";

/** The calls, each resolving when done (logits in full, as a plain run returns them). */
export function cacheArms(model: HookedTransformer, rows: number[][]): {
  run: () => Promise<unknown>;
  cached: () => Promise<void>;
  readAll: () => Promise<void>;
} {
  return {
    run: () => model.run(rows),
    cached: async () => {
      using _cache = (await model.runWithCache(rows)).cache;
    },
    readAll: async () => {
      using cache = (await model.runWithCache(rows)).cache;
      for (const name of cache.keys()) void cache.get(name).data;
    },
  };
}

/** Median wall seconds and mean CPU seconds (this process, every thread) of two calls. */
export interface Alternation {
  wall: [number, number];
  cpu: [number, number];
}

/**
 * `reps` pairs of `a` and `b` after one of each, alternating which goes first, so that neither
 * always pays for the other's garbage or gains from a load that drifts within a pair. On a
 * machine shared with other work the CPU figure is the steadier one.
 */
export async function alternate(
  a: () => Promise<unknown>,
  b: () => Promise<unknown>,
  reps: number,
): Promise<Alternation> {
  const fns = [a, b], wall: number[][] = [[], []], cpu: number[][] = [[], []];
  await a();
  await b();
  for (let i = 0; i < reps; i++) {
    for (const k of i % 2 ? [1, 0] : [0, 1]) {
      const t = performance.now(), c = cpuSeconds();
      await fns[k]();
      wall[k].push((performance.now() - t) / 1000);
      cpu[k].push(cpuSeconds() - c);
    }
  }
  const mean = (x: number[]) => x.reduce((p, q) => p + q, 0) / x.length;
  return {
    wall: [median(wall[0]), median(wall[1])],
    cpu: [mean(cpu[0]), mean(cpu[1])],
  };
}
