/**
 * Which sizes of GPT-NeoX (Pythia), Llama (SmolLM2, TinyLlama, Llama 3.2), Qwen2.5 and Gemma 2 / 3 fit
 * WebAssembly's 4 GiB (wasm32) with f32 and bf16 weight storage: computed from each model's shape,
 * and measured on synthetic checkpoints of the sizes named with `--measure`.
 *
 *   deno run -A bench/memory_families.ts                         the computed table
 *   deno run -A bench/memory_families.ts --measure pythia-160m,SmolLM2-135M --markdown
 *
 * WebAssembly memory holds the packed weight matrices (Q|K|V, O, [gate|]in, out per layer and
 * W_U, columns padded to multiples of 8; f32 or bf16) and, while W_U is packed (last), its
 * unpacked f32 copy; biases and norms are f32 and small. The embedding stays in JavaScript. A
 * size fits when that loading peak, and the packed weights plus 0.25 GiB (a 30 x 101 batch's
 * activations and the kernels' scratch, which reuse the staging space), are under 4 GiB. Each measured (size, dtype) runs in its own subprocess (BF16 checkpoint, two
 * 1 x 101 forwards, full logits) and reports the WebAssembly memory size and the process's peak
 * resident memory.
 * @module
 */
import type { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { syntheticGemma, syntheticGptNeox, syntheticLlama } from "../weights/synthetic_families.ts";
import { peakRssBytes } from "./process_stats.ts";

/** A model's shape, as its HF config gives it. */
interface Shape {
  family: "GPT-NeoX" | "Llama" | "Qwen2" | "Gemma 2" | "Gemma 3";
  nLayers: number;
  dModel: number;
  nHeads: number;
  nKeyValueHeads: number;
  dMlp: number;
  dVocab: number;
  /** The unembedding is the embedding (no separate lm_head in the checkpoint). */
  tied: boolean;
  /** Gemma's explicit head_dim (default dModel / nHeads). */
  dHead?: number;
}

const gemma = (
  family: "Gemma 2" | "Gemma 3",
  nLayers: number,
  dModel: number,
  nHeads: number,
  nKeyValueHeads: number,
  dMlp: number,
  dVocab: number,
): Shape => ({
  family,
  nLayers,
  dModel,
  nHeads,
  nKeyValueHeads,
  dMlp,
  dVocab,
  tied: true,
  dHead: 256,
});

const neox = (nLayers: number, dModel: number, nHeads: number): Shape => ({
  family: "GPT-NeoX",
  nLayers,
  dModel,
  nHeads,
  nKeyValueHeads: nHeads,
  dMlp: 4 * dModel,
  dVocab: 50304,
  tied: false,
});

/** The sizes, from their HF `config.json`s. */
export const FAMILY_SIZES: Record<string, Shape> = {
  "pythia-14m": neox(6, 128, 4),
  "pythia-70m": neox(6, 512, 8),
  "pythia-160m": neox(12, 768, 12),
  "pythia-410m": neox(24, 1024, 16),
  "pythia-1b": neox(16, 2048, 8),
  "pythia-1.4b": neox(24, 2048, 16),
  "pythia-2.8b": neox(32, 2560, 32),
  "pythia-6.9b": neox(32, 4096, 32),
  "SmolLM2-135M": {
    family: "Llama",
    nLayers: 30,
    dModel: 576,
    nHeads: 9,
    nKeyValueHeads: 3,
    dMlp: 1536,
    dVocab: 49152,
    tied: true,
  },
  "SmolLM2-360M": {
    family: "Llama",
    nLayers: 32,
    dModel: 960,
    nHeads: 15,
    nKeyValueHeads: 5,
    dMlp: 2560,
    dVocab: 49152,
    tied: true,
  },
  "SmolLM2-1.7B": {
    family: "Llama",
    nLayers: 24,
    dModel: 2048,
    nHeads: 32,
    nKeyValueHeads: 32,
    dMlp: 8192,
    dVocab: 49152,
    tied: true,
  },
  "TinyLlama-1.1B": {
    family: "Llama",
    nLayers: 22,
    dModel: 2048,
    nHeads: 32,
    nKeyValueHeads: 4,
    dMlp: 5632,
    dVocab: 32000,
    tied: false,
  },
  "Llama-3.2-1B": {
    family: "Llama",
    nLayers: 16,
    dModel: 2048,
    nHeads: 32,
    nKeyValueHeads: 8,
    dMlp: 8192,
    dVocab: 128256,
    tied: true,
  },
  "Llama-3.2-3B": {
    family: "Llama",
    nLayers: 28,
    dModel: 3072,
    nHeads: 24,
    nKeyValueHeads: 8,
    dMlp: 8192,
    dVocab: 128256,
    tied: true,
  },
  "Qwen2.5-0.5B": {
    family: "Qwen2",
    nLayers: 24,
    dModel: 896,
    nHeads: 14,
    nKeyValueHeads: 2,
    dMlp: 4864,
    dVocab: 151936,
    tied: true,
  },
  "Qwen2.5-1.5B": {
    family: "Qwen2",
    nLayers: 28,
    dModel: 1536,
    nHeads: 12,
    nKeyValueHeads: 2,
    dMlp: 8960,
    dVocab: 151936,
    tied: true,
  },
  "Qwen2.5-3B": {
    family: "Qwen2",
    nLayers: 36,
    dModel: 2048,
    nHeads: 16,
    nKeyValueHeads: 2,
    dMlp: 11008,
    dVocab: 151936,
    tied: true,
  },
  // Gemma (head_dim 256 everywhere; vocabularies of 256000 and 262144 make W_U the largest matrix).
  "gemma-3-270m": gemma("Gemma 3", 18, 640, 4, 1, 2048, 262144),
  "gemma-3-1b": gemma("Gemma 3", 26, 1152, 4, 1, 6912, 262144),
  "gemma-2-2b": gemma("Gemma 2", 26, 2304, 8, 4, 9216, 256000),
  "gemma-2-9b": gemma("Gemma 2", 42, 3584, 16, 8, 14336, 256000),
};

const GIB = 2 ** 30;
/** Room kept for a 30 x 101 batch's activations and the kernels' scratch. */
const HEADROOM = 0.25 * GIB;
const pad8 = (n: number) => Math.ceil(n / 8) * 8;

/** Parameters, bytes of packed matrices, and the WebAssembly peak while loading, for a dtype. */
export function familyCounts(s: Shape, dtype: "f32" | "bf16") {
  const { nLayers: L, dModel: d, nHeads, nKeyValueHeads: kv, dMlp, dVocab: V } = s;
  const dHead = s.dHead ?? d / nHeads, gated = s.family !== "GPT-NeoX";
  const isGemma = s.family === "Gemma 2" || s.family === "Gemma 3";
  // Norm weights per layer: 2 (Llama, Qwen2), 4 (Gemma's pre- and post-norms) + q/k norms (Gemma 3).
  const norms = isGemma ? 4 * d + (s.family === "Gemma 3" ? 2 * dHead : 0) : 2 * d;
  const qkv = (nHeads + 2 * kv) * dHead, mlpIn = (gated ? 2 : 1) * dMlp;
  const perLayer = d * qkv + nHeads * dHead * d + d * mlpIn + dMlp * d;
  const biases = s.family === "GPT-NeoX"
    ? qkv + 2 * d + dMlp + 4 * d
    : s.family === "Qwen2"
    ? qkv - nHeads * dHead
    : 0;
  const params = L * (perLayer + biases + (gated ? norms : 4 * d)) + V * d * (s.tied ? 1 : 2) +
    (gated ? 1 : 2) * d;
  const packedElems = L * (d * pad8(qkv) + nHeads * dHead * pad8(d) + d * pad8(mlpIn) +
        dMlp * pad8(d)) + d * pad8(V);
  const packedBytes = packedElems * (dtype === "bf16" ? 2 : 4);
  const peakBytes = packedBytes + 4 * d * V; // + W_U's unpacked f32 copy while it is packed
  // The staging copy is released before any forward, which then reuses its space.
  const fits = Math.max(peakBytes, packedBytes + HEADROOM) <= 4 * GIB;
  return { params, packedBytes, peakBytes, fits };
}

/** Measurements of one size and weight dtype. */
interface Measured {
  wasmBytes: number;
  peakRss?: number;
  loadMs: number;
  forwardMs: number[];
}

async function child(name: string, dtype: "f32" | "bf16"): Promise<Measured> {
  const s = FAMILY_SIZES[name];
  const opts = { ...s, nCtx: 2048, seed: 1, dtype: "BF16" as const };
  const { config, weights } = s.family === "GPT-NeoX"
    ? syntheticGptNeox(opts)
    : s.family === "Gemma 2" || s.family === "Gemma 3"
    ? syntheticGemma({ ...opts, version: s.family === "Gemma 2" ? 2 : 3, slidingWindow: 512 })
    : syntheticLlama({
      ...opts,
      tieWordEmbeddings: s.tied,
      modelType: s.family === "Qwen2" ? "qwen2" : "llama",
    });
  let t0 = performance.now();
  const model = await HookedTransformer.fromBytes(config, weights, { weightDtype: dtype });
  const loadMs = performance.now() - t0;
  const tokens = [Array.from({ length: 101 }, (_, i) => (i * 7919) % s.dVocab)];
  const forwardMs = [];
  for (let r = 0; r < 2; r++) {
    t0 = performance.now();
    await model.run(tokens);
    forwardMs.push(performance.now() - t0);
  }
  const wasmBytes = (model.backend as WasmBackend).memoryBytes;
  model.dispose();
  return { wasmBytes, peakRss: peakRssBytes(), loadMs, forwardMs };
}

async function measure(name: string, dtype: "f32" | "bf16"): Promise<Measured | string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--child", name, dtype],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  try {
    return JSON.parse(text.split("\n").pop()!);
  } catch {
    return `child exited ${out.code}: ${text.slice(-200)}`;
  }
}

