/**
 * `HookedTransformer`: a transformer with TransformerLens's hook points, running on a compute
 * backend (WebAssembly SIMD kernels by default).
 * @module
 */
import type { Backend, WeightDtype } from "../backend/backend.ts";
import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
import { HookError, InputError } from "../core/errors.ts";
import { checkOptions } from "../core/options.ts";
import type { Tensor } from "../core/tensor.ts";
import { familyOf } from "../families/registry.ts";
import { resolveModel, type ResolveOptions } from "../io/resolve.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { ActivationCache } from "./activation_cache.ts";
import type { HookedTransformerConfig } from "./config.ts";
import { uploadWeights } from "./device_weights.ts";
import { forward, type ModelRuntime } from "./forward.ts";
import { runWithGradients } from "./gradients.ts";
import { assertHookName, getActName, hookNames } from "./hook_table.ts";
import {
  type BwdHook,
  type FwdHook,
  type HookFilter,
  type HookFn,
  HookNames,
  HookSession,
} from "./hooks.ts";
import { checkMetric, type Metric } from "./metrics.ts";
import type { ModelParams } from "./params.ts";
import { type ProcessingOptions, processWeights } from "./processing.ts";
import { type Tokens, toTokenTensor } from "./tokens.ts";

/** Options of {@link HookedTransformer.fromPretrained}: weight processing and where to find files. */
export interface FromPretrainedOptions extends ProcessingOptions, ResolveOptions {
  /** Worker threads for the kernels (default: all cores where the runtime allows). */
  threads?: number;
  /**
   * How the big matrices (W_Q|W_K|W_V, W_O, W_in, W_out, W_U) are stored in WebAssembly memory
   * (default `"f32"`). `"bf16"` halves their memory, so gpt2-large fits with room to spare and
   * gpt2-xl fits at all (1.56B parameters: 6.2 GB in f32, past wasm32's 4 GiB; 3.1 GB in bf16);
   * arithmetic stays f32 (each weight is widened in registers).
   *
   * Precision cost: bf16 keeps 8 significant bits, so each weight is rounded to within 2^-9
   * (about 0.2%) relative, ~0.4% between neighbouring values; logits move by roughly that much
   * times their spread (on GPT-2 small, a few hundredths of a logit), argmaxes rarely change.
   * The rounding applies to the weights after processing (LayerNorm folding etc., done in f32),
   * so it is not the same as loading a bf16 checkpoint. Embeddings, biases and LayerNorm
   * parameters stay f32, and the weight accessors (`model.W_Q`, ...) return the unrounded f32
   * processed weights.
   */
  weightDtype?: WeightDtype;
  /** A backend to run on instead of loading the WebAssembly kernels (`threads` is then unused). */
  backend?: Backend;
}

/** Options of {@link HookedTransformer.fromBytes}. */
export interface FromBytesOptions extends FromPretrainedOptions {
  /** The model's name (for messages and reports). */
  name?: string;
  /** The text tokenizer, if the model has one. */
  tokenizer?: Tokenizer;
}

const PROCESSING_KEYS = ["foldLn", "centerWritingWeights", "centerUnembed", "foldValueBiases"];
const RESOLVE_KEYS = [
  "revision",
  "endpoint",
  "token",
  "cacheDir",
  "offline",
  "progress",
  "fetch",
];
const LOAD_KEYS = [...PROCESSING_KEYS, ...RESOLVE_KEYS, "threads", "weightDtype", "backend"];

/**
 * What a run returns: full logits, or nothing (TransformerLens's `return_type=None`); with
 * gradients also TransformerLens's loss (`"loss"`), or both logits and loss (`"both"`).
 */
export type ReturnType = "logits" | "loss" | "both" | "none";

/** Options of {@link HookedTransformer.run}. */
export interface RunOptions {
  /** `"none"` skips the unembedding (default `"logits"`). */
  returnType?: ReturnType;
}

/** Options of {@link HookedTransformer.runWithCache}. */
export interface RunWithCacheOptions extends RunOptions {
  /** Which hook points to keep: a name, a list of names, or a predicate (default: all). */
  namesFilter?: string | string[] | ((name: string) => boolean);
  /**
   * Also run the backward pass and cache d metric / d activation at the same hook points, under
   * `<name>_grad` (TransformerLens's `incl_bwd_cache`). The metric is `metric`, else the loss
   * (`returnType: "loss"`).
   */
  inclBwdCache?: boolean;
  /** What the backward pass differentiates (with `inclBwdCache`; default the loss). */
  metric?: Metric;
}

