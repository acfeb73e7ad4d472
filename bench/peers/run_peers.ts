/**
 * Runs the peer harnesses for `deno task bench` and returns their JSON, or a clear "skipped"
 * result when a peer is not available, so the benchmark degrades gracefully.
 *
 * @example
 * ```ts ignore
 * import { runTfjs, runTorch } from "./peers/run_peers.ts";
 * import { writeBenchModel } from "./model_file.ts";
 * const m = await writeBenchModel("/tmp/bench-model", 0);
 * const torch = await runTorch("forward", m.dir, m.tokensPath);
 * if (torch.ok) console.log(torch.result.runs["30x101"].seconds);
 * else console.log(torch.skipped); // "skipped: python3-torch not installed (apt-get install …)"
 * const tfjs = await runTfjs("matmul", undefined, undefined, { threads: 2 });
 * ```
 * @module
 */
import { fileURLToPath } from "node:url";
import type { ForwardResult, MatmulResult } from "./common.ts";

export type {
  BenchTokens,
  ForwardResult,
  ForwardRun,
  LogitsChecksum,
  MatmulResult,
  MatmulShapeResult,
  MatmulTiming,
} from "./common.ts";
export { forwardFlops, MATMUL_SHAPES } from "./common.ts";

/** A peer's outcome: its parsed JSON, or why it did not run. */
export type PeerOutcome<T> =
  | { ok: true; result: T; wallSeconds: number; command: string[] }
  | { ok: false; skipped: string; detail?: string; command: string[] };

/** What `torch_gpt2.py study` prints (see bench/README.md). */
export interface StudyResult {
  peer: "pytorch";
  mode: "study";
  /** Seconds per step: load, processWeights, score30x101, mlpPatching, kComposition. */
  steps: Record<string, number>;
  /** score30x101 + mlpPatching + kComposition (the study itself, weights already loaded). */
  studySeconds: number;
  /** All steps including loading and processing the weights. */
  totalSeconds: number;
  scores: Record<string, number>;
  patching: Record<string, unknown>;
  kComposition: { from: string; to: string; top1: number };
  [extra: string]: unknown;
}

/** What `torch_gpt2.py export-onnx` prints. */
export interface OnnxExportResult {
  peer: "pytorch";
  mode: "export-onnx";
  torch: string;
  opset: number;
  /** Weights processed as TransformerLens does (the harness's default). */
  processed: boolean;
  /** The `.onnx` file written, and its size in bytes. */
  onnx: string;
  bytes: number;
  exportSeconds: number;
  /** The harness's logits [rows.length, seq, vocab] of token rows `rows`, float32, at `path`. */
  reference: { path: string; rows: number[]; shape: number[]; dtype: "float32" };
  [extra: string]: unknown;
}

/** What `torch_gpt2.py backward` prints: forward + backward of the loss, keyed "1x101", "30x101". */
export interface BackwardResult {
  peer: "pytorch";
  mode: "backward";
  runs: Record<string, { batch: number; seq: number; seconds: number; loss: number }>;
  [extra: string]: unknown;
}

/** Options of {@link runTorch}. */
export interface TorchOptions {
  /** Threads for torch and OpenBLAS (default 2). `sgemm` always measures 1 and 2. */
  threads?: number;
  /** Python interpreter (default `$TL_BENCH_PYTHON` or `/usr/bin/python3`, Debian's). */
  python?: string;
  /** More harness flags, e.g. `["--patch-positions", "5"]` or `["--runs-large", "5"]`. */
  extraArgs?: string[];
  /** Stream the harness's progress lines (stderr) to this process's stderr (default true). */
  progress?: boolean;
  /**
   * Which OpenBLAS build torch's BLAS calls go to (default `$TL_BENCH_OPENBLAS`, else `"openmp"`
   * when `libopenblas0-openmp` is installed, else `"system"`). `"openmp"` shares torch's OpenMP
   * thread pool; `"pthread"` (Debian's default when both are installed) brings a second pool of
   * spinning threads that fights torch's on 2 cores: the 1 x 101 forward takes about 0.5 s
   * instead of 0.2 s. `"system"` leaves `libblas.so.3` to the alternatives system.
   */
  blas?: "openmp" | "pthread" | "system";
}

/** Options of {@link runTfjs}. */
export interface TfjsOptions {
  /**
   * Threads (default 1). 1 runs `tfjs-backend-wasm-simd.wasm`; more runs the threaded-SIMD
   * build; if that cannot start, the run is repeated on one thread and `result.threadsNote` says
   * why.
   */
  threads?: number;
  /** More harness flags, e.g. `["--runs-large", "5"]`. */
  extraArgs?: string[];
  /** Stream the harness's progress lines to stderr (default true). */
  progress?: boolean;
}

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));

