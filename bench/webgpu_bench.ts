/**
 * The WebGPU columns of `deno task bench --device webgpu`: forward, forward + backward, greedy
 * generation, caching every activation and the study's steps, on the WebGPU backend beside the
 * WebAssembly one, on the same model and tokens (the study's answers compared between them).
 *
 *   deno run -A bench/webgpu_bench.ts                 the shape that suits the adapter
 *   deno run -A bench/webgpu_bench.ts --shape small   a scaled-down GPT-2 (any adapter)
 *   deno run -A bench/webgpu_bench.ts --shape bench   GPT-2 small's shape, 1 x 101 and 30 x 101
 *   deno run -A bench/webgpu_bench.ts --json          one JSON object on stdout, not tables
 *
 * On a hardware adapter it runs the benchmark model (`model_file.ts`: GPT-2 small's shape) at the
 * sizes of the main tables (1 x 101 and 30 x 101; caching at 1 x 101 and 8 x 101; 20 new tokens
 * after a 21-token prompt). On a software adapter (Mesa's llvmpipe, SwiftShader), where one
 * GPT-2-small forward of 1 x 21 takes about 35 s, it runs a scaled-down GPT-2 ({@linkcode
 * SMALL_SHAPE}) at 1 x 21 and 4 x 21 so that the section ends in a minute or two: those figures
 * check that every path runs and agrees with wasm, they say nothing about GPUs.
 * @module
 */
import { HookedTransformer } from "../mod.ts";
import { syntheticGpt2 } from "../weights/synthetic.ts";
import { logProbsAndHeadScores } from "../analysis/log_probs.ts";
import { patchingScores } from "../analysis/patching.ts";
import { kCompositionCircuit, ovCircuit } from "../analysis/circuits.ts";
import { top1Accuracy } from "../analysis/factored_matrix.ts";
import { allCompositionScores } from "../analysis/composition.ts";
import { type GenerationResult, generationSpeed } from "./generate_bench.ts";
import { alternate, cacheArms } from "./cache_arms.ts";
import {
  BENCH_BATCH,
  BENCH_SEQ_LEN,
  BENCH_SHAPE,
  benchTokens,
  defaultBenchDir,
  writeBenchModel,
} from "./model_file.ts";
import { median } from "./peers/common.ts";
import { GpuUnavailableError } from "../core/errors.ts";

/** The scaled-down GPT-2 a software adapter runs: 2 layers, d_model 256, vocabulary 4096. */
export const SMALL_SHAPE = {
  nLayers: 2,
  nHeads: 4,
  dModel: 256,
  dMlp: 1024,
  dVocab: 4096,
  nCtx: 1024,
} as const;

/** One device's figures, keyed by `"{batch}x{positions}"`; seconds are medians. */
export interface DeviceFigures {
  /** Plain forward, full logits. */
  forward: Record<string, { seconds: number }>;
  /** Forward + backward of the loss (every activation's gradient, none cached) and a plain
   * forward timed alternately with it. */
  backward: Record<string, { seconds: number; forwardSeconds: number; loss: number }>;
  /** `runWithCache` with no filter (the cache disposed) against `run`, alternating. */
  cacheOverhead: Record<string, { run: number; runWithCache: number; ratio: number }>;
  /** Greedy generation with and without the key/value cache. */
  generation: GenerationResult;
  /** The study's steps, one run each (after the tables above warmed the device). */
  study: StudyFigures;
}

/**
 * Seconds of the study's steps on one device: `score` (log-probs and head scores of the repeated
 * tokens, one pass with the patterns cached), `mlpPatching` (the MLP sweep of one sequence, the
 * study's alignment), `circuitProducts` (building the K-composition and OV circuits: the
 * synchronous products of host arrays, `core/ops.ts`'s `matmul`, which a WebGPU backend hands to
 * its WebAssembly companion), `top1` (the top-1 accuracy of both circuits, streamed on the model's
 * backend) and `compositionScores` (`allCompositionScores(model, "K")`, host products too).
 */
export interface StudyFigures {
  score: number;
  mlpPatching: number;
  circuitProducts: number;
  top1: number;
  compositionScores: number;
}

