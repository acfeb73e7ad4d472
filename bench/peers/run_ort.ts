/**
 * The ONNX Runtime peers of `deno task bench`: makes the ONNX export of the PyTorch harness's
 * model once, beside the bench model files, and runs `ort_gpt2.ts` on it with `onnxruntime-node`
 * or `onnxruntime-web` in a child Deno process. A peer that cannot run comes back as skipped.
 *
 *   deno run -A bench/peers/run_ort.ts      make (or find) the export of the default bench model
 *
 * @example
 * ```ts ignore
 * import { runOrt } from "./peers/run_ort.ts";
 * import { defaultBenchDir, writeBenchModel } from "./model_file.ts";
 * const bench = await writeBenchModel(defaultBenchDir(), 0);
 * const native = await runOrt("node", bench, { threads: 2 });
 * if (native.ok) console.log(native.result.runs["30x101"].seconds);
 * else console.log(native.skipped);
 * ```
 * @module
 */
import { basename } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchModel } from "../model_file.ts";
import {
  ONNX_FILE,
  type OnnxExportStamp,
  type OrtForwardResult,
  type OrtRuntime,
} from "./ort_gpt2.ts";
import {
  lastJsonLine,
  type PeerOutcome,
  runTorch,
  spawn,
  type Spawned,
  tail,
  type TorchOptions,
} from "./run_peers.ts";

export type { OnnxExportStamp, OrtForwardResult, OrtRuntime } from "./ort_gpt2.ts";

/** Bump when the export changes (graph, opset, reference rows), so cached exports are remade. */
const EXPORT_FORMAT = 1;

/** An export ready to run: where it is, what made it, and whether an earlier one was reused. */
export interface OnnxExport {
  /** The `.onnx` file. */
  path: string;
  stamp: OnnxExportStamp;
  reused: boolean;
}

/** Options of {@link runOrt}. */
export interface OrtOptions {
  /** Intra-op threads (`intraOpNumThreads`, or `env.wasm.numThreads` for web; default 2). */
  threads?: number;
  /** More harness flags, e.g. `["--runs-large", "1"]`. */
  extraArgs?: string[];
  /** Stream the harness's progress lines to stderr (default true). */
  progress?: boolean;
  /** How to run the PyTorch harness if the export has to be made. */
  torch?: TorchOptions;
}

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await Deno.stat(path)).size;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** Size and modification time of the files an export is made from. */
async function sourceOf(bench: BenchModel): Promise<OnnxExportStamp["source"]> {
  const source: OnnxExportStamp["source"] = {};
  for (const path of [bench.configPath, bench.weightsPath, bench.tokensPath]) {
    const info = await Deno.stat(path);
    source[basename(path)] = { size: info.size, mtimeMs: info.mtime?.getTime() ?? 0 };
  }
  return source;
}

/** The stamp in `dir`, when it describes a complete export of exactly `source`. */
async function currentStamp(
  dir: string,
  source: OnnxExportStamp["source"],
): Promise<OnnxExportStamp | null> {
  let stamp: OnnxExportStamp;
  try {
    stamp = JSON.parse(await Deno.readTextFile(`${dir}/${ONNX_FILE}.json`));
  } catch {
    return null; // missing or unreadable: make the export again
  }
  const ref = stamp.reference;
  const complete = stamp.format === EXPORT_FORMAT &&
    JSON.stringify(stamp.source) === JSON.stringify(source) &&
    await sizeOf(`${dir}/${ONNX_FILE}`) === stamp.bytes &&
    await sizeOf(`${dir}/${ref?.file}`) === 4 * (ref?.shape ?? []).reduce((a, b) => a * b, 1);
  return complete ? stamp : null;
}

/**
 * The ONNX export of the PyTorch harness's model (`torch.onnx.export`, opset 17, batch and
 * sequence axes dynamic, weights processed as TransformerLens does) in the bench model's
 * directory: `model.onnx` (about 650 MB), the harness's logits of the first and last token rows
 * (`model.onnx.reference.f32`) and a stamp (`model.onnx.json`) recording the files it was made
 * from. Reused while the stamp matches; otherwise made again (about a minute on 2 cores). The
 * stamp is written last, so an interrupted export is never taken for a complete one.
 * Skipped (not thrown) when the PyTorch harness cannot run.
 */
