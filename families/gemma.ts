/**
 * Gemma 2 (`model_type: "gemma2"`, `Gemma2ForCausalLM`) and the text-only Gemma 3
 * (`"gemma3_text"`, `Gemma3ForCausalLM`: gemma-3-270m, gemma-3-1b), with Hugging Face's
 * semantics: the embedding scaled by sqrt(hidden_size) (the factor cast to the checkpoint's dtype
 * first; the tied unembedding unscaled), RMSNorms computing x * (1 + w), four norms per block
 * (input, post-attention, pre-feedforward, post-feedforward), a gated GELU-tanh MLP, attention
 * scaled by query_pre_attn_scalar^-1/2, sliding-window attention on the layers the config makes
 * sliding, grouped-query attention with an explicit head_dim, and for Gemma 2 attention-logit and
 * final-logit softcapping, for Gemma 3 q_norm / k_norm before rotary and a second rotary base on
 * its sliding layers.
 *
 * In TransformerLens's terms (as its Gemma conversion): every norm weight is stored as 1 + w,
 * W_E is stored already multiplied by the embedding's scale (so `hook_embed` shows the scaled
 * embedding) and W_U is the unscaled embedding transposed; the post-norms are `ln1_post` and
 * `ln2_post`. Layer types follow HF, not TransformerLens's inverted Gemma 2 order (TL issue 778).
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "../core/dtype.ts";
import { transpose2d } from "../core/tensor.ts";
import {
  type AttentionType,
  checkConfig,
  type HookedTransformerConfig,
  NO_ROTARY,
} from "../model/config.ts";
import { emptyStacks, type ModelParams } from "../model/params.ts";
import {
  assertHfConfig,
  boolField,
  type HfConfig,
  intField,
  MAX_CONFIG_LAYERS,
  numberField,
  type TensorSource,
  tokenIds,
} from "./hf_config.ts";
import { llamaLayoutReader, readLlamaLayer } from "./llama_layout.ts";

/** What tells Gemma 2 and Gemma 3 apart. */
interface Variant {
  family: string;
  architecture: string;
  /** HF's defaults of the config class. */
  defaults: {
    ropeTheta: number;
    attnSoftcap: number | null;
    finalSoftcap: number | null;
  };
  /** Whether layer i slides when config.json has no `layer_types`. */
  slides(i: number, hf: HfConfig): boolean;
  gemma3: boolean;
}

const GEMMA2: Variant = {
  family: "Gemma 2",
  architecture: "Gemma2ForCausalLM",
  defaults: { ropeTheta: 10000, attnSoftcap: 50, finalSoftcap: 30 },
  // HF Gemma2Config: layer i slides iff (i + 1) % 2 != 0, the even layers.
  slides: (i) => (i + 1) % 2 !== 0,
  gemma3: false,
};

const GEMMA3: Variant = {
  family: "Gemma 3",
  architecture: "Gemma3ForCausalLM",
  defaults: { ropeTheta: 1000000, attnSoftcap: null, finalSoftcap: null },
  // HF Gemma3TextConfig: layer i slides iff (i + 1) % sliding_window_pattern != 0.
  slides: (i, hf) => (i + 1) % intField(hf, "sliding_window_pattern", "Gemma 3", 6) !== 0,
  gemma3: true,
};

/** A softcap field: null (or absent with a null default) for none, else a positive number. */
function softcapField(hf: HfConfig, key: string, fallback: number | null): number | undefined {
  const v = hf[key] === undefined ? fallback : hf[key];
  if (v === null) return undefined;
  return numberField({ [key]: v }, key, undefined);
}

/** `layer_types` when given (checked), else the variant's rule. */
function attentionTypes(v: Variant, hf: HfConfig, nLayers: number): AttentionType[] {
  const given = hf.layer_types;
  if (given === undefined || given === null) {
    return Array.from({ length: nLayers }, (_, i) => v.slides(i, hf) ? "local" : "global");
  }
  if (!Array.isArray(given) || given.length !== nLayers) {
    throw new ConfigError(
      `config.json field "layer_types" must list one type per layer (${nLayers}), got ` +
        JSON.stringify(given),
    );
  }
  return given.map((t, i) => {
    if (t === "sliding_attention") return "local";
    if (t === "full_attention") return "global";
    throw new ConfigError(
      `config.json field "layer_types" has ${JSON.stringify(t)} at layer ${i}: ` +
        `"sliding_attention" or "full_attention"`,
    );
  });
}