const TORCH_INSTALL = "apt-get install python3-torch python3-numpy libopenblas0-openmp";
const OPENBLAS_DIR = "/usr/lib/x86_64-linux-gnu/openblas-";

function isDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** LD_LIBRARY_PATH that selects the OpenBLAS build, or undefined for the system's choice. */
function blasLibraryPath(choice: TorchOptions["blas"]): string | undefined {
  const wanted = choice ?? env("TL_BENCH_OPENBLAS") ??
    (isDir(`${OPENBLAS_DIR}openmp`) ? "openmp" : "system");
  if (wanted === "system") return undefined;
  const dir = `${OPENBLAS_DIR}${wanted}`;
  if (!isDir(dir)) return undefined;
  const rest = env("LD_LIBRARY_PATH");
  return rest ? `${dir}:${rest}` : dir;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** A finished child process: exit code, its output, and how long it ran. */
export interface Spawned {
  code: number;
  stdout: string;
  stderr: string;
  wallSeconds: number;
}

/**
 * Runs `cmd` with stdin closed, collecting stdout and stderr; stderr is echoed live to this
 * process's stderr when `progress` is true (the harnesses' progress lines).
 */
export async function spawn(
  cmd: string[],
  progress: boolean,
  extraEnv: Record<string, string> = {},
): Promise<Spawned> {
  const t0 = performance.now();
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    env: extraEnv,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const decoder = new TextDecoder();
  let stderr = "";
  const errDone = (async () => {
    for await (const chunk of child.stderr) {
      const text = decoder.decode(chunk, { stream: true });
      stderr += text;
      if (progress) await Deno.stderr.write(chunk);
    }
  })();
  const out = await new Response(child.stdout).text();
  await errDone;
  const { code } = await child.status;
  return { code, stdout: out, stderr, wallSeconds: (performance.now() - t0) / 1000 };
}

/** The last line of `stdout` that parses as a JSON object (a harness's result), or null. */
export function lastJsonLine(stdout: string): Record<string, unknown> | null {
  const lines = stdout.trim().split("\n").filter((l) => l.startsWith("{"));
  if (lines.length === 0) return null;
  try {
    return JSON.parse(lines[lines.length - 1]);
  } catch {
    return null;
  }
}

/** The last `lines` lines of `text` (for the `detail` of a skipped peer). */
export function tail(text: string, lines = 8): string {
  return text.trim().split("\n").slice(-lines).join("\n");
}

/**
 * Runs the PyTorch harness (`torch_gpt2.py`) with Debian's `python3-torch`.
 *
 * - `forward`: median seconds of 1 x 101 and 30 x 101 forwards, GFLOP/s, logits checksum.
 * - `sgemm`: torch.matmul and numpy GFLOP/s on {@link MATMUL_SHAPES}, 1 and 2 threads.
 * - `study`: the whole study the TransformerLens way, timed per step.
 * - `export-onnx`: the forward exported to ONNX (pass `["--out", FILE]` in `extraArgs`), with
 *   the harness's reference logits beside it; `run_ort.ts` calls it.
 * - `backward`: median seconds of forward + backward of the loss (autograd to the embeddings).
 *
 * Skipped (not thrown) when Python, torch or numpy is missing.
 */
export async function runTorch(
  mode: "forward",
  modelDir: string,
  tokensFile: string,
  opts?: TorchOptions,
): Promise<PeerOutcome<ForwardResult>>;
export async function runTorch(
  mode: "sgemm",
  modelDir?: string,
  tokensFile?: string,
  opts?: TorchOptions,
): Promise<PeerOutcome<MatmulResult>>;
export async function runTorch(
  mode: "study",
  modelDir: string,
  tokensFile: string,
  opts?: TorchOptions,
): Promise<PeerOutcome<StudyResult>>;
export async function runTorch(
  mode: "export-onnx",
  modelDir: string,
  tokensFile: string,
  opts?: TorchOptions,
): Promise<PeerOutcome<OnnxExportResult>>;
export async function runTorch(
  mode: "backward",
  modelDir: string,
  tokensFile: string,
  opts?: TorchOptions,
): Promise<PeerOutcome<BackwardResult>>;
export async function runTorch(
  mode: "forward" | "sgemm" | "study" | "export-onnx" | "backward",
  modelDir?: string,
  tokensFile?: string,
  opts: TorchOptions = {},
): Promise<
  PeerOutcome<ForwardResult | MatmulResult | StudyResult | OnnxExportResult | BackwardResult>
> {
  const python = opts.python ?? env("TL_BENCH_PYTHON") ?? "/usr/bin/python3";
  const script = here("./torch_gpt2.py");
  const args = [python, script, mode, "--threads", String(opts.threads ?? 2)];
  if (mode !== "sgemm") {
    if (!modelDir || !tokensFile) {
      throw new TypeError(`runTorch(${mode}) needs modelDir and tokensFile`);
    }
    args.push("--model", modelDir, "--tokens", tokensFile);
  }
  args.push(...(opts.extraArgs ?? []));
  let run: Spawned;
  try {
    const libraryPath = blasLibraryPath(opts.blas);
    const extraEnv: Record<string, string> = libraryPath ? { LD_LIBRARY_PATH: libraryPath } : {};
    run = await spawn(args, opts.progress ?? true, extraEnv);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return {
        ok: false,
        skipped: `skipped: ${python} not found (${TORCH_INSTALL})`,
        command: args,
      };
    }
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      return { ok: false, skipped: "skipped: needs --allow-run to start Python", command: args };
    }
    throw e;
  }
  if (run.code !== 0) {
    const missing = /No module named '(torch|numpy)'/.exec(run.stderr);
    if (missing) {
      const pkg = missing[1] === "torch" ? "python3-torch" : "python3-numpy";
      return {
        ok: false,
        skipped: `skipped: ${pkg} not installed (${TORCH_INSTALL})`,
        command: args,
      };
    }
    return {
      ok: false,
      skipped: `skipped: the PyTorch harness failed (exit ${run.code})`,
      detail: tail(run.stderr),
      command: args,
    };
  }
  const result = lastJsonLine(run.stdout);
  if (result === null) {
    return {
      ok: false,
      skipped: "skipped: the PyTorch harness printed no JSON",
      detail: tail(run.stderr),
      command: args,
    };
  }
  return { ok: true, result: result as never, wallSeconds: run.wallSeconds, command: args };
}

