/**
 * The Llama family (`model_type: "llama"`: Llama 2 and 3, TinyLlama, SmolLM and SmolLM2) and its
 * variant Qwen2 (`"qwen2"`: Qwen1.5, Qwen2, Qwen2.5): RMSNorm, rotary embeddings on every dim of
 * each head (`rope_theta`, and Llama 3's `rope_scaling`), grouped-query attention
 * (`num_key_value_heads`), a SwiGLU MLP, a tied or untied `lm_head`. The two differ only in their
 * biases: Qwen2 always has q/k/v biases; Llama has q/k/v/o biases with `attention_bias` and
 * gate/up/down biases with `mlp_bias`.
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { transpose2d } from "../core/tensor.ts";
import { checkConfig, type HookedTransformerConfig } from "../model/config.ts";
import { emptyStacks, type ModelParams } from "../model/params.ts";
import {
  activationField,
  assertHfConfig,
  boolField,
  type HfConfig,
  intField,
  numberField,
  rotaryFields,
  type TensorSource,
  tokenIds,
} from "./hf_config.ts";
import { llamaLayoutReader, readLlamaLayer } from "./llama_layout.ts";

/** What distinguishes the members of the Llama family. */
interface Variant {
  /** For messages. */
  family: string;
  architecture: string;
  /** Which biases the checkpoint has, from its config. */
  biases(hf: HfConfig): { qkv: boolean; o: boolean; mlp: boolean };
  /** TransformerLens's default for prepending BOS to text. */
  defaultPrependBos: boolean;
  /** The HF config class's default token ids. */
  tokens: { bos?: number; eos?: number };
}

const LLAMA: Variant = {
  family: "Llama",
  architecture: "LlamaForCausalLM",
  biases: (hf) => {
    const attn = boolField(hf, "attention_bias", false);
    return { qkv: attn, o: attn, mlp: boolField(hf, "mlp_bias", false) };
  },
  defaultPrependBos: true,
  tokens: { bos: 1, eos: 2 },
};

const QWEN2: Variant = {
  family: "Qwen2",
  architecture: "Qwen2ForCausalLM",
  biases: () => ({ qkv: true, o: false, mlp: false }),
  // As TransformerLens: Qwen2's tokenizer adds no BOS, so text is not prefixed by default.
  defaultPrependBos: false,
  tokens: {},
};

function variantConfig(v: Variant, hf: HfConfig, modelName: string): HookedTransformerConfig {
  assertHfConfig(hf);
  const nLayers = intField(hf, "num_hidden_layers", v.family);
  const nHeads = intField(hf, "num_attention_heads", v.family);
  const dModel = intField(hf, "hidden_size", v.family);
  const dVocab = intField(hf, "vocab_size", v.family);
  if (hf.head_dim == null && dModel % nHeads !== 0) {
    throw new ConfigError(
      `hidden_size ${dModel} is not divisible by num_attention_heads ${nHeads} and config.json ` +
        `gives no head_dim`,
    );
  }
  const dHead = intField(hf, "head_dim", v.family, dModel / nHeads);
  if (v === QWEN2 && hf.use_sliding_window === true) {
    throw new ConfigError(
      "config.json sets use_sliding_window: sliding-window attention is not implemented",
    );
  }
  v.biases(hf); // checks the bias flags
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
    nCtx: intField(hf, "max_position_embeddings", v.family),
    actFn: activationField(hf, "silu"),
    gatedMlp: true,
    normalizationType: "RMS",
    eps: numberField(hf, "rms_norm_eps", 1e-6, [0, 1]),
    positionalEmbeddingType: "rotary",
    ...rotaryFields(hf, dHead),
    parallelAttnMlp: false,
    ...tokenIds(hf, dVocab, v.tokens),
    defaultPrependBos: v.defaultPrependBos,
  });
}

/**
 * Reads an HF `LlamaConfig` (`config.json`), including `head_dim`, `num_key_value_heads`,
 * `rope_theta` and `rope_scaling` of type "llama3" (Llama 3.1 / 3.2).
 *
 * @example
 * ```ts
 * import { llamaConfig } from "./llama.ts";
 * // SmolLM2-135M's shape:
 * const cfg = llamaConfig({
 *   model_type: "llama", hidden_size: 576, num_attention_heads: 9, num_key_value_heads: 3,
 *   num_hidden_layers: 30, intermediate_size: 1536, vocab_size: 49152,
 *   max_position_embeddings: 8192, rope_theta: 100000, rms_norm_eps: 1e-5,
 *   tie_word_embeddings: true, bos_token_id: 0, eos_token_id: 0,
 * });
 * cfg.dHead; // 64
 * cfg.nKeyValueHeads; // 3: each key/value head serves 3 query heads
 * ```
 */
