/**
 * The model configuration in TransformerLens's vocabulary (camelCase), the same for every family:
 * each family module (`families/`) reads its HF `config.json` into this shape, and the forward
 * pass reads only this.
 * @module
 */
import { ConfigError } from "../core/errors.ts";

/**
 * The normalization layers: LayerNorm (`"LN"`), LayerNorm whose weight and bias were folded into
 * the next weights (`"LNPre"`), RMSNorm (`"RMS"`) and RMSNorm with its weight folded (`"RMSPre"`),
 * as TransformerLens's `normalization_type`.
 */
export type NormalizationType = "LN" | "LNPre" | "RMS" | "RMSPre";

/** How positions enter: a learned `W_pos` added to the embedding, or rotary (on q and k). */
export type PositionalEmbeddingType = "standard" | "rotary";

/** The MLP's activation function, TransformerLens's names. */
export type ActivationFunction = "gelu_new" | "gelu" | "silu" | "relu";

/**
 * What a transformer looks like, with TransformerLens's `HookedTransformerConfig` field names in
 * camelCase.
 *
 * @example
 * ```ts
 * import { gpt2Config } from "../families/gpt2.ts";
 * const cfg = gpt2Config({ n_layer: 2, n_head: 4, n_embd: 32, vocab_size: 96, n_positions: 32 });
 * cfg.dHead; // 8
 * cfg.normalizationType; // "LN"
 * ```
 */
export interface HookedTransformerConfig {
  /** The model's name as the user asked for it (for messages and reports). */
  modelName: string;
  /** The HF architecture it was read from, e.g. `GPT2LMHeadModel`. */
  originalArchitecture: string;
  /** Number of transformer blocks. */
  nLayers: number;
  /** Width of the residual stream. */
  dModel: number;
  /** Attention heads per block. */
  nHeads: number;
  /** Width of one attention head. */
  dHead: number;
  /** Key/value heads per block: nHeads, or fewer with grouped-query attention. */
  nKeyValueHeads: number;
  /** Hidden width of the MLP. */
  dMlp: number;
  /** Vocabulary size. */
  dVocab: number;
  /**
   * Where the model computes: `"wasm"` or `"webgpu"` (TransformerLens's `device`; set when a
   * model is built from this config, changed by `model.to(device)`; absent on a bare config).
   */
  device?: "wasm" | "webgpu";
  /** Maximum sequence length. */
  nCtx: number;
  /** The MLP activation. */
  actFn: ActivationFunction;
  /** Whether the MLP is gated (`act(x W_gate) * (x W_in)`, as Llama's SwiGLU). */
  gatedMlp: boolean;
  /** The normalization layers (reflects folding: `"LNPre"` after `foldLn` on a LayerNorm model). */
  normalizationType: NormalizationType;
  /** Normalization epsilon. */
  eps: number;
  /** How positions enter the model. */
  positionalEmbeddingType: PositionalEmbeddingType;
  /** Leading dimensions of each head that rotary embeddings turn (rotary models; 0 otherwise). */
  rotaryDim: number;
  /** Rotary base: dims i and i + rotaryDim/2 turn by position x rotaryBase^(-2i / rotaryDim). */
  rotaryBase: number;
  /**
   * Whether rotary pairs are adjacent dims (GPT-J) rather than dims i and i + rotaryDim/2 (the
   * rotate-half convention of GPT-NeoX, Llama and Qwen2, the only one implemented: false).
   */
  rotaryAdjacentPairs: boolean;
  /** Llama 3's frequency scaling of rotary embeddings (HF `rope_scaling` type "llama3"). */
  useNTKByPartsRope: boolean;
  /** Llama 3 scaling: how much low frequencies are divided by (HF `factor`). */
  NTKByPartsFactor: number;
  /** Llama 3 scaling: wavelengths above NTKOriginalCtxLen / this are scaled fully. */
  NTKByPartsLowFreqFactor: number;
  /** Llama 3 scaling: wavelengths below NTKOriginalCtxLen / this are not scaled. */
  NTKByPartsHighFreqFactor: number;
  /** Llama 3 scaling: the context length the model was first trained on. */
  NTKOriginalCtxLen: number;
  /** Whether attention and MLP read the same block input and both add to it (GPT-NeoX). */
  parallelAttnMlp: boolean;
  /** The token prepended as beginning-of-sequence. */
  bosTokenId: number;
  /** The end-of-sequence token, when the model has one. */
  eosTokenId: number | null;
  /** Whether text is tokenized with the BOS token first by default (TransformerLens's default). */
  defaultPrependBos: boolean;
  // ---- Gemma 2 / 3 (absent in other families; TransformerLens's names) ----
  /**
   * Attention scores are (q . k) / attnScale (TL's `attn_scale`; absent: sqrt(dHead)). Gemma:
   * sqrt(query_pre_attn_scalar).
   */
  attnScale?: number;
  /** Per layer, global (full causal) or local (sliding-window) attention (TL's `attn_types`). */
  attnTypes?: readonly AttentionType[];
  /**
   * The sliding window of local layers (TL's `window_size`): a query sees itself and the
   * windowSize - 1 positions before it.
   */
  windowSize?: number;
  /** Attention-logit softcap: scores become cap tanh(scores / cap) before the mask (Gemma 2). */
  attnScoresSoftCap?: number;
  /** Final-logit softcap: logits become cap tanh(logits / cap) (Gemma 2). */
  outputLogitsSoftCap?: number;
  /**
   * A weighted RMSNorm on each block's attention and MLP outputs too (`ln1_post`, `ln2_post`),
   * before they are added to the residual stream (TL's `use_normalization_before_and_after`).
   */
  useNormalizationBeforeAndAfter?: boolean;
  /** RMSNorm over each query and key head before rotary, with weights (Gemma 3's q/k norm). */
  useQkNorm?: boolean;
  /** Rotary base of local layers (TL's `rotary_base_local`; absent: rotaryBase). */
  rotaryBaseLocal?: number;
  /** Linear rotary scaling of global layers: positions divided by this (HF `rope_scaling` linear). */
  rotaryLinearFactor?: number;
}