const gib = (b: number) => `${(b / GIB).toFixed(2)} GiB`;

if (import.meta.main) {
  const args = Deno.args;
  if (args[0] === "--child") {
    console.log(JSON.stringify(await child(args[1], args[2] as "f32" | "bf16")));
    Deno.exit(0);
  }
  const i = args.indexOf("--measure");
  const toMeasure = new Set(i >= 0 ? args[i + 1].split(",") : []);
  for (const n of toMeasure) if (!(n in FAMILY_SIZES)) throw new Error(`unknown size ${n}`);
  const head = [
    "model",
    "family",
    "params",
    "weights",
    "packed weights",
    "wasm peak (computed)",
    "fits wasm32",
    "wasm memory (measured)",
    "peak RSS (measured)",
    "load",
    "forward 1x101 (1st / 2nd)",
  ];
  const rows: string[][] = [];
  for (const [name, s] of Object.entries(FAMILY_SIZES)) {
    for (const dtype of ["f32", "bf16"] as const) {
      const c = familyCounts(s, dtype);
      let m: Measured | string | undefined;
      if (toMeasure.has(name) && c.fits) {
        console.error(`measuring ${name} ${dtype} ...`);
        m = await measure(name, dtype);
      }
      const ok = typeof m === "object" ? m : undefined;
      rows.push([
        name,
        s.family,
        `${(c.params / 1e6).toFixed(0)}M`,
        dtype,
        gib(c.packedBytes),
        gib(c.peakBytes),
        c.fits ? "yes" : "no",
        ok ? gib(ok.wasmBytes) : typeof m === "string" ? m : "-",
        ok?.peakRss ? gib(ok.peakRss) : "-",
        ok ? `${(ok.loadMs / 1000).toFixed(1)} s` : "-",
        ok ? ok.forwardMs.map((ms) => `${(ms / 1000).toFixed(2)} s`).join(" / ") : "-",
      ]);
    }
  }
  if (args.includes("--markdown")) {
    console.log(
      [head, head.map(() => "---"), ...rows].map((r) => `| ${r.join(" | ")} |`).join("\n"),
    );
  } else {
    const w = head.map((h, j) => Math.max(h.length, ...rows.map((r) => r[j].length)));
    console.log([head, ...rows].map((r) => r.map((c, j) => c.padEnd(w[j])).join("  ")).join("\n"));
  }
}
