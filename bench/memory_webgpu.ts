/**
 * Which sizes of each family fit a GPU of 8, 16 or 24 GiB on the WebGPU backend, with f32 and
 * bf16 or f16 weight storage (the two take the same bytes): computed from each model's shape
 * (`FAMILY_SIZES` of `memory_families.ts`, plus the GPT-2 sizes), not measured.
 *
 *   deno run -A bench/memory_webgpu.ts              the table (Markdown with --markdown)
 *   deno run -A bench/memory_webgpu.ts --measure    GPT-2 small's weight bytes as the WebGPU
 *                                                   backend counts them, f32 / bf16 / f16, beside
 *                                                   the computed figure
 *
 * GPU memory holds, on the WebGPU backend:
 * - the weights the forward reads (`model/device_weights.ts`): every block's fused Q|K|V, O,
 *   [gate|]in and out matrices and the unembedding W_U, k x n of them at 4 bytes (f32) or 2 bytes
 *   (bf16 or f16, two to a u32 word, a column block's odd last column padded), no padding; biases
 *   and norm weights in f32. The embeddings W_E and W_pos stay in JavaScript (the forward gathers
 *   rows there), so an untied model's W_E costs host memory, not GPU memory;
 * - a forward's buffers (`model/forward.ts`, plain run with full logits): per computed row the
 *   residual, normalized input, attention output and final-norm rows (4 d_model), the scale, the
 *   fused Q|K|V row, z (n_heads d_head), the MLP hidden row (d_mlp; 3 d_mlp gated, with the
 *   gate|in product), a parallel block's attention output (d_model); attention is fused, so no
 *   [query, key] pattern is kept unless a hook or the cache asks; logits are computed in chunks
 *   of 64 rows (64 x d_vocab) and read back to JavaScript. Counted for 30 x 101 rows (the bench's
 *   large batch, 3030 rows).
 * A size fits a GPU when weights plus that forward's buffers are at most 90% of its memory: the
 * rest is left to the driver, other programs and allocation granularity (a margin chosen, not
 * measured). Host memory is not the GPU's: the model also keeps its float32 parameters in
 * JavaScript (4 bytes a parameter).
 * @module
 */
import { FAMILY_SIZES } from "./memory_families.ts";
import { HookedTransformer } from "../mod.ts";
import { WebGpuBackend } from "../backend/webgpu/webgpu_backend.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import { BENCH_SHAPE } from "./model_file.ts";

type Shape = (typeof FAMILY_SIZES)[string];
const GIB = 2 ** 30;
/** Rows of the forward counted: 30 x 101. */
export const ROWS = 30 * 101;
/** The share of a GPU's memory a model may take. */
export const USABLE = 0.9;
/** The GPU sizes of the table. */
export const GPUS = [8, 16, 24] as const;

const gpt2 = (nLayers: number, dModel: number, nHeads: number): Shape & { gpt2: true } => ({
  family: "GPT-NeoX", // placeholder for the type; gpt2 is handled apart below
  nLayers,
  dModel,
  nHeads,
  nKeyValueHeads: nHeads,
  dMlp: 4 * dModel,
  dVocab: 50257,
  tied: true,
  gpt2: true,
});

/** GPT-2's sizes (vocabulary 50257). */
const GPT2_SIZES: Record<string, Shape & { gpt2: true }> = {
  gpt2: gpt2(12, 768, 12),
  "gpt2-medium": gpt2(24, 1024, 16),
  "gpt2-large": gpt2(36, 1280, 20),
  "gpt2-xl": gpt2(48, 1600, 25),
};

