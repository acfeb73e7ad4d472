/**
 * The activations a run cached, under TransformerLens's hook names, and TransformerLens's
 * analyses of them: residual-stream decompositions (component axis first, TL's labels), head and
 * neuron results, LayerNorm applied with the cached scales, and direct logit attribution.
 * @module
 */
import { HookError, InputError } from "../core/errors.ts";
import {
  add,
  cat,
  checkTensor,
  div,
  index,
  type IndexSpec,
  matmul2d,
  mean,
  mul,
  permute,
  type Range,
  reshape,
  sub,
  sum,
  take,
} from "../core/ops.ts";
import { checkOptions } from "../core/options.ts";
import { guardTensor, stack, type Tensor } from "../core/tensor.ts";
import { indexGuard, isIndexKey } from "../core/index_guard.ts";
import type { HookedTransformerConfig } from "./config.ts";
import {
  getActName,
  HOOK_OPTION_SETTERS,
  type HookOptions,
  locateHook,
  missingHookReason,
} from "./hook_table.ts";

const ALL_OPTIONS_ON: HookOptions = {
  useAttnResult: true,
  useSplitQkvInput: true,
  useAttnIn: true,
  useHookMlpIn: true,
};
import type { NormParams } from "./params.ts";
import type { Backend } from "../backend/backend.ts";

/**
 * TransformerLens's `Slice` input, for `posSlice`, `neuronSlice` and batch slices: a number picks
 * one index and drops the axis (`-1`: the last position), a {@link Range} `{ start, stop, step }`
 * slices (TL's tuple `(a, b)` is `{ start: a, stop: b }`), an array gathers those indices, and
 * `null` or `undefined` keeps everything.
 */
export type SliceInput = number | Range | readonly number[] | null | undefined;

/** `t` with `slice` applied along `axis` (negative: from the end). */
function applySlice(t: Tensor, slice: SliceInput, axis: number): Tensor {
  if (slice === null || slice === undefined) return t;
  if (
    typeof slice !== "number" && !Array.isArray(slice) &&
    (typeof slice !== "object" ||
      Object.keys(slice).some((k) => !["start", "stop", "step"].includes(k)))
  ) {
    throw new InputError(
      `a slice must be a number, an array of indices, { start, stop, step } or null; got ${
        JSON.stringify(slice)
      }`,
    );
  }
  const r = t.shape.length;
  const a = axis < 0 ? axis + r : axis;
  const specs: IndexSpec[] = new Array(a).fill(null);
  specs.push(slice as IndexSpec);
  return index(t, ...specs);
}

/**
 * The cached activations with only the positions `posSlice` picks (TransformerLens's
 * `run_with_cache(pos_slice=...)`): a number keeps its position as an axis of length 1 (TL's
 * `Slice.unwrap` turns an int into a list, so the pos axis never collapses), a list or a range
 * keeps those positions. The axis is each point's own position axis: the query axis of
 * `attn_scores` / `pattern` (keys are all kept, as TL), axis 1 of every other point (TL slices
 * axis -3 of q, k, v, z and result and axis -2 of the rest, which for `rot_q`, `q_input` and the
 * other per-head inputs is the head axis: here their positions are sliced). Gradients
 * (`<name>_grad`) are sliced as their activations.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 5]], { posSlice: -1 });
 * cache.get("resid_post", 0).shape; // [1, 1, d_model]
 * cache.get("pattern", 0).shape; // [1, n_heads, 1, 4]
 * ```
 */
export function slicePositions(
  acts: Map<string, Tensor>,
  posSlice: SliceInput,
  cfg: HookedTransformerConfig,
): Map<string, Tensor> {
  if (posSlice === null || posSlice === undefined) return acts;
  return new Map([...acts].map(([name, t]) => [name, slicePosition(name, t, posSlice, cfg)]));
}

/**
 * One cached activation (or gradient, `<name>_grad`) with only the positions `posSlice` picks,
 * as {@link slicePositions} does for each.
 *
 * @example
 * ```ts
 * import { slicePosition } from "./activation_cache.ts";
 * import { gpt2Config } from "../families/gpt2.ts";
 * const cfg = gpt2Config({ n_layer: 1, n_head: 2, n_embd: 4, vocab_size: 10, n_positions: 8 });
 * const pattern = { data: new Float32Array(2 * 5 * 5), shape: [1, 2, 5, 5] };
 * slicePosition("blocks.0.attn.hook_pattern", pattern, -1, cfg).shape; // [1, 2, 1, 5]
 * ```
 */
export function slicePosition(
  name: string,
  t: Tensor,
  posSlice: SliceInput,
  cfg: HookedTransformerConfig,
): Tensor {
  if (posSlice === null || posSlice === undefined) return t;
  const slice = typeof posSlice === "number" ? [posSlice] : posSlice;
  const P = 1e9 + 7, K = 1e9 + 9; // sizes no config has, to find the position axis
  const loc = locateHook(name.endsWith("_grad") ? name.slice(0, -5) : name);
  const axis = loc ? loc.point.shape(cfg, 1, P, K).indexOf(P) : 1;
  if (axis < 0 || axis >= t.shape.length) return t;
  try {
    return applySlice(t, slice, axis);
  } catch (e) {
    throw new InputError(
      `posSlice ${JSON.stringify(posSlice)} does not fit ${t.shape[axis]} positions: ${
        (e as Error).message
      }`,
    );
  }
}

/**
 * What the cache's analyses read from the model: a `HookedTransformer` satisfies it.
 */
export interface CacheModel {
  /** The model's config. */
  readonly cfg: HookedTransformerConfig;
  /** Unembedding [d_model, d_vocab]. */
  readonly W_U: Tensor;
  /** Attention output weights [n_layers, n_heads, d_head, d_model]. */
  readonly W_O: Tensor;
  /** Attention output biases [n_layers, d_model]. */
  readonly b_O: Tensor;
  /** MLP output weights [n_layers, d_mlp, d_model]. */
  readonly W_out: Tensor;
  /** MLP output biases [n_layers, d_model]. */
  readonly b_out: Tensor;
  /** The final norm's weight and bias, or null once folded (LNPre, RMSPre). */
  readonly lnFinal: NormParams | null;
  /** Text -> token ids (for string answers in `logitAttrs`). */
  toTokens?(text: string, opts?: { prependBos?: boolean }): number[][];
  /** Where the cache's large products run (`computeHeadResults`); JavaScript without one. */
  readonly backend?: Backend;
}