/** Options of {@link HookedTransformer.runWithHooks}. */
export interface RunWithHooksOptions extends RunOptions {
  /** `[nameOrPredicate, hookFn]` pairs, run in order at each matching hook point. */
  fwdHooks?: FwdHook[];
  /**
   * `[nameOrPredicate, hookFn]` pairs run on the gradients during a backward pass from the loss
   * (`returnType: "loss"`) or from `metric`: each sees d metric / d activation and may return a
   * replacement that flows on (TransformerLens's backward hooks).
   */
  bwdHooks?: BwdHook[];
  /** What the backward pass differentiates (default the loss). */
  metric?: Metric;
}

const runtimes = new WeakMap<HookedTransformer, ModelRuntime>();

/**
 * What the model's passes run on (for the functions of `model/` that plan their own passes:
 * patching, next-token statistics).
 * @internal
 */
export function runtimeOf(model: HookedTransformer): ModelRuntime {
  const r = runtimes.get(model);
  if (!r) throw new InputError("expected a HookedTransformer");
  return r;
}

/**
 * A transformer with TransformerLens's hook points.
 *
 * @example
 * ```ts
 * import { getActName, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const tokens = [[2047, 5, 9, 5, 9]];
 * const logits = await model.run(tokens); // [1, 5, d_vocab]
 * const { cache } = await model.runWithCache(tokens, { namesFilter: (n) => n.endsWith("pattern") });
 * cache.get("pattern", 1).shape; // [1, 4, 5, 5]
 * // Patch: replace layer 0's MLP output at position 3 with zeros.
 * const d = model.cfg.dModel;
 * await model.runWithHooks(tokens, {
 *   fwdHooks: [[getActName("mlp_out", 0), (act) => void act.data.fill(0, 3 * d, 4 * d)]],
 * });
 * ```
 */
export class HookedTransformer {
  /** The model's shape and settings, TransformerLens names. */
  readonly cfg: HookedTransformerConfig;
  /** Every hook point, in forward order. */
  readonly hookNames: readonly string[];
  /** The text tokenizer, when the model has one (the embedded toy model takes ids only). */
  readonly tokenizer: Tokenizer | undefined;
  /** Which processing steps were applied to the weights. */
  readonly processing: Required<ProcessingOptions>;
  /** How the big weight matrices are stored on the backend (see FromPretrainedOptions). */
  readonly weightDtype: WeightDtype;
  /** The backend (and its memory) this model runs on. */
  readonly backend: Backend;
  readonly #params: ModelParams;
  readonly #names: HookNames;
  readonly #hookSet: ReadonlySet<string>;

  private constructor(
    cfg: HookedTransformerConfig,
    params: ModelParams,
    backend: Backend,
    processing: Required<ProcessingOptions>,
    tokenizer: Tokenizer | undefined,
    weightDtype: WeightDtype,
  ) {
    this.cfg = cfg;
    this.#params = params;
    this.backend = backend;
    this.processing = processing;
    this.tokenizer = tokenizer;
    this.hookNames = hookNames(cfg);
    this.#hookSet = new Set(this.hookNames);
    this.#names = new HookNames(cfg.nLayers);
    this.weightDtype = weightDtype;
    runtimes.set(this, {
      backend,
      cfg,
      params,
      weights: uploadWeights(backend, params, cfg, weightDtype),
    });
  }

  /**
   * Loads a model by name (`"gpt2"`, `"gpt2-medium"`, ..., `"induction-toy"`, an `owner/name` hub
   * id), local directory or URL, and processes its weights as TransformerLens's `from_pretrained`
   * does (all four steps on by default).
   */
  static async fromPretrained(
    nameOrPath: string,
    opts: FromPretrainedOptions = {},
  ): Promise<HookedTransformer> {
    checkOptions(opts, LOAD_KEYS, "fromPretrained");
    const files = await resolveModel(nameOrPath, opts);
    return await HookedTransformer.fromBytes(files.config, files.weights, {
      ...opts,
      name: files.name,
      tokenizer: files.tokenizer,
    });
  }