/** How the study's answers on WebGPU compare with wasm's. */
export interface StudyAgreement {
  /** |difference| of the mean log-prob of the repeated half. */
  secondHalfDiff: number;
  /** Largest |difference| of the patching scores over the largest |score|. */
  patchingRelDiff: number;
  /** K-composition and OV top-1 accuracies, [webgpu, wasm] each. */
  kCompositionTop1: [number, number];
  ovTop1: [number, number];
  /** Whether the host products (both circuits' factors and the K-composition scores) are the
   * same floats on both devices. */
  hostProductsIdentical: boolean;
}

/** What {@linkcode webgpuBench} measured. */
export interface WebGpuSection {
  /** The adapter's description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  adapter: string;
  /** A software / fallback adapter: the figures are for correctness only. */
  software: boolean;
  /** `"bench"` (GPT-2 small's shape) or `"small"` ({@linkcode SMALL_SHAPE}). */
  shape: "bench" | "small";
  webgpu: DeviceFigures;
  wasm: DeviceFigures;
  /** Largest |logit_webgpu - logit_wasm| over the largest |logit|, at the largest forward size. */
  logitsRelDiff: number;
  /** The study's answers compared between the devices. */
  studyAgreement: StudyAgreement;
  /** Seconds the section took. */
  seconds: number;
}

/** Sizes and repetitions of one shape. */
interface Plan {
  forward: number[];
  cache: number[];
  positions: number;
  reps: [number, number];
  prompt: number;
  newTokens: number;
  genReps: number;
  /** The study's repeated tokens (batch x (1 + 2 seqLen)) and the heads of its circuits. */
  study: { batch: number; seqLen: number; prev: [number, number]; induction: [number, number] };
}

const PLANS: Record<"bench" | "small", Plan> = {
  bench: {
    forward: [1, 30],
    cache: [1, 8],
    positions: 101,
    reps: [5, 3],
    prompt: 21,
    newTokens: 20,
    genReps: 3,
    study: { batch: BENCH_BATCH, seqLen: BENCH_SEQ_LEN, prev: [4, 11], induction: [5, 5] },
  },
  small: {
    forward: [1, 4],
    cache: [1, 4],
    positions: 21,
    reps: [3, 2],
    prompt: 8,
    newTokens: 8,
    genReps: 1,
    study: { batch: 4, seqLen: 10, prev: [0, 1], induction: [1, 2] },
  },
};

async function time(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return (performance.now() - t) / 1000;
}

/** What the study computed on one device, for the comparison across devices. */
interface StudyAnswers {
  secondHalf: number;
  patching: number[][];
  kCompositionTop1: number;
  ovTop1: number;
  /** The circuits' factors and the K-composition scores, concatenated. */
  hostProducts: Float32Array[];
}

/** Times the study's steps on `model` (see {@linkcode StudyFigures}). */
async function measureStudy(
  model: HookedTransformer,
  plan: Plan,
  vocab: number,
  log: (line: string) => void,
): Promise<{ figures: StudyFigures; answers: StudyAnswers }> {
  const { batch, seqLen, prev, induction } = plan.study;
  const rows = benchTokens(0, batch, seqLen).tokens.map((r) => r.map((t) => t % vocab));
  const tokens = { data: Int32Array.from(rows.flat()), shape: [batch, 1 + 2 * seqLen] };
  const device = model.cfg.device;
  log(`  ${device}: the study's steps (${batch} x ${1 + 2 * seqLen})`);
  const lap = async <T>(fn: () => Promise<T> | T): Promise<[T, number]> => {
    const t = performance.now();
    const r = await fn();
    return [r, (performance.now() - t) / 1000];
  };
  const [lp, score] = await lap(() => logProbsAndHeadScores(model, tokens, seqLen));
  const [patching, mlpPatching] = await lap(() =>
    patchingScores(model, [rows[0]], seqLen, { hook: "mlp_out", alignment: "study" })
  );
  const [[kc, ov], circuitProducts] = await lap(() => [
    kCompositionCircuit(model, prev, induction),
    ovCircuit(model, ...induction),
  ]);
  const [[kTop1, ovTop1], top1] = await lap(async () => [
    await top1Accuracy(kc),
    await top1Accuracy(ov),
  ]);
  const [scores, compositionScores] = await lap(() => allCompositionScores(model, "K"));
  return {
    figures: { score, mlpPatching, circuitProducts, top1, compositionScores },
    answers: {
      secondHalf: lp.summary.secondHalf,
      patching,
      kCompositionTop1: kTop1,
      ovTop1,
      hostProducts: [kc.A.data, kc.B.data, ov.A.data, ov.B.data, scores.data],
    },
  };
}