/** The rotary scaling of global layers: none or HF's "linear" (a ConfigError otherwise). */
function linearRopeFactor(hf: HfConfig): number | undefined {
  const s = hf.rope_scaling;
  if (s === undefined || s === null) return undefined;
  if (typeof s !== "object" || Array.isArray(s)) {
    throw new ConfigError(`config.json field "rope_scaling" must be an object or null`);
  }
  const scaling = s as HfConfig;
  const type = scaling.rope_type ?? scaling.type ?? "default";
  if (type === "default") return undefined;
  if (type !== "linear") {
    throw new ConfigError(
      `config.json field "rope_scaling" has rope_type ${JSON.stringify(type)}, which Gemma ` +
        `does not use here; supported: null, "default", "linear"`,
    );
  }
  return numberField(scaling, "factor", undefined);
}

/** The MLP activation: Gemma's `hidden_activation` must be GELU with the tanh approximation. */
function gemmaActivation(hf: HfConfig): "gelu_new" {
  const v = hf.hidden_activation ?? hf.hidden_act ?? "gelu_pytorch_tanh";
  if (v !== "gelu_pytorch_tanh" && v !== "gelu_new" && v !== "gelu_fast") {
    throw new ConfigError(
      `config.json field "hidden_activation" is ${JSON.stringify(v)}; Gemma's MLP is ` +
        `"gelu_pytorch_tanh" (the tanh approximation of GELU)`,
    );
  }
  return "gelu_new";
}

function variantConfig(v: Variant, hf: HfConfig, modelName: string): HookedTransformerConfig {
  assertHfConfig(hf);
  const nLayers = intField(hf, "num_hidden_layers", v.family);
  if (nLayers > MAX_CONFIG_LAYERS) {
    throw new ConfigError(
      `config.json field "num_hidden_layers" is ${nLayers}, past any real ${v.family} (at most ` +
        `${MAX_CONFIG_LAYERS} are read): the config does not match the weights`,
    );
  }
  const nHeads = intField(hf, "num_attention_heads", v.family);
  const dModel = intField(hf, "hidden_size", v.family);
  const dVocab = intField(hf, "vocab_size", v.family);
  // HF's Gemma configs default head_dim to 256, not hidden_size / heads.
  const dHead = intField(hf, "head_dim", v.family, 256);
  if (dHead % 2 !== 0) {
    throw new ConfigError(`config.json field "head_dim" must be even (rotary), got ${dHead}`);
  }
  const attnTypes = attentionTypes(v, hf, nLayers);
  const window = hf.sliding_window ?? 4096;
  if (typeof window !== "number" || !Number.isInteger(window) || window < 1) {
    throw new ConfigError(
      `config.json field "sliding_window" must be a positive integer (a query sees itself and ` +
        `the sliding_window - 1 keys before it), got ${JSON.stringify(window)}`,
    );
  }
  const queryScalar = numberField(hf, "query_pre_attn_scalar", 256);
  const ropeTheta = numberField(hf, "rope_theta", v.defaults.ropeTheta, [1, Infinity]);
  const linear = linearRopeFactor(hf);
  if (!boolField(hf, "tie_word_embeddings", true)) {
    // Every released Gemma ties them; an untied one needs lm_head.weight (read below).
  }
  return checkConfig({
    modelName,
    originalArchitecture: v.architecture,
    nLayers,
    dModel,
    nHeads,
    dHead,
    nKeyValueHeads: intField(hf, "num_key_value_heads", v.family, nHeads),
    dMlp: intField(hf, "intermediate_size", v.family),
    dVocab,
    nCtx: intField(hf, "max_position_embeddings", v.family, v.gemma3 ? 131072 : 8192),
    actFn: gemmaActivation(hf),
    gatedMlp: true,
    normalizationType: "RMS",
    eps: numberField(hf, "rms_norm_eps", 1e-6, [0, 1]),
    positionalEmbeddingType: "rotary",
    ...NO_ROTARY,
    rotaryDim: dHead,
    rotaryBase: ropeTheta,
    parallelAttnMlp: false,
    ...tokenIds(hf, dVocab, { bos: 2, eos: 1 }),
    defaultPrependBos: true,
    attnScale: Math.sqrt(queryScalar),
    attnTypes,
    windowSize: window,
    // Gemma 3 never passes attn_logit_softcapping to its attention (HF), even when set.
    attnScoresSoftCap: v.gemma3
      ? undefined
      : softcapField(hf, "attn_logit_softcapping", v.defaults.attnSoftcap),
    outputLogitsSoftCap: softcapField(hf, "final_logit_softcapping", v.defaults.finalSoftcap),
    useNormalizationBeforeAndAfter: true,
    useQkNorm: v.gemma3,
    rotaryBaseLocal: v.gemma3
      ? numberField(hf, "rope_local_base_freq", 10000, [1, Infinity])
      : undefined,
    rotaryLinearFactor: linear,
  });
}

