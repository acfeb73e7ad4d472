/**
 * Memory and time to load and run the GPT-2 sizes with f32 and bf16 weight storage
 * (`weightDtype`), on synthetic checkpoints of each real shape.
 *
 *   deno run -A bench/memory_bench.ts                  every size, f32 (where it fits) and bf16
 *   deno run -A bench/memory_bench.ts --sizes small,xl --dtypes bf16
 *   deno run -A bench/memory_bench.ts --markdown       the table as Markdown (bench/MEMORY.md)
 *
 * Each (size, dtype) runs in its own subprocess so that peaks do not mix. The child makes a
 * seeded synthetic checkpoint (`--checkpoint F32|BF16`, default BF16: half the JS bytes of an
 * F32 file; the loaded weights are float32 either way), then times `HookedTransformer.fromBytes`
 * (parse, process as `from_pretrained` does, upload and pack) and two forwards of 1 x 101 tokens,
 * and reports the WebAssembly memory size, the largest `Deno.memoryUsage().rss` sampled (at each
 * phase boundary and every 50 ms while the event loop runs) and the kernel's own high-water mark
 * of resident memory (`VmHWM` in /proc/self/status, Linux), which also catches peaks inside
 * synchronous code that no sampler sees.
 *
 * A size whose packed f32 weights alone exceed WebAssembly's 4 GiB (gpt2-xl) is not attempted in
 * f32; the table says how much it would need.
 * @module
 */
import type { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { HookedTransformer } from "../model/hooked_transformer.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import { peakRssBytes } from "./process_stats.ts";

/** The GPT-2 shapes (vocabulary 50257, context 1024). */
export const SIZES = {
  small: { nLayers: 12, nHeads: 12, dModel: 768 },
  medium: { nLayers: 24, nHeads: 16, dModel: 1024 },
  large: { nLayers: 36, nHeads: 20, dModel: 1280 },
  xl: { nLayers: 48, nHeads: 25, dModel: 1600 },
} as const;
type Size = keyof typeof SIZES;
type Dtype = "f32" | "bf16";
const VOCAB = 50257, CTX = 1024, TOKENS = 101;
const GIB = 2 ** 30;

/** One child's measurements. */
export interface MemoryResult {
  size: Size;
  dtype: Dtype;
  params: number;
  /** Bytes of the packed weight matrices in WebAssembly memory. */
  packedBytes: number;
  ok: boolean;
  error?: string;
  wasmBytes?: number;
  peakRssSampled?: number;
  peakRssHwm?: number;
  rssAfterLoad?: number;
  syntheticMs?: number;
  loadMs?: number;
  forwardMs?: number[];
}

function counts(size: Size, dtype: Dtype): { params: number; packedBytes: number } {
  const { nLayers: L, dModel: d } = SIZES[size];
  const matrix = 12 * d * d; // W_QKV 3d^2, W_O d^2, W_in 4d^2, W_out 4d^2
  const perLayer = matrix + 13 * d; // + biases and two LayerNorms
  const params = L * perLayer + VOCAB * d + CTX * d + 2 * d;
  const packedElems = L * matrix + d * Math.ceil(VOCAB / 8) * 8;
  return { params, packedBytes: packedElems * (dtype === "bf16" ? 2 : 4) };
}

async function child(size: Size, dtype: Dtype, checkpoint: "F32" | "BF16"): Promise<MemoryResult> {
  const base = { size, dtype, ...counts(size, dtype) };
  let peak = Deno.memoryUsage().rss;
  const sample = () => peak = Math.max(peak, Deno.memoryUsage().rss);
  const timer = setInterval(sample, 50);
  const tick = () => new Promise((r) => setTimeout(r, 0));
  try {
    let t0 = performance.now();
    let ckpt: ReturnType<typeof syntheticGpt2> | undefined = syntheticGpt2({
      ...SIZES[size],
      dVocab: VOCAB,
      nCtx: CTX,
      seed: 1,
      layout: "prefixed",
      dtype: checkpoint,
    });
    const syntheticMs = performance.now() - t0;
    sample();
    await tick();
    t0 = performance.now();
    const { config, weights } = ckpt;
    ckpt = undefined;
    const model = await HookedTransformer.fromBytes(config, weights, { weightDtype: dtype });
    const loadMs = performance.now() - t0;
    sample();
    const rssAfterLoad = Deno.memoryUsage().rss;
    await tick();
    const tokens = [Array.from({ length: TOKENS }, (_, i) => (i * 7919) % VOCAB)];
    const forwardMs: number[] = [];
    for (let r = 0; r < 2; r++) {
      t0 = performance.now();
      const logits = await model.run(tokens);
      forwardMs.push(performance.now() - t0);
      if (!Number.isFinite(logits.data[logits.data.length - 1])) {
        throw new Error("non-finite logits");
      }
      sample();
      await tick();
    }
    const wasmBytes = (model.backend as WasmBackend).memoryBytes;
    model.dispose();
    sample();
    return {
      ...base,
      ok: true,
      wasmBytes,
      peakRssSampled: peak,
      peakRssHwm: peakRssBytes(),
      rssAfterLoad,
      syntheticMs,
      loadMs,
      forwardMs,
    };
  } catch (e) {
    return { ...base, ok: false, error: String(e instanceof Error ? e.message : e) };
  } finally {
    clearInterval(timer);
  }
}

function arg(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

const gib = (b?: number) => b === undefined ? "-" : `${(b / GIB).toFixed(2)} GiB`;
const sec = (ms?: number) => ms === undefined ? "-" : `${(ms / 1000).toFixed(2)} s`;

function table(results: MemoryResult[], markdown: boolean): string {
  const head = [
    "size",
    "weights",
    "params",
    "packed weights",
    "wasm memory",
    "peak RSS (HWM)",
    "peak RSS (sampled)",
    "RSS after load",
    "load",
    "forward 1x101 (1st / 2nd)",
  ];
  const rows = results.map((r) => [
    `gpt2-${r.size}`.replace("gpt2-small", "gpt2"),
    r.dtype,
    `${(r.params / 1e6).toFixed(0)}M`,
    gib(r.packedBytes),
    r.ok ? gib(r.wasmBytes) : `does not fit: ${r.error}`,
    gib(r.peakRssHwm),
    gib(r.peakRssSampled),
    gib(r.rssAfterLoad),
    sec(r.loadMs),
    r.forwardMs ? r.forwardMs.map((m) => sec(m)).join(" / ") : "-",
  ]);
  if (markdown) {
    return [head, head.map(() => "---"), ...rows].map((r) => `| ${r.join(" | ")} |`).join("\n");
  }
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(w[i])).join("  ")).join("\n");
}

