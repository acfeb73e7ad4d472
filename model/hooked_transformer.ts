/**
 * `HookedTransformer`: a GPT-2-family model with TransformerLens's hook points, running on the
 * WebAssembly kernels.
 * @module
 */
import { HookError, InputError } from "../core/errors.ts";
import { Kernels } from "../backend/wasm/kernels.ts";
import { configFromHf, type HookedTransformerConfig } from "./config.ts";
import { type Gpt2Params, gpt2ParamsFromSafetensors } from "../families/gpt2.ts";
import { type ProcessingOptions, processWeights } from "./processing.ts";
import { resolveModel, type ResolveOptions } from "../io/resolve.ts";
import { parseSafetensors } from "../io/safetensors.ts";
import { checkFinite } from "../io/check_finite.ts";
import { stack, type Tensor } from "../core/tensor.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { ActivationCache } from "./activation_cache.ts";
import { Engine } from "./engine.ts";
import { assertHookName, hookNames } from "./hook_points.ts";
import { type FwdHook, type HookFilter, type HookFn, HookSession } from "./hooks.ts";
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
  weightDtype?: "f32" | "bf16";
  /**
   * Scan the checkpoint for NaN and infinite weights and refuse it with a WeightsError naming the
   * first such tensor (default false: TransformerLens does not check; 0.15 s for GPT-2 small).
   */
  checkFinite?: boolean;
}

/** What a run returns: full logits, or nothing (TransformerLens's `return_type=None`). */
export type ReturnType = "logits" | "none";

/** Options of {@link HookedTransformer.runWithCache}. */
export interface RunWithCacheOptions {
  /** Which hook points to keep: a name, a list of names, or a predicate (default: all). */
  namesFilter?: string | string[] | ((name: string) => boolean);
  /** `"none"` skips the unembedding when only activations are wanted. */
  returnType?: ReturnType;
}

/** Options of {@link HookedTransformer.runWithHooks}. */
export interface RunWithHooksOptions {
  /** `[nameOrPredicate, hookFn]` pairs, run in order at each matching hook point. */
  fwdHooks: FwdHook[];
  /** `"none"` skips the unembedding. */
  returnType?: ReturnType;
}

