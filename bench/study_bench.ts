/**
 * The study's three timed steps on the benchmark model beside PyTorch's harness in one process
 * tree (a focused part of `deno task bench`): score30x101, the MLP patching sweep and the
 * K-composition top-1, that one by the dense product and by bounds (answers checked equal), then
 * `torch_gpt2.py study`. Prints wall and CPU seconds (this process's, and the Python child's
 * from /proc's cutime/cstime) and the ratios, for a machine shared with other work.
 *
 *   deno run -A bench/study_bench.ts            ours, then PyTorch
 *   deno run -A bench/study_bench.ts --no-peers ours only
 *   deno run -A bench/study_bench.ts --torch-args "--patch-layers 1 --patch-positions 6"
 *       PyTorch's patching sweep timed on a sample and extrapolated (a busy machine)
 * @module
 */
import { HookedTransformer } from "../mod.ts";
import { logProbsAndHeadScores } from "../analysis/log_probs.ts";
import { patchingScores } from "../analysis/patching.ts";
import { kCompositionCircuit } from "../analysis/circuits.ts";
import { top1Accuracy } from "../analysis/factored_matrix.ts";
import { BENCH_SEQ_LEN, defaultBenchDir, writeBenchModel } from "./model_file.ts";
import { readBenchTokens } from "./peers/common.ts";
import { runTorch } from "./peers/run_peers.ts";
import { childCpuSeconds, cpuSeconds, loadAverage } from "./process_stats.ts";

const bench = await writeBenchModel(defaultBenchDir(), 0);
const spec = await readBenchTokens(bench.tokensPath);
const model = await HookedTransformer.fromPretrained(bench.dir);
const ours: Record<string, { wall: number; cpu: number; load: number }> = {};
const lap = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
  const t = performance.now(), c = cpuSeconds();
  const r = await fn();
  ours[name] = { wall: (performance.now() - t) / 1000, cpu: cpuSeconds() - c, load: loadAverage() };
  console.error(
    `ours ${name}: ${ours[name].wall.toFixed(1)} s wall, ${ours[name].cpu.toFixed(1)} s cpu`,
  );
  return r;
};
const tokens = spec.tokens;
const batch = { data: Int32Array.from(tokens.flat()), shape: [tokens.length, tokens[0].length] };
await lap("score30x101", () => logProbsAndHeadScores(model, batch, BENCH_SEQ_LEN));
await lap(
  "mlpPatching",
  () => patchingScores(model, [tokens[0]], BENCH_SEQ_LEN, { hook: "mlp_out", alignment: "study" }),
);
const circuit = kCompositionCircuit(model, [4, 11], [5, 5]);
const dense = await lap("kCompositionDense", () => top1Accuracy(circuit, { method: "dense" }));
const bounds = await lap("kComposition", () => top1Accuracy(circuit, { method: "bounds" }));
if (dense !== bounds) throw new Error(`top-1 dense ${dense} != bounds ${bounds}`);
model.dispose();
let torch: Record<string, unknown> | undefined;
let torchCpu = NaN, torchLoad = NaN;
if (!Deno.args.includes("--no-peers")) {
  const c = childCpuSeconds();
  const i = Deno.args.indexOf("--torch-args");
  const extraArgs = i >= 0 ? Deno.args[i + 1].split(" ").filter((a) => a) : [];
  const r = await runTorch("study", bench.dir, bench.tokensPath, { extraArgs });
  torchCpu = childCpuSeconds() - c;
  torchLoad = loadAverage();
  if (r.ok) torch = r.result as unknown as Record<string, unknown>;
  else console.error(r.skipped, r.detail ?? "");
}
const steps = (torch?.steps ?? {}) as Record<string, number>;
const study = ours.score30x101.wall + ours.mlpPatching.wall + ours.kComposition.wall;
console.log(JSON.stringify(
  {
    ours,
    top1: bounds,
    torchTop1: (torch?.kComposition as { top1: number } | undefined)?.top1,
    torchSteps: steps,
    torchStudySeconds: torch?.studySeconds,
    torchCpuSeconds: torchCpu,
    torchLoad,
    torchPatching: torch?.patching,
    oursStudySeconds: study,
    ratios: {
      score30x101: steps.score30x101 / ours.score30x101.wall,
      mlpPatching: steps.mlpPatching / ours.mlpPatching.wall,
      kCompositionDense: steps.kComposition / ours.kCompositionDense.wall,
      kComposition: steps.kComposition / ours.kComposition.wall,
      study: (torch?.studySeconds as number) / study,
    },
  },
  null,
  1,
));
