/**
 * TensorFlow.js peer for `deno task bench`: GPT-2 on `@tensorflow/tfjs-backend-wasm` (XNNPACK,
 * WebAssembly SIMD), built from the same `model.safetensors` as the other peers.
 *
 *   deno run -A bench/peers/tfjs_gpt2.ts forward --model DIR --tokens FILE [--threads N]
 *   deno run -A bench/peers/tfjs_gpt2.ts matmul [--threads N]
 *
 * Prints one JSON object on stdout (see `common.ts`); progress goes to stderr.
 *
 * Binaries. Under Deno the npm package loads its Node build (`process` exists), which reads the
 * `.wasm` next to itself from Deno's npm cache with `fs`, so no `setWasmPaths` is needed; the Node
 * build never offers threads (tfjs switches WASM_HAS_MULTITHREAD_SUPPORT off under Node) and runs
 * `tfjs-backend-wasm-simd.wasm` on one thread. With `--threads N` (N > 1) this harness turns the
 * flag on and makes Emscripten's Node pthread path work in Deno (see {@link enableThreads}), so
 * `tfjs-backend-wasm-threaded-simd.wasm` runs with an XNNPACK pool of N threads; if that fails it
 * falls back to the SIMD binary and says why in `threadsNote`.
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import * as tfwasm from "@tensorflow/tfjs-backend-wasm";
import os from "node:os";
import { parseSafetensors } from "../../io/safetensors.ts";
import {
  forwardFlops,
  type ForwardResult,
  type ForwardRun,
  logitsChecksum,
  MATMUL_SHAPES,
  type MatmulResult,
  type MatmulShapeResult,
  median,
  readBenchTokens,
  round,
} from "./common.ts";

const log = (msg: string) => console.error(msg);

// ---------------------------------------------------------------------------------------------
// Backend set-up

interface BackendInfo {
  binary: string;
  threads: number;
  threadsRequested: number;
  threadsNote?: string;
}

/**
 * Lets the threaded-SIMD build start its pthreads under Deno, for the duration of backend init.
 * tfjs hands Emscripten two Blobs: the worker script (turned into a blob: URL for
 * `worker_threads.Worker`) and the main script the workers `importScripts`. Deno's
 * `worker_threads.Worker` takes file paths only, and a worker cannot read a Blob synchronously, so
 * while the backend starts, `Blob` built from those two scripts is written to `.cjs` files in a
 * temporary directory instead (the worker script adjusted: it reads the main script from that path,
 * skips globals Deno does not let it set, and gets the bundler's `require$$N` aliases), and
 * `URL.createObjectURL` passes such paths through. `os.cpus()` is doubled because the build sizes
 * its XNNPACK pool at `min(4, cpus / 2)` when the module starts, before `setThreadsCount` applies.
 * Returns the function that restores the globals.
 */
async function enableThreads(threads: number): Promise<() => void> {
  const dir = await Deno.makeTempDir({ prefix: "tfjs-wasm-threads-" });
  const OrigBlob = globalThis.Blob;
  const origCreate = URL.createObjectURL;
  const origCpus = os.cpus;
  let n = 0;
  const marker = "WasmBackendModuleThreadedSimd";
  function PatchedBlob(parts: BlobPart[], opts?: BlobPropertyBag): Blob | string {
    if (parts.length === 1 && typeof parts[0] === "string" && parts[0].includes(marker)) {
      let text = parts[0];
      if (text.startsWith(`var ${marker}`)) {
        text = 'var require$$0=require("fs"),require$$1=require("path"),' +
          'require$$3=require("perf_hooks"),require$$4=require("os"),commonjsGlobal=globalThis,' +
          "_scriptDir=undefined;" + text;
      } else {
        text = text
          .replace('typeof e.data.urlOrBlob=="string"', "true")
          .replace("importScripts(e.data.urlOrBlob)", "importScripts(String(e.data.urlOrBlob))")
          .replace(
            "Object.assign(global,",
            "((t,s)=>{for(const k in s){try{t[k]=s[k]}catch{}}})(global,",
          );
      }
      const path = `${dir}/tfjs-${n++}.cjs`;
      Deno.writeTextFileSync(path, text);
      // A String object: survives structured cloning to the workers, and is not a Blob.
      return new String(path) as unknown as string;
    }
    return new OrigBlob(parts, opts);
  }
  const g = globalThis as unknown as { Blob: unknown };
  g.Blob = PatchedBlob;
  URL.createObjectURL = (obj: Blob) => obj instanceof String ? String(obj) : origCreate(obj);
  const cpus = origCpus();
  (os as { cpus: () => os.CpuInfo[] }).cpus = () =>
    Array.from({ length: Math.max(2 * threads, cpus.length) }, (_, i) => cpus[i % cpus.length]);
  tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", true);
  tfwasm.setThreadsCount(threads);
  return () => {
    g.Blob = OrigBlob;
    URL.createObjectURL = origCreate;
    (os as { cpus: () => os.CpuInfo[] }).cpus = origCpus;
  };
}

