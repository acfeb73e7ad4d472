/**
 * The explorer's state (what the URL holds) and the messages between its page and its model
 * worker. Shared by the page's module, the worker, the server and the test; it imports nothing,
 * so the page's main thread stays free of the library.
 * @module
 */

/** The views the page shows, in the order of its tabs. */
export const VIEWS = ["tokens", "attention", "lens", "dla", "patching", "sae"] as const;
/** One of {@link VIEWS}. */
export type ViewName = typeof VIEWS[number];

/**
 * Where the worker's model computes (the library's `device`, TransformerLens's): `wasm`
 * (WebAssembly on the CPU's cores, the default), `webgpu` (the browser's WebGPU adapter, a
 * software one included) or `auto` (a hardware WebGPU adapter when there is one, else wasm).
 */
export const DEVICES = ["wasm", "webgpu", "auto"] as const;
/** One of {@link DEVICES}. */
export type ExplorerDevice = typeof DEVICES[number];

/** The model the page opens with when the URL names none. */
export const DEFAULT_MODEL = "kjv-small";
/** The models embedded in the explorer's folder (no download). */
export const EMBEDDED_MODELS: readonly string[] = ["kjv-small", "induction-toy"];

/**
 * Whether the worker keeps a model's files in Cache Storage with a progress bar: a hub name or a
 * URL. Embedded models and folders on the page's own server (`/models/<name>/`, which the server
 * reads from disk each time) are fetched as they are.
 *
 * @example
 * ```ts
 * import { isDownloaded } from "./protocol.ts";
 * if (!isDownloaded("gpt2") || !isDownloaded("https://example.org/m/")) throw new Error();
 * if (isDownloaded("kjv-small") || isDownloaded("/models/my-kjv/")) throw new Error();
 * ```
 */
export function isDownloaded(model: string): boolean {
  return !EMBEDDED_MODELS.includes(model) && !model.startsWith("/") && !model.startsWith("./");
}

/** Everything a view depends on; it lives in the page's URL (see {@link stateToSearch}). */
export interface ExplorerState {
  /** An embedded model's name (`kjv-small`, `induction-toy`), a hub name, or a folder's URL. */
  model: string;
  /** The prompt: text, or token ids separated by spaces or commas for an id-only model. */
  prompt: string;
  /** The corrupted prompt for activation patching (same token count as the prompt), or "". */
  corrupted: string;
  /** The answer token for DLA and the patching metric (one token, or one id), or "" for the
   * model's own top prediction at the last position. */
  answer: string;
  /** The wrong token (DLA and patching measure answer - wrong), or "" for none. */
  wrong: string;
  /** The view shown. */
  view: ViewName;
  /** The head whose attention hovering a token shows, as `L{layer}H{head}` ("" for L0H0). */
  head: string;
  /** A SAELens SAE folder's URL (absolute, or relative to the page) for the `sae` view, or "". */
  sae: string;
  /** Where the model computes (`?device=`; default `wasm`). */
  device: ExplorerDevice;
}

/**
 * The state a URL's query holds (`?model=...&prompt=...&corrupted=...&answer=...&wrong=...
 * &view=...&device=...`), with defaults for what it lacks; an unknown view falls back to `tokens`,
 * an unknown device to `wasm`.
 *
 * @example
 * ```ts
 * import { parseState } from "./protocol.ts";
 * const s = parseState("?model=induction-toy&prompt=1%202&view=lens");
 * if (s.model !== "induction-toy" || s.prompt !== "1 2" || s.view !== "lens") throw new Error();
 * if (s.device !== "wasm" || parseState("?device=webgpu").device !== "webgpu") throw new Error();
 * ```
 */
export function parseState(search: string): ExplorerState {
  const q = new URLSearchParams(search);
  const view = q.get("view") ?? "tokens";
  const device = q.get("device") ?? "wasm";
  return {
    model: q.get("model") || DEFAULT_MODEL,
    prompt: q.get("prompt") ?? "",
    corrupted: q.get("corrupted") ?? "",
    answer: q.get("answer") ?? "",
    wrong: q.get("wrong") ?? "",
    view: (VIEWS as readonly string[]).includes(view) ? view as ViewName : "tokens",
    head: /^L\d+H\d+$/.test(q.get("head") ?? "") ? q.get("head")! : "",
    sae: q.get("sae") ?? "",
    device: (DEVICES as readonly string[]).includes(device) ? device as ExplorerDevice : "wasm",
  };
}