/** The study's answers on WebGPU against wasm's. */
function compareStudies(gpu: StudyAnswers, cpu: StudyAnswers): StudyAgreement {
  let diff = 0, top = 0;
  gpu.patching.forEach((row, l) =>
    row.forEach((v, j) => {
      diff = Math.max(diff, Math.abs(v - cpu.patching[l][j]));
      top = Math.max(top, Math.abs(cpu.patching[l][j]));
    })
  );
  const identical = gpu.hostProducts.every((g, i) => {
    const c = cpu.hostProducts[i];
    return g.length === c.length && g.every((x, j) => Object.is(x, c[j]));
  });
  return {
    secondHalfDiff: Math.abs(gpu.secondHalf - cpu.secondHalf),
    patchingRelDiff: top === 0 ? diff : diff / top,
    kCompositionTop1: [gpu.kCompositionTop1, cpu.kCompositionTop1],
    ovTop1: [gpu.ovTop1, cpu.ovTop1],
    hostProductsIdentical: identical,
  };
}

/**
 * Measures one device's figures on `model` (already on that device). `tokens` holds at least the
 * largest batch's rows, each at least `plan.positions` long.
 */
async function measure(
  model: HookedTransformer,
  tokens: number[][],
  plan: Plan,
  log: (line: string) => void,
): Promise<Omit<DeviceFigures, "study">> {
  const rowsOf = (batch: number) => tokens.slice(0, batch).map((r) => r.slice(0, plan.positions));
  const key = (batch: number) => `${batch}x${plan.positions}`;
  const forward: DeviceFigures["forward"] = {};
  const backward: DeviceFigures["backward"] = {};
  const cacheOverhead: DeviceFigures["cacheOverhead"] = {};
  const device = model.cfg.device;
  for (const [i, batch] of plan.forward.entries()) {
    const rows = rowsOf(batch), reps = plan.reps[Math.min(i, 1)];
    log(`  ${device}: forward and forward + backward ${key(batch)}, ${reps} runs each`);
    const loss = () =>
      model.runWithCache(rows, { returnType: "loss", inclBwdCache: true, namesFilter: [] });
    await model.run(rows); // warm-up: pipelines compiled, buffers sized
    let last = (await loss()).loss!;
    const fwd: number[] = [], both: number[] = [];
    for (let r = 0; r < reps; r++) {
      fwd.push(await time(() => model.run(rows)));
      const t = performance.now();
      last = (await loss()).loss!;
      both.push((performance.now() - t) / 1000);
    }
    forward[key(batch)] = { seconds: median(fwd) };
    backward[key(batch)] = {
      seconds: median(both),
      forwardSeconds: median(fwd),
      loss: last,
    };
  }
  for (const batch of plan.cache) {
    const rows = rowsOf(batch);
    log(`  ${device}: runWithCache (everything) against run, ${key(batch)}`);
    // the cache disposed as each call returns (`using`): a WebAssembly model holds its cache
    const { run, cached } = cacheArms(model, rows);
    const { wall: [p, c] } = await alternate(run, cached, plan.reps[0]);
    cacheOverhead[key(batch)] = { run: p, runWithCache: c, ratio: c / p };
  }
  log(`  ${device}: greedy generation, ${plan.newTokens} tokens after ${plan.prompt}`);
  const generation = await generationSpeed(
    model,
    tokens[0].slice(0, plan.prompt),
    plan.newTokens,
    plan.genReps,
  );
  return { forward, backward, cacheOverhead, generation };
}

/** The adapter WebGPU offers here, or why there is none. */
export async function probeAdapter(): Promise<
  { ok: true; description: string; software: boolean } | { ok: false; reason: string }
> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return { ok: false, reason: "no navigator.gpu in this Deno" };
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) return { ok: false, reason: "navigator.gpu offered no adapter" };
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const a = adapter as GPUAdapter & { isFallbackAdapter?: boolean };
  const description = info.description || info.device || info.vendor || "unknown adapter";
  // Mesa's llvmpipe does not always call itself a fallback adapter: go by its name as well.
  const software = Boolean(a.isFallbackAdapter ?? info.isFallbackAdapter) ||
    /llvmpipe|lavapipe|swiftshader|softpipe/i.test(description);
  return { ok: true, description, software };
}