/**
 * Runs the TensorFlow.js harness (`tfjs_gpt2.ts`, `@tensorflow/tfjs-backend-wasm`) in a child
 * Deno process.
 *
 * - `forward`: median seconds of 1 x 101 and 30 x 101 forwards, GFLOP/s, logits checksum.
 * - `matmul`: tf.matMul GFLOP/s on {@link MATMUL_SHAPES}.
 *
 * Skipped (not thrown) when the npm packages cannot be loaded.
 */
export async function runTfjs(
  mode: "forward",
  modelDir: string,
  tokensFile: string,
  opts?: TfjsOptions,
): Promise<PeerOutcome<ForwardResult>>;
export async function runTfjs(
  mode: "matmul",
  modelDir?: string,
  tokensFile?: string,
  opts?: TfjsOptions,
): Promise<PeerOutcome<MatmulResult>>;
export async function runTfjs(
  mode: "forward" | "matmul",
  modelDir?: string,
  tokensFile?: string,
  opts: TfjsOptions = {},
): Promise<PeerOutcome<ForwardResult | MatmulResult>> {
  const threads = opts.threads ?? 1;
  const build = (n: number) => {
    const args = [
      Deno.execPath(),
      "run",
      "--config", // bench/deno.json maps the peers' npm packages
      here("../deno.json"),
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      here("./tfjs_gpt2.ts"),
      mode,
      "--threads",
      String(n),
    ];
    if (mode === "forward") {
      if (!modelDir || !tokensFile) {
        throw new TypeError("runTfjs(forward) needs modelDir and tokensFile");
      }
      args.push("--model", modelDir, "--tokens", tokensFile);
    }
    return [...args, ...(opts.extraArgs ?? [])];
  };
  const attempt = async (n: number) => {
    const args = build(n);
    try {
      return { args, run: await spawn(args, opts.progress ?? true) };
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
        return { args, run: null };
      }
      throw e;
    }
  };
  let { args, run } = await attempt(threads);
  if (run === null) {
    return { ok: false, skipped: "skipped: needs --allow-run to start Deno", command: args };
  }
  let note: string | undefined;
  let result = lastJsonLine(run.stdout);
  if (run.code === 3 && threads > 1) {
    // The threaded build could not start: say why, and measure the SIMD build instead.
    note = `threaded-SIMD build failed under Deno: ${String(result?.error ?? "unknown error")}; ` +
      "ran the SIMD build on one thread";
    ({ args, run } = await attempt(1));
    if (run === null) return { ok: false, skipped: "skipped: needs --allow-run", command: args };
    result = lastJsonLine(run.stdout);
  }
  if (run.code !== 0 || result === null) {
    const npm = /npm|Could not find|registry|Module not found|Import .* failed/i.test(run.stderr);
    return {
      ok: false,
      skipped: npm
        ? "skipped: @tensorflow/tfjs-core / @tensorflow/tfjs-backend-wasm could not be loaded " +
          "(deno install needs the npm registry once)"
        : `skipped: the TensorFlow.js harness failed (exit ${run.code})`,
      detail: tail(run.stderr),
      command: args,
    };
  }
  if (note !== undefined) result.threadsNote = note;
  return { ok: true, result: result as never, wallSeconds: run.wallSeconds, command: args };
}