/** Global (full causal) or local (sliding-window) attention, TransformerLens's `attn_types`. */
export type AttentionType = "global" | "local";

/**
 * Whether layer `l` of a config attends through a sliding window, and how wide (0: full).
 *
 * @example
 * ```ts
 * import { layerWindow } from "./config.ts";
 * layerWindow({ attnTypes: ["local", "global"], windowSize: 4 }, 0); // 4
 * layerWindow({ attnTypes: ["local", "global"], windowSize: 4 }, 1); // 0
 * ```
 */
export function layerWindow(
  cfg: Pick<HookedTransformerConfig, "attnTypes" | "windowSize">,
  l: number,
): number {
  return cfg.attnTypes?.[l] === "local" ? cfg.windowSize ?? 0 : 0;
}

/**
 * The attention score scale of a config: 1 / attnScale, by default 1 / sqrt(dHead).
 *
 * @example
 * ```ts
 * import { scoreScale } from "./config.ts";
 * scoreScale({ dHead: 16 }); // 0.25
 * scoreScale({ dHead: 16, attnScale: Math.sqrt(24) }); // 24 ** -0.5
 * ```
 */
export function scoreScale(cfg: Pick<HookedTransformerConfig, "dHead" | "attnScale">): number {
  return 1 / (cfg.attnScale ?? Math.sqrt(cfg.dHead));
}

/**
 * The rotary fields of a model without rotary embeddings (TransformerLens's defaults), for family
 * modules to spread into their config.
 */
export const NO_ROTARY: Pick<
  HookedTransformerConfig,
  | "rotaryDim"
  | "rotaryBase"
  | "rotaryAdjacentPairs"
  | "useNTKByPartsRope"
  | "NTKByPartsFactor"
  | "NTKByPartsLowFreqFactor"
  | "NTKByPartsHighFreqFactor"
  | "NTKOriginalCtxLen"
> = {
  rotaryDim: 0,
  rotaryBase: 10000,
  rotaryAdjacentPairs: false,
  useNTKByPartsRope: false,
  NTKByPartsFactor: 8,
  NTKByPartsLowFreqFactor: 1,
  NTKByPartsHighFreqFactor: 4,
  NTKOriginalCtxLen: 8192,
};

/**
 * Checks the invariants every family's config must satisfy (the forward pass relies on them) and
 * returns the config; a violation is a {@link ConfigError} naming the field.
 *
 * @example
 * ```ts
 * import { checkConfig } from "./config.ts";
 * import { gpt2Config } from "../families/gpt2.ts";
 * checkConfig(gpt2Config({ n_layer: 1, n_head: 2, n_embd: 8, vocab_size: 10, n_positions: 4 }));
 * ```
 */
