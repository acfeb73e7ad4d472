/**
 * What caching every activation costs, alone: `runWithCache` with no filter, the cache disposed
 * when the call returns, against a plain `run` of the same rows (full logits both) on the
 * benchmark model (GPT-2 small's shape), and the same with every activation read to the host,
 * in rotation, at 1 x 101 and 8 x 101. Prints the median wall seconds and the mean CPU seconds of
 * this process (its worker threads included, from /proc) of each, and their ratios to the run: on
 * a machine shared with other work the CPU figure is the steadier one.
 *
 *   deno run -A bench/cache_bench.ts [--reps N] [--batches 1,8]
 * @module
 */
import { HookedTransformer } from "../mod.ts";
import { defaultBenchDir, writeBenchModel } from "./model_file.ts";
import { readBenchTokens } from "./peers/common.ts";
import { cpuSeconds } from "./process_stats.ts";

const median = (x: number[]) => [...x].sort((a, b) => a - b)[x.length >> 1];
const mean = (x: number[]) => x.reduce((a, b) => a + b, 0) / x.length;
const arg = (name: string, fallback: string) => {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : fallback;
};
const reps = Number(arg("--reps", "7"));
const batches = arg("--batches", "1,8").split(",").map(Number);

const bench = await writeBenchModel(defaultBenchDir(), 0);
const tokens = (await readBenchTokens(bench.tokensPath)).tokens;
const model = await HookedTransformer.fromPretrained(bench.dir);
const results: Record<string, unknown> = {};
for (const batch of batches) {
  const rows = tokens.slice(0, batch);
  const arms = {
    run: () => model.run(rows),
    // the cache disposed when the call returns (`using`): activations never read are never copied
    cache: async () => {
      using _cache = (await model.runWithCache(rows)).cache;
    },
    // every activation read to the host: what a cache kept for good costs in the end
    readAll: async () => {
      using cache = (await model.runWithCache(rows)).cache;
      for (const name of cache.keys()) void cache.get(name).data;
    },
  };
  type Arm = keyof typeof arms;
  const wall: Record<Arm, number[]> = { run: [], cache: [], readAll: [] };
  const cpus: Record<Arm, number[]> = { run: [], cache: [], readAll: [] };
  for (const arm of Object.values(arms)) await arm();
  const order = Object.keys(arms) as Arm[];
  for (let i = 0; i < reps; i++) {
    // Rotate which goes first, so a load that drifts within a round favours none.
    for (let j = 0; j < order.length; j++) {
      const k = order[(i + j) % order.length];
      const t = performance.now(), c = cpuSeconds();
      await arms[k]();
      wall[k].push((performance.now() - t) / 1000);
      cpus[k].push(cpuSeconds() - c);
    }
  }
  const r = {
    runWall: median(wall.run),
    cacheWall: median(wall.cache),
    readAllWall: median(wall.readAll),
    wallRatio: median(wall.cache) / median(wall.run),
    readAllWallRatio: median(wall.readAll) / median(wall.run),
    runCpu: mean(cpus.run),
    cacheCpu: mean(cpus.cache),
    readAllCpu: mean(cpus.readAll),
    cpuRatio: mean(cpus.cache) / mean(cpus.run),
    readAllCpuRatio: mean(cpus.readAll) / mean(cpus.run),
  };
  results[`${batch}x${rows[0].length}`] = r;
  console.error(`${batch}x${rows[0].length}`, JSON.stringify(r));
}
model.dispose();
console.log(JSON.stringify(results, null, 1));
