/**
 * ONNX Runtime peer for `deno task bench`: the PyTorch harness's GPT-2, exported to ONNX
 * (`run_ort.ts` makes the export), run by `onnxruntime-node` (native, MLAS) or `onnxruntime-web`
 * (WebAssembly SIMD, threaded), the two runtimes behind transformers.js.
 *
 *   deno run --allow-read [--allow-ffi] bench/peers/ort_gpt2.ts forward \
 *     --runtime node|web --model DIR --tokens FILE [--threads 2] [--runs-small 5] [--runs-large 3]
 *
 * DIR is the bench model's directory, holding `config.json` and the export `model.onnx` with its
 * stamp `model.onnx.json` (both written by `run_ort.ts`). The stamp names the PyTorch harness's
 * own logits of the first and last token rows; every run's logits are checked against them
 * (`referenceCheck`). `--allow-ffi` is needed by `onnxruntime-node` only (a Node-API addon).
 *
 * Prints one JSON object on stdout (an {@link OrtForwardResult}); progress goes to stderr. Exits
 * with 2 and the usage line on a bad command line, with 3 and a JSON `error` when the export is
 * missing or the runtime cannot load or run it.
 * @module
 */
import {
  forwardFlops,
  type ForwardResult,
  logitsChecksum,
  median,
  readBenchTokens,
  round,
} from "./common.ts";

/** The export's file name in the bench model's directory; its stamp adds `.json`. */
export const ONNX_FILE = "model.onnx";

/** Which ONNX Runtime package runs the model. */
export type OrtRuntime = "node" | "web";

/** The stamp `run_ort.ts` writes beside the export (`model.onnx.json`). */
export interface OnnxExportStamp {
  /** Bumped when the export changes, so cached exports are remade. */
  format: number;
  /** Size and modification time of each bench file the export was made from. */
  source: Record<string, { size: number; mtimeMs: number }>;
  torch: string;
  opset: number;
  /** True: weights processed as TransformerLens does (the PyTorch harness's default). */
  processed: boolean;
  /** Size of the `.onnx` file in bytes. */
  bytes: number;
  exportSeconds: number;
  /**
   * The harness's logits [rows.length, seq, vocab] of token rows `rows`, each run alone, as
   * little-endian float32 in `file` (a name in the same directory).
   */
  reference: { file: string; rows: number[]; shape: number[]; dtype: "float32" };
}

/** What `forward` prints: a {@link ForwardResult} plus the check against PyTorch's logits. */
export interface OrtForwardResult extends ForwardResult {
  /** Per run ("1x101", "30x101"): max |logits - the PyTorch harness's| over the reference rows. */
  referenceCheck: Record<string, { rows: number[]; maxAbsDiff: number }>;
}

const log = (msg: string) => console.error(msg);

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

/** The value of an optional count flag (threads, runs): a positive integer. */
function countFlag(args: string[], name: string, fallback: number): number {
  const text = flag(args, name);
  const n = text === undefined ? fallback : Number(text);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`${name} must be a positive integer, got ${JSON.stringify(text)}`);
  }
  return n;
}

/** The pieces of the ONNX Runtime JS API the harness uses (the same in both packages). */
type Ort = typeof import("onnxruntime-node");
type Session = Awaited<ReturnType<Ort["InferenceSession"]["create"]>>;

interface Loaded {
  ort: Ort;
  session: Session;
  info: Record<string, unknown>;
}

/**
 * Loads the runtime and creates the session with default options (graph optimisation "all", as
 * transformers.js leaves it) and `threads` intra-op threads.
 */
async function load(runtime: OrtRuntime, onnx: string, threads: number): Promise<Loaded> {
  if (runtime === "node") {
    const ort = await import("onnxruntime-node");
    const session = await ort.InferenceSession.create(onnx, { intraOpNumThreads: threads });
    return { ort, session, info: { versions: ort.env.versions, threads } };
  }
  const ort = await import("onnxruntime-web");
  ort.env.wasm.numThreads = threads;
  // The web build takes the model as bytes (what a page would fetch); it reads its
  // ort-wasm-simd-threaded.wasm next to its own module in Deno's npm cache.
  const session = await ort.InferenceSession.create(await Deno.readFile(onnx));
  // ORT falls back to one thread (and sets numThreads to 1) when threads are not available.
  const actual = ort.env.wasm.numThreads ?? 1;
  return {
    ort: ort as unknown as Ort,
    session: session as unknown as Session,
    info: {
      versions: ort.env.versions,
      binary: "ort-wasm-simd-threaded.wasm",
      threads: actual,
      threadsNote: actual === threads ? undefined : `asked for ${threads} threads, got ${actual}`,
    },
  };
}

/** Largest |a - b| over two equally long arrays. */
function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** The command line of `forward`. */
interface ForwardArgs {
  runtime: OrtRuntime;
  dir: string;
  tokensFile: string;
  threads: number;
  runsSmall: number;
  runsLarge: number;
}