/**
 * Reads an HF `Gemma2Config` (`config.json` of google/gemma-2-2b, -9b, ...): HF's defaults for
 * absent fields (head_dim 256, query_pre_attn_scalar 256, softcaps 50 and 30, sliding_window
 * 4096), the even layers sliding unless `layer_types` says otherwise.
 *
 * @example
 * ```ts
 * import { gemma2Config } from "./gemma.ts";
 * // gemma-2-2b's shape:
 * const cfg = gemma2Config({
 *   model_type: "gemma2", hidden_size: 2304, num_attention_heads: 8, num_key_value_heads: 4,
 *   head_dim: 256, num_hidden_layers: 26, intermediate_size: 9216, vocab_size: 256000,
 *   max_position_embeddings: 8192, query_pre_attn_scalar: 256, sliding_window: 4096,
 *   attn_logit_softcapping: 50, final_logit_softcapping: 30,
 * });
 * cfg.attnTypes?.slice(0, 3); // ["local", "global", "local"]
 * cfg.nHeads * cfg.dHead; // 2048: not hidden_size
 * ```
 */
export function gemma2Config(hf: HfConfig, modelName = "model"): HookedTransformerConfig {
  return variantConfig(GEMMA2, hf, modelName);
}

/**
 * Reads an HF `Gemma3TextConfig` (`model_type: "gemma3_text"`): `layer_types` or
 * `sliding_window_pattern` (layer i slides iff (i + 1) % pattern != 0), `rope_local_base_freq` on
 * sliding layers and `rope_theta` with `rope_scaling` (none or "linear") on the others.
 *
 * @example
 * ```ts
 * import { gemma3Config } from "./gemma.ts";
 * // gemma-3-1b's shape:
 * const cfg = gemma3Config({
 *   model_type: "gemma3_text", hidden_size: 1152, num_attention_heads: 4,
 *   num_key_value_heads: 1, head_dim: 256, num_hidden_layers: 26, intermediate_size: 6912,
 *   vocab_size: 262144, max_position_embeddings: 32768, query_pre_attn_scalar: 256,
 *   sliding_window: 512, sliding_window_pattern: 6, rope_theta: 1000000,
 *   rope_local_base_freq: 10000,
 * });
 * cfg.attnTypes?.slice(0, 6); // ["local", "local", "local", "local", "local", "global"]
 * ```
 */
export function gemma3Config(hf: HfConfig, modelName = "model"): HookedTransformerConfig {
  return variantConfig(GEMMA3, hf, modelName);
}

/** sqrt(d) rounded to the embedding's stored dtype, as HF's `normalizer` tensor. */
function embedNormalizer(d: number, dtype: string): number {
  const f = Math.fround(Math.sqrt(d));
  if (dtype === "BF16") return bf16BitsToF32(f32ToBf16Bits(f));
  if (dtype === "F16") return f16BitsToF32(f32ToF16Bits(f));
  return f;
}