  /**
   * Builds a model from an HF `config.json` object and `model.safetensors` bytes, with no file
   * system or network access (for edge functions and browsers).
   */
  static async fromBytes(
    config: Record<string, unknown>,
    safetensors: Uint8Array,
    opts: FromBytesOptions = {},
  ): Promise<HookedTransformer> {
    checkOptions(opts, [...LOAD_KEYS, "name", "tokenizer"], "fromBytes");
    const family = familyOf(config);
    const raw = family.config(config, opts.name ?? "model");
    const processing = {
      foldLn: opts.foldLn ?? true,
      centerWritingWeights: opts.centerWritingWeights ?? true,
      centerUnembed: opts.centerUnembed ?? true,
      foldValueBiases: opts.foldValueBiases ?? true,
    };
    const { params, cfg } = processWeights(
      family.params(parseSafetensors(safetensors), raw),
      raw,
      processing,
    );
    const weightDtype = opts.weightDtype ?? "f32";
    if (weightDtype !== "f32" && weightDtype !== "bf16") {
      throw new InputError(
        `weightDtype must be "f32" or "bf16", got ${JSON.stringify(weightDtype)}`,
      );
    }
    const backend = opts.backend ?? await WasmBackend.load({ threads: opts.threads });
    return new HookedTransformer(cfg, params, backend, processing, opts.tokenizer, weightDtype);
  }

  /** Logits [batch, pos, d_vocab] for a batch of token ids (null with `returnType: "none"`). */
  async run(tokens: Tokens, opts: RunOptions = {}): Promise<Tensor> {
    checkOptions(opts, ["returnType"], "run");
    await Promise.resolve();
    return this.#forward(tokens, this.#session([], new Set()), opts.returnType)!;
  }

  /**
   * Runs the model and keeps activations under their TransformerLens names.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9]], {
   *   namesFilter: ["blocks.0.hook_mlp_out"],
   * });
   * cache.get("mlp_out", 0).shape; // [1, 3, d_model]
   * ```
   */
  async runWithCache(
    tokens: Tokens,
    opts: RunWithCacheOptions = {},
  ): Promise<{ logits: Tensor | null; cache: ActivationCache; loss?: number; value?: number }> {
    checkOptions(
      opts,
      ["returnType", "namesFilter", "inclBwdCache", "metric"],
      "runWithCache",
    );
    await Promise.resolve();
    if (opts.inclBwdCache || opts.metric !== undefined) {
      if (!opts.inclBwdCache) {
        throw new InputError(
          "runWithCache: a metric is what the backward pass differentiates: add inclBwdCache: true",
        );
      }
      const names = new Set(this.#selectNames(opts.namesFilter));
      const r = this.#gradients(tokens, opts, { cacheNames: names, gradNames: names });
      return { ...r, cache: new ActivationCache(r.cache, this.cfg.nLayers) };
    }
    const session = this.#session([], new Set(this.#selectNames(opts.namesFilter)));
    const logits = this.#forward(tokens, session, opts.returnType);
    return { logits, cache: new ActivationCache(session.cached, this.cfg.nLayers) };
  }

  /**
   * Runs the model with forward hooks: each `[filter, fn]` pair calls `fn` at every matching hook
   * point; a hook that returns a tensor (or edits its argument) patches the activation. With
   * `bwdHooks` (or a `metric`) a backward pass follows, from the loss (`returnType: "loss"`) or
   * the metric, and each backward hook sees the gradient at its hook point.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * let norm = 0;
   * const loss = await model.runWithHooks([[2047, 5, 9, 5, 9]], {
   *   returnType: "loss",
   *   bwdHooks: [["blocks.0.hook_resid_pre", (grad) => {
   *     norm = Math.hypot(...grad.data); // d loss / d resid_pre of block 0
   *   }]],
   * });
   * ```
   */
  async runWithHooks(
    tokens: Tokens,
    opts: RunWithHooksOptions & { returnType: "loss" },
  ): Promise<number>;
  /** With `returnType: "both"`: the logits and the loss. */
  async runWithHooks(
    tokens: Tokens,
    opts: RunWithHooksOptions & { returnType: "both" },
  ): Promise<{ logits: Tensor; loss: number }>;
  /** The logits, or null with `returnType: "none"`. */
  async runWithHooks(tokens: Tokens, opts: RunWithHooksOptions): Promise<Tensor | null>;
  async runWithHooks(
    tokens: Tokens,
    opts: RunWithHooksOptions,
  ): Promise<Tensor | number | { logits: Tensor; loss: number } | null> {
    checkOptions(opts, ["returnType", "fwdHooks", "bwdHooks", "metric"], "runWithHooks");
    await Promise.resolve();
    const bwd = opts.bwdHooks;
    // (an empty list runs no backward pass; anything else but a list is refused there)
    if (opts.metric !== undefined || (bwd !== undefined && !(Array.isArray(bwd) && !bwd.length))) {
      const r = this.#gradients(tokens, opts, {});
      if (opts.returnType === "loss") return r.loss!;
      if (opts.returnType === "both") return { logits: r.logits!, loss: r.loss! };
      return r.logits;
    }
    return this.#forward(tokens, this.#session(opts.fwdHooks ?? [], new Set()), opts.returnType);
  }

  /** A run with a backward pass (see `gradients.ts`). */
  #gradients(
    tokens: Tokens,
    opts: { fwdHooks?: FwdHook[]; bwdHooks?: BwdHook[]; metric?: Metric; returnType?: ReturnType },
    names: { cacheNames?: Set<string>; gradNames?: Set<string> },
  ) {
    if (opts.metric !== undefined) checkMetric(opts.metric, "metric");
    return runWithGradients(runtimeOf(this), {
      tokens: toTokenTensor(tokens, this.cfg),
      fwdHooks: this.#hookMap(opts.fwdHooks ?? [], "fwdHooks"),
      bwdHooks: this.#hookMap(opts.bwdHooks ?? [], "bwdHooks"),
      metric: opts.metric,
      returnType: opts.returnType,
      ...names,
    });
  }

