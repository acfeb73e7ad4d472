/**
 * GPT-2 small's shape (seeded synthetic f32 weights, 12 layers, d_model 768, vocabulary 50257)
 * on the WebAssembly and WebGPU backends: the logits' largest difference relative to the
 * largest logit (the issue's bound: 1e-5), and each forward's time. The 50257 x 768 unembedding
 * exceeds WebGPU's default 128 MiB binding, so this also runs the column-blocked matmul.
 *
 * `deno run --allow-read --allow-env --allow-sys bench/webgpu_parity.ts [batch] [positions]`
 *
 * On a software adapter (Mesa's llvmpipe) the WebGPU times say nothing about GPUs: the figure
 * that matters there is the difference.
 * @module
 */
import { HookedTransformer } from "../mod.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import { BENCH_SHAPE } from "./model_file.ts";

const batch = Number(Deno.args[0] ?? 1), T = Number(Deno.args[1] ?? 101);
const { config, weights } = syntheticGpt2({ ...BENCH_SHAPE, seed: 1 });
const tokens = Array.from(
  { length: batch },
  (_, b) => Array.from({ length: T }, (_, t) => (b * 7919 + t * 104729) % 50257),
);

const logits: Float32Array[] = [];
for (const device of ["wasm", "webgpu"] as const) {
  const model = await HookedTransformer.fromBytes(config, weights, { device, name: "gpt2-shape" });
  await model.run(tokens.map((r) => r.slice(0, 4))); // compiles the kernels
  const t0 = performance.now();
  logits.push((await model.run(tokens)).data);
  console.log(`${device}: forward ${batch} x ${T} in ${(performance.now() - t0).toFixed(0)} ms`);
  model.dispose();
}
let diff = 0, top = 0;
for (let i = 0; i < logits[0].length; i++) {
  diff = Math.max(diff, Math.abs(logits[0][i] - logits[1][i]));
  top = Math.max(top, Math.abs(logits[0][i]));
}
console.log(
  `largest logit ${top.toFixed(4)}; webgpu - wasm: ${diff.toExponential(2)} absolute, ` +
    `${(diff / top).toExponential(2)} of the largest`,
);