export function llamaConfig(hf: HfConfig, modelName = "model"): HookedTransformerConfig {
  return variantConfig(LLAMA, hf, modelName);
}

/**
 * Reads an HF `Qwen2Config`; sliding-window attention (`use_sliding_window: true`) is a
 * ConfigError.
 *
 * @example
 * ```ts
 * import { qwen2Config } from "./llama.ts";
 * const cfg = qwen2Config({
 *   model_type: "qwen2", hidden_size: 896, num_attention_heads: 14, num_key_value_heads: 2,
 *   num_hidden_layers: 24, intermediate_size: 4864, vocab_size: 151936,
 *   max_position_embeddings: 32768, rope_theta: 1000000, bos_token_id: 151643,
 * });
 * cfg.rotaryBase; // 1000000
 * ```
 */
export function qwen2Config(hf: HfConfig, modelName = "model"): HookedTransformerConfig {
  return variantConfig(QWEN2, hf, modelName);
}

function variantParams(
  v: Variant,
  file: TensorSource,
  cfg: HookedTransformerConfig,
  hf: HfConfig,
): ModelParams {
  const { ck, prefix } = llamaLayoutReader(file, v.family, cfg);
  const { nLayers: L, dModel: d, dMlp, dVocab } = cfg;
  const biases = v.biases(hf);
  const stacks = {
    ...emptyStacks(cfg),
    W_gate: { data: new Float32Array(L * d * dMlp), shape: [L, d, dMlp] },
    b_gate: { data: new Float32Array(L * dMlp), shape: [L, dMlp] },
  };
  const ln1 = new Float32Array(L * d), ln2 = new Float32Array(L * d);
  for (let l = 0; l < L; l++) {
    readLlamaLayer(ck, prefix, l, stacks, biases);
    const p = `${prefix}layers.${l}.`;
    ln1.set(ck.read(p + "input_layernorm.weight", [d]), l * d);
    ln2.set(ck.read(p + "post_attention_layernorm.weight", [d]), l * d);
  }
  const embed = ck.read(prefix + "embed_tokens.weight", [dVocab, d]);
  // Tied models (SmolLM2, Qwen2.5-0.5B, Llama 3.2) usually store no lm_head; untied ones must.
  const tied = boolField(hf, "tie_word_embeddings", false);
  const unembed = ck.has("lm_head.weight") || !tied
    ? ck.read("lm_head.weight", [dVocab, d])
    : embed;
  return {
    W_E: { data: embed, shape: [dVocab, d] },
    W_pos: null,
    ln1: { w: { data: ln1, shape: [L, d] }, b: null },
    ...stacks,
    ln2: { w: { data: ln2, shape: [L, d] }, b: null },
    lnFinal: { w: { data: ck.read(prefix + "norm.weight", [d]), shape: [d] }, b: null },
    W_U: { data: transpose2d(unembed, dVocab, d), shape: [d, dVocab] },
    b_U: { data: new Float32Array(dVocab), shape: [dVocab] },
  };
}

/**
 * Maps an HF Llama checkpoint (`model.layers.{l}.self_attn.q_proj.weight` ...) onto
 * TransformerLens parameters: `W_K` / `W_V` keep their `num_key_value_heads` heads, `W_gate` is
 * `gate_proj`, `W_in` is `up_proj`. `lm_head.weight` is used when present; a model whose config
 * says `tie_word_embeddings: false` must have it. Old files' `rotary_emb.inv_freq` buffers are
 * not weights.
 *
 * @example
 * ```ts
 * import { llamaConfig, llamaParams } from "./llama.ts";
 * import { parseSafetensors } from "../io/safetensors.ts";
 * import { syntheticLlama } from "../weights/synthetic_families.ts";
 * const { config, weights } = syntheticLlama({
 *   nLayers: 2, nHeads: 4, nKeyValueHeads: 2, dModel: 32, dVocab: 96, nCtx: 32,
 * });
 * const params = llamaParams(parseSafetensors(weights), llamaConfig(config), config);
 * params.W_K.shape; // [2, 2, 32, 8]: [n_layers, n_key_value_heads, d_model, d_head]
 * ```
 */
export function llamaParams(
  file: TensorSource,
  cfg: HookedTransformerConfig,
  hf: HfConfig = {},
): ModelParams {
  return variantParams(LLAMA, file, cfg, hf);
}

/** {@linkcode llamaParams} for Qwen2 checkpoints (q/k/v biases). */
export function qwen2Params(
  file: TensorSource,
  cfg: HookedTransformerConfig,
  hf: HfConfig = {},
): ModelParams {
  return variantParams(QWEN2, file, cfg, hf);
}
