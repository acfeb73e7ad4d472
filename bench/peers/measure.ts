/**
 * Runs every peer measurement once (PyTorch, TensorFlow.js, ONNX Runtime) and prints a summary
 * (the figures in bench/README.md):
 *
 *   deno run -A bench/peers/measure.ts [--quick] [--skip-study] [--out FILE]
 *
 * `--quick` times the MLP-patching sweep on 2 layers x 5 positions and extrapolates to 12 x 50,
 * and takes fewer forward runs. The full JSON of every peer goes to `--out` (default: stdout after
 * the summary is printed to stderr). `deno task bench` calls the same functions from `bench/run.ts`.
 * @module
 */
import { defaultBenchDir, writeBenchModel } from "../model_file.ts";
import { type PeerOutcome, runTfjs, runTorch } from "./run_peers.ts";
import { runOrt } from "./run_ort.ts";
import type { ForwardResult, MatmulResult } from "./common.ts";

const args = Deno.args;
const quick = args.includes("--quick");
const skipStudy = args.includes("--skip-study");
const outIndex = args.indexOf("--out");
const outFile = outIndex >= 0 ? args[outIndex + 1] : undefined;

const say = (s: string) => console.error(s);
const model = await writeBenchModel(defaultBenchDir(), 0);
say(`benchmark model: ${model.dir}${model.reused ? " (reused)" : ""}`);
const { dir, tokensPath } = model;
const runs = quick ? ["--runs-small", "3", "--runs-large", "1"] : [];

const results: Record<string, PeerOutcome<unknown>> = {};
results.torchSgemm = await runTorch("sgemm");
results.torchForward = await runTorch("forward", dir, tokensPath, { extraArgs: runs });
results.tfjsMatmul1 = await runTfjs("matmul", undefined, undefined, { threads: 1 });
results.tfjsMatmul2 = await runTfjs("matmul", undefined, undefined, { threads: 2 });
results.tfjsForward1 = await runTfjs("forward", dir, tokensPath, { threads: 1, extraArgs: runs });
results.tfjsForward2 = await runTfjs("forward", dir, tokensPath, { threads: 2, extraArgs: runs });
results.ortNodeForward = await runOrt("node", model, { threads: 2, extraArgs: runs });
results.ortWebForward = await runOrt("web", model, { threads: 2, extraArgs: runs });
if (!skipStudy) {
  const limit = quick ? ["--patch-layers", "2", "--patch-positions", "5"] : [];
  results.torchStudy = await runTorch("study", dir, tokensPath, { extraArgs: limit });
}

const f = (x: number, d = 2) => x.toFixed(d);
say("\n== peers ==");
for (const [name, r] of Object.entries(results)) {
  if (!r.ok) {
    say(`${name}: ${r.skipped}${r.detail ? `\n  ${r.detail.replaceAll("\n", "\n  ")}` : ""}`);
    continue;
  }
  const res = r.result as Record<string, unknown>;
  if (res.mode === "forward") {
    const fr = res as ForwardResult;
    const cells = Object.entries(fr.runs).map(([k, v]) =>
      `${k} ${f(v.seconds, 3)} s (${f(v.gflops, 1)} GFLOP/s)`
    );
    say(`${name} [${fr.threads} thr${fr.binary ? `, ${fr.binary}` : ""}]: ${cells.join(", ")}`);
    say(`  checksum 1x101 last5 ${JSON.stringify(fr.runs["1x101"]?.checksum.last5)}`);
    if (fr.referenceCheck) say(`  against PyTorch's logits ${JSON.stringify(fr.referenceCheck)}`);
  } else if (res.mode === "sgemm" || res.mode === "matmul") {
    const mr = res as MatmulResult;
    for (const s of mr.shapes) {
      const cells = Object.entries(s)
        .filter(([, v]) => typeof v === "object")
        .map(([k, v]) => `${k} ${f((v as { gflops: number }).gflops, 1)}`);
      say(`${name} ${s.m}x${s.k}@${s.k}x${s.n}: ${cells.join(", ")} GFLOP/s`);
    }
  } else if (res.mode === "study") {
    say(`${name}: ${JSON.stringify(res.steps)} study ${res.studySeconds} s`);
  }
}
const json = JSON.stringify(results, null, 1);
if (outFile) await Deno.writeTextFile(outFile, json + "\n");
else console.log(json);
