/**
 * The browser example's model worker (bundled into `model_worker.js` by `build.ts`): a module Web
 * Worker that the page starts, so that loading the model and every kernel call run off the page's
 * main thread (the page stays responsive, and the kernels may block in `Atomics.wait`, which a
 * page's main thread may not).
 *
 * On a `{ kind: "run", device }` message it loads the embedded `induction-toy` model on `device`
 * (`"wasm"`, the default, or `"webgpu"`: the browser's WebGPU adapter), on WebAssembly with the
 * default threads (one per core when the page is cross-origin isolated, else one), computes the head
 * scores on the study's input (30 sequences of [BOS] + 50 random tokens repeated once, seed 0)
 * and the induction head's pattern, and posts {@linkcode WorkerMessage}s back: status lines, then
 * the result or the error.
 * @module
 */
import {
  attentionPattern,
  generateRepeatedTokens,
  headScores,
  HookedTransformer,
} from "../../mod.ts";
import {
  BATCH,
  HEAD,
  LAYER,
  type PageDevice,
  type PageScores,
  SEED,
  SEQ_LEN,
  type WorkerMessage,
} from "./config.ts";

/** The worker's global scope, as far as this module uses it. */
interface Scope {
  postMessage(message: WorkerMessage): void;
  onmessage: ((event: MessageEvent<unknown>) => void) | null;
  crossOriginIsolated?: boolean;
  navigator?: { hardwareConcurrency?: number };
}

/** Loads the model and computes what the page shows, reporting progress through `post`. */
export async function compute(
  post: (m: WorkerMessage) => void,
  device: PageDevice = "wasm",
): Promise<PageScores> {
  const scope = globalThis as unknown as Scope;
  const t0 = performance.now();
  post({
    kind: "status",
    text: device === "webgpu"
      ? "Loading the model onto WebGPU in a worker\u2026"
      : "Loading the model and the kernels in a worker\u2026",
  });
  // Default threads: one per core where the worker may share memory (cross-origin isolated).
  const model = await HookedTransformer.fromPretrained("induction-toy", { device });
  const t1 = performance.now();
  const adapter = (model.backend as { adapter?: unknown }).adapter;
  post({
    kind: "status",
    text: model.cfg.device === "webgpu"
      ? "Running on WebGPU\u2026"
      : `Running on ${model.backend.threads} thread${model.backend.threads === 1 ? "" : "s"}\u2026`,
  });
  const tokens = generateRepeatedTokens(model, SEQ_LEN, BATCH, { seed: SEED });
  const scores = await headScores(model, tokens, SEQ_LEN);
  const { pattern } = await attentionPattern(model, tokens, LAYER, HEAD);
  const t2 = performance.now();
  return {
    model: model.cfg.modelName,
    seqLen: SEQ_LEN,
    batch: BATCH,
    seed: SEED,
    induction: scores.induction,
    previousToken: scores.previousToken,
    duplicateToken: scores.duplicateToken,
    pattern,
    device: model.cfg.device === "webgpu" ? "webgpu" : "wasm",
    adapter: model.cfg.device === "webgpu" && typeof adapter === "string" ? adapter : undefined,
    threads: model.backend.threads,
    crossOriginIsolated: scope.crossOriginIsolated === true,
    cores: scope.navigator?.hardwareConcurrency ?? 1,
    loadMs: Math.round(t1 - t0),
    computeMs: Math.round(t2 - t1),
  };
}

/** Serves the page: one run per `{ kind: "run" }` message. */
function serve(scope: Scope): void {
  scope.onmessage = (event) => {
    const data = event.data as { kind?: unknown; device?: unknown } | null;
    if (data?.kind !== "run") return;
    const post = (m: WorkerMessage) => scope.postMessage(m);
    const device: PageDevice = data.device === "webgpu" ? "webgpu" : "wasm";
    compute(post, device).then(
      (scores) => post({ kind: "result", scores }),
      (e: unknown) => {
        const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
        post({ kind: "error", message, stack: e instanceof Error ? e.stack : undefined });
      },
    );
  };
}

// Only inside a Web Worker (Deno type-checks and imports this module too).
const g = globalThis as { WorkerGlobalScope?: unknown; document?: unknown; Deno?: unknown };
if (g.WorkerGlobalScope !== undefined && g.document === undefined && g.Deno === undefined) {
  serve(globalThis as unknown as Scope);
}