/** Options of {@linkcode webgpuBench}. */
export interface WebGpuBenchOptions {
  /** The shape to run (default: `"bench"` on a hardware adapter, `"small"` on a software one). */
  shape?: "bench" | "small";
  /** Directory of the benchmark model (written by `writeBenchModel` when missing). */
  benchDir?: string;
  /** The benchmark tokens (default `benchTokens(0)`); taken modulo the vocabulary. */
  tokens?: number[][];
  /**
   * The WebAssembly figures of the same model, sizes and tokens when the caller has them (the
   * main tables of `deno task bench`): used when the section runs the benchmark shape, where wasm
   * is then not measured again, only its logits compared. A smaller shape measures its own. The
   * study's steps are always measured on both devices here.
   */
  wasm?: Omit<DeviceFigures, "study">;
  log?: (line: string) => void;
}

/**
 * Runs the WebGPU section: the model on WebGPU, then (moved with `model.to("wasm")`) on
 * WebAssembly, and the logits of both at the largest forward size compared.
 * @throws {GpuUnavailableError} where WebGPU offers no adapter.
 *
 * @example
 * ```ts ignore
 * import { webgpuBench, webgpuTables } from "./webgpu_bench.ts";
 * console.log(webgpuTables(await webgpuBench({ shape: "small" })));
 * ```
 */