if (import.meta.main) {
  const args = Deno.args;
  const checkpoint = (arg(args, "--checkpoint") ?? "BF16") as "F32" | "BF16";
  if (args.includes("--child")) {
    const result = await child(
      arg(args, "--size") as Size,
      arg(args, "--dtype") as Dtype,
      checkpoint,
    );
    console.log(JSON.stringify(result));
    Deno.exit(0);
  }
  const sizes = (arg(args, "--sizes") ?? "small,medium,large,xl").split(",") as Size[];
  const dtypes = (arg(args, "--dtypes") ?? "f32,bf16").split(",") as Dtype[];
  const results: MemoryResult[] = [];
  for (const size of sizes) {
    if (!(size in SIZES)) throw new Error(`unknown size ${size}`);
    for (const dtype of dtypes) {
      const c = counts(size, dtype);
      if (c.packedBytes > 4 * GIB) {
        results.push({
          size,
          dtype,
          ...c,
          ok: false,
          error: `its packed weights alone are ${gib(c.packedBytes)} > 4 GiB`,
        });
        continue;
      }
      const cmd = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL(import.meta.url).pathname,
          "--child",
          "--size",
          size,
          "--dtype",
          dtype,
          "--checkpoint",
          checkpoint,
        ],
        stdout: "piped",
        stderr: "inherit",
      });
      const out = await cmd.output();
      const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
      let r: MemoryResult;
      try {
        r = JSON.parse(text);
      } catch {
        r = { size, dtype, ...c, ok: false, error: `child exited ${out.code}: ${text}` };
      }
      results.push(r);
      console.error(
        `${size} ${dtype}: ${
          r.ok ? `wasm ${gib(r.wasmBytes)}, peak ${gib(r.peakRssHwm)}` : r.error
        }` +
          `${r.syntheticMs ? ` (synthetic checkpoint ${sec(r.syntheticMs)})` : ""}`,
      );
    }
  }
  console.log(`checkpoints: synthetic, stored ${checkpoint}; ${TOKENS} tokens`);
  console.log(table(results, args.includes("--markdown")));
}
