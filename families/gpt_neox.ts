/**
 * The GPT-NeoX family (`model_type: "gpt_neox"`: Pythia and its training checkpoints): rotary
 * embeddings on the first `rotary_pct` of each head, LayerNorm, parallel attention and MLP
 * (`use_parallel_residual`, both norms reading the block input) or sequential blocks, exact GELU,
 * an untied unembedding (`embed_out`). Its HF config becomes the family-neutral config, and its
 * checkpoint TransformerLens's parameters (as TransformerLens's `convert_neox_weights`).
 * `attention_bias: false` (newer GPT-NeoX configs) means no query_key_value and dense biases.
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { transpose2d } from "../core/tensor.ts";
import { checkConfig, type HookedTransformerConfig } from "../model/config.ts";
import { emptyStacks, layerOf, type ModelParams } from "../model/params.ts";
import {
  activationField,
  assertHfConfig,
  boolField,
  CheckpointReader,
  type HfConfig,
  intField,
  linearToHeads,
  numberField,
  rotaryFields,
  type TensorSource,
  tokenIds,
} from "./hf_config.ts";

const FAMILY = "GPT-NeoX";

/**
 * Reads an HF `GPTNeoXConfig` (`config.json`). The rotary width is HF's
 * `int(head_size * rotary_pct)` (`rope_parameters.partial_rotary_factor` in transformers v5);
 * the base is `rotary_emb_base` (or `rope_theta`).
 *
 * @example
 * ```ts
 * import { gptNeoxConfig } from "./gpt_neox.ts";
 * // Pythia-70m's shape:
 * const cfg = gptNeoxConfig({
 *   model_type: "gpt_neox", hidden_size: 512, num_attention_heads: 8, num_hidden_layers: 6,
 *   intermediate_size: 2048, vocab_size: 50304, max_position_embeddings: 2048, rotary_pct: 0.25,
 * });
 * cfg.rotaryDim; // 16: a quarter of each 64-wide head turns
 * cfg.parallelAttnMlp; // true (use_parallel_residual defaults to true)
 * ```
 */
export function gptNeoxConfig(hf: HfConfig, modelName = "model"): HookedTransformerConfig {
  assertHfConfig(hf);
  const nLayers = intField(hf, "num_hidden_layers", FAMILY);
  const nHeads = intField(hf, "num_attention_heads", FAMILY);
  const dModel = intField(hf, "hidden_size", FAMILY);
  const dVocab = intField(hf, "vocab_size", FAMILY);
  if (dModel % nHeads !== 0) {
    throw new ConfigError(
      `hidden_size ${dModel} is not divisible by num_attention_heads ${nHeads}`,
    );
  }
  const dHead = dModel / nHeads;
  const params = hf.rope_parameters as HfConfig | null | undefined;
  const pct = hf.rotary_pct ?? hf.partial_rotary_factor ?? params?.partial_rotary_factor ?? 1;
  if (typeof pct !== "number" || !(pct > 0 && pct <= 1)) {
    throw new ConfigError(`rotary_pct must be a number in (0, 1], got ${JSON.stringify(pct)}`);
  }
  return checkConfig({
    modelName,
    originalArchitecture: "GPTNeoXForCausalLM",
    nLayers,
    dModel,
    nHeads,
    dHead,
    nKeyValueHeads: nHeads,
    dMlp: intField(hf, "intermediate_size", FAMILY, 4 * dModel),
    dVocab,
    nCtx: intField(hf, "max_position_embeddings", FAMILY),
    actFn: activationField(hf, "gelu"),
    gatedMlp: false,
    normalizationType: "LN",
    eps: numberField(hf, "layer_norm_eps", 1e-5, [0, 1]),
    positionalEmbeddingType: "rotary",
    ...rotaryFields(hf, Math.floor(dHead * pct), "rotary_emb_base"),
    parallelAttnMlp: boolField(hf, "use_parallel_residual", true),
    ...tokenIds(hf, dVocab, { bos: 0, eos: 2 }), // GPTNeoXConfig's defaults
    // As TransformerLens: Pythia's tokenizer adds no BOS, so text is not prefixed by default.
    defaultPrependBos: false,
  });
}

/**
 * Maps an HF GPT-NeoX checkpoint (`gpt_neox.*` and `embed_out.weight`) onto TransformerLens
 * parameters. `query_key_value` rows are laid out per head as [q | k | v]; the
 * `attention.rotary_emb.inv_freq`, `attention.bias` and `attention.masked_bias` buffers of older
 * files are not weights (an `inv_freq` of the wrong length is a config mismatch).
 *
 * @example
 * ```ts
 * import { gptNeoxConfig, gptNeoxParams } from "./gpt_neox.ts";
 * import { parseSafetensors } from "../io/safetensors.ts";
 * import { syntheticGptNeox } from "../weights/synthetic_families.ts";
 * const { config, weights } = syntheticGptNeox({ nLayers: 2, nHeads: 4, dModel: 32, dVocab: 96, nCtx: 32 });
 * const params = gptNeoxParams(parseSafetensors(weights), gptNeoxConfig(config), config);
 * params.W_pos; // null: positions are rotary
 * ```
 */