export async function webgpuBench(opts: WebGpuBenchOptions = {}): Promise<WebGpuSection> {
  const started = performance.now();
  const log = opts.log ?? ((line: string) => console.error(line));
  const probe = await probeAdapter();
  if (!probe.ok) {
    throw new GpuUnavailableError(`${probe.reason}: the WebGPU section cannot run here`);
  }
  const shape = opts.shape ?? (probe.software ? "small" : "bench");
  const plan = PLANS[shape];
  log(
    `webgpu: ${probe.description}${probe.software ? " (software: correctness only)" : ""}, ` +
      `shape ${shape}`,
  );
  let model: HookedTransformer;
  const vocab = shape === "bench" ? BENCH_SHAPE.dVocab : SMALL_SHAPE.dVocab;
  if (shape === "bench") {
    const bench = await writeBenchModel(opts.benchDir ?? defaultBenchDir(), 0);
    model = await HookedTransformer.fromPretrained(bench.dir, { device: "webgpu" });
  } else {
    const { config, weights } = syntheticGpt2({ ...SMALL_SHAPE, seed: 0 });
    model = await HookedTransformer.fromBytes(config, weights, {
      device: "webgpu",
      name: "gpt2-scaled-down",
    });
  }
  const tokens = (opts.tokens ?? benchTokens(0).tokens).map((r) => r.map((t) => t % vocab));
  const largest = tokens.slice(0, Math.max(...plan.forward)).map((r) => r.slice(0, plan.positions));
  try {
    const webgpuTables = await measure(model, tokens, plan, log);
    const gpuStudy = await measureStudy(model, plan, vocab, log);
    const webgpu = { ...webgpuTables, study: gpuStudy.figures };
    const gpuLogits = (await model.run(largest)).data;
    await model.to("wasm");
    const wasmTables = shape === "bench" && opts.wasm
      ? opts.wasm
      : await measure(model, tokens, plan, log);
    // The study is always measured on wasm here (the main tables time it on other tokens).
    const cpuStudy = await measureStudy(model, plan, vocab, log);
    const wasm = { ...wasmTables, study: cpuStudy.figures };
    const cpuLogits = (await model.run(largest)).data;
    let diff = 0, top = 0;
    for (let i = 0; i < cpuLogits.length; i++) {
      diff = Math.max(diff, Math.abs(gpuLogits[i] - cpuLogits[i]));
      top = Math.max(top, Math.abs(cpuLogits[i]));
    }
    return {
      adapter: probe.description,
      software: probe.software,
      shape,
      webgpu,
      wasm,
      logitsRelDiff: diff / top,
      studyAgreement: compareStudies(gpuStudy.answers, cpuStudy.answers),
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    model.dispose();
  }
}

function fmt(x: number | undefined, digits = 3): string {
  return x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(digits);
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a && b ? `${(a / b).toFixed(2)}x` : "-";
}

/** The section as five tables (forward, forward + backward, generation, caching, the study's
 * steps), wasm beside WebGPU. */
export function webgpuTables(s: WebGpuSection): string {
  const out: string[] = [];
  const shape = s.shape === "bench"
    ? "GPT-2-small shape"
    : `scaled-down GPT-2 (${SMALL_SHAPE.nLayers} layers, d_model ${SMALL_SHAPE.dModel}, ` +
      `vocabulary ${SMALL_SHAPE.dVocab})`;
  out.push(
    `\nWebGPU on ${s.adapter}${
      s.software ? ": a software adapter, so these figures check correctness only" : ""
    }; ${shape}, seconds are medians`,
  );
  out.push(
    `logits, webgpu against wasm: largest |diff| ${
      s.logitsRelDiff.toExponential(2)
    } of the largest |logit|`,
  );
  out.push("\nForward (full logits)   wasm s  webgpu s  webgpu/wasm");
  for (const [key, g] of Object.entries(s.webgpu.forward)) {
    const w = s.wasm.forward[key]?.seconds;
    out.push(
      `${key.padEnd(20)} ${fmt(w).padStart(9)} ${fmt(g.seconds).padStart(9)} ${
        ratio(g.seconds, w).padStart(12)
      }`,
    );
  }
  out.push(
    "\nForward + backward      wasm fwd  wasm f+b  webgpu fwd  webgpu f+b  f+b/fwd (webgpu)",
  );
  for (const [key, g] of Object.entries(s.webgpu.backward)) {
    const w = s.wasm.backward[key];
    out.push(
      `${key.padEnd(20)} ${fmt(w?.forwardSeconds).padStart(11)} ${fmt(w?.seconds).padStart(9)} ${
        fmt(g.forwardSeconds).padStart(11)
      } ${fmt(g.seconds).padStart(11)} ${ratio(g.seconds, g.forwardSeconds).padStart(17)}`,
    );
  }
  const gw = s.wasm.generation, gg = s.webgpu.generation;
  out.push(
    `\nGeneration (${gg.newTokens} tokens after ${gg.prompt}; tokens/s)  with KV cache  without  ` +
      "same tokens",
  );
  for (const [name, g] of [["wasm", gw], ["webgpu", gg]] as const) {
    out.push(
      `${name.padEnd(44)} ${fmt(g?.cached, 2).padStart(13)} ${fmt(g?.uncached, 2).padStart(8)} ${
        String(g?.sameTokens ?? "-").padStart(12)
      }`,
    );
  }
  out.push(
    "\nCaching every activation   wasm run  wasm cache  ratio  webgpu run  webgpu cache  ratio",
  );
  for (const [key, g] of Object.entries(s.webgpu.cacheOverhead)) {
    const w = s.wasm.cacheOverhead[key];
    out.push(
      `${key.padEnd(24)} ${fmt(w?.run).padStart(10)} ${fmt(w?.runWithCache).padStart(11)} ${
        ratio(w?.runWithCache, w?.run).padStart(6)
      } ${fmt(g.run).padStart(11)} ${fmt(g.runWithCache).padStart(13)} ${
        ratio(g.runWithCache, g.run).padStart(6)
      }`,
    );
  }
  const st = PLANS[s.shape].study;
  out.push(
    `\nStudy steps (one run each), ${st.batch} x ${1 + 2 * st.seqLen}` +
      "     wasm s  webgpu s  webgpu/wasm",
  );
  for (const step of Object.keys(s.webgpu.study) as (keyof StudyFigures)[]) {
    const w = s.wasm.study[step], g = s.webgpu.study[step];
    out.push(
      `${step.padEnd(35)} ${fmt(w).padStart(9)} ${fmt(g).padStart(9)} ${ratio(g, w).padStart(12)}`,
    );
  }
  const a = s.studyAgreement;
  out.push(
    `study, webgpu against wasm: mean log-prob of the repeat differs by ${
      a.secondHalfDiff.toExponential(2)
    }; patching scores by ${a.patchingRelDiff.toExponential(2)} of the largest; ` +
      `K-composition top-1 ${a.kCompositionTop1.join(" / ")}, OV top-1 ${a.ovTop1.join(" / ")}; ` +
      `host products ${a.hostProductsIdentical ? "bit-identical" : "DIFFER"}`,
  );
  return out.join("\n");
}

if (import.meta.main) {
  const args = [...Deno.args];
  const i = args.indexOf("--shape");
  const shape = i >= 0 ? args[i + 1] : undefined;
  if (shape !== undefined && shape !== "bench" && shape !== "small") {
    console.error(`--shape takes "bench" or "small", not ${shape}`);
    Deno.exit(2);
  }
  const section = await webgpuBench({ shape });
  if (args.includes("--json")) console.log(JSON.stringify(section));
  else console.log(webgpuTables(section));
}