/**
 * A GPT-2-family transformer with TransformerLens's hook points.
 *
 * @example
 * ```ts ignore
 * import { HookedTransformer, getActName } from "./mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy");
 * const tokens = [[2047, 5, 9, 5, 9]];
 * const logits = await model.run(tokens); // [1, 5, d_vocab]
 * const { cache } = await model.runWithCache(tokens, { namesFilter: (n) => n.endsWith("pattern") });
 * cache.get("pattern", 1).shape; // [1, 4, 5, 5]
 * // Patch: replace layer 0's MLP output at position 3 with zeros.
 * await model.runWithHooks(tokens, {
 *   fwdHooks: [[getActName("mlp_out", 0), (act) => { act.data.fill(0, 3 * 128, 4 * 128); }]],
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
  /** How the big weight matrices are stored in WebAssembly memory (see FromPretrainedOptions). */
  readonly weightDtype: "f32" | "bf16";
  /** The kernels (and WebAssembly memory) this model runs on. */
  readonly kernels: Kernels;
  readonly #params: Gpt2Params;
  /**
   * The compute behind the public API (the analysis functions use it for resumed passes).
   * @internal
   */
  readonly engine: Engine;
  readonly #hookSet: ReadonlySet<string>;

  private constructor(
    cfg: HookedTransformerConfig,
    params: Gpt2Params,
    kernels: Kernels,
    processing: Required<ProcessingOptions>,
    tokenizer: Tokenizer | undefined,
    weightDtype: "f32" | "bf16",
  ) {
    this.cfg = cfg;
    this.#params = params;
    this.kernels = kernels;
    this.processing = processing;
    this.tokenizer = tokenizer;
    this.hookNames = hookNames(cfg);
    this.#hookSet = new Set(this.hookNames);
    this.weightDtype = weightDtype;
    this.engine = new Engine(kernels, cfg, params, weightDtype);
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
    opts: FromPretrainedOptions & { name?: string; tokenizer?: Tokenizer } = {},
  ): Promise<HookedTransformer> {
    const cfg = configFromHf(config, opts.name ?? "model");
    if (opts.checkFinite !== undefined && typeof opts.checkFinite !== "boolean") {
      throw new InputError(`checkFinite must be true or false, got ${String(opts.checkFinite)}`);
    }
    const file = parseSafetensors(safetensors);
    if (opts.checkFinite) checkFinite(file);
    const raw = gpt2ParamsFromSafetensors(file, cfg);
    const processing = {
      foldLn: opts.foldLn ?? true,
      centerWritingWeights: opts.centerWritingWeights ?? true,
      centerUnembed: opts.centerUnembed ?? true,
      foldValueBiases: opts.foldValueBiases ?? true,
    };
    const params = processWeights(raw, processing);
    const weightDtype = opts.weightDtype ?? "f32";
    if (weightDtype !== "f32" && weightDtype !== "bf16") {
      throw new InputError(
        `weightDtype must be "f32" or "bf16", got ${JSON.stringify(weightDtype)}`,
      );
    }
    const kernels = await Kernels.load({ threads: opts.threads });
    return new HookedTransformer(cfg, params, kernels, processing, opts.tokenizer, weightDtype);
  }

  /** Logits [batch, pos, d_vocab] for a batch of token ids. */
  async run(tokens: Tokens): Promise<Tensor> {
    await Promise.resolve();
    return this.engine.forward(toTokenTensor(tokens, this.cfg), this.engine.silent, true)!;
  }

  /**
   * Runs the model and keeps activations under their TransformerLens names.
   *
   * @example
   * ```ts ignore
   * const { logits, cache } = await model.runWithCache(tokens, { namesFilter: ["blocks.0.hook_mlp_out"] });
   * cache.get("mlp_out", 0).shape; // [batch, pos, d_model]
   * ```
   */
  async runWithCache(
    tokens: Tokens,
    opts: RunWithCacheOptions = {},
  ): Promise<{ logits: Tensor | null; cache: ActivationCache }> {
    await Promise.resolve();
    const t = toTokenTensor(tokens, this.cfg);
    const names = this.#selectNames(opts.namesFilter);
    const session = this.#session([], new Set(names));
    const logits = this.engine.forward(t, session, opts.returnType !== "none");
    return { logits, cache: new ActivationCache(session.cached) };
  }

  /**
   * Runs the model with forward hooks: each `[filter, fn]` pair calls `fn` at every matching hook
   * point; a hook that returns a tensor (or edits its argument) patches the activation.
   */
  async runWithHooks(tokens: Tokens, opts: RunWithHooksOptions): Promise<Tensor | null> {
    await Promise.resolve();
    const t = toTokenTensor(tokens, this.cfg);
    const session = this.#session(opts.fwdHooks ?? [], new Set());
    return this.engine.forward(t, session, opts.returnType !== "none");
  }

  #selectNames(filter: RunWithCacheOptions["namesFilter"]): string[] {
    if (filter === undefined) return [...this.hookNames];
    if (typeof filter === "function") return this.hookNames.filter((n) => filter(n));
    const list = typeof filter === "string" ? [filter] : filter;
    for (const n of list) assertHookName(n, this.#hookSet);
    return list;
  }

  #session(fwdHooks: FwdHook[], cacheNames: Set<string>): HookSession {
    const hooks = new Map<string, HookFn[]>();
    for (const pair of fwdHooks) {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[1] !== "function") {
        throw new HookError("fwdHooks entries must be [nameOrPredicate, hookFunction] pairs");
      }
      const [filter, fn] = pair as [HookFilter, HookFn];
      const names = typeof filter === "function"
        ? this.hookNames.filter((n) => filter(n))
        : (assertHookName(filter, this.#hookSet), [filter]);
      for (const n of names) hooks.set(n, [...(hooks.get(n) ?? []), fn]);
    }
    return new HookSession(this.kernels, hooks, cacheNames);
  }

  /**
   * Stops the kernels' worker threads. The model keeps working, on the calling thread alone;
   * call it when done so a long-lived process does not keep idle workers.
   */
  dispose(): void {
    this.kernels.close();
  }

  // ---- Weights, TransformerLens names and shapes (copies; processed when processing was asked) ----

  /** Token embedding [d_vocab, d_model]. */
  get W_E(): Tensor {
    return copy(this.#params.W_E);
  }
  /** Position embedding [n_ctx, d_model]. */
  get W_pos(): Tensor {
    return copy(this.#params.W_pos);
  }
  /** Unembedding [d_model, d_vocab]. */
  get W_U(): Tensor {
    return copy(this.#params.W_U);
  }
  /** Unembedding bias [d_vocab]. */
  get b_U(): Tensor {
    return copy(this.#params.b_U);
  }
  /** Query weights [n_layers, n_heads, d_model, d_head]. */
  get W_Q(): Tensor {
    return this.#stacked("W_Q");
  }
  /** Key weights [n_layers, n_heads, d_model, d_head]. */
  get W_K(): Tensor {
    return this.#stacked("W_K");
  }
  /** Value weights [n_layers, n_heads, d_model, d_head]. */
  get W_V(): Tensor {
    return this.#stacked("W_V");
  }
  /** Output weights [n_layers, n_heads, d_head, d_model]. */
  get W_O(): Tensor {
    return this.#stacked("W_O");
  }
  /** Query biases [n_layers, n_heads, d_head]. */
  get b_Q(): Tensor {
    return this.#stacked("b_Q");
  }
  /** Key biases [n_layers, n_heads, d_head]. */
  get b_K(): Tensor {
    return this.#stacked("b_K");
  }
  /** Value biases [n_layers, n_heads, d_head] (zeros after foldValueBiases). */
  get b_V(): Tensor {
    return this.#stacked("b_V");
  }
  /** Attention output biases [n_layers, d_model]. */
  get b_O(): Tensor {
    return this.#stacked("b_O");
  }
  /** MLP input weights [n_layers, d_model, d_mlp]. */
  get W_in(): Tensor {
    return this.#stacked("W_in");
  }
  /** MLP input biases [n_layers, d_mlp]. */
  get b_in(): Tensor {
    return this.#stacked("b_in");
  }
  /** MLP output weights [n_layers, d_mlp, d_model]. */
  get W_out(): Tensor {
    return this.#stacked("W_out");
  }
  /** MLP output biases [n_layers, d_model]. */
  get b_out(): Tensor {
    return this.#stacked("b_out");
  }

  #stacked(
    name:
      | "W_Q"
      | "W_K"
      | "W_V"
      | "W_O"
      | "b_Q"
      | "b_K"
      | "b_V"
      | "b_O"
      | "W_in"
      | "b_in"
      | "W_out"
      | "b_out",
  ): Tensor {
    return stack(this.#params.blocks.map((b) => b[name]));
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
    const ids = this.#needTokenizer().encode(text);
    return [opts.prependBos === false ? ids : [this.cfg.bosTokenId, ...ids]];
  }

  /** Each token as its text (TransformerLens's `to_str_tokens`); text is tokenized first. */
  toStrTokens(input: string | number[], opts: { prependBos?: boolean } = {}): string[] {
    const ids = typeof input === "string" ? this.toTokens(input, opts)[0] : input;
    return this.#needTokenizer().tokenStrings(ids);
  }

  /** Token ids -> text. */
  toString(tokens?: number[]): string {
    if (tokens === undefined) return `HookedTransformer(${this.cfg.modelName})`;
    return this.#needTokenizer().decode(tokens);
  }
}

function copy(t: Tensor): Tensor {
  return { data: t.data.slice(), shape: [...t.shape] };
}