/**
 * Starts the wasm backend. With threads > 1 it asks for the threaded-SIMD build; if that cannot
 * start, it throws (the caller reports it, and `run_peers.ts` reruns with one thread).
 */
export async function initBackendForTest(threads: number) {
  return await initBackend(threads);
}
async function initBackend(threads: number): Promise<BackendInfo> {
  let note: string | undefined;
  if (threads > 1) {
    const restore = await enableThreads(threads);
    try {
      if (!(await tf.setBackend("wasm"))) throw new Error("tf.setBackend('wasm') returned false");
      await tf.ready();
    } finally {
      restore();
    }
  } else {
    if (!(await tf.setBackend("wasm"))) throw new Error("tf.setBackend('wasm') returned false");
    await tf.ready();
    note = "one thread requested: the SIMD build, which is what tfjs's Node build picks under Deno";
  }
  const backend = tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } };
  const shared = backend.wasm.HEAPU8.buffer instanceof SharedArrayBuffer;
  const simd = await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT");
  const binary = shared
    ? "tfjs-backend-wasm-threaded-simd.wasm"
    : simd
    ? "tfjs-backend-wasm-simd.wasm"
    : "tfjs-backend-wasm.wasm";
  const actual = tfwasm.getThreadsCount();
  if (threads > 1 && actual !== threads) {
    note = `asked for ${threads} threads, the XNNPACK pool has ${actual}`;
  }
  return { binary, threads: actual, threadsRequested: threads, threadsNote: note };
}

// ---------------------------------------------------------------------------------------------
// The model: HF GPT-2, unprocessed weights, the way one writes it in TensorFlow.js

interface Block {
  ln1w: tf.Tensor1D;
  ln1b: tf.Tensor1D;
  attnW: tf.Tensor2D;
  attnB: tf.Tensor1D;
  projW: tf.Tensor2D;
  projB: tf.Tensor1D;
  ln2w: tf.Tensor1D;
  ln2b: tf.Tensor1D;
  fcW: tf.Tensor2D;
  fcB: tf.Tensor1D;
  outW: tf.Tensor2D;
  outB: tf.Tensor1D;
}

interface Gpt2 {
  nLayers: number;
  nHeads: number;
  dModel: number;
  dMlp: number;
  dVocab: number;
  eps: number;
  wte: tf.Tensor2D;
  wpe: tf.Tensor2D;
  /**
   * W_U [D, V]: wte (or lm_head) transposed once at load; tf.matMul(x, wte, false, true) is about
   * 9x slower on the wasm backend at 3030 x 768 x 50257.
   */
  unembed: tf.Tensor2D;
  blocks: Block[];
  lnfW: tf.Tensor1D;
  lnfB: tf.Tensor1D;
}

async function loadGpt2(dir: string): Promise<Gpt2> {
  const hf = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const file = parseSafetensors(
    await Deno.readFile(`${dir}/model.safetensors`),
    `${dir}/model.safetensors`,
  );
  const names = new Map<string, string>();
  for (const n of file.names()) names.set(n.startsWith("transformer.") ? n.slice(12) : n, n);
  const t = <R extends tf.Rank>(name: string): tf.Tensor<R> => {
    const stored = names.get(name);
    if (stored === undefined) throw new Error(`${dir}: no tensor ${name}`);
    const x = file.tensor(stored);
    return tf.tensor(x.data, x.shape as number[], "float32") as unknown as tf.Tensor<R>;
  };
  const nLayers: number = hf.n_layer;
  const blocks: Block[] = [];
  for (let l = 0; l < nLayers; l++) {
    const h = `h.${l}.`;
    blocks.push({
      ln1w: t(h + "ln_1.weight"),
      ln1b: t(h + "ln_1.bias"),
      attnW: t(h + "attn.c_attn.weight"),
      attnB: t(h + "attn.c_attn.bias"),
      projW: t(h + "attn.c_proj.weight"),
      projB: t(h + "attn.c_proj.bias"),
      ln2w: t(h + "ln_2.weight"),
      ln2b: t(h + "ln_2.bias"),
      fcW: t(h + "mlp.c_fc.weight"),
      fcB: t(h + "mlp.c_fc.bias"),
      outW: t(h + "mlp.c_proj.weight"),
      outB: t(h + "mlp.c_proj.bias"),
    });
  }
  const wte = t<tf.Rank.R2>("wte.weight");
  return {
    nLayers,
    nHeads: hf.n_head,
    dModel: hf.n_embd,
    dMlp: hf.n_inner ?? 4 * hf.n_embd,
    dVocab: hf.vocab_size,
    eps: hf.layer_norm_epsilon ?? 1e-5,
    wte,
    wpe: t("wpe.weight"),
    unembed: tf.transpose(names.has("lm_head.weight") ? t<tf.Rank.R2>("lm_head.weight") : wte),
    blocks,
    lnfW: t("ln_f.weight"),
    lnfB: t("ln_f.bias"),
  };
}