/** Options of {@link ActivationCache.accumulatedResid}. */
export interface AccumulatedResidOptions {
  /** Streams up to the input of this layer, in [0, n_layers]; -1 or omitted: n_layers (all). */
  layer?: number;
  /** Also each earlier layer's resid_mid (default false). */
  inclMid?: boolean;
  /** Apply the final LayerNorm, re-normalising each entry (logit lens; default false). */
  applyLn?: boolean;
  /** Positions to keep (see {@link SliceInput}). */
  posSlice?: SliceInput;
  /** Include `layer`'s resid_mid too: the MLP's input rather than attention's (default false). */
  mlpInput?: boolean;
  /** Return `[stack, labels]` (default false). */
  returnLabels?: boolean;
}

/** Options of {@link ActivationCache.decomposeResid}. */
export interface DecomposeResidOptions {
  /** Components up to the input of this layer, in [0, n_layers]; -1 or omitted: n_layers. */
  layer?: number;
  /** Include `layer`'s attention output: decompose the MLP's input (default false). */
  mlpInput?: boolean;
  /** `"all"` (default), `"mlp"` or `"attn"` outputs only. */
  mode?: "all" | "mlp" | "attn";
  /** Apply `layer`'s LayerNorm with its cached scale (default false). */
  applyLn?: boolean;
  /** Positions to keep (see {@link SliceInput}). */
  posSlice?: SliceInput;
  /** Include `embed` and `pos_embed` (default true). */
  inclEmbeds?: boolean;
  /** Return `[stack, labels]` (default false). */
  returnLabels?: boolean;
}

/** Options of {@link ActivationCache.stackHeadResults}. */
export interface StackHeadResultsOptions {
  /** Heads of the layers before this one; -1 or omitted: every layer. */
  layer?: number;
  /** Return `[stack, labels]` (default false). */
  returnLabels?: boolean;
  /** Append "the rest of the residual stream" as a last component (default false). */
  inclRemainder?: boolean;
  /** Positions to keep (see {@link SliceInput}). */
  posSlice?: SliceInput;
  /** Apply `layer`'s LayerNorm with its cached scale (default false). */
  applyLn?: boolean;
}

/** Options of {@link ActivationCache.stackNeuronResults}. */
export interface StackNeuronResultsOptions {
  /** Positions to keep (see {@link SliceInput}). */
  posSlice?: SliceInput;
  /** Neurons to keep (see {@link SliceInput}). */
  neuronSlice?: SliceInput;
  /** Return `[stack, labels]` (default false). */
  returnLabels?: boolean;
  /** Append "the rest of the residual stream" as a last component (default false). */
  inclRemainder?: boolean;
  /** Apply `layer`'s LayerNorm with its cached scale (default false). */
  applyLn?: boolean;
}

/** Options of {@link ActivationCache.getFullResidDecomposition}. */
export interface FullResidDecompositionOptions {
  /** The layer whose input is decomposed, in [0, n_layers]; -1 or omitted: n_layers. */
  layer?: number;
  /** Decompose the MLP's input of `layer` instead of attention's (default false). */
  mlpInput?: boolean;
  /** One component per MLP neuron (default true); false: one per MLP layer. */
  expandNeurons?: boolean;
  /** Apply `layer`'s LayerNorm with its cached scale (default false). */
  applyLn?: boolean;
  /** Positions to keep (see {@link SliceInput}). */
  posSlice?: SliceInput;
  /** Return `[stack, labels]` (default false). */
  returnLabels?: boolean;
}

/** Options of {@link ActivationCache.applyLnToStack}. */
export interface ApplyLnOptions {
  /** The layer whose input the stack is, in [0, n_layers]; -1 or omitted: the unembedding. */
  layer?: number;
  /** ln2 (the MLP's input) rather than ln1 (default false). */
  mlpInput?: boolean;
  /** The positions the stack already kept, applied to the cached scale (see {@link SliceInput}). */
  posSlice?: SliceInput;
  /** Batch entries to keep, applied to the stack (axis 1) and the scale. */
  batchSlice?: SliceInput;
  /** Whether the stack has a batch axis after the component axis (default true). */
  hasBatchDim?: boolean;
  /**
   * For the unembedding: apply the final norm to each component with its own statistics (a
   * logit lens) instead of the cached scale (default false).
   */
  recomputeLn?: boolean;
}

/** Options of {@link ActivationCache.logitAttrs}. */
export interface LogitAttrsOptions {
  /** Attribute the logit difference tokens - incorrectTokens (same shape as `tokens`). */
  incorrectTokens?: LogitTokens;
  /** The positions the stack already kept, applied to the cached scale. */
  posSlice?: SliceInput;
  /** Batch entries to keep. */
  batchSlice?: SliceInput;
  /** Whether the stack has a batch axis (default true). */
  hasBatchDim?: boolean;
}

/**
 * Tokens whose unembedding directions {@link ActivationCache.logitAttrs} projects on: one id, a
 * string that is one token, ids per batch entry, or ids per batch entry and position.
 */
export type LogitTokens = number | string | readonly number[] | readonly (readonly number[])[];

const ACCUMULATED_KEYS = [
  "layer",
  "inclMid",
  "applyLn",
  "posSlice",
  "mlpInput",
  "returnLabels",
];
const DECOMPOSE_KEYS = [
  "layer",
  "mlpInput",
  "mode",
  "applyLn",
  "posSlice",
  "inclEmbeds",
  "returnLabels",
];
const HEAD_KEYS = ["layer", "returnLabels", "inclRemainder", "posSlice", "applyLn"];
const NEURON_KEYS = ["posSlice", "neuronSlice", "returnLabels", "inclRemainder", "applyLn"];
const FULL_KEYS = ["layer", "mlpInput", "expandNeurons", "applyLn", "posSlice", "returnLabels"];
const LN_KEYS = ["layer", "mlpInput", "posSlice", "batchSlice", "hasBatchDim", "recomputeLn"];
const ATTR_KEYS = ["incorrectTokens", "posSlice", "batchSlice", "hasBatchDim"];

