/**
 * `HookedTransformer`: a transformer with TransformerLens's hook points, running on a compute
 * backend (WebAssembly SIMD kernels by default).
 * @module
 */
import type { Backend, WeightDtype } from "../backend/backend.ts";
import { type Device, deviceOf, loadBackend } from "../backend/select.ts";
import { InputError } from "../core/errors.ts";
import { checkOptions } from "../core/options.ts";
import { transpose } from "../core/ops.ts";
import { FactoredMatrix } from "../analysis/factored_matrix.ts";
import type { Tensor } from "../core/tensor.ts";
import { familyOf } from "../families/registry.ts";
import {
  type ModelFiles,
  RESOLVE_OPTION_KEYS,
  resolveModel,
  type ResolveOptions,
} from "../io/resolve.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import type { TensorSource } from "../io/tensor_source.ts";
import { checkFinite } from "../io/check_finite.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import {
  ActivationCache,
  type SliceInput,
  slicePosition,
  slicePositions,
} from "./activation_cache.ts";
import type { HookedTransformerConfig } from "./config.ts";
import { uploadWeights } from "./device_weights.ts";
import type { ModelRuntime } from "./forward.ts";
import { runWithGradients } from "./gradients.ts";
import { exclusiveUse } from "./exclusive.ts";
import { generate, type GenerateOptions, type GenerateResult } from "./generate.ts";
import { ensureHeadWeights } from "./head_weights.ts";
import { type AddHookOptions, HookRegistry, type ResetHooksOptions } from "./hook_registry.ts";
import {
  assertHookName,
  getActName,
  hookNames,
  type HookOption,
  type HookOptions,
} from "./hook_table.ts";
import {
  type BwdHook,
  type FwdHook,
  type HookFilter,
  type HookFn,
  HookNames,
  HookSession,
} from "./hooks.ts";
import { checkMetric, type Metric } from "./metrics.ts";
import { type ModelParams, type NormParams, repeatKvHeads } from "./params.ts";
import { PROCESSING_OPTION_KEYS, type ProcessingOptions, processWeights } from "./processing.ts";
import { refactorFactoredAttnMatrices } from "./refactor_attn.ts";
import {
  executeRun,
  type ModelInput,
  prepareRun,
  type ReturnType,
  RUN_OPTION_KEYS,
  type RunOptions,
  withoutBatchDim,
} from "./run.ts";
import {
  decodeTokens,
  encodeBatch,
  needTokenizer,
  singleToken,
  strTokens,
  type TokenizeOptions,
  tokenPosition,
  type TokenPositionOptions,
  tokensToResidualDirections,
} from "./text.ts";
import type { RunResult, RunWithCacheResult } from "./run_types.ts";
import type { Tokens, TokenTensor } from "./tokens.ts";
import type { SAEModule } from "../sae/sae.ts";
import {
  type AddSaeOptions,
  checkSaeFits,
  SaeSplice,
  withSaeHooks,
  withSaeNames,
} from "../sae/splice.ts";
import { localRotaryTable, RotaryTable } from "./rotary.ts";

/** fromPretrained frees a checkpoint's bytes as soon as they are converted from this size up. */
const RELEASE_BYTES = 2 ** 30;

/** A checkpoint being loaded, and how to free its bytes once converted (see `#build`). */
interface LoadSource {
  tensors?: TensorSource;
  release?: () => void;
}

/** Options of {@link HookedTransformer.fromPretrained}: weight processing and where to find files. */
export interface FromPretrainedOptions extends ProcessingOptions, ResolveOptions {
  /** Worker threads for the kernels (default: all cores where the runtime allows). */
  threads?: number;
  /**
   * How the big matrices (W_Q|W_K|W_V, W_O, [W_gate|]W_in, W_out, W_U) are stored on the device
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
   *
   * `"f16"` (IEEE half precision) keeps 11 significant bits (each weight within 2^-11 relative,
   * four times closer than bf16) but only magnitudes up to 65504: a processed weight beyond that
   * is refused with a KernelError (use `"f32"` or `"bf16"` then); weights under 2^-14 keep fewer
   * bits (subnormals), those of at most 2^-25 become zero. On `device: "webgpu"` it halves the weights'
   * GPU memory as bf16 does; on `"wasm"` the weights are rounded to f16 and kept as float32 (the
   * same values, f32's memory: WebAssembly has no half-precision conversion to decode them
   * cheaply), so a model computes on identical weights on both devices. A float16 checkpoint
   * (`torch_dtype: float16`) loaded unprocessed with `"f16"` keeps its values exactly.
   */
  weightDtype?: WeightDtype;
  /** A backend to run on instead of loading the WebAssembly kernels (`threads` is then unused). */
  backend?: Backend;
  /**
   * Where the model computes (TransformerLens's `device`): `"wasm"` (WebAssembly on the CPU, the
   * default), `"webgpu"` (a WebGPU adapter, software ones included; throws GpuUnavailableError
   * where there is none) or `"auto"` (a hardware WebGPU adapter when there is one, else wasm).
   * `model.cfg.device` says which runs; `model.to(device)` moves a loaded model.
   */
  device?: Device;
  /**
   * Scan the checkpoint for NaN and infinite weights and refuse it with a WeightsError naming the
   * first such tensor (default false: TransformerLens does not check; 0.15 s for GPT-2 small).
   */
  checkFinite?: boolean;
  /**
   * Refactor each head's W_Q W_K^T and W_V W_O by SVD after the other processing steps, without
   * changing the outputs (TransformerLens's `refactor_factored_attn_matrices`; default false).
   */
  refactorFactoredAttnMatrices?: boolean;
}

/** Options of {@link HookedTransformer.fromBytes}. */
export interface FromBytesOptions extends FromPretrainedOptions {
  /** The model's name (for messages and reports). */
  name?: string;
  /** The text tokenizer, if the model has one. */
  tokenizer?: Tokenizer;
}

const LOAD_KEYS = [
  ...PROCESSING_OPTION_KEYS,
  ...RESOLVE_OPTION_KEYS,
  "threads",
  "weightDtype",
  "backend",
  "device",
  "checkFinite",
  "refactorFactoredAttnMatrices",
];

export type { ModelInput, ReturnType, RunOptions, RunResult, RunWithCacheResult };