function layerNorm(x: tf.Tensor2D, w: tf.Tensor1D, b: tf.Tensor1D, eps: number): tf.Tensor2D {
  const mean = tf.mean(x, -1, true);
  const xc = tf.sub(x, mean);
  const variance = tf.mean(tf.square(xc), -1, true);
  return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(variance, eps))), w), b);
}

const GELU_C = Math.sqrt(2 / Math.PI);

function geluNew(x: tf.Tensor2D): tf.Tensor2D {
  const inner = tf.mul(tf.add(x, tf.mul(tf.mul(x, tf.mul(x, x)), 0.044715)), GELU_C);
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
}

/** Logits [batch, seq, vocab] of GPT-2 for int32 tokens [batch, seq]. */
function forward(m: Gpt2, tokens: tf.Tensor2D): tf.Tensor3D {
  return tf.tidy(() => {
    const [B, T] = tokens.shape;
    const D = m.dModel, H = m.nHeads, dh = D / H;
    const pos = tf.slice(m.wpe, [0, 0], [T, D]);
    let x: tf.Tensor2D = tf.add(
      tf.gather(m.wte, tf.reshape(tokens, [B * T])),
      tf.tile(pos, [B, 1]),
    );
    const mask = tf.tidy(() => {
      const q = tf.reshape(tf.range(0, T, 1, "int32"), [T, 1]);
      const k = tf.reshape(tf.range(0, T, 1, "int32"), [1, T]);
      return tf.where(tf.greaterEqual(q, k), tf.zeros([T, T]), tf.fill([T, T], -Infinity));
    });
    const heads = (y: tf.Tensor2D) => tf.transpose(tf.reshape(y, [B, T, H, dh]), [0, 2, 1, 3]);
    for (const blk of m.blocks) {
      // One tidy a block: the intermediates of all 12 blocks at 30 x 101 would exceed 4 GB.
      const next: tf.Tensor2D = tf.tidy(() => {
        const h = layerNorm(x, blk.ln1w, blk.ln1b, m.eps);
        const qkv = tf.fused.matMul({ a: h, b: blk.attnW, bias: blk.attnB });
        const [q, k, v] = tf.split(qkv, 3, 1) as tf.Tensor2D[];
        const scores = tf.add(
          tf.mul(tf.matMul(heads(q), heads(k), false, true), 1 / Math.sqrt(dh)),
          mask,
        );
        const z = tf.matMul(tf.softmax(scores), heads(v)); // [B, H, T, dh]
        const zFlat = tf.reshape(tf.transpose(z, [0, 2, 1, 3]), [B * T, D]);
        const mid: tf.Tensor2D = tf.add(
          x,
          tf.fused.matMul({ a: zFlat, b: blk.projW, bias: blk.projB }),
        );
        const h2 = layerNorm(mid, blk.ln2w, blk.ln2b, m.eps);
        const pre = tf.fused.matMul({ a: h2, b: blk.fcW, bias: blk.fcB }) as tf.Tensor2D;
        return tf.add(mid, tf.fused.matMul({ a: geluNew(pre), b: blk.outW, bias: blk.outB }));
      });
      x.dispose();
      x = next;
    }
    const xf = layerNorm(x, m.lnfW, m.lnfB, m.eps);
    return tf.reshape(tf.matMul(xf, m.unembed), [B, T, m.dVocab]);
  });
}

// ---------------------------------------------------------------------------------------------
// Modes

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

function versions() {
  return { tfjsCore: tf.version_core, tfjsBackendWasm: tfwasm.version_wasm };
}