/**
 * Activations by hook name, as `run_with_cache` returns them in TransformerLens. Each tensor is
 * an owned copy with TransformerLens's shape (for example `[batch, head, query, key]` for
 * `hook_pattern`). With the model (as `runWithCache` passes it), the cache also decomposes the
 * residual stream as TransformerLens's `ActivationCache` does: components first, TL's labels.
 *
 * On WebAssembly, `runWithCache` leaves the activations in the model's memory (a copy there, not
 * to the host) and copies each to the host when its `data` is first read. Dispose the cache when
 * done (`using`, or {@link ActivationCache.dispose}) to release that memory without copying what
 * was never read; a cache not disposed is copied whole to the host when the model's next call
 * starts, and stays readable for good.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 5]]);
 * cache.get("pattern", 1).shape; // [1, 4, 4, 4], as cache.get("blocks.1.attn.hook_pattern")
 * const [stack, labels] = cache.decomposeResid({ posSlice: -1, returnLabels: true });
 * labels; // ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", ..., "2_mlp_out"]
 * stack.shape; // [8, 1, d_model]
 * ```
 */
export class ActivationCache {
  readonly #acts: Map<string, Tensor>;
  readonly #nLayers: number | undefined;
  /** The model the activations come from (absent when the cache was built without it). */
  readonly model: CacheModel | undefined;
  /** Whether activations have their batch axis (false after {@link removeBatchDim}). */
  hasBatchDim: boolean;
  /** The backend memory still holding activations not yet read (see {@link dispose}). */
  readonly #held: Disposable | undefined;

  /**
   * Wraps a map of hook name -> activation (the model builds these).
   * @param acts Activations by full hook name.
   * @param model The model they come from (needed by the analyses), or only its layer count
   *   (so that negative layers count from the end).
   * @param hasBatchDim Whether the activations have their batch axis (default true).
   * @param held What {@link dispose} releases: the backend memory of activations not yet read.
   */
  constructor(
    acts: Map<string, Tensor>,
    model?: CacheModel | number,
    hasBatchDim = true,
    held?: Disposable,
  ) {
    // The same tensors (not copied), handed out as the library's tensors (t[0] throws).
    this.#acts = new Map([...acts].map(([k, t]) => [k, guardTensor(t)]));
    this.model = typeof model === "number" ? undefined : model;
    this.#nLayers = typeof model === "number" ? model : model?.cfg.nLayers;
    this.hasBatchDim = hasBatchDim;
    this.#held = held;
  }

  /**
   * Releases the model memory that still holds activations never read (`runWithCache` on
   * WebAssembly keeps them there until read). Activations read before stay; reading one that was
   * not is then a {@link HookError}. Disposing twice, or a cache that holds nothing, does nothing.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * let pattern;
   * {
   *   using cache = (await model.runWithCache([[2047, 5, 9, 5]])).cache;
   *   pattern = cache.get("pattern", 1);
   *   pattern.data.length; // 64: read, so copied to the host now
   * } // the activations never read are released here, never copied
   * pattern.data[0]; // 1: still there
   * ```
   */
  dispose(): void {
    this.#held?.[Symbol.dispose]();
  }

