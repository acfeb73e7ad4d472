/**
 * The study's steps on a GPT-2-small-shape model (random weights: 12 layers, 768 wide, 50257
 * vocabulary): the K-composition top-1 over the 50257 x 50257 circuit streamed in row blocks
 * (time and peak memory), then, with `--study`, the repeated-token steps at the study's size.
 *
 *   deno run -A bench/circuit_bench.ts                  K-composition top-1, default blocks
 *   deno run -A bench/circuit_bench.ts --block 8,16,64  several block sizes
 *   deno run -A bench/circuit_bench.ts --threads 1      on one thread (default: every core)
 *   deno run -A bench/circuit_bench.ts --study          also log-probs, head scores, patching
 *   deno run -A bench/circuit_bench.ts --method dense,bounds --ov 5.5
 *       top-1 by the dense product and by bounds (alternating, answers checked equal), on the
 *       K-composition circuit and on head 5.5's full OV circuit
 *
 * Times are wall clock and process CPU time (user + system, Linux only): on a shared machine the
 * CPU time is the steadier figure. Peak memory is sampled at every block: the process RSS (Deno.memoryUsage) and the bytes the
 * streaming holds in WebAssembly memory above the model (Kernels.bytesInUse).
 * @module
 */
import type { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import {
  generateRepeatedTokens,
  headScores,
  HookedTransformer,
  kCompositionCircuit,
  logProbSummary,
  ovCircuit,
  patchingScores,
  syntheticGpt2,
  top1Accuracy,
} from "../mod.ts";
import { cpuSeconds } from "./process_stats.ts";
import { BENCH_SHAPE } from "./model_file.ts";

const MiB = 2 ** 20;

function flag(name: string): string | undefined {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

/** Runs f, printing wall time and CPU time (the CPU figure is robust to a busy machine). */
async function timed<T>(label: string, f: () => Promise<T>): Promise<T> {
  const t0 = performance.now(), c0 = cpuSeconds();
  const out = await f();
  const wall = (performance.now() - t0) / 1000, cpu = cpuSeconds() - c0;
  console.log(
    `${label.padEnd(50)} ${wall.toFixed(2).padStart(7)} s wall ${cpu.toFixed(2).padStart(7)} s cpu`,
  );
  return out;
}

/** Block sizes to try; "default" leaves the choice to top1Accuracy. */
const blocks = (flag("block") ?? "default").split(",").map((b) =>
  b === "default" ? undefined : Number(b)
);
/** How top1Accuracy decides rows: its default, or each of a list in turn (see Top1Options). */
const methods = (flag("method") ?? "auto").split(",") as ("auto" | "dense" | "bounds")[];
const threads = flag("threads");
console.log(
  `GPT-2-small shape, random weights; ${navigator.hardwareConcurrency} cores available, ` +
    `threads ${threads ?? "default"}; ` +
    `rss at start ${(Deno.memoryUsage().rss / MiB).toFixed(0)} MiB`,
);
const model = await timed("make + load synthetic GPT-2 small", async () => {
  const { config, weights } = syntheticGpt2({ ...BENCH_SHAPE, seed: 0 });
  return await HookedTransformer.fromBytes(config, weights, {
    name: "synthetic-gpt2-small",
    threads: threads ? Number(threads) : undefined,
  });
});
const k = model.backend as WasmBackend;
const circuit = await timed(
  "build K-composition circuit 4.11 -> 5.5",
  () => Promise.resolve(kCompositionCircuit(model, [4, 11], [5, 5])),
);
const norm = await timed(
  "norm() of the circuit (mdim x mdim Gram products)",
  () => Promise.resolve(circuit.norm()),
);
const svd = await timed(
  "svd() of the circuit (QR of both factors + Jacobi)",
  () => Promise.resolve(circuit.svd()),
);
console.log(
  `  ||M||_F = ${norm.toExponential(4)}; sqrt(sum S^2) = ${
    Math.sqrt(svd.S.reduce((s, x) => s + x * x, 0)).toExponential(4)
  }; S[0] = ${svd.S[0].toExponential(4)}`,
);
const baseWasm = k.bytesInUse;
const baseRss = Deno.memoryUsage().rss;
console.log(
  `after loading: rss ${(baseRss / MiB).toFixed(0)} MiB, WebAssembly in use ${
    (baseWasm / MiB).toFixed(0)
  } MiB (the model)`,
);
const ovHead = flag("ov")?.split(".").map(Number) as [number, number] | undefined;
const circuits = [{ name: "K-composition 4.11 -> 5.5", m: circuit }];
if (ovHead) circuits.push({ name: `OV ${ovHead.join(".")}`, m: ovCircuit(model, ...ovHead) });
for (const { name, m } of circuits) {
  const answers = new Map<string, number>();
  for (const blockRows of blocks) {
    for (const method of methods) {
      let peakWasm = 0, peakRss = 0;
      const acc = await timed(
        `top-1 ${name}, ${method}, blocks of ${blockRows ?? "default"}`,
        () =>
          top1Accuracy(m, {
            blockRows,
            method,
            onProgress: () => {
              peakWasm = Math.max(peakWasm, k.bytesInUse - baseWasm);
              peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
            },
          }),
      );
      console.log(
        `  top-1 ${acc.toFixed(6)}; streaming held ${(peakWasm / MiB).toFixed(1)} MiB of ` +
          `WebAssembly memory; peak rss ${(peakRss / MiB).toFixed(0)} MiB ` +
          `(+${((peakRss - baseRss) / MiB).toFixed(0)} MiB over the loaded model)`,
      );
      answers.set(`${method} ${blockRows}`, acc);
    }
  }
  if (new Set(answers.values()).size > 1) {
    throw new Error(`${name}: the methods disagree: ${JSON.stringify([...answers])}`);
  }
}

if (Deno.args.includes("--study")) {
  const tokens = generateRepeatedTokens(model, 50, 30, { seed: 0 });
  await timed(
    "logProbSummary 30 x 101 (logits reduced in chunks)",
    () => logProbSummary(model, tokens, 50),
  );
  await timed("model.run 30 x 101 (full logits, for comparison)", () => model.run(tokens));
  await timed("headScores 30 x 101", () => headScores(model, tokens, 50));
  for (const alignment of ["study", "aligned"] as const) {
    await timed(
      `patchingScores mlp_out ${alignment} (12 x 50 patches)`,
      () => patchingScores(model, tokens, 50, { hook: "mlp_out", alignment }),
    );
  }
  console.log(`peak rss ${(Deno.memoryUsage().rss / MiB).toFixed(0)} MiB at the end`);
}
