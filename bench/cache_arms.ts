/**
 * The three calls the cache benchmarks time on the same rows (`cache_bench.ts` and the bench's
 * cache figure): a plain `run`, `runWithCache` with no filter and the cache disposed as the call
 * returns (`using`: activations never read are never copied to the host), and the same with every
 * activation read to the host (what a cache kept for good costs in the end).
 * @module
 */
import type { HookedTransformer } from "../mod.ts";

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