function variantParams(
  v: Variant,
  file: TensorSource,
  cfg: HookedTransformerConfig,
): ModelParams {
  const { ck, prefix } = llamaLayoutReader(file, v.family, cfg);
  const { nLayers: L, nHeads, dModel: d, dHead, dMlp, dVocab } = cfg;
  // A head_dim that does not match the weights: say so by its name (the projections' shapes
  // would otherwise only say "config does not match").
  const q0 = `${prefix}layers.0.self_attn.q_proj.weight`;
  if (ck.has(q0)) {
    const [rows, cols] = file.info(q0).shape;
    if (cols === d && rows !== nHeads * dHead) {
      throw new ConfigError(
        `config.json field "head_dim" is ${dHead}, but ${q0} has ${rows} rows: ` +
          `num_attention_heads (${nHeads}) x head_dim must equal it` +
          (rows % nHeads === 0 ? ` (head_dim ${rows / nHeads} would)` : ""),
      );
    }
  }
  const plusOne = (w: Float32Array) => w.map((x) => Math.fround(1 + x));
  const stacks = {
    ...emptyStacks(cfg),
    W_gate: { data: new Float32Array(L * d * dMlp), shape: [L, d, dMlp] },
    b_gate: { data: new Float32Array(L * dMlp), shape: [L, dMlp] },
  };
  const norms = {
    ln1: new Float32Array(L * d),
    ln1Post: new Float32Array(L * d),
    ln2: new Float32Array(L * d),
    ln2Post: new Float32Array(L * d),
  };
  const qNorm = v.gemma3 ? new Float32Array(L * dHead) : null;
  const kNorm = v.gemma3 ? new Float32Array(L * dHead) : null;
  for (let l = 0; l < L; l++) {
    readLlamaLayer(ck, prefix, l, stacks);
    const p = `${prefix}layers.${l}.`;
    // HF's names: post_attention_layernorm is the attention output's norm (not the MLP's input).
    const norm = (name: string) => plusOne(ck.read(p + name + ".weight", [d]));
    norms.ln1.set(norm("input_layernorm"), l * d);
    norms.ln1Post.set(norm("post_attention_layernorm"), l * d);
    norms.ln2.set(norm("pre_feedforward_layernorm"), l * d);
    norms.ln2Post.set(norm("post_feedforward_layernorm"), l * d);
    if (qNorm && kNorm) {
      qNorm.set(plusOne(ck.read(p + "self_attn.q_norm.weight", [dHead])), l * dHead);
      kNorm.set(plusOne(ck.read(p + "self_attn.k_norm.weight", [dHead])), l * dHead);
    }
  }
  const embedName = prefix + "embed_tokens.weight";
  const embed = ck.read(embedName, [dVocab, d]);
  const unembed = ck.has("lm_head.weight") ? ck.read("lm_head.weight", [dVocab, d]) : embed;
  const W_U = transpose2d(unembed, dVocab, d);
  // hidden = embedding * normalizer, in float32 as HF computes it for a float32 model.
  const normalizer = embedNormalizer(d, file.info(embedName).dtype);
  const W_E = embed.map((x) => Math.fround(x * normalizer));
  const stacked = (data: Float32Array) => ({ w: { data, shape: [L, d] }, b: null });
  return {
    W_E: { data: W_E, shape: [dVocab, d] },
    W_pos: null,
    ln1: stacked(norms.ln1),
    ...stacks,
    ln2: stacked(norms.ln2),
    lnFinal: { w: { data: plusOne(ck.read(prefix + "norm.weight", [d])), shape: [d] }, b: null },
    W_U: { data: W_U, shape: [d, dVocab] },
    b_U: { data: new Float32Array(dVocab), shape: [dVocab] },
    ln1Post: stacked(norms.ln1Post),
    ln2Post: stacked(norms.ln2Post),
    qNorm: qNorm && { data: qNorm, shape: [L, dHead] },
    kNorm: kNorm && { data: kNorm, shape: [L, dHead] },
  };
}

/**
 * Maps an HF Gemma 2 checkpoint onto TransformerLens parameters: every norm weight as 1 + w,
 * `post_attention_layernorm` as `ln1_post` and `post_feedforward_layernorm` as `ln2_post`,
 * W_E scaled by sqrt(hidden_size) (in the checkpoint's dtype), W_U the unscaled tied embedding
 * (or `lm_head.weight` when present). A `head_dim` that does not match `q_proj` is a ConfigError
 * naming the field.
 *
 * @example
 * ```ts
 * import { gemma2Config, gemma2Params } from "./gemma.ts";
 * import { parseSafetensors } from "../io/safetensors.ts";
 * import { syntheticGemma } from "../weights/synthetic_families.ts";
 * const { config, weights } = syntheticGemma({ version: 2, nLayers: 2, dModel: 32, dVocab: 64 });
 * const params = gemma2Params(parseSafetensors(weights), gemma2Config(config));
 * params.ln1Post?.w.shape; // [2, 32]
 * ```
 */
export function gemma2Params(
  file: TensorSource,
  cfg: HookedTransformerConfig,
  _hf: HfConfig = {},
): ModelParams {
  return variantParams(GEMMA2, file, cfg);
}

/** {@linkcode gemma2Params} for Gemma 3, with `q_norm` and `k_norm` ([n_layers, d_head], 1 + w). */
export function gemma3Params(
  file: TensorSource,
  cfg: HookedTransformerConfig,
  _hf: HfConfig = {},
): ModelParams {
  return variantParams(GEMMA3, file, cfg);
}