  #forward(tokens: Tokens, session: HookSession, returnType: unknown): Tensor | null {
    if (returnType !== undefined && returnType !== "logits" && returnType !== "none") {
      throw new InputError(
        `returnType must be "logits" or "none", got ${JSON.stringify(returnType)}`,
      );
    }
    const t = toTokenTensor(tokens, this.cfg);
    const [batch, T] = t.shape;
    const V = this.cfg.dVocab;
    const out = returnType === "none" ? null : new Float32Array(batch * T * V);
    const { backend } = this;
    forward(runtimeOf(this), {
      batch,
      T,
      tokens: t,
      unembed: out
        ? { each: (r0, _m, logits) => out.set(backend.read(logits), r0 * V) }
        : undefined,
    }, session);
    return out && { data: out, shape: [batch, T, V] };
  }

  /** A short hook name (`"mlp_out"`) and layer as the full name, negative layers from the end. */
  getActName(name: string, layer?: number, layerType?: string): string {
    return getActName(name, layer, layerType, this.cfg.nLayers);
  }

  #selectNames(filter: RunWithCacheOptions["namesFilter"]): string[] {
    if (filter === undefined) return [...this.hookNames];
    if (typeof filter === "function") return this.hookNames.filter((n) => filter(n));
    const list = typeof filter === "string" ? [filter] : filter;
    if (!Array.isArray(list)) {
      throw new InputError("namesFilter must be a name, a list of names or a predicate");
    }
    for (const n of list) assertHookName(n, this.#hookSet, this.cfg);
    return list;
  }

  #session(fwdHooks: FwdHook[], cacheNames: Set<string>): HookSession {
    return new HookSession(
      this.backend,
      this.#names,
      this.#hookMap(fwdHooks, "fwdHooks"),
      cacheNames,
    );
  }

  /** `[filter, fn]` pairs as hook functions by full name, in order. */
  #hookMap(pairs: FwdHook[] | BwdHook[], what: string): Map<string, HookFn[]> {
    if (!Array.isArray(pairs)) {
      throw new HookError(`${what} must be an array of [nameOrPredicate, hookFunction] pairs`);
    }
    const hooks = new Map<string, HookFn[]>();
    for (const pair of pairs) {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[1] !== "function") {
        throw new HookError(`${what} entries must be [nameOrPredicate, hookFunction] pairs`);
      }
      const [filter, fn] = pair as [HookFilter, HookFn];
      const names = typeof filter === "function"
        ? this.hookNames.filter((n) => filter(n))
        : (assertHookName(filter, this.#hookSet, this.cfg), [filter]);
      for (const n of names) hooks.set(n, [...(hooks.get(n) ?? []), fn]);
    }
    return hooks;
  }

  /**
   * Stops the backend's worker threads. The model keeps working, on the calling thread alone;
   * call it when done so a long-lived process does not keep idle workers.
   */
  dispose(): void {
    this.backend.close();
  }

  // ---- Weights: TransformerLens names and shapes, processed when processing was asked. ----
  // These are the model's own arrays, not copies: treat them as read-only (the backend holds
  // its own copy, so an edit would desynchronise the two).

  /** Token embedding [d_vocab, d_model] (read-only). */
  get W_E(): Tensor {
    return this.#params.W_E;
  }
  /** Position embedding [n_ctx, d_model] (read-only). */
  get W_pos(): Tensor {
    if (!this.#params.W_pos) {
      throw new InputError(`${this.cfg.modelName} has rotary positions: it has no W_pos`);
    }
    return this.#params.W_pos;
  }
  /** Unembedding [d_model, d_vocab] (read-only). */
  get W_U(): Tensor {
    return this.#params.W_U;
  }
  /** Unembedding bias [d_vocab] (read-only). */
  get b_U(): Tensor {
    return this.#params.b_U;
  }
  /** Query weights [n_layers, n_heads, d_model, d_head] (read-only). */
  get W_Q(): Tensor {
    return this.#params.W_Q;
  }
  /** Key weights [n_layers, n_heads, d_model, d_head] (read-only). */
  get W_K(): Tensor {
    return this.#params.W_K;
  }
  /** Value weights [n_layers, n_heads, d_model, d_head] (read-only). */
  get W_V(): Tensor {
    return this.#params.W_V;
  }
  /** Output weights [n_layers, n_heads, d_head, d_model] (read-only). */
  get W_O(): Tensor {
    return this.#params.W_O;
  }
  /** Query biases [n_layers, n_heads, d_head] (read-only). */
  get b_Q(): Tensor {
    return this.#params.b_Q;
  }
  /** Key biases [n_layers, n_heads, d_head] (read-only). */
  get b_K(): Tensor {
    return this.#params.b_K;
  }
  /** Value biases [n_layers, n_heads, d_head] (zeros after foldValueBiases; read-only). */
  get b_V(): Tensor {
    return this.#params.b_V;
  }
  /** Attention output biases [n_layers, d_model] (read-only). */
  get b_O(): Tensor {
    return this.#params.b_O;
  }
  /** MLP input weights [n_layers, d_model, d_mlp] (read-only). */
  get W_in(): Tensor {
    return this.#params.W_in;
  }
  /** MLP input biases [n_layers, d_mlp] (read-only). */
  get b_in(): Tensor {
    return this.#params.b_in;
  }
  /** MLP output weights [n_layers, d_mlp, d_model] (read-only). */
  get W_out(): Tensor {
    return this.#params.W_out;
  }
  /** MLP output biases [n_layers, d_model] (read-only). */
  get b_out(): Tensor {
    return this.#params.b_out;
  }

  // ---- Text ----

  #needTokenizer(): Tokenizer {
    if (!this.tokenizer) {
      throw new InputError(
        `${this.cfg.modelName} has no text tokenizer: pass token ids (numbers in [0, ${this.cfg.dVocab})) instead of text`,
      );
    }
    return this.tokenizer;
  }

  /**
   * Text -> token ids [1, pos], with the BOS token first unless `prependBos` is false
   * (TransformerLens's `to_tokens`).
   */
  toTokens(text: string, opts: { prependBos?: boolean } = {}): number[][] {
    checkOptions(opts, ["prependBos"], "toTokens");
    const ids = this.#needTokenizer().encode(text);
    return [opts.prependBos === false ? ids : [this.cfg.bosTokenId, ...ids]];
  }

  /** Each token as its text (TransformerLens's `to_str_tokens`); text is tokenized first. */
  toStrTokens(input: string | number[], opts: { prependBos?: boolean } = {}): string[] {
    const ids = typeof input === "string" ? this.toTokens(input, opts)[0] : input;
    return this.#needTokenizer().tokenStrings(ids);
  }

  /** Token ids -> text (TransformerLens's `to_string`); with no argument, the model's name. */
  toString(tokens?: number[]): string {
    if (tokens === undefined) return `HookedTransformer(${this.cfg.modelName})`;
    return this.#needTokenizer().decode(tokens);
  }
}