  /** The same as {@link ActivationCache.dispose} (`using cache = ...`). */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * The activation cached at a hook point: a full name, or a short name with a layer
   * (`get("mlp_out", 3)`, `get("resid_pre", -1)` for the last block), as {@link getActName}
   * builds them.
   */
  get(name: string, layer?: number, layerType?: string): Tensor {
    const full = getActName(name, layer, layerType, this.#nLayers);
    const t = this.#acts.get(full);
    if (!t) {
      const loc = locateHook(full);
      const cfg = this.model?.cfg;
      if (!loc) {
        throw new HookError(
          `"${full}" is not a hook point (getActName("mlp_out", 0) builds names; ` +
            `model.hookNames lists them all)`,
        );
      }
      if (loc.layer !== null && this.#nLayers !== undefined && loc.layer >= this.#nLayers) {
        const L = this.#nLayers;
        throw new HookError(
          `layer ${loc.layer} is out of range: the model has ${L} layer${L === 1 ? "" : "s"} ` +
            `(0 to ${L - 1}, or -${L} to -1 from the end)`,
        );
      }
      // Whether an option point was on is the run's business: only the architecture is checked.
      const reason = cfg && missingHookReason(full, cfg, ALL_OPTIONS_ON);
      if (reason) throw new HookError(reason);
      const have = [...this.#acts.keys()];
      const option = loc.point.option;
      throw new HookError(
        `"${full}" is not in this cache` +
          (have.length
            ? ` (it holds ${have.length} names, e.g. ${have.slice(0, 3).join(", ")})`
            : " (it is empty)") +
          `; widen namesFilter in runWithCache to keep it` +
          (option ? ` (and turn it on with ${HOOK_OPTION_SETTERS[option]})` : ""),
      );
    }
    return t;
  }

  /** Whether the cache holds an activation for this name. */
  has(name: string, layer?: number, layerType?: string): boolean {
    return this.#acts.has(getActName(name, layer, layerType, this.#nLayers));
  }

  /** The cached hook names, in forward order. */
  keys(): string[] {
    return [...this.#acts.keys()];
  }

  /** `[name, activation]` pairs, in forward order. */
  entries(): [string, Tensor][] {
    return [...this.#acts.entries()];
  }

  /** How many activations are cached. */
  get size(): number {
    return this.#acts.size;
  }

  // ---- Batch axis ----

  /**
   * Drops the batch axis of every activation of a batch-1 cache, in place (TL's
   * `remove_batch_dim`); returns the cache.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9]]);
   * cache.removeBatchDim().get("resid_pre", 0).shape; // [3, d_model]
   * ```
   */
  removeBatchDim(): this {
    if (!this.hasBatchDim) return this;
    for (const [name, t] of this.#acts) {
      if (t.shape[0] !== 1) {
        throw new InputError(
          `removeBatchDim needs a batch of 1, but "${name}" has shape [${t.shape}]; ` +
            `use applySliceToBatchDim(i) to keep one batch entry`,
        );
      }
    }
    for (const [name, t] of this.#acts) {
      this.#acts.set(name, guardTensor({ data: t.data, shape: t.shape.slice(1) }));
    }
    this.hasBatchDim = false;
    return this;
  }

  /**
   * A new cache with `batchSlice` applied to every activation's batch axis (TL's
   * `apply_slice_to_batch_dim`): a number keeps one entry and drops the axis.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9], [2047, 7, 7]]);
   * cache.applySliceToBatchDim(1).get("resid_pre", 0).shape; // [3, d_model]
   * cache.applySliceToBatchDim({ start: 0, stop: 1 }).get("resid_pre", 0).shape; // [1, 3, d_model]
   * ```
   */
  applySliceToBatchDim(batchSlice: SliceInput): ActivationCache {
    if (!this.hasBatchDim && batchSlice !== null && batchSlice !== undefined) {
      throw new InputError("applySliceToBatchDim: this cache has no batch axis any more");
    }
    const acts = new Map<string, Tensor>();
    for (const [name, t] of this.#acts) acts.set(name, applySlice(t, batchSlice, 0));
    const keepsBatch = this.hasBatchDim && typeof batchSlice !== "number";
    return new ActivationCache(acts, this.model ?? this.#nLayers, keepsBatch);
  }

  /**
   * The gradients of this cache (`runWithCache({ inclBwdCache: true })` keeps them under
   * `<name>_grad`) as a cache of their own, under the activations' names: what TL users build as
   * a separate `grad_cache` with backward hooks. Every method then reads gradients:
   * `grads.accumulatedResid()` stacks d metric / d resid at each layer, `grads.decomposeResid()`
   * and `grads.stackHeadResults()` the gradients at each component's output (the sum rules of
   * those stacks hold for gradients only where a gradient is the same at both points, as for the
   * residual stream; `applyLn` divides by the forward's scale, which is rarely what a gradient
   * wants). An InputError when the cache holds no gradient.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9, 5]], {
   *   inclBwdCache: true,
   *   returnType: "loss",
   * });
   * const grads = cache.gradCache();
   * grads.get("resid_pre", 0).shape; // [1, 4, d_model]: d loss / d resid_pre 0
   * grads.accumulatedResid().shape; // [n_layers + 1, 1, 4, d_model]
   * ```
   */
  gradCache(): ActivationCache {
    const acts = new Map<string, Tensor>();
    for (const [name, t] of this.#acts) {
      if (name.endsWith("_grad")) acts.set(name.slice(0, -5), t);
    }
    if (acts.size === 0) {
      throw new InputError(
        "gradCache: this cache holds no gradients: run runWithCache(input, { inclBwdCache: true })",
      );
    }
    return new ActivationCache(acts, this.model ?? this.#nLayers, this.hasBatchDim);
  }

  // ---- Analyses ----

  #model(where: string): CacheModel {
    if (!this.model) {
      throw new InputError(
        `${where} needs the model: use the cache runWithCache returns, or construct it with ` +
          `new ActivationCache(acts, model)`,
      );
    }
    return this.model;
  }

  /** A layer argument as TL reads it: undefined or -1 is n_layers; else in [0, n_layers]. */
  #layer(layer: number | undefined, where: string): number {
    const L = this.#model(where).cfg.nLayers;
    if (layer === undefined || layer === -1) return L;
    if (!Number.isInteger(layer) || layer < 0 || layer > L) {
      throw new InputError(`${where}: layer ${layer} must be in [0, ${L}] (or -1 for ${L})`);
    }
    return layer;
  }

  /**
   * The residual stream at each layer's input, stacked (TL's `accumulated_resid`, for the logit
   * lens): labels `"0_pre"`, (`"0_mid"`,) `"1_pre"`, ..., `"final_post"`. With `applyLn` the final
   * norm re-normalises each entry with its own statistics (TL's `recompute_ln`) when `layer` is
   * the last; otherwise the cached scale of `layer`'s norm is used.
   *
   * @example
   * ```ts
   * import { HookedTransformer, matmul } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9, 5]]);
   * const [resid, labels] = cache.accumulatedResid({ applyLn: true, posSlice: -1, returnLabels: true });
   * labels; // ["0_pre", "1_pre", "2_pre", "final_post"]
   * const lens = matmul(resid, model.W_U); // [4, 1, d_vocab]: what each layer "predicts"
   * ```
   */
  accumulatedResid(opts: AccumulatedResidOptions & { returnLabels: true }): [Tensor, string[]];
  /** Without `returnLabels`: the stack alone. */
  accumulatedResid(opts?: AccumulatedResidOptions & { returnLabels?: false }): Tensor;
  accumulatedResid(opts: AccumulatedResidOptions = {}): Tensor | [Tensor, string[]] {
    checkOptions(opts, ACCUMULATED_KEYS, "accumulatedResid");
    const layer = this.#layer(opts.layer, "accumulatedResid");
    const L = this.model!.cfg.nLayers;
    if (opts.mlpInput && layer === L) {
      throw new InputError("accumulatedResid: mlpInput needs a layer below n_layers");
    }
    const parts: Tensor[] = [], labels: string[] = [];
    for (let l = 0; l <= layer; l++) {
      if (l === L) {
        parts.push(this.get("resid_post", L - 1));
        labels.push("final_post");
        continue;
      }
      parts.push(this.get("resid_pre", l));
      labels.push(`${l}_pre`);
      if ((opts.inclMid && l < layer) || (opts.mlpInput && l === layer)) {
        parts.push(this.get("resid_mid", l));
        labels.push(`${l}_mid`);
      }
    }
    let out = stack(parts.map((t) => applySlice(t, opts.posSlice, -2)));
    if (opts.applyLn) {
      out = this.applyLnToStack(out, {
        layer,
        posSlice: opts.posSlice,
        mlpInput: opts.mlpInput,
        recomputeLn: layer === L,
      });
    }
    return opts.returnLabels ? [out, labels] : out;
  }

  /**
   * The residual stream entering `layer` as the sum of its parts (TL's `decompose_resid`): labels
   * `"embed"`, `"pos_embed"`, `"0_attn_out"`, `"0_mlp_out"`, ... Their sum is the stream (the
   * outputs include their biases).
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9, 5]]);
   * const [parts, labels] = cache.decomposeResid({ mode: "attn", returnLabels: true });
   * labels; // ["embed", "pos_embed", "0_attn_out", "1_attn_out", "2_attn_out"]
   * parts.shape; // [5, 1, 4, d_model]
   * ```
   */
  decomposeResid(opts: DecomposeResidOptions & { returnLabels: true }): [Tensor, string[]];
  /** Without `returnLabels`: the stack alone. */
  decomposeResid(opts?: DecomposeResidOptions & { returnLabels?: false }): Tensor;
  decomposeResid(opts: DecomposeResidOptions = {}): Tensor | [Tensor, string[]] {
    checkOptions(opts, DECOMPOSE_KEYS, "decomposeResid");
    const layer = this.#layer(opts.layer, "decomposeResid");
    const mode = opts.mode ?? "all";
    if (!["all", "mlp", "attn"].includes(mode)) {
      throw new InputError(`decomposeResid: mode must be "all", "mlp" or "attn", got ${mode}`);
    }
    if (opts.mlpInput && layer === this.model!.cfg.nLayers) {
      throw new InputError("decomposeResid: mlpInput needs a layer below n_layers");
    }
    const inclAttn = mode !== "mlp", inclMlp = mode !== "attn";
    const parts: Tensor[] = [], labels: string[] = [];
    if (opts.inclEmbeds ?? true) {
      for (const [name, label] of [["hook_embed", "embed"], ["hook_pos_embed", "pos_embed"]]) {
        if (this.#acts.has(name)) {
          parts.push(this.get(name));
          labels.push(label);
        }
      }
    }
    for (let l = 0; l < layer; l++) {
      if (inclAttn) {
        parts.push(this.get("attn_out", l));
        labels.push(`${l}_attn_out`);
      }
      if (inclMlp) {
        parts.push(this.get("mlp_out", l));
        labels.push(`${l}_mlp_out`);
      }
    }
    if (opts.mlpInput && inclAttn) {
      parts.push(this.get("attn_out", layer));
      labels.push(`${layer}_attn_out`);
    }
    if (parts.length === 0) throw new InputError("decomposeResid: no component selected");
    let out = stack(parts.map((t) => applySlice(t, opts.posSlice, -2)));
    if (opts.applyLn) {
      out = this.applyLnToStack(out, { layer, posSlice: opts.posSlice, mlpInput: opts.mlpInput });
    }
    return opts.returnLabels ? [out, labels] : out;
  }

  /**
   * One activation of every layer before `layer` (default all), stacked: [layers, ...] (TL's
   * `stack_activation`).
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9]]);
   * cache.stackActivation("pattern").shape; // [3, 1, 4, 3, 3]
   * ```
   */
  stackActivation(activationName: string, layer = -1, sublayerType?: string): Tensor {
    const L = this.#layer(layer, "stackActivation");
    if (L === 0) throw new InputError("stackActivation: layer 0 stacks nothing");
    return stack(Array.from({ length: L }, (_, l) => this.get(activationName, l, sublayerType)));
  }

  /**
   * Computes each head's output `blocks.{l}.attn.hook_result` [batch, pos, head, d_model] = z W_O
   * per head (before b_O) from the cached `hook_z` and the model's W_O, and caches it (TL's
   * `compute_head_results`; a no-op when the results are cached already).
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9]]);
   * cache.computeHeadResults();
   * cache.get("result", 1).shape; // [1, 3, 4, d_model]
   * ```
   */
  computeHeadResults(): void {
    const model = this.#model("computeHeadResults");
    const { nLayers, nHeads, dHead, dModel } = model.cfg;
    for (let l = 0; l < nLayers; l++) {
      const name = getActName("result", l);
      if (this.#acts.has(name)) continue;
      const z = this.get("z", l); // [batch, pos, head, d_head] or [pos, head, d_head]
      const rows = z.data.length / (nHeads * dHead);
      const W_O = model.W_O.data.subarray(l * nHeads * dHead * dModel);
      const out = new Float32Array(rows * nHeads * dModel);
      const zh = new Float32Array(rows * dHead);
      for (let h = 0; h < nHeads; h++) {
        for (let r = 0; r < rows; r++) {
          zh.set(
            z.data.subarray((r * nHeads + h) * dHead, (r * nHeads + h + 1) * dHead),
            r * dHead,
          );
        }
        // One product a head on the model's kernels (a WebGPU model's host companion): the 144
        // of GPT-2 small's shape at 1 x 101 took 0.74 s in JavaScript's float64 loop.
        const W = W_O.subarray(h * dHead * dModel, (h + 1) * dHead * dModel);
        const res = matmul2d(zh, W, rows, dHead, dModel, model.backend);
        for (let r = 0; r < rows; r++) {
          out.set(res.subarray(r * dModel, (r + 1) * dModel), (r * nHeads + h) * dModel);
        }
      }
      this.#acts.set(name, { data: out, shape: [...z.shape.slice(0, -1), dModel] });
    }
  }

  /**
   * Every head's output up to `layer`, stacked (TL's `stack_head_results`): labels `"L0H0"`,
   * `"L0H1"`, ..., and `"remainder"` (the stream minus every head: embeddings, MLPs, biases) with
   * `inclRemainder`. Head results are computed from `hook_z` when not cached.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9, 5]]);
   * const [heads, labels] = cache.stackHeadResults({ posSlice: -1, returnLabels: true });
   * labels.slice(0, 2); // ["L0H0", "L0H1"]
   * heads.shape; // [n_layers * n_heads, 1, d_model]
   * ```
   */
  stackHeadResults(opts: StackHeadResultsOptions & { returnLabels: true }): [Tensor, string[]];
  /** Without `returnLabels`: the stack alone. */
  stackHeadResults(opts?: StackHeadResultsOptions & { returnLabels?: false }): Tensor;
  stackHeadResults(opts: StackHeadResultsOptions = {}): Tensor | [Tensor, string[]] {
    checkOptions(opts, HEAD_KEYS, "stackHeadResults");
    const layer = this.#layer(opts.layer, "stackHeadResults");
    const { nHeads } = this.model!.cfg;
    this.computeHeadResults();
    const labels: string[] = [];
    const perLayer: Tensor[] = [];
    for (let l = 0; l < layer; l++) {
      perLayer.push(applySlice(this.get("result", l), opts.posSlice, -3));
      for (let h = 0; h < nHeads; h++) labels.push(`L${l}H${h}`);
    }
    const out = this.#finishStack(perLayer, labels, layer, opts);
    return opts.returnLabels ? [out, labels] : out;
  }

  /**
   * Per-layer parts [..., components, d_model] as one stack, components first; with
   * `inclRemainder` the stream entering `layer` minus their sum (label `"remainder"`); with
   * `applyLn` that layer's norm applied.
   */
  #finishStack(
    perLayer: Tensor[],
    labels: string[],
    layer: number,
    opts: { posSlice?: SliceInput; inclRemainder?: boolean; applyLn?: boolean },
  ): Tensor {
    const rest = this.#streamAt(layer, opts.posSlice);
    let out = perLayer.length ? componentsFirst(cat(perLayer, -2)) : emptyStack(rest);
    if (opts.inclRemainder) {
      out = appendComponent(out, perLayer.length ? sub(rest, sum(out, 0)) : rest);
      labels.push("remainder");
    }
    return opts.applyLn ? this.applyLnToStack(out, { layer, posSlice: opts.posSlice }) : out;
  }

  /** The stream entering `layer` (resid_post of the layer before; resid_pre[0] at layer 0). */
  #streamAt(layer: number, posSlice: SliceInput): Tensor {
    const t = layer === 0 ? this.get("resid_pre", 0) : this.get("resid_post", layer - 1);
    return applySlice(t, posSlice, -2);
  }

  /**
   * Each neuron's contribution to the residual stream, `post[..., n] * W_out[n]` (TL's
   * `get_neuron_results`): [...batch_and_pos, neurons, d_model].
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9]]);
   * cache.getNeuronResults(0, { neuronSlice: [0, 7] }).shape; // [1, 3, 2, d_model]
   * ```
   */
  getNeuronResults(
    layer: number,
    opts: { neuronSlice?: SliceInput; posSlice?: SliceInput } = {},
  ): Tensor {
    checkOptions(opts, ["neuronSlice", "posSlice"], "getNeuronResults");
    const model = this.#model("getNeuronResults");
    const { nLayers, dMlp, dModel } = model.cfg;
    if (!Number.isInteger(layer) || layer < 0 || layer >= nLayers) {
      throw new InputError(`getNeuronResults: layer ${layer} is outside [0, ${nLayers})`);
    }
    let acts = applySlice(this.get("post", layer), opts.posSlice, -2);
    acts = applySlice(acts, opts.neuronSlice, -1);
    const W_out = applySlice(
      {
        data: model.W_out.data.subarray(layer * dMlp * dModel, (layer + 1) * dMlp * dModel),
        shape: [dMlp, dModel],
      },
      opts.neuronSlice,
      0,
    );
    return mul(reshape(acts, [...acts.shape, 1]), W_out);
  }

  /**
   * Every neuron's contribution up to `layer`, stacked (TL's `stack_neuron_results`): labels
   * `"L0N0"`, `"L0N1"`, ..., and `"remainder"` with `inclRemainder`. Memory: one d_model vector
   * per neuron, position and batch entry; slice neurons or positions on big models.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9]]);
   * const [neurons, labels] = cache.stackNeuronResults(1, { posSlice: -1, returnLabels: true });
   * labels[0]; // "L0N0"
   * neurons.shape; // [d_mlp, 1, d_model]
   * ```
   */
  stackNeuronResults(
    layer: number,
    opts: StackNeuronResultsOptions & { returnLabels: true },
  ): [Tensor, string[]];
  /** Without `returnLabels`: the stack alone. */
  stackNeuronResults(
    layer: number,
    opts?: StackNeuronResultsOptions & { returnLabels?: false },
  ): Tensor;
  stackNeuronResults(
    layer: number,
    opts: StackNeuronResultsOptions = {},
  ): Tensor | [Tensor, string[]] {
    checkOptions(opts, NEURON_KEYS, "stackNeuronResults");
    const L = this.#layer(layer, "stackNeuronResults");
    const { dMlp } = this.model!.cfg;
    const neurons = applySlice(
      { data: Float32Array.from({ length: dMlp }, (_, i) => i), shape: [dMlp] },
      opts.neuronSlice,
      0,
    );
    const ids = Array.from(neurons.shape.length ? neurons.data : [neurons.data[0]]);
    const labels: string[] = [];
    const perLayer: Tensor[] = [];
    for (let l = 0; l < L; l++) {
      let r = this.getNeuronResults(l, { posSlice: opts.posSlice, neuronSlice: opts.neuronSlice });
      if (typeof opts.neuronSlice === "number") {
        r = reshape(r, [...r.shape.slice(0, -1), 1, r.shape.at(-1)!]);
      }
      perLayer.push(r);
      for (const n of ids) labels.push(`L${l}N${n}`);
    }
    const out = this.#finishStack(perLayer, labels, L, opts);
    return opts.returnLabels ? [out, labels] : out;
  }

  /**
   * The residual stream entering `layer` as every head, every neuron (or MLP), the embeddings
   * and the accumulated biases (TL's `get_full_resid_decomposition`): head labels, then neuron
   * (or `"{l}_mlp_out"`) labels, `"embed"`, `"pos_embed"`, `"bias"`. The components sum to the
   * stream.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9]]);
   * const [parts, labels] = cache.getFullResidDecomposition({
   *   expandNeurons: false,
   *   posSlice: -1,
   *   returnLabels: true,
   * });
   * labels.slice(-5); // ["1_mlp_out", "2_mlp_out", "embed", "pos_embed", "bias"]
   * ```
   */
  getFullResidDecomposition(
    opts: FullResidDecompositionOptions & { returnLabels: true },
  ): [Tensor, string[]];
  /** Without `returnLabels`: the stack alone. */
  getFullResidDecomposition(
    opts?: FullResidDecompositionOptions & { returnLabels?: false },
  ): Tensor;
  getFullResidDecomposition(
    opts: FullResidDecompositionOptions = {},
  ): Tensor | [Tensor, string[]] {
    checkOptions(opts, FULL_KEYS, "getFullResidDecomposition");
    const layer = this.#layer(opts.layer, "getFullResidDecomposition");
    const model = this.model!;
    const L = model.cfg.nLayers;
    if (opts.mlpInput && layer === L) {
      throw new InputError("getFullResidDecomposition: mlpInput needs a layer below n_layers");
    }
    const expand = opts.expandNeurons ?? true;
    const posSlice = opts.posSlice;
    const [heads, labels] = this.stackHeadResults({
      layer: layer + (opts.mlpInput ? 1 : 0),
      posSlice,
      returnLabels: true,
    });
    const parts = [heads];
    if (layer > 0) {
      const [mlp, mlpLabels] = expand
        ? this.stackNeuronResults(layer, { posSlice, returnLabels: true })
        : this.decomposeResid({
          layer,
          mlpInput: opts.mlpInput,
          posSlice,
          inclEmbeds: false,
          mode: "mlp",
          returnLabels: true,
        });
      parts.push(mlp);
      labels.push(...mlpLabels);
    }
    for (const [name, label] of [["hook_embed", "embed"], ["hook_pos_embed", "pos_embed"]]) {
      if (this.#acts.has(name)) {
        const t = applySlice(this.get(name), posSlice, -2);
        parts.push(reshape(t, [1, ...t.shape]));
        labels.push(label);
      }
    }
    const bias = accumulatedBias(model, layer, !!opts.mlpInput, expand);
    const like = heads.shape.slice(1);
    parts.push(
      add({ data: new Float32Array(like.reduce((a, b) => a * b, 1)), shape: [1, ...like] }, bias),
    );
    labels.push("bias");
    let out = cat(parts, 0);
    if (opts.applyLn) out = this.applyLnToStack(out, { layer, posSlice, mlpInput: opts.mlpInput });
    return opts.returnLabels ? [out, labels] : out;
  }

  /**
   * Treats each component of `stack` [components, ...batch_and_pos, d_model] as the input of
   * `layer` and applies that layer's norm as it acted on the real stream (TL's
   * `apply_ln_to_stack`): centred over d_model (LayerNorm) and divided by the cached scale
   * (`blocks.{layer}.ln1|ln2.hook_scale`, or `ln_final.hook_scale` for the unembedding). With
   * `recomputeLn` and the unembedding, each component is normalised with its own statistics
   * instead (and the final norm's weights applied when not folded).
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9]]);
   * const parts = cache.decomposeResid({ posSlice: -1 });
   * cache.applyLnToStack(parts, { posSlice: -1 }).shape; // [8, 1, d_model]
   * ```
   */
  applyLnToStack(stackIn: Tensor, opts: ApplyLnOptions = {}): Tensor {
    checkOptions(opts, LN_KEYS, "applyLnToStack");
    const model = this.#model("applyLnToStack");
    const cfg = model.cfg;
    checkTensor(stackIn, "applyLnToStack: the stack");
    if (stackIn.shape.length < 2 || stackIn.shape.at(-1) !== cfg.dModel) {
      throw new InputError(
        `applyLnToStack: the stack must be [components, ..., d_model = ${cfg.dModel}], got [${stackIn.shape}]`,
      );
    }
    const layer = this.#layer(opts.layer, "applyLnToStack");
    const L = cfg.nLayers;
    if (opts.mlpInput && layer === L) {
      throw new InputError("applyLnToStack: mlpInput is for a block's ln2, not the final norm");
    }
    let s = stackIn;
    if ((opts.hasBatchDim ?? true) && opts.batchSlice !== undefined && opts.batchSlice !== null) {
      s = applySlice(s, opts.batchSlice, 1);
    }
    const rms = cfg.normalizationType === "RMS" || cfg.normalizationType === "RMSPre";
    if (opts.recomputeLn && layer === L) return normalizeEach(s, cfg.eps, rms, model.lnFinal);
    if (!rms) s = sub(s, mean(s, -1, { keepDim: true }));
    const key = layer === L
      ? "ln_final.hook_scale"
      : `blocks.${layer}.ln${opts.mlpInput ? 2 : 1}.hook_scale`;
    if (!this.#acts.has(key)) {
      throw new HookError(
        `applyLnToStack needs the cached "${key}": keep it in runWithCache's namesFilter`,
      );
    }
    let scale = applySlice(this.get(key), opts.posSlice, -2);
    if (this.hasBatchDim && opts.batchSlice !== undefined && opts.batchSlice !== null) {
      scale = applySlice(scale, opts.batchSlice, 0);
    }
    return div(s, scale);
  }

  /**
   * How much each component of `stack` writes in the direction of `tokens`' unembedding (minus
   * `incorrectTokens`' when given), after the final norm's cached scale (TL's `logit_attrs`):
   * [components, ...batch_and_pos]. With the stack at one position (`posSlice: -1`) and one token
   * per batch entry, the attributions plus the difference of b_U sum to the logit difference.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { cache } = await model.runWithCache([[2047, 5, 9, 5]]);
   * const [parts, labels] = cache.decomposeResid({ posSlice: -1, returnLabels: true });
   * const attrs = cache.logitAttrs(parts, [9], { incorrectTokens: [5], posSlice: -1 });
   * attrs.shape; // [8, 1]: one number per component and batch entry
   * ```
   */
  logitAttrs(stackIn: Tensor, tokens: LogitTokens, opts: LogitAttrsOptions = {}): Tensor {
    checkOptions(opts, ATTR_KEYS, "logitAttrs");
    const model = this.#model("logitAttrs");
    let directions = this.#directions(model, tokens, "tokens");
    if (opts.incorrectTokens !== undefined) {
      const wrong = this.#directions(model, opts.incorrectTokens, "incorrectTokens");
      if (wrong.shape.join() !== directions.shape.join()) {
        throw new InputError(
          `logitAttrs: tokens and incorrectTokens must have the same shape, got [${
            directions.shape.slice(0, -1)
          }] and [${wrong.shape.slice(0, -1)}]`,
        );
      }
      directions = sub(directions, wrong);
    }
    const scaled = this.applyLnToStack(stackIn, {
      layer: -1,
      posSlice: opts.posSlice,
      batchSlice: opts.batchSlice,
      hasBatchDim: opts.hasBatchDim,
    });
    return sum(mul(scaled, directions), -1);
  }

  /** W_U columns of `tokens`, as [...tokens' shape, d_model] (TL's `tokens_to_residual_directions`). */
  #directions(model: CacheModel, tokens: LogitTokens, what: string): Tensor {
    const { dVocab, dModel } = model.cfg;
    let ids: number[], shape: number[];
    if (typeof tokens === "string") {
      if (!model.toTokens) throw new InputError(`logitAttrs: ${what} as text needs a tokenizer`);
      const enc = model.toTokens(tokens, { prependBos: false })[0];
      if (enc.length !== 1) {
        throw new InputError(
          `logitAttrs: "${tokens}" is ${enc.length} tokens, not one; pass its id`,
        );
      }
      [ids, shape] = [enc, []];
    } else if (typeof tokens === "number") {
      [ids, shape] = [[tokens], []];
    } else if (Array.isArray(tokens) && tokens.every((r) => Array.isArray(r))) {
      const rows = tokens as number[][];
      ids = rows.flat();
      shape = [rows.length, rows[0]?.length ?? 0];
      if (rows.some((r) => r.length !== shape[1])) {
        throw new InputError(`logitAttrs: ${what} rows differ in length`);
      }
    } else if (Array.isArray(tokens)) {
      [ids, shape] = [[...tokens as number[]], [tokens.length]];
    } else {
      throw new InputError(`logitAttrs: ${what} must be a token id, a string, or arrays of ids`);
    }
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= dVocab) {
        throw new InputError(
          `logitAttrs: ${what} holds ${id}, outside the vocabulary [0, ${dVocab})`,
        );
      }
    }
    // W_U [d_model, d_vocab]: gather columns, then put d_model last.
    const cols = take(model.W_U, ids, 1);
    return reshape(permute(cols, [1, 0]), [...shape, dModel]);
  }
}

// Python's cache["pattern", 0] is cache[0] in JavaScript (the comma operator), and
// cache["blocks.0.attn.hook_pattern"] a missing property: both would be `undefined`.
Object.setPrototypeOf(
  ActivationCache.prototype,
  indexGuard((key) =>
    isIndexKey(key)
      ? `an ActivationCache has no [${key}]: Python's cache["pattern", ${key}] is ` +
        `cache[${key}] in JavaScript (the comma operator); use cache.get("pattern", ${key})`
      : key.includes("hook_")
      ? `an ActivationCache has no property "${key}": use cache.get("${key}")`
      : undefined
  ),
);

/** [..., components, d_model] -> [components, ..., d_model]. */
function componentsFirst(t: Tensor): Tensor {
  const r = t.shape.length;
  return permute(t, [r - 2, ...Array.from({ length: r - 2 }, (_, i) => i), r - 1]);
}

/** An empty stack [0, ...like.shape]. */
function emptyStack(like: Tensor): Tensor {
  return { data: new Float32Array(0), shape: [0, ...like.shape] };
}

/** `stack` with `part` (one component, without the component axis) appended. */
function appendComponent(stackIn: Tensor, part: Tensor): Tensor {
  return cat([stackIn, reshape(part, [1, ...part.shape])], 0);
}

/** Sum of the biases written before `layer`'s input (TL's `accumulated_bias`), [d_model]. */
function accumulatedBias(
  model: CacheModel,
  layer: number,
  mlpInput: boolean,
  mlpBiases: boolean,
): Tensor {
  const d = model.cfg.dModel;
  const acc = new Float64Array(d);
  const addRow = (t: Tensor, l: number) => {
    for (let i = 0; i < d; i++) acc[i] += t.data[l * d + i];
  };
  for (let l = 0; l < layer; l++) {
    addRow(model.b_O, l);
    if (mlpBiases) addRow(model.b_out, l);
  }
  if (mlpInput) addRow(model.b_O, layer);
  return { data: Float32Array.from(acc), shape: [d] };
}

/**
 * The final norm applied to every d_model row of `t` with the row's own statistics (TL's
 * `ln_final` module), with its weight and bias when they are not folded.
 */
function normalizeEach(t: Tensor, eps: number, rms: boolean, w: NormParams | null): Tensor {
  const d = t.shape.at(-1)!;
  const out = new Float32Array(t.data.length);
  for (let o = 0; o < t.data.length; o += d) {
    const row = t.data.subarray(o, o + d);
    let mu = 0;
    if (!rms) {
      for (let i = 0; i < d; i++) mu += row[i];
      mu /= d;
    }
    let v = 0;
    for (let i = 0; i < d; i++) v += (row[i] - mu) ** 2;
    const s = Math.sqrt(v / d + eps);
    for (let i = 0; i < d; i++) {
      let y = (row[i] - mu) / s;
      if (w) y = y * w.w.data[i] + (w.b ? w.b.data[i] : 0);
      out[o + i] = y;
    }
  }
  return { data: out, shape: [...t.shape] };
}