async function modeForward(args: string[], info: BackendInfo): Promise<ForwardResult> {
  const modelDir = flag(args, "--model"), tokensFile = flag(args, "--tokens");
  if (!modelDir || !tokensFile) throw new Error("forward needs --model DIR --tokens FILE");
  const runsSmall = Number(flag(args, "--runs-small") ?? 5);
  const runsLarge = Number(flag(args, "--runs-large") ?? 2);
  let t0 = performance.now();
  const m = await loadGpt2(modelDir);
  const loadSeconds = (performance.now() - t0) / 1000;
  const spec = await readBenchTokens(tokensFile);
  const result: ForwardResult = {
    peer: "tfjs-wasm",
    mode: "forward",
    ...versions(),
    ...info,
    loadSeconds: round(loadSeconds, 3),
    runs: {},
  };
  const shape = { ...m };
  for (const [batch, runs] of [[1, runsSmall], [spec.tokens.length, runsLarge]]) {
    const rows = spec.tokens.slice(0, batch);
    const T = rows[0].length;
    const tokens = tf.tensor2d(rows.flat(), [batch, T], "int32");
    log(`tfjs forward ${batch}x${T}: ${runs} runs`);
    for (let w = batch === 1 ? 2 : 1; w > 0; w--) tf.dispose(forward(m, tokens)); // warm-up
    const times: number[] = [];
    let logits: tf.Tensor3D | null = null;
    for (let r = 0; r < runs; r++) {
      if (logits) logits.dispose();
      t0 = performance.now();
      logits = forward(m, tokens); // the wasm backend computes eagerly: done when it returns
      times.push((performance.now() - t0) / 1000);
    }
    const out = logits!;
    const checksum = await logitsChecksum(
      (b) => {
        const row = tf.slice(out, [b, 0, 0], [1, T, m.dVocab]);
        const data = row.dataSync() as Float32Array;
        row.dispose();
        return data;
      },
      batch,
      T,
      m.dVocab,
    );
    out.dispose();
    tokens.dispose();
    const seconds = median(times);
    const flops = forwardFlops(shape, batch, T);
    const run: ForwardRun = {
      batch,
      seq: T,
      seconds: round(seconds, 4),
      allSeconds: times.map((s) => round(s, 4)),
      flops,
      gflops: round(flops / seconds / 1e9, 2),
      checksum,
    };
    result.runs[`${batch}x${T}`] = run;
  }
  return result;
}

/**
 * Largest |error| of tf.matMul(a, b) against a float64 product on a sample of entries (first,
 * middle and last rows, so rows computed by every thread are covered).
 */
function checkProduct(a: tf.Tensor2D, b: tf.Tensor2D): number {
  const [m, k] = a.shape, n = b.shape[1];
  const c = tf.matMul(a, b);
  const A = a.dataSync(), B = b.dataSync(), C = c.dataSync();
  c.dispose();
  let worst = 0;
  for (const i of [0, 1, m >> 1, m - 2, m - 1]) {
    for (const j of [0, 7, n >> 1, n - 1]) {
      let s = 0;
      for (let p = 0; p < k; p++) s += A[i * k + p] * B[p * n + j];
      worst = Math.max(worst, Math.abs(s - C[i * n + j]));
    }
  }
  return worst;
}

function modeMatmul(args: string[], info: BackendInfo): MatmulResult {
  const budget = Number(flag(args, "--seconds") ?? 1);
  const shapes: MatmulShapeResult[] = [];
  for (const [m, k, n] of MATMUL_SHAPES) {
    const a = tf.randomNormal([m, k], 0, 1, "float32", 1) as tf.Tensor2D;
    const b = tf.randomNormal([k, n], 0, 1, "float32", 2) as tf.Tensor2D;
    const once = () => {
      const t = performance.now();
      tf.matMul(a, b).dispose();
      return (performance.now() - t) / 1000;
    };
    const maxAbsError = checkProduct(a, b);
    once();
    const reps = Math.max(5, Math.min(200, Math.floor(budget / Math.max(once(), 1e-6))));
    const times = Array.from({ length: reps }, once);
    const flops = 2 * m * k * n;
    const med = median(times);
    shapes.push({
      m,
      k,
      n,
      flops,
      maxAbsError,
      tfjs: {
        seconds: med,
        gflops: round(flops / med / 1e9, 2),
        bestGflops: round(flops / Math.min(...times) / 1e9, 2),
      },
    });
    log(
      `tfjs matmul ${m}x${k}@${k}x${n} threads=${info.threads}: ${(flops / med / 1e9).toFixed(1)}`,
    );
    a.dispose();
    b.dispose();
  }
  return { peer: "tfjs-wasm", mode: "matmul", ...versions(), ...info, shapes };
}

async function main(args: string[]): Promise<number> {
  const mode = args[0];
  if (mode !== "forward" && mode !== "matmul") {
    console.error("usage: tfjs_gpt2.ts forward --model DIR --tokens FILE [--threads N] | matmul");
    return 2;
  }
  const threads = Number(flag(args, "--threads") ?? 1);
  let info: BackendInfo;
  try {
    info = await initBackend(threads);
  } catch (e) {
    const message = String((e as Error)?.message ?? e);
    console.log(
      JSON.stringify({ peer: "tfjs-wasm", mode, threadsRequested: threads, error: message }),
    );
    return 3;
  }
  log(`tfjs-wasm: ${info.binary}, ${info.threads} thread(s)`);
  const result = mode === "forward" ? await modeForward(args, info) : await modeMatmul(args, info);
  console.log(JSON.stringify(result));
  return 0;
}

if (import.meta.main) {
  // Deno.exit: the threaded build's workers would otherwise keep the process alive.
  Deno.exit(await main(Deno.args));
}