export function checkConfig(cfg: HookedTransformerConfig): HookedTransformerConfig {
  const positive = [
    "nLayers",
    "dModel",
    "nHeads",
    "dHead",
    "nKeyValueHeads",
    "dMlp",
    "dVocab",
    "nCtx",
  ] as const;
  for (const key of positive) {
    const v = cfg[key];
    if (!Number.isSafeInteger(v) || v <= 0) {
      throw new ConfigError(`config ${key} must be a positive integer, got ${v}`);
    }
  }
  if (cfg.nHeads % cfg.nKeyValueHeads !== 0) {
    throw new ConfigError(
      `config nHeads ${cfg.nHeads} is not a multiple of nKeyValueHeads ${cfg.nKeyValueHeads}`,
    );
  }
  if (!(cfg.eps > 0 && cfg.eps < 1)) {
    throw new ConfigError(`config eps must be a number in (0, 1), got ${cfg.eps}`);
  }
  if (!Number.isInteger(cfg.bosTokenId) || cfg.bosTokenId < 0 || cfg.bosTokenId >= cfg.dVocab) {
    throw new ConfigError(
      `bos token id ${cfg.bosTokenId} is outside the vocabulary [0, ${cfg.dVocab})`,
    );
  }
  if (cfg.positionalEmbeddingType === "rotary") {
    if (!Number.isInteger(cfg.rotaryDim) || cfg.rotaryDim <= 0 || cfg.rotaryDim > cfg.dHead) {
      throw new ConfigError(`rotaryDim ${cfg.rotaryDim} must be in [1, dHead = ${cfg.dHead}]`);
    }
    if (cfg.rotaryDim % 2 !== 0) throw new ConfigError(`rotaryDim ${cfg.rotaryDim} must be even`);
    if (!(cfg.rotaryBase > 1) || !Number.isFinite(cfg.rotaryBase)) {
      throw new ConfigError(`rotaryBase must be a finite number above 1, got ${cfg.rotaryBase}`);
    }
    if (cfg.rotaryAdjacentPairs) {
      throw new ConfigError(
        "rotaryAdjacentPairs (GPT-J's rotary convention) is not implemented: only the " +
          "rotate-half convention of GPT-NeoX, Llama and Qwen2",
      );
    }
    if (cfg.useNTKByPartsRope) {
      const f = cfg.NTKByPartsFactor, lo = cfg.NTKByPartsLowFreqFactor;
      const hi = cfg.NTKByPartsHighFreqFactor, ctx = cfg.NTKOriginalCtxLen;
      if (!(f >= 1 && lo > 0 && hi > lo && ctx > 0) || ![f, lo, hi, ctx].every(Number.isFinite)) {
        throw new ConfigError(
          `Llama 3 rotary scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and ` +
            `original_max_position_embeddings > 0; got factor ${f}, low_freq_factor ${lo}, ` +
            `high_freq_factor ${hi}, original_max_position_embeddings ${ctx}`,
        );
      }
    }
  } else if (cfg.rotaryDim !== 0) {
    throw new ConfigError(`rotaryDim is ${cfg.rotaryDim} but the model has no rotary embeddings`);
  }
  checkGemmaFields(cfg);
  return cfg;
}

/** The Gemma fields' invariants (each absent in other families). */
function checkGemmaFields(cfg: HookedTransformerConfig): void {
  const positive = (key: keyof HookedTransformerConfig) => {
    const v = cfg[key];
    if (v !== undefined && !(typeof v === "number" && v > 0 && Number.isFinite(v))) {
      throw new ConfigError(`config ${key} must be a positive finite number, got ${v}`);
    }
  };
  for (const key of ["attnScale", "attnScoresSoftCap", "outputLogitsSoftCap"] as const) {
    positive(key);
  }
  for (const key of ["rotaryBaseLocal", "rotaryLinearFactor"] as const) positive(key);
  if (cfg.attnTypes !== undefined) {
    const types = cfg.attnTypes;
    if (!Array.isArray(types) || types.length !== cfg.nLayers) {
      throw new ConfigError(`config attnTypes must list one type per layer (${cfg.nLayers})`);
    }
    const bad = types.find((t) => t !== "global" && t !== "local");
    if (bad !== undefined) {
      throw new ConfigError(`config attnTypes has ${JSON.stringify(bad)}: "global" or "local"`);
    }
    const w = cfg.windowSize;
    if (types.includes("local") && !(Number.isSafeInteger(w) && w! > 0)) {
      throw new ConfigError(`config windowSize must be a positive integer, got ${w}`);
    }
  }
  if (cfg.useNormalizationBeforeAndAfter && !cfg.gatedMlp) {
    throw new ConfigError("useNormalizationBeforeAndAfter is implemented for gated MLPs only");
  }
  if (cfg.useQkNorm && cfg.positionalEmbeddingType !== "rotary") {
    throw new ConfigError("useQkNorm is implemented for rotary models only (Gemma 3)");
  }
}