/** Options of {@link HookedTransformer.runWithCache}. */
export interface RunWithCacheOptions extends RunOptions {
  /** Which hook points to keep: a name, a list of names, or a predicate (default: all). */
  namesFilter?: string | string[] | ((name: string) => boolean);
  /** `[nameOrPredicate, hookFn]` pairs run during the cached run (patch and cache in one run). */
  fwdHooks?: FwdHook[];
  /** Drop the batch axis of every cached activation (batch 1 only), as TL's `remove_batch_dim`. */
  removeBatchDim?: boolean;
  /**
   * Also run the backward pass and cache d metric / d activation at the same hook points, under
   * `<name>_grad` (TransformerLens's `incl_bwd_cache`). The metric is `metric`, else the loss
   * (`returnType: "loss"`).
   */
  inclBwdCache?: boolean;
  /** What the backward pass differentiates (with `inclBwdCache`; default the loss). */
  metric?: Metric;
  /**
   * Cache only these positions (TL's `pos_slice`): a number keeps its position as an axis of
   * length 1, as TL; a list of positions or a `{ start, stop, step }` range (see
   * `slicePositions`).
   */
  posSlice?: SliceInput;
}

/** Options of {@link HookedTransformer.runWithHooks}. */
export interface RunWithHooksOptions extends RunOptions {
  /** `[nameOrPredicate, hookFn]` pairs, run in order at each matching hook point. */
  fwdHooks?: FwdHook[];
  /**
   * `[nameOrPredicate, hookFn]` pairs run on the gradients during a backward pass from the loss
   * (`returnType: "loss"`) or from `metric`: each sees d metric / d activation and may return a
   * replacement that flows on (TransformerLens's backward hooks). The model's registered backward
   * hooks (`addHook(..., { dir: "bwd" })`) run first.
   */
  bwdHooks?: BwdHook[];
  /** What the backward pass differentiates (default the loss). */
  metric?: Metric;
}

const runtimes = new WeakMap<HookedTransformer, ModelRuntime>();
const sessions = new WeakMap<
  HookedTransformer,
  (fwdHooks: FwdHook[], cacheNames: ReadonlySet<string>) => HookSession
>();
const registries = new WeakMap<HookedTransformer, HookRegistry>();

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
 * The hook session of one pass of the model: its registered forward hooks (`addHook`, `hooks`),
 * then `fwdHooks`, caching `cacheNames`, with the model's optional hook points.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { hookSessionOf } from "./hooked_transformer.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * hookSessionOf(model).silent; // true: no hooks registered, nothing cached
 * ```
 * @internal
 */
export function hookSessionOf(
  model: HookedTransformer,
  fwdHooks: FwdHook[] = [],
  cacheNames: ReadonlySet<string> = new Set(),
): HookSession {
  const s = sessions.get(model);
  if (!s) throw new InputError("expected a HookedTransformer");
  return s(fwdHooks, cacheNames);
}

/**
 * The model's registered hooks. Backward hooks (`addHook(name, fn, { dir: "bwd" })`) are read by
 * gradient passes from `hookRegistryOf(model).entries("bwd")`.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { hookRegistryOf } from "./hooked_transformer.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * model.addHook("blocks.0.hook_resid_pre", () => {}, { dir: "bwd" });
 * hookRegistryOf(model).entries("bwd").length; // 1
 * ```
 * @internal
 */