export async function ensureOnnxExport(
  bench: BenchModel,
  torch: TorchOptions = {},
): Promise<PeerOutcome<OnnxExport>> {
  const path = `${bench.dir}/${ONNX_FILE}`;
  const stampPath = `${path}.json`;
  const source = await sourceOf(bench);
  const reusable = await currentStamp(bench.dir, source);
  if (reusable) {
    return {
      ok: true,
      result: { path, stamp: reusable, reused: true },
      wallSeconds: 0,
      command: [],
    };
  }

  await Deno.remove(stampPath).catch(() => {});
  console.error(`onnx: exporting the PyTorch harness's model to ${path} (once)`);
  const made = await runTorch("export-onnx", bench.dir, bench.tokensPath, {
    ...torch,
    extraArgs: [...(torch.extraArgs ?? []), "--out", path],
  });
  if (!made.ok) {
    return {
      ...made,
      skipped: `skipped: no ONNX export (${made.skipped.replace(/^skipped: /, "")})`,
    };
  }
  const r = made.result;
  const { rows, shape, dtype } = r.reference;
  const stamp: OnnxExportStamp = {
    format: EXPORT_FORMAT,
    source,
    torch: r.torch,
    opset: r.opset,
    processed: r.processed,
    bytes: r.bytes,
    exportSeconds: r.exportSeconds,
    reference: { file: basename(r.reference.path), rows, shape, dtype },
  };
  const tmp = `${stampPath}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, JSON.stringify(stamp, null, 1) + "\n");
  await Deno.rename(tmp, stampPath);
  return {
    ok: true,
    result: { path, stamp, reused: false },
    wallSeconds: made.wallSeconds,
    command: made.command,
  };
}

/**
 * Runs an ONNX Runtime peer on the bench model's ONNX export (made first if needed): median
 * seconds of 1 x 101 and 30 x 101 forwards (full logits), GFLOP/s, the logits checksum, and
 * `referenceCheck` (max |logits - the PyTorch harness's|). `node` is `onnxruntime-node` (native
 * MLAS, needs `--allow-ffi`), `web` is `onnxruntime-web` (`ort-wasm-simd-threaded.wasm`).
 *
 * Skipped (not thrown) when the export cannot be made, the package cannot be loaded, or the
 * runtime cannot run the model.
 */
export async function runOrt(
  runtime: OrtRuntime,
  bench: BenchModel,
  opts: OrtOptions = {},
): Promise<PeerOutcome<OrtForwardResult>> {
  const name = `onnxruntime-${runtime}`;
  const exported = await ensureOnnxExport(bench, opts.torch);
  if (!exported.ok) return exported;
  const args = [
    Deno.execPath(),
    "run",
    "--config", // bench/deno.json maps the peers' npm packages
    here("../deno.json"),
    "--allow-read",
    ...(runtime === "node" ? ["--allow-ffi"] : []), // the Node-API addon
    here("./ort_gpt2.ts"),
    "forward",
    "--runtime",
    runtime,
    "--model",
    bench.dir,
    "--tokens",
    bench.tokensPath,
    "--threads",
    String(opts.threads ?? 2),
    ...(opts.extraArgs ?? []),
  ];
  let run: Spawned;
  try {
    run = await spawn(args, opts.progress ?? true);
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      return { ok: false, skipped: "skipped: needs --allow-run to start Deno", command: args };
    }
    throw e;
  }
  const result = lastJsonLine(run.stdout);
  if (run.code === 0 && result !== null) {
    const { stamp, reused } = exported.result;
    result.onnx = {
      file: ONNX_FILE,
      bytes: stamp.bytes,
      reused,
      exportSeconds: stamp.exportSeconds,
    };
    return { ok: true, result: result as never, wallSeconds: run.wallSeconds, command: args };
  }
  const npm = /npm|Could not find|registry|Module not found|Import .* failed/i.test(run.stderr);
  const skipped = run.code === 3 && result?.error
    ? `skipped: ${name} could not run ${ONNX_FILE}: ${String(result.error)}`
    : npm
    ? `skipped: ${name} could not be loaded (deno install needs the npm registry once)`
    : `skipped: the ${name} harness failed (exit ${run.code})`;
  return { ok: false, skipped, detail: tail(run.stderr), command: args };
}

if (import.meta.main) {
  // Makes (or finds) the export of the default bench model and prints where it is.
  const { defaultBenchDir, writeBenchModel } = await import("../model_file.ts");
  const exported = await ensureOnnxExport(await writeBenchModel(defaultBenchDir(), 0));
  console.log(JSON.stringify(exported.ok ? exported.result : exported));
  if (!exported.ok) Deno.exit(1);
}