/** Reads the command line; throws a message for the usage line when it is wrong. */
function parseArgs(args: string[]): ForwardArgs {
  const runtime = flag(args, "--runtime");
  const dir = flag(args, "--model"), tokensFile = flag(args, "--tokens");
  if (args[0] !== "forward") throw new Error(`unknown mode ${JSON.stringify(args[0])}`);
  if (runtime !== "node" && runtime !== "web") throw new Error("--runtime must be node or web");
  if (!dir || !tokensFile) throw new Error("forward needs --model DIR --tokens FILE");
  return {
    runtime,
    dir,
    tokensFile,
    threads: countFlag(args, "--threads", 2),
    runsSmall: countFlag(args, "--runs-small", 5),
    runsLarge: countFlag(args, "--runs-large", 3),
  };
}

async function modeForward(
  { runtime, dir, tokensFile, threads, runsSmall, runsLarge }: ForwardArgs,
): Promise<OrtForwardResult> {
  const onnx = `${dir}/${ONNX_FILE}`;
  const hf = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  let stamp: OnnxExportStamp;
  try {
    stamp = JSON.parse(await Deno.readTextFile(`${onnx}.json`));
  } catch (e) {
    throw new Error(
      `no complete ONNX export in ${dir} (${(e as Error).message}): make it with ` +
        "`deno run -A bench/peers/run_ort.ts`",
    );
  }
  const ref = stamp.reference;
  const refData = new Float32Array((await Deno.readFile(`${dir}/${ref.file}`)).buffer);
  const [, refSeq, vocab] = ref.shape;
  const spec = await readBenchTokens(tokensFile);

  let t0 = performance.now();
  const { ort, session, info } = await load(runtime, onnx, threads);
  const loadSeconds = (performance.now() - t0) / 1000;
  log(`onnxruntime-${runtime}: session ready in ${loadSeconds.toFixed(1)} s`);
  const result: OrtForwardResult = {
    peer: `onnxruntime-${runtime}`,
    mode: "forward",
    threads,
    ...info,
    opset: stamp.opset,
    processed: stamp.processed,
    loadSeconds: round(loadSeconds, 3),
    runs: {},
    referenceCheck: {},
  };
  const flopShape = {
    nLayers: hf.n_layer,
    nHeads: hf.n_head,
    dModel: hf.n_embd,
    dMlp: hf.n_inner ?? 4 * hf.n_embd,
    dVocab: hf.vocab_size,
  };
  for (const [batch, runs] of [[1, runsSmall], [spec.tokens.length, runsLarge]]) {
    const rows = spec.tokens.slice(0, batch);
    const T = rows[0].length;
    if (T !== refSeq) throw new Error(`${tokensFile}: ${T} positions, the reference has ${refSeq}`);
    const input = new ort.Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [batch, T]);
    const once = async () => (await session.run({ input_ids: input })).logits;
    log(`onnxruntime-${runtime} forward ${batch}x${T}: ${runs} runs`);
    const warmUps = batch === 1 ? 2 : 1;
    for (let w = 1; w < warmUps; w++) (await once()).dispose();
    let logits = await once(); // the last warm-up; each timed run replaces it
    const times: number[] = [];
    for (let r = 0; r < runs; r++) {
      logits.dispose();
      t0 = performance.now();
      logits = await once();
      times.push((performance.now() - t0) / 1000);
    }
    const data = logits.data as Float32Array;
    const rowSize = T * vocab;
    const row = (b: number) => data.subarray(b * rowSize, (b + 1) * rowSize);
    const checksum = await logitsChecksum(row, batch, T, vocab);
    // The reference rows that this batch holds: row 0 always, the last row at full batch.
    const checked = ref.rows.map((r, i) => [r, i]).filter(([r]) => r < batch);
    const diff = Math.max(
      ...checked.map(([r, i]) =>
        maxAbsDiff(row(r), refData.subarray(i * rowSize, (i + 1) * rowSize))
      ),
    );
    logits.dispose();
    input.dispose();
    const seconds = median(times);
    const flops = forwardFlops(flopShape, batch, T);
    const key = `${batch}x${T}`;
    result.runs[key] = {
      batch,
      seq: T,
      seconds: round(seconds, 4),
      allSeconds: times.map((s) => round(s, 4)),
      flops,
      gflops: round(flops / seconds / 1e9, 2),
      checksum,
    };
    result.referenceCheck[key] = {
      rows: checked.map(([r]) => r),
      maxAbsDiff: diff,
    };
    log(`  median ${seconds.toFixed(3)} s, max |logits - PyTorch's| ${diff.toExponential(2)}`);
  }
  await session.release();
  return result;
}

async function main(args: string[]): Promise<number> {
  let parsed: ForwardArgs;
  try {
    parsed = parseArgs(args);
  } catch (e) {
    console.error(
      `${(e as Error).message}\nusage: ort_gpt2.ts forward --runtime node|web ` +
        "--model DIR --tokens FILE [--threads N] [--runs-small N] [--runs-large N]",
    );
    return 2;
  }
  let result: OrtForwardResult;
  try {
    result = await modeForward(parsed);
  } catch (e) {
    const error = String((e as Error)?.message ?? e);
    console.log(JSON.stringify({ peer: `onnxruntime-${parsed.runtime}`, mode: "forward", error }));
    return 3;
  }
  console.log(JSON.stringify(result));
  return 0;
}

if (import.meta.main) {
  // The exit code tells run_ort.ts a bad command line (2) from a runtime failure (3).
  Deno.exit(await main(Deno.args));
}