export function hookRegistryOf(model: HookedTransformer): HookRegistry {
  const r = registries.get(model);
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
  /** The text tokenizer, when the model has one (`induction-toy` takes ids only; `kjv-small` reads text). */
  readonly tokenizer: Tokenizer | undefined;
  /** Which processing steps were applied to the weights. */
  readonly processing: Required<ProcessingOptions>;
  /** How the big weight matrices are stored on the backend (see FromPretrainedOptions). */
  readonly weightDtype: WeightDtype;
  #backend: Backend;
  /** Worker threads asked for at load (for the WebAssembly backend of `to("wasm")`). */
  readonly #threads: number | undefined;
  readonly #params: ModelParams;
  readonly #names: HookNames;
  #hookNames: readonly string[];
  #hookSet: ReadonlySet<string>;
  readonly #hookOptions: HookOptions = {};
  readonly #registry: HookRegistry;
  /** W_K, b_K, W_V, b_V with key/value heads repeated per query head (built on first use). */
  readonly #repeated = new Map<string, Tensor>();
  /** The spliced SAEs (`addSae`), in the order they were added. */
  readonly #saes: SaeSplice[] = [];

  private constructor(
    cfg: HookedTransformerConfig,
    params: ModelParams,
    backend: Backend,
    processing: Required<ProcessingOptions>,
    tokenizer: Tokenizer | undefined,
    weightDtype: WeightDtype,
    threads?: number,
  ) {
    this.cfg = cfg;
    this.#params = params;
    this.#backend = backend;
    this.#threads = threads;
    cfg.device = deviceOf(backend);
    this.processing = processing;
    this.tokenizer = tokenizer;
    this.#hookNames = hookNames(cfg);
    this.#hookSet = new Set(this.#hookNames);
    this.#names = new HookNames(cfg.nLayers);
    this.weightDtype = weightDtype;
    this.#registry = new HookRegistry((name) => {
      assertHookName(name, this.#hookSet, cfg);
      return name;
    });
    runtimes.set(this, {
      backend,
      cfg,
      params,
      weights: uploadWeights(backend, params, cfg, weightDtype),
      heads: {},
      rotary: cfg.positionalEmbeddingType === "rotary" ? new RotaryTable(cfg) : null,
      rotaryLocal: localRotaryTable(cfg),
    });
    sessions.set(this, (fwdHooks, cacheNames) => this.#session(fwdHooks, cacheNames));
    registries.set(this, this.#registry);
  }

  /** The backend (and its memory) this model runs on (a new one after {@linkcode to}). */
  get backend(): Backend {
    return this.#backend;
  }

  /**
   * Moves the model to `device` (TransformerLens's `model.to(device)`): loads that backend,
   * uploads the weights (and the per-head matrices of the options that are on) there, then
   * releases the old backend. Resolves to the model; `cfg.device` says where it now runs. If the
   * new backend cannot be loaded or the weights do not fit, the model stays where it was.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * await model.to("wasm"); // already there: nothing moves
   * model.cfg.device; // "wasm"
   * ```
   * @throws {InputError} an unknown device name.
   * @throws {GpuUnavailableError} `"webgpu"` where no adapter exists.
   */
  async to(device: Device): Promise<this> {
    using _turn = await exclusiveUse(this.#backend);
    if (device === this.cfg.device) return this;
    const { backend, device: got } = await loadBackend(device, { threads: this.#threads });
    if (got === this.cfg.device) {
      backend.close();
      return this;
    }
    const runtime = runtimeOf(this);
    let weights;
    const heads = {};
    try {
      weights = uploadWeights(backend, this.#params, this.cfg, this.weightDtype);
      const on = this.#hookOptions;
      ensureHeadWeights(heads, backend, this.#params, this.cfg, this.weightDtype, {
        inputs: !!(on.useSplitQkvInput || on.useAttnIn),
        output: !!on.useAttnResult,
      });
    } catch (e) {
      backend.close();
      throw e;
    }
    const old = this.#backend;
    this.#backend = backend;
    runtime.backend = backend;
    runtime.weights = weights;
    runtime.heads = heads;
    this.cfg.device = got;
    old.close();
    return this;
  }

  /** Every hook point, in forward order (the optional ones while their option is on). */
  get hookNames(): readonly string[] {
    return this.#hookNames;
  }

  /**
   * Loads a model by name (`"gpt2"`, `"gpt2-medium"`, ..., an `owner/name` hub id, or one of the
   * embedded `"induction-toy"` and `"kjv-small"`), local directory or URL, and processes its
   * weights as TransformerLens's `from_pretrained` does (all four steps on by default).
   */
  static async fromPretrained(
    nameOrPath: string,
    opts: FromPretrainedOptions = {},
  ): Promise<HookedTransformer> {
    checkOptions(opts, LOAD_KEYS, "fromPretrained");
    const resolveOpts = Object.fromEntries(
      Object.entries(opts).filter(([k]) => RESOLVE_OPTION_KEYS.includes(k)),
    );
    let files: ModelFiles | undefined = await resolveModel(nameOrPath, resolveOpts);
    const loadOpts = Object.fromEntries(
      Object.entries(opts).filter(([k]) => !RESOLVE_OPTION_KEYS.includes(k)),
    );
    const { config, name, tokenizer, weightBytes } = files;
    // The checkpoint's bytes (every shard, read whole) were read for this call alone and nothing
    // outside it sees them: once the family has converted them into fresh parameter arrays (a
    // TensorSource's tensors are copies), #build frees them by detaching their buffers, at once
    // rather than at the collector's next major collection, so that processing and the upload do
    // not hold the file bytes beside the parameters (issue 17: a 5.3 GiB checkpoint).
    const source: LoadSource = {
      tensors: files.tensors,
      release: () => {
        // Detaching frees on this thread (about 36 ms for GPT-2 small's 0.5 GB here), where the
        // collector would free them later on a background one: below RELEASE_BYTES the load's
        // speed is worth more than the early free.
        if (weightBytes.reduce((n, b) => n + b.byteLength, 0) < RELEASE_BYTES) return;
        for (const bytes of weightBytes) {
          const buffer = bytes.buffer;
          if (!(buffer instanceof ArrayBuffer) || buffer.detached) continue;
          buffer.transfer(0);
        }
      },
    };
    files = undefined;
    checkOptions(loadOpts, [...LOAD_KEYS, "name", "tokenizer"], "fromTensors");
    return await HookedTransformer.#build(config, source, { ...loadOpts, name, tokenizer });
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
    return await HookedTransformer.fromTensors(config, parseSafetensors(safetensors), opts);
  }

  /**
   * Builds a model from an HF `config.json` object and its tensors in any format this library
   * reads (`ModelFiles.tensors` from `resolveModel`: one safetensors file, shards, or a PyTorch
   * `pytorch_model.bin`), with no file system or network access.
   *
   * @example
   * ```ts
   * import { HookedTransformer, resolveModel } from "../mod.ts";
   * const files = await resolveModel("induction-toy");
   * const model = await HookedTransformer.fromTensors(files.config, files.tensors, { threads: 1 });
   * model.cfg.nLayers; // 3
   * ```
   */
  static async fromTensors(
    config: Record<string, unknown>,
    tensors: TensorSource,
    opts: FromBytesOptions = {},
  ): Promise<HookedTransformer> {
    checkOptions(opts, [...LOAD_KEYS, "name", "tokenizer"], "fromTensors");
    return await HookedTransformer.#build(config, { tensors }, opts);
  }

  /**
   * fromTensors' work. As soon as the family has read `source.tensors`, the reference is dropped
   * and `source.release` (fromPretrained's: it frees the checkpoint's bytes) is called, before the
   * weights are processed and uploaded.
   */
  static async #build(
    config: Record<string, unknown>,
    source: LoadSource,
    opts: FromBytesOptions,
  ): Promise<HookedTransformer> {
    if (opts.checkFinite !== undefined && typeof opts.checkFinite !== "boolean") {
      throw new InputError(`checkFinite must be true or false, got ${String(opts.checkFinite)}`);
    }
    const family = familyOf(config);
    const raw = family.config(config, opts.name ?? "model");
    if (opts.checkFinite) checkFinite(source.tensors!);
    const processing = {
      foldLn: opts.foldLn ?? true,
      centerWritingWeights: opts.centerWritingWeights ?? true,
      // As TransformerLens: not with a final softcap, which is not shift-invariant.
      centerUnembed: (opts.centerUnembed ?? true) && !raw.outputLogitsSoftCap,
      foldValueBiases: opts.foldValueBiases ?? true,
    };
    const converted = family.params(source.tensors!, raw, config);
    source.tensors = undefined;
    source.release?.();
    const { params, cfg } = processWeights(converted, raw, processing);
    if (opts.refactorFactoredAttnMatrices) refactorFactoredAttnMatrices(params, cfg);
    const weightDtype = opts.weightDtype ?? "f32";
    if (weightDtype !== "f32" && weightDtype !== "bf16" && weightDtype !== "f16") {
      throw new InputError(
        `weightDtype must be "f32", "bf16" or "f16", got ${JSON.stringify(weightDtype)}`,
      );
    }
    if (opts.backend && opts.device !== undefined) {
      throw new InputError("give either backend or device, not both");
    }
    const backend = opts.backend ??
      (await loadBackend(opts.device ?? "wasm", { threads: opts.threads })).backend;
    try {
      return new HookedTransformer(
        cfg,
        params,
        backend,
        processing,
        opts.tokenizer,
        weightDtype,
        opts.threads,
      );
    } catch (e) {
      if (!opts.backend) backend.close(); // nothing half-allocated stays behind
      throw e;
    }
  }

  /**
   * Runs the model (TransformerLens's `forward`). The input is token ids, text (a string or a
   * list of strings, tokenized and padded), or with `startAtLayer` a residual stream. Returns
   * logits [batch, pos, d_vocab] by default; see {@link RunOptions} for the loss, both, none,
   * `stopAtLayer`, and padded batches (`attentionMask`).
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const tokens = [[2047, 5, 9, 5, 9]];
   * const logits = await model.run(tokens); // [1, 5, 2048]
   * const loss = await model.run(tokens, { returnType: "loss" }); // a number
   * const perToken = await model.run(tokens, { returnType: "loss", lossPerToken: true }); // [1, 4]
   * const resid = await model.run(tokens, { stopAtLayer: 1 }); // [1, 5, 128]: resid_pre of block 1
   * await model.run(resid, { startAtLayer: 1 }); // the same logits as the full run
   * // A left-padded batch: the second row's real tokens give the logits they give alone.
   * await model.run([[2047, 5, 9], [0, 2047, 5]], { attentionMask: [[1, 1, 1], [0, 1, 1]] });
   * ```
   */
  async run<O extends RunOptions = Record<never, never>>(
    input: ModelInput,
    opts?: O,
  ): Promise<RunResult<O>> {
    checkOptions(opts, RUN_OPTION_KEYS, "run");
    await Promise.resolve();
    return (await this.#call(input, opts ?? {}, this.#session([], new Set()))).result as RunResult<
      O
    >;
  }

  /**
   * Runs the model and keeps activations under their TransformerLens names; `fwdHooks` patch
   * during the same run (the cache holds the patched values). Returns what `returnType` asks for
   * (`logits` by default, `loss`, or the `residual` with `stopAtLayer`) and the cache.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const { logits, cache } = await model.runWithCache([[2047, 5, 9]], {
   *   namesFilter: ["blocks.0.hook_mlp_out"],
   * });
   * cache.get("mlp_out", 0).shape; // [1, 3, d_model]
   * const { loss } = await model.runWithCache([[2047, 5, 9]], {
   *   returnType: "loss",
   *   namesFilter: (name) => name.endsWith("hook_resid_pre"),
   *   fwdHooks: [["blocks.0.hook_mlp_out", (act) => void act.data.fill(0)]],
   * });
   * ```
   */
  runWithCache(
    input: ModelInput,
    opts?: RunWithCacheOptions & { returnType?: "logits"; stopAtLayer?: undefined },
  ): Promise<RunWithCacheResult<Record<never, never>>>;
  /** Runs the model and keeps activations, returning what `opts.returnType` asks for. */
  runWithCache<O extends RunOptions>(
    input: ModelInput,
    opts: O & RunWithCacheOptions,
  ): Promise<RunWithCacheResult<O>>;
  async runWithCache<O extends RunOptions>(
    input: ModelInput,
    opts?: O & RunWithCacheOptions,
  ): Promise<RunWithCacheResult<O>> {
    const o: RunWithCacheOptions = opts ?? {};
    checkOptions(
      o,
      [
        ...RUN_OPTION_KEYS,
        "namesFilter",
        "fwdHooks",
        "removeBatchDim",
        "inclBwdCache",
        "metric",
        "posSlice",
      ],
      "runWithCache",
    );
    await Promise.resolve();
    const cacheNames = new Set(this.#selectNames(o.namesFilter));
    if (o.inclBwdCache !== undefined && typeof o.inclBwdCache !== "boolean") {
      throw new InputError(`inclBwdCache must be true or false, got ${o.inclBwdCache}`);
    }
    if (o.inclBwdCache || o.metric !== undefined) {
      if (!o.inclBwdCache) {
        throw new InputError(
          "runWithCache: a metric is what the backward pass differentiates: add inclBwdCache: true",
        );
      }
      const r = await this.#gradients(input, o, { cacheNames, gradNames: cacheNames });
      const sliced = slicePositions(r.cache, o.posSlice, this.cfg);
      const acts = o.removeBatchDim ? withoutBatchDim(sliced, r.batch) : sliced;
      return {
        logits: r.logits,
        loss: r.loss,
        residual: undefined,
        cache: new ActivationCache(acts, this),
        value: r.value,
      } as RunWithCacheResult<O>;
    }
    // posSlice applies as each activation is cached, so the other positions are never held.
    const posSlice = o.posSlice;
    const cacheAs = posSlice === undefined || posSlice === null
      ? undefined
      : (name: string, act: Tensor) => slicePosition(name, act, posSlice, this.cfg);
    const session = this.#session(o.fwdHooks ?? [], cacheNames, cacheAs, true);
    try {
      const out = await this.#call(input, o, session);
      const acts = o.removeBatchDim ? withoutBatchDim(session.cached, out.batch) : session.cached;
      return {
        logits: out.logits,
        loss: out.loss,
        residual: out.residual,
        cache: new ActivationCache(acts, this, true, session.held),
      } as RunWithCacheResult<O>;
    } catch (e) {
      session.held?.discard(); // what the failed run held in the backend
      throw e;
    }
  }

  /**
   * Runs the model with forward hooks: each `[filter, fn]` pair calls `fn` at every matching hook
   * point (after the model's registered hooks); a hook that returns a tensor (or edits its
   * argument) patches the activation. Returns what {@link run} returns. With `bwdHooks` (or a
   * `metric`) a backward pass follows, from the loss (`returnType: "loss"`) or the metric, and
   * each backward hook sees the gradient at its hook point.
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
  runWithHooks(
    input: ModelInput,
    opts?: RunWithHooksOptions & { returnType?: "logits"; stopAtLayer?: undefined },
  ): Promise<Tensor>;
  /** Runs the model with forward hooks, returning what `opts.returnType` asks for. */
  runWithHooks<O extends RunOptions>(
    input: ModelInput,
    opts: O & RunWithHooksOptions,
  ): Promise<RunResult<O>>;
  async runWithHooks<O extends RunOptions>(
    input: ModelInput,
    opts?: O & RunWithHooksOptions,
  ): Promise<RunResult<O>> {
    const o: RunWithHooksOptions = opts ?? {};
    checkOptions(o, [...RUN_OPTION_KEYS, "fwdHooks", "bwdHooks", "metric"], "runWithHooks");
    await Promise.resolve();
    const bwd = o.bwdHooks;
    // (an empty list runs no backward pass; anything else but a list is refused there)
    if (o.metric !== undefined || (bwd !== undefined && !(Array.isArray(bwd) && !bwd.length))) {
      const r = await this.#gradients(input, o, {});
      const result = r.returnType === "loss"
        ? r.loss
        : r.returnType === "both"
        ? { logits: r.logits, loss: r.loss }
        : r.logits;
      return result as RunResult<O>;
    }
    const session = this.#session(o.fwdHooks ?? [], new Set());
    return (await this.#call(input, o, session)).result as RunResult<O>;
  }

  /** One call: the prepared input, one pass, and the output its options ask for. */
  async #call(input: ModelInput, opts: RunOptions, session: HookSession) {
    using _turn = await exclusiveUse(this.backend);
    const prepared = prepareRun(this, input, opts);
    const out = {
      ...(await executeRun(runtimeOf(this), session, prepared)),
      batch: prepared.batch,
    };
    if (prepared.stopAtLayer !== undefined) return { ...out, result: out.residual! };
    const result = prepared.returnType === "loss"
      ? out.loss!
      : prepared.returnType === "both"
      ? { logits: out.logits!, loss: out.loss! }
      : out.logits;
    return { ...out, result };
  }

  /**
   * A run with a backward pass (see `gradients.ts`): from the tokens (padded or not) to the
   * logits, with the model's registered hooks of both directions first.
   */
  async #gradients(
    input: ModelInput,
    opts: RunOptions & { fwdHooks?: FwdHook[]; bwdHooks?: BwdHook[]; metric?: Metric },
    names: { cacheNames?: Set<string>; gradNames?: Set<string> },
  ) {
    using _turn = await exclusiveUse(this.backend);
    const p = prepareRun(this, input, opts);
    if (p.startLayer !== 0 || p.stopAtLayer !== undefined || p.lossPerToken) {
      throw new InputError(
        "gradients are computed from the tokens to one scalar: drop startAtLayer, stopAtLayer " +
          "and lossPerToken",
      );
    }
    if (opts.metric !== undefined) checkMetric(opts.metric, "metric");
    const r = await runWithGradients(runtimeOf(this), {
      tokens: p.tokens!,
      fwdHooks: withSaeHooks(
        this.#saes,
        this.#registry.hooksOf("fwd", opts.fwdHooks ?? [], this.#hookNames),
      ),
      bwdHooks: this.#registry.hooksOf("bwd", opts.bwdHooks ?? [], this.#hookNames),
      hookOptions: { ...this.#hookOptions },
      metric: opts.metric,
      returnType: p.returnType,
      padding: p.padding,
      ...names,
    });
    return { ...r, batch: p.batch, returnType: p.returnType };
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

  /** One pass's hooks (registered, then `fwdHooks`), cache names and optional hook points. */
  #session(
    fwdHooks: FwdHook[],
    cacheNames: ReadonlySet<string>,
    cacheAs?: (name: string, act: Tensor) => Tensor,
    holdCache = false,
  ): HookSession {
    const hooks = withSaeHooks(
      this.#saes,
      this.#registry.hooksOf("fwd", fwdHooks, this.#hookNames),
    );
    return new HookSession(this.backend, this.#names, hooks, cacheNames, {
      hookOptions: { ...this.#hookOptions },
      cacheAs,
      holdCache,
    });
  }

  // ---- Hooks that stay on the model (TransformerLens's add_hook, reset_hooks, hooks) ----

  /**
   * Registers a hook that runs in every pass of the model (`run`, `runWithCache`,
   * `runWithHooks`, `generate`, `nextTokenLogProbs`) until `resetHooks()` (or for good with
   * `isPermanent`). Returns a function that removes it. `dir: "bwd"` registers a backward hook,
   * kept for gradient passes.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const zero = (act: { data: Float32Array }) => void act.data.fill(0);
   * model.addHook("blocks.0.hook_mlp_out", zero); // every run from now on
   * model.addHook((name) => name.endsWith("hook_z"), () => {}, { isPermanent: true });
   * await model.run([[2047, 5, 9]]);
   * model.resetHooks(); // removes the first; the permanent one stays
   * model.resetHooks({ includingPermanent: true });
   * ```
   */
  addHook(nameOrFilter: HookFilter, fn: HookFn, opts: AddHookOptions = {}): () => void {
    return this.#registry.add(nameOrFilter, fn, opts);
  }

  /** Removes the hooks `addHook` registered (permanent ones too with `includingPermanent`). */
  resetHooks(opts: ResetHooksOptions = {}): void {
    this.#registry.reset(opts);
  }

  /**
   * Runs `fn` with `fwdHooks` added to the model and removes them afterwards, even if `fn` throws
   * (TransformerLens's `with model.hooks(fwd_hooks=...)`). Every pass `fn` makes sees the hooks,
   * generation included. Passes the model started meanwhile from elsewhere see them too.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const zero = (act: { data: Float32Array }) => void act.data.fill(0);
   * const logits = await model.hooks([["blocks.1.hook_attn_out", zero]], (m) => m.run([[2047, 5]]));
   * ```
   */
  async hooks<R>(
    fwdHooks: FwdHook[],
    fn: (model: this) => R | Promise<R>,
    opts: { bwdHooks?: BwdHook[] } = {},
  ): Promise<R> {
    checkOptions(opts, ["bwdHooks"], "hooks");
    return await this.#registry.scoped({ fwd: fwdHooks, bwd: opts.bwdHooks }, () => fn(this));
  }

  // ---- Sparse autoencoders (SAELens's HookedSAETransformer) ----

  /**
   * Splices `sae` into every pass of the model from now on (SAELens's `add_sae`): its output
   * replaces the activation at its `hook_name` (a transcoder's at `hook_name_out`), and its hook
   * points join the model's as `<hook_name>.hook_sae_acts_post`, ... . An SAE already at the
   * same hook point is replaced. With `useErrorTerm` the error is added back, so the outputs are
   * the clean ones and gradients reach the features exactly.
   *
   * @example
   * ```ts
   * import { HookedTransformer, SAE } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * // (a real one: await SAE.fromPretrained("gpt2-small-res-jb", "blocks.8.hook_resid_pre"))
   * const d = model.cfg.dModel, n = 16;
   * const w = (...shape: number[]) => ({
   *   data: new Float32Array(shape[0] * (shape[1] ?? 1)).fill(0.01),
   *   shape,
   * });
   * const sae = await SAE.fromTensors(
   *   { d_in: d, d_sae: n, hook_name: "blocks.1.hook_resid_pre" },
   *   { W_enc: w(d, n), W_dec: w(n, d), b_enc: w(n), b_dec: w(d) },
   *   { backend: model.backend },
   * );
   * model.addSae(sae);
   * const { cache } = await model.runWithCache([[2047, 5, 9]]);
   * cache.get("blocks.1.hook_resid_pre.hook_sae_acts_post").shape; // [1, 3, 16]
   * model.resetSaes();
   * ```
   */
  addSae(sae: SAEModule, opts: AddSaeOptions = {}): void {
    checkOptions(opts, ["useErrorTerm"], "addSae");
    const splice = new SaeSplice(
      checkSaeFits(sae, hookNames(this.cfg, this.#hookOptions), this.cfg),
      !!opts.useErrorTerm,
      this.backend,
    );
    const at = this.#saes.findIndex((s) => s.hookName === splice.hookName);
    if (at >= 0) this.#saes.splice(at, 1, splice);
    else this.#saes.push(splice);
    this.#refreshHookNames();
  }

  /** Removes every spliced SAE, or those given (SAELens's `reset_saes`). */
  resetSaes(saes?: SAEModule[]): void {
    for (let i = this.#saes.length - 1; i >= 0; i--) {
      if (!saes || saes.includes(this.#saes[i].sae)) this.#saes.splice(i, 1);
    }
    this.#refreshHookNames();
  }

  /** The spliced SAEs, in the order they were added. */
  get actsToSaes(): ReadonlyMap<string, SAEModule> {
    return new Map(this.#saes.map((s) => [s.hookName, s.sae]));
  }

  /**
   * Runs `fn` with `saes` spliced and removes them afterwards, even if `fn` throws (SAELens's
   * `with model.saes(saes=[...])`); SAEs already on the model stay.
   *
   * @example
   * ```ts ignore
   * const loss = await model.saes([sae], (m) => m.run(tokens, { returnType: "loss" }));
   * ```
   */
  async saes<R>(
    saes: SAEModule[],
    fn: (model: this) => R | Promise<R>,
    opts: AddSaeOptions = {},
  ): Promise<R> {
    checkOptions(opts, ["useErrorTerm"], "saes");
    if (!Array.isArray(saes)) throw new InputError("saes: expected a list of SAEs");
    const before = [...this.#saes];
    try {
      for (const sae of saes) this.addSae(sae, opts);
      return await fn(this);
    } finally {
      this.#saes.splice(0, Infinity, ...before);
      this.#refreshHookNames();
    }
  }

  /**
   * `run` with `saes` spliced for this call only (SAELens's `run_with_saes`); `useErrorTerm`
   * applies to them.
   *
   * @example
   * ```ts ignore
   * const logits = await model.runWithSaes(tokens, { saes: [sae] });
   * ```
   */
  async runWithSaes<O extends RunOptions>(
    input: ModelInput,
    opts: O & { saes?: SAEModule[]; useErrorTerm?: boolean },
  ): Promise<RunResult<O>> {
    const { saes, useErrorTerm, ...rest } = opts;
    return await this.saes(saes ?? [], (m) => m.run(input, rest as O), { useErrorTerm });
  }

  /** `runWithCache` with `saes` spliced for this call only (SAELens's `run_with_cache_with_saes`). */
  async runWithCacheWithSaes<O extends RunOptions>(
    input: ModelInput,
    opts: O & RunWithCacheOptions & { saes?: SAEModule[]; useErrorTerm?: boolean },
  ): Promise<RunWithCacheResult<O>> {
    const { saes, useErrorTerm, ...rest } = opts;
    return await this.saes(saes ?? [], (m) => m.runWithCache(input, rest as O), { useErrorTerm });
  }

  /** `runWithHooks` with `saes` spliced for this call only (SAELens's `run_with_hooks_with_saes`). */
  async runWithHooksWithSaes<O extends RunOptions>(
    input: ModelInput,
    opts: O & RunWithHooksOptions & { saes?: SAEModule[]; useErrorTerm?: boolean },
  ): Promise<RunResult<O>> {
    const { saes, useErrorTerm, ...rest } = opts;
    return await this.saes(saes ?? [], (m) => m.runWithHooks(input, rest as O), { useErrorTerm });
  }

  // ---- The optional hook points (TransformerLens's set_use_* setters) ----

  #setOption(option: HookOption, on: boolean): void {
    if (typeof on !== "boolean") {
      throw new InputError(`expected true or false, got ${JSON.stringify(on)}`);
    }
    if (on) {
      ensureHeadWeights(
        runtimeOf(this).heads!,
        this.backend,
        this.#params,
        this.cfg,
        this.weightDtype,
        {
          inputs: option === "useSplitQkvInput" || option === "useAttnIn",
          output: option === "useAttnResult",
        },
      );
    }
    this.#hookOptions[option] = on;
    this.#refreshHookNames();
  }

  /** The hook names: the model's points (with the optional ones on) and the SAEs' points. */
  #refreshHookNames(): void {
    this.#hookNames = withSaeNames(hookNames(this.cfg, this.#hookOptions), this.#saes);
    this.#hookSet = new Set(this.#hookNames);
  }

  /** Which optional hook points are on. */
  get hookOptions(): Readonly<HookOptions> {
    return { ...this.#hookOptions };
  }

  /**
   * Adds `blocks.{l}.attn.hook_result`: each head's output z W_O[head] before the sum over heads
   * and b_O, [batch, pos, head, d_model] (TransformerLens's `set_use_attn_result`). Layers where
   * nothing reads it run as before.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * model.setUseAttnResult(true);
   * const { cache } = await model.runWithCache([[2047, 5, 9]], { namesFilter: (n) => n.endsWith("hook_result") });
   * cache.get("result", 0).shape; // [1, 3, 4, 128]
   * ```
   */
  setUseAttnResult(on: boolean): void {
    this.#setOption("useAttnResult", on);
  }

  /**
   * Adds `blocks.{l}.hook_q_input`, `hook_k_input`, `hook_v_input`: the residual stream repeated
   * per head ([batch, pos, head, d_model]; K and V with the key/value heads), so a patch can
   * reach one head's queries, keys or values (TransformerLens's `set_use_split_qkv_input`). While
   * on, ln1 runs on each input: `ln1.hook_scale` and `ln1.hook_normalized` gain a head axis and
   * fire for q, k and v in turn (the cache keeps v's), as in TL.
   */
  setUseSplitQkvInput(on: boolean): void {
    this.#setOption("useSplitQkvInput", on);
  }

  /**
   * Adds `blocks.{l}.hook_attn_in`: the residual stream repeated per head, [batch, pos, head,
   * d_model], the input of all three of Q, K and V (TransformerLens's `set_use_attn_in`); ln1's
   * hook points gain a head axis as with {@link setUseSplitQkvInput}.
   */
  setUseAttnIn(on: boolean): void {
    this.#setOption("useAttnIn", on);
  }

  /**
   * Adds `blocks.{l}.hook_mlp_in` [batch, pos, d_model]: a copy of resid_mid that only the MLP
   * reads, so patching it leaves the residual stream alone (TransformerLens's
   * `set_use_hook_mlp_in`).
   */
  setUseHookMlpIn(on: boolean): void {
    this.#setOption("useHookMlpIn", on);
  }

  // ---- Generation ----

  /**
   * Generates text or tokens after a prompt (TransformerLens's `generate`), with a key/value
   * cache so each new token computes one position. Greedy with `temperature: 0`; `seed` makes
   * sampling repeatable. The model's hooks apply (see {@link hooks}). Token embeddings
   * [batch, pos, d_model] (TL's `input_type="embeds"`: W_E rows or any vectors, before position
   * embeddings) are a prompt too: the result is then the new tokens only, as TL.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * const out = await model.generate([[2047, 5, 9, 13, 5, 9]], { maxNewTokens: 3, temperature: 0 });
   * out; // [[2047, 5, 9, 13, 5, 9, 13, 5, 9]]: the induction heads continue the pattern
   * ```
   *
   * @example Text in, text out (a model with a tokenizer)
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
   * await model.generate("The LORD is my shepherd", { maxNewTokens: 8, temperature: 0 });
   * // "The LORD is my shepherd: he is my strength, and my"
   * await model.generate("The LORD is my shepherd", { maxNewTokens: 8, seed: 1 }); // sampled
   * ```
   */
  async generate(
    input: string | string[] | Tokens | Tensor,
    opts: GenerateOptions = {},
  ): Promise<GenerateResult> {
    using _turn = await exclusiveUse(this.backend);
    return await generate(
      { runtime: runtimeOf(this), session: this.#session([], new Set()), text: this },
      input,
      opts,
    );
  }

  /**
   * Stops the backend's worker threads. The model keeps working, on the calling thread alone;
   * call it when done so a long-lived process does not keep idle workers. On WebGPU it releases
   * the device and the model's GPU memory: the model can no longer run (`to("wasm")` first to
   * keep it).
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
      throw new InputError(
        `${this.cfg.modelName} has rotary position embeddings (applied to queries and keys): ` +
          `it has no W_pos`,
      );
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
  /**
   * Key weights [n_layers, n_heads, d_model, d_head] (read-only). With grouped-query attention
   * each key/value head is repeated for the query heads that read it, as TransformerLens's
   * `W_K` (a copy, made once); {@linkcode HookedTransformer._W_K} has the model's own
   * [n_layers, n_key_value_heads, d_model, d_head].
   */
  get W_K(): Tensor {
    return this.#perQueryHead("W_K");
  }
  /** Value weights [n_layers, n_heads, d_model, d_head], repeated as `W_K` (read-only). */
  get W_V(): Tensor {
    return this.#perQueryHead("W_V");
  }
  /** Key weights per key/value head [n_layers, n_key_value_heads, d_model, d_head] (read-only). */
  get _W_K(): Tensor {
    return this.#params.W_K;
  }
  /** Value weights per key/value head [n_layers, n_key_value_heads, d_model, d_head] (read-only). */
  get _W_V(): Tensor {
    return this.#params.W_V;
  }
  /** Key biases per key/value head [n_layers, n_key_value_heads, d_head] (read-only). */
  get _b_K(): Tensor {
    return this.#params.b_K;
  }
  /** Value biases per key/value head [n_layers, n_key_value_heads, d_head] (read-only). */
  get _b_V(): Tensor {
    return this.#params.b_V;
  }

  #perQueryHead(name: "W_K" | "W_V" | "b_K" | "b_V"): Tensor {
    let t = this.#repeated.get(name);
    if (!t) {
      t = repeatKvHeads(this.#params[name], this.cfg.nHeads / this.cfg.nKeyValueHeads);
      this.#repeated.set(name, t);
    }
    return t;
  }
  /** Output weights [n_layers, n_heads, d_head, d_model] (read-only). */
  get W_O(): Tensor {
    return this.#params.W_O;
  }
  /** Query biases [n_layers, n_heads, d_head] (read-only). */
  get b_Q(): Tensor {
    return this.#params.b_Q;
  }
  /** Key biases [n_layers, n_heads, d_head], repeated as `W_K` (read-only). */
  get b_K(): Tensor {
    return this.#perQueryHead("b_K");
  }
  /**
   * Value biases [n_layers, n_heads, d_head], repeated as `W_K` (zeros after foldValueBiases;
   * read-only).
   */
  get b_V(): Tensor {
    return this.#perQueryHead("b_V");
  }
  /** Attention output biases [n_layers, d_model] (read-only). */
  get b_O(): Tensor {
    return this.#params.b_O;
  }
  /** MLP input weights [n_layers, d_model, d_mlp] (read-only). */
  get W_in(): Tensor {
    return this.#params.W_in;
  }
  /** MLP input biases [n_layers, d_mlp] (the up projection's in gated MLPs; read-only). */
  get b_in(): Tensor {
    return this.#params.b_in;
  }
  /** Gate weights of gated MLPs [n_layers, d_model, d_mlp] (read-only). */
  get W_gate(): Tensor {
    return this.#gated("W_gate");
  }
  /** Gate biases of gated MLPs [n_layers, d_mlp] (zeros unless the checkpoint has them). */
  get b_gate(): Tensor {
    return this.#gated("b_gate");
  }

  #gated(name: "W_gate" | "b_gate"): Tensor {
    const t = this.#params[name];
    if (!t) {
      throw new InputError(
        `${this.cfg.modelName} has no ${name}: its MLP is not gated (${name} belongs to ` +
          `gated MLPs such as Llama's SwiGLU)`,
      );
    }
    return t;
  }
  /** MLP output weights [n_layers, d_mlp, d_model] (read-only). */
  get W_out(): Tensor {
    return this.#params.W_out;
  }
  /** MLP output biases [n_layers, d_model] (read-only). */
  get b_out(): Tensor {
    return this.#params.b_out;
  }
  /**
   * Every head's OV circuit W_V W_O as a FactoredMatrix [n_layers, n_heads, d_model, d_model]
   * (TransformerLens's `model.OV`; `model.OV.get(l, h)` is one head's).
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * model.OV.shape; // [3, 4, d_model, d_model]
   * model.OV.get(1, 2).eigenvalues.re.shape; // [d_head]
   * ```
   */
  get OV(): FactoredMatrix {
    return new FactoredMatrix(this.W_V, this.W_O, {
      backend: this.backend,
    });
  }
  /**
   * Every head's QK circuit W_Q W_K^T as a FactoredMatrix [n_layers, n_heads, d_model, d_model]
   * (TransformerLens's `model.QK`).
   */
  get QK(): FactoredMatrix {
    return new FactoredMatrix(this.W_Q, transpose(this.W_K), {
      backend: this.backend,
    });
  }
  /** The final norm's weight and bias [d_model] (read-only); null once folded (`foldLn`). */
  get lnFinal(): NormParams | null {
    return this.#params.lnFinal;
  }

  // ---- Text (TransformerLens's tokenizer helpers) ----

  /**
   * Text -> token ids [batch, pos], BOS first by default (TransformerLens's `to_tokens`). A list
   * of strings is padded to one length with the pad token (EOS), on the right unless
   * `paddingSide: "left"`; runs given text mask the padding themselves.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
   * model.toTokens("And God said"); // [[4095, 295, 394, 380]]: BOS, "And", " God", " said"
   * model.toTokens(["Amen", "And God said"], { paddingSide: "left" }); // [[4095, 4095, 32, 1518], ...]
   * ```
   */
  toTokens(input: string | string[], opts: TokenizeOptions = {}): number[][] {
    checkOptions(opts, ["prependBos", "paddingSide", "truncate"], "toTokens");
    return encodeBatch(this, input, { ...opts, truncate: opts.truncate ?? true }).tokens;
  }

  /**
   * The unembedding's column of each token (TransformerLens's `tokens_to_residual_directions`):
   * [d_model] for one token (an id or a one-token text), [n, d_model] for a list of ids,
   * [batch, pos, d_model] for rows.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
   * model.tokensToResidualDirections([5, 9]).shape; // [2, d_model]
   * ```
   */
  tokensToResidualDirections(
    tokens: number | string | number[] | number[][] | TokenTensor,
  ): Tensor {
    return tokensToResidualDirections(this, tokens);
  }

  /**
   * Each token as its text (TransformerLens's `to_str_tokens`): text is tokenized first; a batch
   * (a list of strings, `number[][]` or a token tensor) gives one list per sequence.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
   * model.toStrTokens("And God said"); // ["<|endoftext|>", "And", " God", " said"]
   * model.toStrTokens([295, 394, 380]); // ["And", " God", " said"]
   * ```
   */
  toStrTokens(input: string | number[], opts?: TokenizeOptions): string[];
  /** Each sequence of a batch (strings or token rows) as its tokens' texts. */
  toStrTokens(input: string[] | number[][] | TokenTensor, opts?: TokenizeOptions): string[][];
  toStrTokens(
    input: string | string[] | number[] | number[][] | TokenTensor,
    opts: TokenizeOptions = {},
  ): string[] | string[][] {
    checkOptions(opts, ["prependBos", "paddingSide"], "toStrTokens");
    return strTokens(this, input, opts);
  }

  /**
   * Token ids -> text (TransformerLens's `to_string`): one string for `number[]`, one per row for
   * a batch; with no argument, the model's name.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
   * model.toString([295, 394, 380]); // "And God said"
   * ```
   */
  toString(tokens?: number[]): string;
  /** Each row of a batch of token ids as text. */
  toString(tokens: number[][] | TokenTensor): string[];
  toString(tokens?: number[] | number[][] | TokenTensor): string | string[] {
    if (tokens === undefined) return `HookedTransformer(${this.cfg.modelName})`;
    return decodeTokens(this, tokens);
  }

  /**
   * The id of a text that is exactly one token (TransformerLens's `to_single_token`); an
   * InputError naming the pieces otherwise.
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
   * model.toSingleToken(" Moses"); // 671
   * ```
   */
  toSingleToken(text: string): number {
    return singleToken(this, text);
  }

  /** One token id as its text (TransformerLens's `to_single_str_token`). */
  toSingleStrToken(id: number): string {
    return needTokenizer(this).tokenStrings([id])[0];
  }

  /**
   * Where `token` (an id, or text that is one token) first occurs in `input` (text, or one
   * sequence of ids), or last with `mode: "last"` (TransformerLens's `get_token_position`).
   *
   * @example
   * ```ts
   * import { HookedTransformer } from "../mod.ts";
   * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
   * model.getTokenPosition(" Aaron", "And Moses said unto Aaron, Take a censer"); // 5 (BOS is 0)
   * ```
   */
  getTokenPosition(
    token: string | number,
    input: string | number[] | number[][] | TokenTensor,
    opts: TokenPositionOptions = {},
  ): number {
    checkOptions(opts, ["mode", "prependBos", "paddingSide"], "getTokenPosition");
    return tokenPosition(this, token, input, opts);
  }
}
