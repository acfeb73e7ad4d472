/**
 * The explorer's model worker (bundled into `explorer_worker.js` by `build.ts`): a module Web
 * Worker the page starts, so that loading the model and every kernel call run off the page's main
 * thread. It answers the page's {@link PageMessage}s:
 *
 * - `load`: loads the model by name or URL on the message's device (`wasm`: default threads, one
 *   per core when cross-origin isolated; `webgpu`: the browser's WebGPU adapter; `auto`: a
 *   hardware adapter, else wasm) and answers `ready` with its {@link ModelInfo}, which says the
 *   device that computes; a hub or URL model's files are kept
 *   in Cache Storage (`cached_fetch.ts`), with a `progress` message per file as it streams;
 * - `compute`: computes every view of a state (`views.ts`) and answers `result` (or `error`);
 *   the state's SAE (a SAELens folder's URL) is loaded on first use and kept while it is the same;
 * - `random`: answers `random` with [BOS] + a random segment repeated once
 *   (`generateRepeatedTokens`), the induction study's input, for an id-only model.
 * @module
 */
import { generateRepeatedTokens, HookedTransformer, SAE } from "../../mod.ts";
import { r50kTokenizer } from "../../tokenizer/r50k.ts";
import { cachingFetch } from "./cached_fetch.ts";
import {
  EMBEDDED_MODELS,
  type ExplorerMessage,
  isDownloaded,
  type ModelInfo,
  type PageMessage,
} from "./protocol.ts";
import { computeViews } from "./views.ts";

/** The worker's global scope, as far as this module uses it. */
interface Scope {
  postMessage(message: ExplorerMessage): void;
  onmessage: ((event: MessageEvent<PageMessage>) => void) | null;
  crossOriginIsolated?: boolean;
  location?: { href: string };
}

/**
 * js-tiktoken, bundled (`r50k_modules.ts`): the library imports it with an `npm:` specifier at
 * run time, which a browser cannot resolve, so a GPT-2-vocabulary model gets r50k_base from here.
 */
const R50K_MODULES = new URL("./r50k_modules.ts", import.meta.url);

/** Hands js-tiktoken's modules to the library once, before a model that may need them loads. */
async function provideR50k(): Promise<void> {
  const m = await import(R50K_MODULES.href);
  await r50kTokenizer({ lite: m.lite, ranks: m.ranksModule });
}

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Serves the page's messages one at a time, in order. */
function serve(scope: Scope): void {
  let model: HookedTransformer | undefined;
  /** The SAE last loaded, and the URL it came from. */
  let sae: { url: string; sae: SAE } | undefined;
  // A folder's URL may be relative to the page (the server's --model=<folder>, --sae=<folder>).
  const absolute = (where: string) =>
    where.startsWith("/") || where.startsWith("./")
      ? new URL(where, scope.location?.href).href
      : where;
  let queue: Promise<void> = Promise.resolve();
  /** The newest compute request received: an older one still queued is skipped (the page shows
   * only the newest, so computing it would only delay that one while the user types). */
  let newest = 0;
  const post = (m: ExplorerMessage) => scope.postMessage(m);
  const handle = async (m: PageMessage) => {
    if (m.kind === "load") {
      const t0 = performance.now();
      post({
        kind: "status",
        text: m.device === "wasm"
          ? `Loading ${m.model} in a worker\u2026`
          : `Loading ${m.model} onto ${
            m.device === "webgpu" ? "WebGPU" : "a device"
          } in a worker\u2026`,
      });
      model?.dispose();
      model = undefined;
      const name = absolute(m.model);
      // The embedded models read ids (induction-toy) or their own tokenizer.json (kjv-small).
      if (!EMBEDDED_MODELS.includes(m.model)) await provideR50k();
      // A hub or URL model is kept in Cache Storage, its download shown as it streams.
      model = await HookedTransformer.fromPretrained(name, {
        device: m.device,
        ...(isDownloaded(m.model)
          ? { fetch: cachingFetch((p) => post({ kind: "progress", ...p })) }
          : {}),
      });
      const device = model.cfg.device === "webgpu" ? "webgpu" : "wasm";
      const adapter = (model.backend as { adapter?: unknown }).adapter;
      const info: ModelInfo = {
        name: model.cfg.modelName,
        hasTokenizer: model.tokenizer !== undefined && model.tokenizer !== null,
        nLayers: model.cfg.nLayers,
        nHeads: model.cfg.nHeads,
        dVocab: model.cfg.dVocab,
        device,
        ...(device === "webgpu" && typeof adapter === "string" ? { adapter } : {}),
        threads: model.backend.threads,
        crossOriginIsolated: scope.crossOriginIsolated === true,
        loadMs: Math.round(performance.now() - t0),
      };
      post({ kind: "ready", info });
    } else if (m.kind === "compute") {
      if (m.id !== newest) return;
      if (!model) throw new Error("no model is loaded");
      const saeUrl = m.state.sae.trim() === "" ? "" : absolute(m.state.sae.trim());
      if (saeUrl === "") sae = undefined;
      else if (sae?.url !== saeUrl || sae.sae.backend !== model.backend) {
        post({ kind: "status", text: `Loading the SAE ${saeUrl}\u2026` });
        sae = undefined;
        sae = { url: saeUrl, sae: await SAE.loadFromDisk(saeUrl, { backend: model.backend }) };
      }
      // Every view but activation patching first (its attribution estimate is instant), then
      // activation patching's grids, unless a newer request came in between.
      let sentPartial = false;
      const result = await computeViews(model, m.state, m.id, sae?.sae, {
        onPartial: (partial) => {
          post({ kind: "result", result: partial });
          sentPartial = true;
          return m.id === newest;
        },
      });
      if (!result.partial) {
        post({
          kind: "result",
          result: sentPartial
            ? { ...result, html: { patching: result.html.patching }, notes: {}, update: true }
            : result,
        });
      }
    } else if (m.kind === "random") {
      if (!model) throw new Error("no model is loaded");
      const tokens = generateRepeatedTokens(model, m.segment, 1, { seed: m.seed });
      post({ kind: "random", ids: Array.from(tokens.data) });
    }
  };
  scope.onmessage = (event) => {
    const m = event.data;
    if (m.kind === "compute") newest = m.id;
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
