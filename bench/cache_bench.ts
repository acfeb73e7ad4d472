/**
 * What caching every activation costs, alone: `runWithCache` with no filter, the cache disposed
 * when the call returns, against a plain `run` of the same rows (full logits both) on the
 * benchmark model (GPT-2 small's shape), alternating, and then the same with every activation
 * read to the host against the run, at 1 x 101 and 8 x 101. Prints the median wall seconds and
 * the mean CPU seconds of this process (its worker threads included) of each, and
 * their ratios to the run: on a machine shared with other work the CPU figure is the steadier
 * one.
 *
 *   deno run -A bench/cache_bench.ts [--reps N] [--batches 1,8]
 * @module
 */
import { HookedTransformer } from "../mod.ts";
import { defaultBenchDir, writeBenchModel } from "./model_file.ts";
import { readBenchTokens } from "./peers/common.ts";
import { alternate, cacheArms } from "./cache_arms.ts";

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
  const arms = cacheArms(model, rows);
  // Each against the run in its own alternation, so that one's garbage does not land in the
  // other's calls.
  const cached = await alternate(arms.run, arms.cached, reps);
  const read = await alternate(arms.run, arms.readAll, reps);
  const r = {
    runWall: cached.wall[0],
    cacheWall: cached.wall[1],
    wallRatio: cached.wall[1] / cached.wall[0],
    runCpu: cached.cpu[0],
    cacheCpu: cached.cpu[1],
    cpuRatio: cached.cpu[1] / cached.cpu[0],
    readAllWallRatio: read.wall[1] / read.wall[0],
    readAllCpuRatio: read.cpu[1] / read.cpu[0],
  };
  results[`${batch}x${rows[0].length}`] = r;
  console.error(`${batch}x${rows[0].length}`, JSON.stringify(r));
}
model.dispose();
console.log(JSON.stringify(results, null, 1));
