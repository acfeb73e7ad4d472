/**
 * `deno task bench`: this library beside PyTorch (CPU, 2 threads), TensorFlow.js
 * (`@tensorflow/tfjs-backend-wasm`) and, for the forward pass, ONNX Runtime (`onnxruntime-node`
 * and `onnxruntime-web`) on the same GPT-2-small-shape weights and tokens, in one run on one
 * machine. Prints tables (matmul GFLOP/s, forward passes, generation, forward + backward passes,
 * the whole study) with ratios, and writes every figure to `out/bench/results.json`.
 *
 *   deno task bench                 everything (about 10 minutes on 2 cores)
 *   deno task bench --no-peers      this library only
 *   deno task bench --no-study      skip the whole-study comparison
 *   deno task bench --no-patching   skip the activation-patching comparison
 *   deno task bench --no-families   skip the other families' forward (Pythia-160M and
 *                                   SmolLM2-135M shapes, beside GPT-2 small's)
 *   deno task bench --no-sae        skip the sparse autoencoder section
 *   deno task bench --only-sae      only the sparse autoencoder section
 *   deno task bench --device webgpu also WebGPU columns beside wasm: forward, forward + backward,
 *                                   generation, caching every activation (bench/webgpu_bench.ts;
 *                                   on a software adapter a scaled-down GPT-2, correctness only)
 *   deno task bench --only-webgpu   only that WebGPU section
 *
 * A peer that is not installed is reported as skipped (see bench/README.md for installing them).
 * @module
 */
import { HookedTransformer } from "../mod.ts";
import { logProbsAndHeadScores } from "../analysis/log_probs.ts";
import { patchingScores } from "../analysis/patching.ts";
import { attributionScores } from "../analysis/attribution.ts";
import { kCompositionCircuit } from "../analysis/circuits.ts";
import { top1Accuracy } from "../analysis/factored_matrix.ts";
import { Kernels } from "../backend/wasm/kernels.ts";
import { BENCH_SEQ_LEN, BENCH_SHAPE, defaultBenchDir, writeBenchModel } from "./model_file.ts";
import {
  type BackwardResult,
  forwardFlops,
  type ForwardResult,
  MATMUL_SHAPES,
  type MatmulResult,
  type PeerOutcome,
  runTfjs,
  runTorch,
  type StudyResult,
} from "./peers/run_peers.ts";
import { logitsChecksum, median, readBenchTokens } from "./peers/common.ts";
import { alternate, cacheArms } from "./cache_arms.ts";
import { generationSpeed } from "./generate_bench.ts";
import { PATCH_SEQ, patchingBench } from "./patching_bench.ts";
import { benchFamilies, familiesTable } from "./families_bench.ts";
import { type OrtForwardResult, runOrt } from "./peers/run_ort.ts";
import { saeBench, saeTable } from "./sae_bench.ts";
import { webgpuBench, webgpuTables } from "./webgpu_bench.ts";

const args = new Set(Deno.args);
const withPeers = !args.has("--no-peers");
const withStudy = !args.has("--no-study");
const withPatching = !args.has("--no-patching");
const withFamilies = !args.has("--no-families");
const withSae = !args.has("--no-sae");
const cores = navigator.hardwareConcurrency;
const deviceAt = Deno.args.indexOf("--device");
const deviceArg = Deno.args.find((a) => a.startsWith("--device="))?.slice(9) ??
  (deviceAt >= 0 ? Deno.args[deviceAt + 1] ?? "" : undefined);
if (deviceArg !== undefined && deviceArg !== "webgpu" && deviceArg !== "wasm") {
  console.error(`--device takes "webgpu" (WebGPU beside wasm) or "wasm", not "${deviceArg}"`);
  Deno.exit(2);
}
const withWebgpu = deviceArg === "webgpu";

function log(line: string) {
  console.error(line);
}

