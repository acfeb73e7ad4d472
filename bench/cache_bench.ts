/**
 * What caching every activation costs, alone: `runWithCache` with no filter against a plain `run`
 * of the same rows (full logits both) on the benchmark model (GPT-2 small's shape), alternating,
 * at 1 x 101 and 8 x 101. Prints the median wall seconds and the mean CPU seconds of this process
 * (its worker threads included, from /proc) of each, and their ratios: on a machine shared with
 * other work the CPU figure is the steadier one.
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
  await model.run(rows);
  await model.runWithCache(rows);
  const wall = { run: [] as number[], cache: [] as number[] };
  const cpus = { run: [] as number[], cache: [] as number[] };
  const time = async (key: "run" | "cache", fn: () => Promise<unknown>) => {
    const t = performance.now(), c = cpuSeconds();
    await fn();
    wall[key].push((performance.now() - t) / 1000);
    cpus[key].push(cpuSeconds() - c);
  };
  for (let i = 0; i < reps; i++) {
    // Alternate which goes first, so a load that drifts within a pair favours neither.
    const order: ("run" | "cache")[] = i % 2 ? ["cache", "run"] : ["run", "cache"];
    for (const k of order) {
      await time(k, () => k === "run" ? model.run(rows) : model.runWithCache(rows));
    }
  }
  const r = {
    runWall: median(wall.run),
    cacheWall: median(wall.cache),
    wallRatio: median(wall.cache) / median(wall.run),
    runCpu: mean(cpus.run),
    cacheCpu: mean(cpus.cache),
    cpuRatio: mean(cpus.cache) / mean(cpus.run),
  };
  results[`${batch}x${rows[0].length}`] = r;
  console.error(`${batch}x${rows[0].length}`, JSON.stringify(r));
}
model.dispose();
console.log(JSON.stringify(results, null, 1));
