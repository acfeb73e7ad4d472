/**
 * What the browser example computes and shows, and the messages between the page and its model
 * worker (shared by the page's module, the worker and the test, which must not import the page's
 * module: that one needs the DOM's types).
 * @module
 */

/** Length of the repeated segment (the study's). */
export const SEQ_LEN = 50;
/** Sequences in the batch (the study's). */
export const BATCH = 30;
/** Seed of the repeated tokens. */
export const SEED = 0;
/** The induction head drawn: layer. */
export const LAYER = 1;
/** The induction head drawn: head. */
export const HEAD = 2;

/**
 * The response headers that make a page cross-origin isolated, so that the kernels' worker
 * threads may share WebAssembly memory (`SharedArrayBuffer`). A static host must send them with
 * the page (and COEP lets the page load only same-origin files or files sent with
 * `Cross-Origin-Resource-Policy`), see `examples/browser/README.md`.
 */
export const ISOLATION_HEADERS: Readonly<Record<string, string>> = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
};

/** Where the page's model computes: `?device=webgpu` in its URL, else WebAssembly. */
export type PageDevice = "wasm" | "webgpu";

/**
 * The device a page URL's query asks for (`?device=wasm` or `?device=webgpu`; default `"wasm"`).
 * Throws on any other value, naming the two that work.
 *
 * @example
 * ```ts
 * import { deviceFromQuery } from "./config.ts";
 * deviceFromQuery("?device=webgpu"); // "webgpu"
 * deviceFromQuery(""); // "wasm"
 * ```
 */
export function deviceFromQuery(search: string): PageDevice {
  const device = new URLSearchParams(search).get("device") ?? "wasm";
  if (device !== "wasm" && device !== "webgpu") {
    throw new Error(
      `unknown device ${JSON.stringify(device)} in the URL: use ?device=wasm or ?device=webgpu`,
    );
  }
  return device;
}

/** What the page exposes as `window.__scores` (and, without `pattern`, in `<pre id="scores">`). */
export interface PageScores {
  /** The model's name. */
  model: string;
  /** Length of the repeated segment. */
  seqLen: number;
  /** Sequences in the batch. */
  batch: number;
  /** Seed of the repeated tokens. */
  seed: number;
  /** `[nLayers][nHeads]`, as `headScores` returns them. */
  induction: number[][];
  /** `[nLayers][nHeads]`. */
  previousToken: number[][];
  /** `[nLayers][nHeads]`. */
  duplicateToken: number[][];
  /** The drawn head's pattern on the first sequence, `[q][k]`. */
  pattern: number[][];
  /** Where the model computed (`model.cfg.device`). */
  device: PageDevice;
  /** On WebGPU: the adapter's description (the browser may leave it empty), else undefined. */
  adapter?: string;
  /** Threads the kernels computed on (the model worker's own, plus its kernel workers; 1 on
   * WebGPU, where one thread drives the GPU). */
  threads: number;
  /** Whether the model worker was cross-origin isolated (threads need it). */
  crossOriginIsolated: boolean;
  /** The worker's `navigator.hardwareConcurrency` (cores the browser reports). */
  cores: number;
  /** Milliseconds spent loading the model (in the worker). */
  loadMs: number;
  /** Milliseconds spent computing the scores and the pattern (in the worker). */
  computeMs: number;
}

/** A message from the model worker to the page. */
export type WorkerMessage =
  | { kind: "status"; text: string }
  | { kind: "result"; scores: PageScores }
  | { kind: "error"; message: string; stack?: string };