export function gptNeoxParams(
  file: TensorSource,
  cfg: HookedTransformerConfig,
  hf: HfConfig = {},
): ModelParams {
  const ck = new CheckpointReader(file, FAMILY, cfg, /^gpt_neox\.layers\.(\d+)\./);
  const { nLayers: L, nHeads, dModel: d, dHead, dMlp, dVocab } = cfg;
  const bias = boolField(hf, "attention_bias", true);
  const stacks = emptyStacks(cfg);
  const [ln1w, ln1b, ln2w, ln2b] = Array.from({ length: 4 }, () => new Float32Array(L * d));
  for (let l = 0; l < L; l++) {
    const p = `gpt_neox.layers.${l}.`;
    const at = (name: keyof typeof stacks) => layerOf(stacks[name], l).data;
    const invFreq = p + "attention.rotary_emb.inv_freq";
    if (ck.has(invFreq) && file.info(invFreq).shape[0] !== cfg.rotaryDim / 2) {
      throw new ConfigError(
        `tensor "${invFreq}" has ${file.info(invFreq).shape[0]} frequencies but config.json ` +
          `implies rotary on ${cfg.rotaryDim} dims (${cfg.rotaryDim / 2} frequencies)`,
      );
    }
    // Rows of query_key_value: head h's q, k, v rows start at (3h + which) d_head.
    const qkv = ck.read(p + "attention.query_key_value.weight", [3 * d, d]);
    const qkvBias = bias ? ck.read(p + "attention.query_key_value.bias", [3 * d]) : null;
    (["W_Q", "W_K", "W_V"] as const).forEach((W, which) => {
      linearToHeads(qkv, d, nHeads, dHead, at(W), which * dHead, 3 * dHead);
      if (!qkvBias) return;
      const b = at(W === "W_Q" ? "b_Q" : W === "W_K" ? "b_K" : "b_V");
      for (let h = 0; h < nHeads; h++) {
        const r0 = (3 * h + which) * dHead;
        b.set(qkvBias.subarray(r0, r0 + dHead), h * dHead);
      }
    });
    // dense [d_model, n_heads d_head] transposed is W_O [n_heads, d_head, d_model] (transposes
    // write into the stacks: no temporary copy of each matrix).
    transpose2d(ck.read(p + "attention.dense.weight", [d, d]), d, d, at("W_O"));
    if (bias) at("b_O").set(ck.read(p + "attention.dense.bias", [d]));
    transpose2d(ck.read(p + "mlp.dense_h_to_4h.weight", [dMlp, d]), dMlp, d, at("W_in"));
    at("b_in").set(ck.read(p + "mlp.dense_h_to_4h.bias", [dMlp]));
    transpose2d(ck.read(p + "mlp.dense_4h_to_h.weight", [d, dMlp]), d, dMlp, at("W_out"));
    at("b_out").set(ck.read(p + "mlp.dense_4h_to_h.bias", [d]));
    ln1w.set(ck.read(p + "input_layernorm.weight", [d]), l * d);
    ln1b.set(ck.read(p + "input_layernorm.bias", [d]), l * d);
    ln2w.set(ck.read(p + "post_attention_layernorm.weight", [d]), l * d);
    ln2b.set(ck.read(p + "post_attention_layernorm.bias", [d]), l * d);
  }
  const embed = ck.read("gpt_neox.embed_in.weight", [dVocab, d]);
  // Pythia's unembedding is its own (tie_word_embeddings false): a file without it is incomplete.
  const unembed = boolField(hf, "tie_word_embeddings", false)
    ? embed
    : ck.read("embed_out.weight", [dVocab, d]);
  const stacked = (w: Float32Array, b: Float32Array) => ({
    w: { data: w, shape: [L, d] },
    b: { data: b, shape: [L, d] },
  });
  return {
    W_E: { data: embed, shape: [dVocab, d] },
    W_pos: null,
    ln1: stacked(ln1w, ln1b),
    ...stacks,
    ln2: stacked(ln2w, ln2b),
    W_gate: null,
    b_gate: null,
    lnFinal: {
      w: { data: ck.read("gpt_neox.final_layer_norm.weight", [d]), shape: [d] },
      b: { data: ck.read("gpt_neox.final_layer_norm.bias", [d]), shape: [d] },
    },
    W_U: { data: transpose2d(unembed, dVocab, d), shape: [d, dVocab] },
    b_U: { data: new Float32Array(dVocab), shape: [dVocab] },
  };
}