function timeIt(fn: () => void, minMs = 1500, minReps = 3): number {
  fn(); // warm-up: tier-up, page faults
  const times: number[] = [];
  const t0 = performance.now();
  while (performance.now() - t0 < minMs || times.length < minReps) {
    const t = performance.now();
    fn();
    times.push(performance.now() - t);
  }
  return median(times) / 1000;
}

/** Our matmul on MATMUL_SHAPES for 1 thread and all cores: GFLOP/s by shape. */
async function ourMatmul(): Promise<Record<string, Record<string, number>>> {
  const out: Record<string, Record<string, number>> = {};
  for (const threads of [1, cores]) {
    const kn = await Kernels.load({ threads });
    for (const [m, k, n] of MATMUL_SHAPES) {
      const mark = kn.mark();
      const a = kn.alloc(m * k), c = kn.alloc(m * n);
      const data = new Float32Array(k * n);
      for (let i = 0; i < data.length; i++) data[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
      const packed = kn.uploadPacked(data, k, n);
      kn.view(a, m * k).fill(0.25);
      const s = timeIt(() => kn.matmul(a, packed, c, m, k, n));
      (out[`${m}x${k}x${n}`] ??= {})[`threads${threads}`] = 2 * m * k * n / s / 1e9;
      // The backward's product with the same weights: dX [m, k] = dY [m, n] W^T.
      const dy = kn.alloc(m * n), dx = kn.alloc(m * k);
      kn.view(dy, m * n).fill(0.25);
      const sT = timeIt(() => kn.matmulBT(dy, packed, dx, m, k, n));
      out[`${m}x${k}x${n}`][`threads${threads}Transposed`] = 2 * m * k * n / sT / 1e9;
      kn.release(mark);
    }
    kn.close();
  }
  return out;
}

/** Our forward at 1 x 101 and 30 x 101 (median seconds, GFLOP/s, checksum). */
async function ourForward(model: HookedTransformer, tokens: number[][]) {
  const runs: Record<string, unknown> = {};
  for (const batch of [1, 30]) {
    const rows = tokens.slice(0, batch);
    const seq = rows[0].length;
    let logits = await model.run(rows);
    const times: number[] = [];
    for (let i = 0; i < (batch === 1 ? 5 : 3); i++) {
      const t = performance.now();
      logits = await model.run(rows);
      times.push((performance.now() - t) / 1000);
    }
    const V = model.cfg.dVocab;
    const checksum = await logitsChecksum(
      (b) => logits.data.subarray(b * seq * V, (b + 1) * seq * V),
      batch,
      seq,
      V,
    );
    const seconds = median(times);
    const flops = forwardFlops(BENCH_SHAPE, batch, seq);
    runs[`${batch}x${seq}`] = {
      batch,
      seq,
      seconds,
      allSeconds: times,
      flops,
      gflops: flops / seconds / 1e9,
      checksum,
    };
  }
  return runs as ForwardResult["runs"];
}

/**
 * The cache figure's batches, each with the pairs its alternations take: the 1 x 101 calls (a
 * third of a second) move by about 5% from call to call on a quiet machine, more than the copy
 * measured, so they get more pairs.
 */
const CACHE_REPS: [batch: number, pairs: number][] = [[1, 21], [8, 7]];

/**
 * What caching every activation costs: `runWithCache` with no filter, the cache disposed (`using`)
 * once the call returns, against a plain `run` of the same rows (full logits both), alternating so
 * both see the same load, at 1 x 101 and 8 x 101; and the same call with every activation then
 * read to the host (what a cache kept for good costs in the end). Median wall seconds, and ratios
 * of wall and of CPU seconds (the steadier figure on a shared machine).
 */
async function ourCacheOverhead(model: HookedTransformer, tokens: number[][]) {
  const runs: Record<string, {
    run: number;
    runWithCache: number;
    ratio: number;
    cpuRatio: number;
    readAll: number;
    readAllRatio: number;
    readAllCpuRatio: number;
  }> = {};
  for (const [batch, pairs] of CACHE_REPS) {
    const rows = tokens.slice(0, batch);
    const { run, cached, readAll } = cacheArms(model, rows);
    // each against the run in its own alternation (one's garbage stays out of the other's calls)
    const c = await alternate(run, cached, pairs);
    const a = await alternate(run, readAll, pairs);
    runs[`${batch}x${rows[0].length}`] = {
      run: c.wall[0],
      runWithCache: c.wall[1],
      ratio: c.wall[1] / c.wall[0],
      cpuRatio: c.cpu[1] / c.cpu[0],
      readAll: a.wall[1],
      readAllRatio: a.wall[1] / a.wall[0],
      readAllCpuRatio: a.cpu[1] / a.cpu[0],
    };
  }
  return runs;
}

/**
 * Our forward + backward of the loss at 1 x 101 and 30 x 101 (median seconds): every activation's
 * gradient computed, none cached (PyTorch's `loss.backward()` to the embeddings). Each timed
 * forward + backward follows a timed plain forward (full logits) of the same rows, so their ratio
 * compares runs under the same load.
 */
async function ourBackward(model: HookedTransformer, tokens: number[][]) {
  const runs: Record<
    string,
    { batch: number; seq: number; seconds: number; forwardSeconds: number; loss: number }
  > = {};
  for (const batch of [1, 30]) {
    const rows = tokens.slice(0, batch);
    const run = () =>
      model.runWithCache(rows, { returnType: "loss", inclBwdCache: true, namesFilter: [] });
    let loss = (await run()).loss!;
    const fwd: number[] = [], both: number[] = [];
    for (let i = 0; i < (batch === 1 ? 5 : 3); i++) {
      let t = performance.now();
      await model.run(rows);
      fwd.push((performance.now() - t) / 1000);
      t = performance.now();
      loss = (await run()).loss!;
      both.push((performance.now() - t) / 1000);
    }
    runs[`${batch}x${rows[0].length}`] = {
      batch,
      seq: rows[0].length,
      seconds: median(both),
      forwardSeconds: median(fwd),
      loss,
    };
  }
  return runs;
}

/** The study's steps on our side, timed like the PyTorch harness's `study` mode. */
async function ourStudy(model: HookedTransformer, tokens: number[][]) {
  const steps: Record<string, number> = {};
  const lap = async (name: string, fn: () => Promise<unknown>) => {
    const t = performance.now();
    const r = await fn();
    steps[name] = (performance.now() - t) / 1000;
    log(`  ours: ${name} ${steps[name].toFixed(1)} s`);
    return r;
  };
  const batch = { data: Int32Array.from(tokens.flat()), shape: [tokens.length, tokens[0].length] };
  const { summary } = await lap(
    "score30x101",
    () => logProbsAndHeadScores(model, batch, BENCH_SEQ_LEN),
  ) as Awaited<ReturnType<typeof logProbsAndHeadScores>>;
  await lap(
    "mlpPatching",
    () =>
      patchingScores(model, [tokens[0]], BENCH_SEQ_LEN, { hook: "mlp_out", alignment: "study" }),
  );
  // The same sweep estimated by attribution patching (not part of the study's total).
  await lap(
    "mlpAttribution",
    () =>
      attributionScores(model, [tokens[0]], BENCH_SEQ_LEN, { hook: "mlp_out", alignment: "study" }),
  );
  const top1 = await lap(
    "kComposition",
    () => top1Accuracy(kCompositionCircuit(model, [4, 11], [5, 5])),
  ) as number;
  // The same top-1 by the dense product (the method before bounds; not part of the total).
  const dense = await lap(
    "kCompositionDense",
    () => top1Accuracy(kCompositionCircuit(model, [4, 11], [5, 5]), { method: "dense" }),
  ) as number;
  if (dense !== top1) throw new Error(`top-1 by bounds ${top1}, by the dense product ${dense}`);
  const studySeconds = steps.score30x101 + steps.mlpPatching + steps.kComposition;
  return { steps, studySeconds, secondHalf: summary.secondHalf, top1 };
}

function fmt(x: number | undefined, digits = 1): string {
  return x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(digits);
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a && b ? `${(a / b).toFixed(2)}x` : "-";
}

function peerNote<T>(name: string, p: PeerOutcome<T> | null): T | undefined {
  if (!p) return undefined;
  if (!p.ok) {
    log(`${name}: ${p.skipped}${p.detail ? `\n${p.detail}` : ""}`);
    return undefined;
  }
  return p.result;
}

if (import.meta.main && args.has("--only-webgpu")) {
  // The WebGPU section alone (bench/webgpu_bench.ts), wasm measured beside it.
  log(`machine: ${cores} cores, Deno ${Deno.version.deno}, V8 ${Deno.version.v8}`);
  console.log(webgpuTables(await webgpuBench({ log })));
} else if (import.meta.main && args.has("--only-sae")) {
  // The sparse autoencoder section alone (bench/sae_bench.ts).
  log(`machine: ${cores} cores, Deno ${Deno.version.deno}, V8 ${Deno.version.v8}`);
  const bench = await writeBenchModel(defaultBenchDir(), 0);
  const spec = await readBenchTokens(bench.tokensPath);
  const model = await HookedTransformer.fromPretrained(bench.dir);
  const sae = await saeBench(model, spec.tokens, log);
  console.log(saeTable(sae));
  console.log(JSON.stringify({ sae }));
  model.dispose();
} else if (import.meta.main) {
  const started = performance.now();
  log(`machine: ${cores} cores, Deno ${Deno.version.deno}, V8 ${Deno.version.v8}`);
  const bench = await writeBenchModel(defaultBenchDir(), 0);
  log(`benchmark model: ${bench.dir} (${bench.reused ? "reused" : "written"})`);
  const spec = await readBenchTokens(bench.tokensPath);

  log("matmul: this library ...");
  const matmul = await ourMatmul();
  const torchGemm = withPeers ? peerNote("pytorch sgemm", await runTorch("sgemm")) : undefined;
  const tfjsGemm = withPeers
    ? peerNote("tfjs matmul", await runTfjs("matmul", undefined, undefined, { threads: cores }))
    : undefined;

  log("forward: this library ...");
  const model = await HookedTransformer.fromPretrained(bench.dir);
  const forward = await ourForward(model, spec.tokens);
  log("caching every activation: this library ...");
  const cacheOverhead = await ourCacheOverhead(model, spec.tokens);
  const torchFwd = withPeers
    ? peerNote("pytorch forward", await runTorch("forward", bench.dir, bench.tokensPath))
    : undefined;
  const tfjsFwd = withPeers
    ? peerNote(
      "tfjs forward",
      await runTfjs("forward", bench.dir, bench.tokensPath, { threads: cores }),
    )
    : undefined;
  const ortNodeFwd = withPeers
    ? peerNote("onnxruntime-node forward", await runOrt("node", bench, { threads: cores }))
    : undefined;
  const ortWebFwd = withPeers
    ? peerNote("onnxruntime-web forward", await runOrt("web", bench, { threads: cores }))
    : undefined;

  log("generation: this library ...");
  const generation = await generationSpeed(model, spec.tokens[0].slice(0, 21), 20);

  log("forward + backward: this library ...");
  const backward = await ourBackward(model, spec.tokens);
  const torchBwd = withPeers
    ? peerNote("pytorch backward", await runTorch("backward", bench.dir, bench.tokensPath))
    : undefined;

  let study: Awaited<ReturnType<typeof ourStudy>> | undefined;
  let torchStudy: StudyResult | undefined;
  if (withStudy) {
    log("study: this library ...");
    study = await ourStudy(model, spec.tokens);
    if (withPeers) {
      torchStudy = peerNote("pytorch study", await runTorch("study", bench.dir, bench.tokensPath));
    }
  }
  let patching: Awaited<ReturnType<typeof patchingBench>> | undefined;
  if (withPatching) {
    log("activation patching: this library and the naive runWithHooks loop ...");
    patching = await patchingBench(model, spec.tokens[0]);
  }
  let sae: Awaited<ReturnType<typeof saeBench>> | undefined;
  if (withSae) sae = await saeBench(model, spec.tokens, log);
  model.dispose();
  let webgpu: Awaited<ReturnType<typeof webgpuBench>> | undefined;
  if (withWebgpu) {
    log("webgpu: this library on WebGPU beside wasm ...");
    // On a hardware adapter the section runs the benchmark model at the main tables' sizes, so
    // the wasm figures above are its wasm columns; a software adapter runs a smaller shape and
    // measures wasm on it.
    webgpu = await webgpuBench({
      benchDir: bench.dir,
      tokens: spec.tokens,
      log,
      wasm: { forward, backward, cacheOverhead, generation },
    });
  }
  const families = withFamilies ? await benchFamilies(spec.tokens, log) : undefined;

  // ---- Tables ----
  const gemmOf = (r: MatmulResult | undefined, shape: string, key: string) => {
    const s = r?.shapes.find((x) => `${x.m}x${x.k}x${x.n}` === shape);
    const t = s?.[key];
    return typeof t === "object" ? t.gflops : undefined;
  };
  console.log("\nMatmul GFLOP/s (2mkn / median time)");
  console.log(
    "shape              ours 1T  ours " + `${cores}T`.padEnd(4) +
      " tfjs   torch 1T torch 2T  ours/tfjs  ours/torch2T",
  );
  for (const [m, k, n] of MATMUL_SHAPES) {
    const key = `${m}x${k}x${n}`;
    const o1 = matmul[key].threads1, oN = matmul[key][`threads${cores}`];
    const tf = gemmOf(tfjsGemm, key, "tfjs");
    const t1 = gemmOf(torchGemm, key, "torch1"), t2 = gemmOf(torchGemm, key, "torch2");
    console.log(
      `${key.padEnd(18)} ${fmt(o1).padStart(7)} ${fmt(oN).padStart(8)} ${fmt(tf).padStart(6)} ` +
        `${fmt(t1).padStart(8)} ${fmt(t2).padStart(8)} ${ratio(oN, tf).padStart(10)} ${
          ratio(oN, t2).padStart(13)
        }`,
    );
  }

  console.log(
    `\nBackward products dX = dY W^T, read from the forward's packed W (GFLOP/s, ${cores} threads)`,
  );
  console.log("shape              forward  transposed  transposed/forward");
  for (const [m, k, n] of MATMUL_SHAPES) {
    const r = matmul[`${m}x${k}x${n}`];
    const f = r[`threads${cores}`], t = r[`threads${cores}Transposed`];
    console.log(
      `${`${m}x${k}x${n}`.padEnd(18)} ${fmt(f).padStart(7)} ${fmt(t).padStart(11)} ${
        ratio(t, f).padStart(19)
      }`,
    );
  }

  console.log(
    "\nForward pass, GPT-2-small shape (median seconds, effective GFLOP/s, ours / theirs in time)",
  );
  const head = ["1x101", "30x101"].map((key) =>
    `${`${key} s`.padStart(9)} ${"GFLOP/s".padStart(7)} ${"ours/it".padStart(7)}`
  );
  console.log(`${"".padEnd(24)} ${head.join("  ")}`);
  const forwardRows: [string, ForwardResult["runs"] | undefined][] = [
    [`ours (${cores}T)`, forward],
    ["pytorch (2T)", torchFwd?.runs],
    [`tfjs-wasm (${tfjsFwd?.threads ?? cores}T)`, tfjsFwd?.runs],
    [`onnxruntime-node (${cores}T)`, ortNodeFwd?.runs],
    [`onnxruntime-web (${ortWebFwd?.threads ?? cores}T)`, ortWebFwd?.runs],
  ];
  for (const [name, runs] of forwardRows) {
    const cells = ["1x101", "30x101"].map((key) => {
      const r = runs?.[key];
      return `${fmt(r?.seconds, 3).padStart(9)} ${fmt(r?.gflops, 0).padStart(7)} ${
        ratio(forward[key].seconds, r?.seconds).padStart(7)
      }`;
    });
    console.log(`${name.padEnd(24)} ${cells.join("  ")}`);
  }
  const agree = (a?: { checksum: { last5: number[] } }, b?: { checksum: { last5: number[] } }) =>
    a && b
      ? Math.max(...a.checksum.last5.map((v, i) => Math.abs(v - b.checksum.last5[i])))
      : undefined;
  const peersAgree = forwardRows.slice(1).map(([name, runs]) =>
    `${name.split(" ")[0]} ${fmt(agree(forward["30x101"], runs?.["30x101"]), 5)}`
  );
  console.log(`logits agree (max |diff| of centred logits[0,-1,:5]): ${peersAgree.join(", ")}`);
  const exportCheck = (r?: OrtForwardResult) =>
    r ? r.referenceCheck["30x101"].maxAbsDiff.toExponential(1) : "-";
  console.log(
    "ONNX export vs the PyTorch harness (max |diff| of logits, rows 0 and 29 of 30x101): " +
      `node ${exportCheck(ortNodeFwd)}, web ${exportCheck(ortWebFwd)}`,
  );

  console.log(
    `\nGreedy generation, GPT-2-small shape (${generation.prompt}-token prompt, ` +
      `${generation.newTokens} new tokens; tokens per second)`,
  );
  console.log("with KV cache   without   speed-up   same tokens");
  console.log(
    `${fmt(generation.cached).padStart(13)} ${fmt(generation.uncached).padStart(9)} ${
      ratio(generation.cached, generation.uncached).padStart(10)
    } ${String(generation.sameTokens).padStart(13)}`,
  );
  if (families) {
    const gpt2 = Object.fromEntries(
      Object.entries(forward).map(([k, r]) => [k, (r.batch * r.seq) / r.seconds]),
    );
    console.log("\nForward pass by family, random weights (median seconds; full logits)");
    console.log(familiesTable(families, gpt2));
  }
  if (sae) console.log(saeTable(sae));
  if (webgpu) console.log(webgpuTables(webgpu));

  console.log(
    "\nCaching every activation (runWithCache, no filter, then disposed) against a plain run, " +
      "and with every activation read to the host (median wall seconds; ratios of wall and CPU time)",
  );
  console.log("tokens        run  runWithCache  wall   CPU  read all  wall   CPU");
  for (const [key, r] of Object.entries(cacheOverhead)) {
    const x = (v: number) => `${v.toFixed(2)}x`.padStart(6);
    console.log(
      `${key.padEnd(8)} ${fmt(r.run, 3).padStart(8)} ${fmt(r.runWithCache, 3).padStart(13)}${
        x(r.ratio)
      }${x(r.cpuRatio)} ${fmt(r.readAll, 3).padStart(9)}${x(r.readAllRatio)}${
        x(r.readAllCpuRatio)
      }`,
    );
  }

  console.log(
    "\nForward + backward of the loss, GPT-2-small shape (seconds, median; every activation's " +
      "gradient)",
  );
  console.log("tokens   ours fwd  ours fwd+bwd  fwd+bwd/fwd  pytorch fwd+bwd  ours vs pytorch");
  for (const key of ["1x101", "30x101"]) {
    const f = backward[key].forwardSeconds, b = backward[key].seconds;
    const p = (torchBwd as BackwardResult | undefined)?.runs[key]?.seconds;
    console.log(
      `${key.padEnd(8)} ${fmt(f, 3).padStart(8)} ${fmt(b, 3).padStart(13)} ${
        ratio(b, f).padStart(12)
      } ${fmt(p, 3).padStart(16)} ${ratio(b, p).padStart(16)}`,
    );
  }

  if (study) {
    const ex = study.steps.mlpPatching, at = study.steps.mlpAttribution;
    console.log(
      `\nMLP sweep (${model.cfg.nLayers} layers x ${BENCH_SEQ_LEN} positions): exact patching ` +
        `${fmt(ex)} s, attribution patching ${fmt(at, 2)} s (${ratio(ex, at)} less time); ` +
        `PyTorch exact (TransformerLens way) ${fmt(torchStudy?.steps.mlpPatching)} s`,
    );
    console.log(
      `K-composition top-1 by the dense product ${fmt(study.steps.kCompositionDense)} s, by ` +
        `bounds (the study's) ${fmt(study.steps.kComposition)} s: ` +
        `${ratio(study.steps.kCompositionDense, study.steps.kComposition)} less time`,
    );
    console.log("\nWhole study, GPT-2-small shape (seconds; PyTorch done the TransformerLens way)");
    console.log("step                       ours   pytorch   speed-up");
    for (const step of ["score30x101", "mlpPatching", "kComposition"]) {
      const p = torchStudy?.steps[step];
      console.log(
        `${step.padEnd(24)} ${fmt(study.steps[step]).padStart(6)} ${fmt(p).padStart(9)} ${
          ratio(p, study.steps[step]).padStart(10)
        }`,
      );
    }
    console.log(
      `${"total".padEnd(24)} ${fmt(study.studySeconds).padStart(6)} ${
        fmt(torchStudy?.studySeconds).padStart(9)
      } ` +
        `${ratio(torchStudy?.studySeconds, study.studySeconds).padStart(10)}`,
    );
  }

  if (patching) {
    console.log(
      `\nActivation patching, GPT-2-small shape, 1 x ${PATCH_SEQ} tokens (seconds; naive = one ` +
        `runWithHooks per patch, timed on a sample)`,
    );
    console.log(
      "grid                        runs  ours (all logits)  ours (last pos)    naive  speed-up  " +
        "max |diff|",
    );
    for (const [name, r] of Object.entries(patching)) {
      const all = r.ours === null ? "-" : `${fmt(r.ours)} ${ratio(r.naiveEstimate, r.ours)}`;
      console.log(
        `${name.padEnd(26)} ${String(r.runs).padStart(5)} ${all.padStart(18)} ` +
          `${fmt(r.oursLastPosition).padStart(16)} ${fmt(r.naiveEstimate).padStart(8)} ` +
          `${ratio(r.naiveEstimate, r.oursLastPosition).padStart(9)} ` +
          `${r.maxDiff.toExponential(1).padStart(11)}`,
      );
    }
    console.log("speed-up: naive / ours (last pos); the all-logits column shows its own ratio");
  }

  const results = {
    machine: { cores, deno: Deno.version.deno, v8: Deno.version.v8 },
    matmul,
    forward,
    cacheOverhead,
    generation,
    backward,
    study,
    patching,
    families,
    sae,
    webgpu,
    peers: { torchGemm, tfjsGemm, torchFwd, tfjsFwd, ortNodeFwd, ortWebFwd, torchStudy, torchBwd },
    seconds: (performance.now() - started) / 1000,
  };
  await Deno.mkdir("out/bench", { recursive: true });
  const tmp = "out/bench/results.json.tmp";
  await Deno.writeTextFile(tmp, JSON.stringify(results, null, 1));
  await Deno.rename(tmp, "out/bench/results.json");
  log(`\nwrote out/bench/results.json (${results.seconds.toFixed(0)} s in all)`);
}
