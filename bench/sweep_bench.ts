/**
 * The study's MLP patching sweep alone on the benchmark model (GPT-2 small's shape: 12 layers x
 * 50 positions, `patchingScores(..., { hook: "mlp_out", alignment: "study" })`), beside plain
 * 1 x 101 forwards (full logits) in the same process, with wall and CPU seconds (this process,
 * worker threads included, from /proc), so that the sweep's cost reads in forwards. Writes the
 * scores as JSON with `--out FILE` (to compare two versions within float32 tolerance).
 *
 *   deno run -A bench/sweep_bench.ts [--out scores.json] [--forwards 3]
 * @module
 */
import { HookedTransformer } from "../mod.ts";
import { patchingScores } from "../analysis/patching.ts";
import { BENCH_SEQ_LEN, defaultBenchDir, writeBenchModel } from "./model_file.ts";
import { readBenchTokens } from "./peers/common.ts";
import { cpuSeconds, loadAverage } from "./process_stats.ts";

const arg = (name: string) => {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
};
const nForwards = Number(arg("--forwards") ?? 3);

const bench = await writeBenchModel(defaultBenchDir(), 0);
const tokens = (await readBenchTokens(bench.tokensPath)).tokens;
const model = await HookedTransformer.fromPretrained(bench.dir);
const one = [tokens[0]];
const timed = async (fn: () => Promise<unknown>) => {
  const t = performance.now(), c = cpuSeconds();
  await fn();
  return { wall: (performance.now() - t) / 1000, cpu: cpuSeconds() - c, load: loadAverage() };
};
await model.run(one);
const forwards = [];
for (let i = 0; i < nForwards; i++) forwards.push(await timed(() => model.run(one)));
let scores: number[][] = [];
const sweep = await timed(async () => {
  scores = await patchingScores(model, one, BENCH_SEQ_LEN, { hook: "mlp_out", alignment: "study" });
});
for (let i = 0; i < nForwards; i++) forwards.push(await timed(() => model.run(one)));
model.dispose();
const mean = (x: number[]) => x.reduce((a, b) => a + b, 0) / x.length;
const forward = { wall: mean(forwards.map((f) => f.wall)), cpu: mean(forwards.map((f) => f.cpu)) };
const out = arg("--out");
if (out) await Deno.writeTextFile(out, JSON.stringify(scores));
console.log(JSON.stringify({
  sweep,
  forward,
  forwards,
  sweepInForwards: { wall: sweep.wall / forward.wall, cpu: sweep.cpu / forward.cpu },
}));