/**
 * The URL query of a state (the inverse of {@link parseState}; empty fields and the default
 * device, `wasm`, are left out).
 *
 * @example
 * ```ts
 * import { parseState, stateToSearch } from "./protocol.ts";
 * const s = parseState("?prompt=In%20the%20beginning&view=attention");
 * if (stateToSearch(s) !== "?model=kjv-small&prompt=In+the+beginning&view=attention") throw new Error();
 * const gpu = stateToSearch({ ...s, device: "webgpu" });
 * if (gpu !== "?model=kjv-small&prompt=In+the+beginning&view=attention&device=webgpu") throw new Error();
 * ```
 */
export function stateToSearch(state: ExplorerState): string {
  const q = new URLSearchParams();
  q.set("model", state.model);
  for (const key of ["prompt", "corrupted", "answer", "wrong"] as const) {
    if (state[key] !== "") q.set(key, state[key]);
  }
  q.set("view", state.view);
  if (state.head !== "") q.set("head", state.head);
  if (state.sae !== "") q.set("sae", state.sae);
  if (state.device !== "wasm") q.set("device", state.device);
  return `?${q}`;
}

/** What the worker says about the model it loaded. */
export interface ModelInfo {
  /** The model's name. */
  name: string;
  /** Whether it has a text tokenizer (else the prompt is token ids). */
  hasTokenizer: boolean;
  /** Layers. */
  nLayers: number;
  /** Heads per layer. */
  nHeads: number;
  /** Vocabulary size. */
  dVocab: number;
  /** Where the model computes (`model.cfg.device`: `auto` resolved to `wasm` or `webgpu`). */
  device: "wasm" | "webgpu";
  /** On WebGPU, the adapter's description (vendor, architecture; "fallback" for a software one). */
  adapter?: string;
  /** Threads the kernels compute on (the model worker's own, plus its kernel workers; 1 on
   * WebGPU, where one thread drives the GPU). */
  threads: number;
  /** Whether the worker is cross-origin isolated (threads need it). */
  crossOriginIsolated: boolean;
  /** Milliseconds spent loading. */
  loadMs: number;
}

/** The views of one state, as HTML made by the library's `viz` functions, and their numbers. */
export interface ExplorerResult {
  /** The request this answers. */
  id: number;
  /** The prompt's tokens as text (ids in brackets for an id-only model). */
  tokens: string[];
  /** The prompt's token ids. */
  ids: number[];
  /** HTML of each view that could be computed. */
  html: Partial<Record<ViewName, string>>;
  /** Why a view could not be computed (e.g. patching without a corrupted prompt). */
  notes: Partial<Record<ViewName, string>>;
  /** Milliseconds the worker took. */
  computeMs: number;
  /**
   * True when activation patching is still being computed: a second result with the same id
   * follows (unless a newer request replaced it), with `update` set.
   */
  partial: boolean;
  /** Set on the result that completes a partial one: `html` holds only the views it changes. */
  update?: boolean;
}

/** A message from the page to the model worker. */
export type PageMessage =
  | { kind: "load"; model: string; device: ExplorerDevice }
  | { kind: "compute"; id: number; state: ExplorerState }
  | { kind: "random"; segment: number; seed: number };

/** A message from the model worker to the page. */
export type ExplorerMessage =
  | { kind: "status"; text: string }
  | {
    kind: "progress";
    /** The file's URL. */
    url: string;
    /** Bytes received. */
    loaded: number;
    /** The file's size, when the server says it. */
    total?: number;
    /** Whether it came from the browser's Cache Storage. */
    cached: boolean;
    /** Whether this is the file's last report. */
    done: boolean;
  }
  | { kind: "ready"; info: ModelInfo }
  | { kind: "result"; result: ExplorerResult }
  | { kind: "random"; ids: number[] }
  | { kind: "error"; id?: number; message: string };