/** Bytes of GPU memory a size needs on WebGPU: weights and a 30 x 101 forward's buffers. */
export function webgpuCounts(s: Shape & { gpt2?: boolean }, dtype: "f32" | "bf16" | "f16") {
  const { nLayers: L, dModel: d, nHeads, nKeyValueHeads: kv, dMlp, dVocab: V } = s;
  const dHead = s.dHead ?? d / nHeads;
  const gated = !s.gpt2 && s.family !== "GPT-NeoX";
  const isGemma = s.family === "Gemma 2" || s.family === "Gemma 3";
  const qkv = (nHeads + 2 * kv) * dHead, mlpIn = (gated ? 2 : 1) * dMlp;
  const matrices = L * (d * qkv + nHeads * dHead * d + d * mlpIn + dMlp * d) + d * V;
  // f32 vectors: biases and norm weights (GPT-2 and GPT-NeoX: LayerNorm w, b twice a block).
  const perLayerVectors = s.gpt2 || s.family === "GPT-NeoX"
    ? qkv + 2 * d + dMlp + 4 * d
    : (s.family === "Qwen2" ? qkv - nHeads * dHead : 0) +
      (isGemma ? 4 * d + (s.family === "Gemma 3" ? 2 * dHead : 0) : 2 * d);
  const vectors = L * perLayerVectors + 2 * d;
  const weightBytes = matrices * (dtype === "f32" ? 4 : 2) + vectors * 4;
  const perRow = 4 * d + 1 + qkv + nHeads * dHead + (gated ? 3 : 1) * dMlp +
    (s.gpt2 || s.family === "GPT-NeoX" ? d : 0);
  const activationBytes = 4 * (ROWS * perRow + 64 * V);
  const total = weightBytes + activationBytes;
  const params = matrices + vectors + (s.tied ? 0 : d * V) + (s.gpt2 ? 1024 * d : 0);
  return {
    params,
    weightBytes,
    activationBytes,
    total,
    fits: Object.fromEntries(GPUS.map((g) => [g, total <= USABLE * g * GIB])) as Record<
      (typeof GPUS)[number],
      boolean
    >,
    /** The float32 parameters kept in JavaScript (host memory). */
    hostBytes: 4 * params,
  };
}

/**
 * GPT-2 small (a seeded synthetic checkpoint of its shape) loaded on WebGPU with each weight
 * dtype: the bytes of weight buffers the backend holds (`WebGpuBackend.weightBytes`, every
 * permanent buffer's size), beside {@linkcode webgpuCounts}'s figure.
 */
async function measure(): Promise<void> {
  const { config, weights } = syntheticGpt2({ ...BENCH_SHAPE, seed: 1 });
  const computed = (dtype: "f32" | "bf16" | "f16") =>
    webgpuCounts(GPT2_SIZES.gpt2, dtype).weightBytes;
  console.log("| weights | WebGPU weight bytes (measured) | computed | MiB |");
  console.log("| --- | --- | --- | --- |");
  for (const dtype of ["f32", "bf16", "f16"] as const) {
    const backend = await WebGpuBackend.load();
    const model = await HookedTransformer.fromBytes(config, weights, {
      backend,
      weightDtype: dtype,
    });
    const bytes = backend.weightBytes;
    console.log(
      `| ${dtype} | ${bytes} | ${computed(dtype)} | ${(bytes / 2 ** 20).toFixed(1)} |`,
    );
    model.dispose(); // closes the backend
  }
}

if (import.meta.main && Deno.args.includes("--measure")) {
  await measure();
} else if (import.meta.main) {
  const gib = (b: number) => `${(b / GIB).toFixed(2)}`;
  const head = [
    "model",
    "family",
    "params",
    "weights",
    "GPU weights GiB",
    "30x101 forward GiB",
    "total GiB",
    ...GPUS.map((g) => `${g} GiB`),
    "host f32 params GiB",
  ];
  const rows: string[][] = [];
  const all = { ...GPT2_SIZES, ...FAMILY_SIZES } as Record<string, Shape & { gpt2?: boolean }>;
  for (const [name, s] of Object.entries(all)) {
    for (const dtype of ["f32", "bf16"] as const) {
      const c = webgpuCounts(s, dtype); // f16 takes bf16's bytes
      rows.push([
        name,
        s.gpt2 ? "GPT-2" : s.family,
        `${(c.params / 1e6).toFixed(0)}M`,
        dtype === "bf16" ? "bf16, f16" : dtype,
        gib(c.weightBytes),
        gib(c.activationBytes),
        gib(c.total),
        ...GPUS.map((g) => c.fits[g] ? "yes" : "no"),
        gib(c.hostBytes),
      ]);
    }
  }
  if (Deno.args.includes("--markdown")) {
    console.log(
      [head, head.map(() => "---"), ...rows].map((r) => `| ${r.join(" | ")} |`).join("\n"),
    );
  } else {
    const w = head.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j].length)));
    console.log([head, ...rows].map((r) => r.map((c, j) => c.padEnd(w[j])).join("  ")).join("\n"));
  }
}
