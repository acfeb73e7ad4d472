/**
 * The explorer's model worker (bundled into `explorer_worker.js` by `build.ts`): a module Web
 * Worker the page starts, so that loading the model and every kernel call run off the page's main
 * thread. It answers the page's {@link PageMessage}s:
 *
 * - `load`: loads the model by name or URL (default threads: one per core when cross-origin
 *   isolated) and answers `ready` with its {@link ModelInfo};
 * - `compute`: computes every view of a state (`views.ts`) and answers `result` (or `error`);
 * - `random`: answers `random` with [BOS] + a random segment repeated once
 *   (`generateRepeatedTokens`), the induction study's input, for an id-only model.
 * @module
 */
import { generateRepeatedTokens, HookedTransformer } from "../../mod.ts";
import type { ExplorerMessage, ModelInfo, PageMessage } from "./protocol.ts";
import { computeViews } from "./views.ts";

/** The worker's global scope, as far as this module uses it. */
interface Scope {
  postMessage(message: ExplorerMessage): void;
  onmessage: ((event: MessageEvent<PageMessage>) => void) | null;
  crossOriginIsolated?: boolean;
  location?: { href: string };
}

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Serves the page's messages one at a time, in order. */
function serve(scope: Scope): void {
  let model: HookedTransformer | undefined;
  let queue: Promise<void> = Promise.resolve();
  const post = (m: ExplorerMessage) => scope.postMessage(m);
  const handle = async (m: PageMessage) => {
    if (m.kind === "load") {
      const t0 = performance.now();
      post({ kind: "status", text: `Loading ${m.model} in a worker\u2026` });
      model?.dispose();
      model = undefined;
      // A folder's URL may be relative to the page (the server's --model=<folder>).
      const name = m.model.startsWith("/") || m.model.startsWith("./")
        ? new URL(m.model, scope.location?.href).href
        : m.model;
      model = await HookedTransformer.fromPretrained(name);
      const info: ModelInfo = {
        name: model.cfg.modelName,
        hasTokenizer: model.tokenizer !== undefined && model.tokenizer !== null,
        nLayers: model.cfg.nLayers,
        nHeads: model.cfg.nHeads,
        dVocab: model.cfg.dVocab,
        threads: model.backend.threads,
        crossOriginIsolated: scope.crossOriginIsolated === true,
        loadMs: Math.round(performance.now() - t0),
      };
      post({ kind: "ready", info });
    } else if (m.kind === "compute") {
      if (!model) throw new Error("no model is loaded");
      post({ kind: "result", result: await computeViews(model, m.state, m.id) });
    } else if (m.kind === "random") {
      if (!model) throw new Error("no model is loaded");
      const tokens = generateRepeatedTokens(model, m.segment, 1, { seed: m.seed });
      post({ kind: "random", ids: Array.from(tokens.data) });
    }
  };
  scope.onmessage = (event) => {
    const m = event.data;
    queue = queue.then(() => handle(m)).catch((e: unknown) => {
      post({ kind: "error", id: m.kind === "compute" ? m.id : undefined, message: errorText(e) });
    });
  };
}

// Only inside a Web Worker (Deno type-checks and imports this module too).
const g = globalThis as { WorkerGlobalScope?: unknown; document?: unknown; Deno?: unknown };
if (g.WorkerGlobalScope !== undefined && g.document === undefined && g.Deno === undefined) {
  serve(globalThis as unknown as Scope);
}
