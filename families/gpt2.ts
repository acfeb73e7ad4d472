/**
 * The GPT-2 family (`model_type: "gpt2"`): its HF `GPT2Config` read into the family-neutral
 * config, and an HF GPT-2 checkpoint converted to TransformerLens's parameter names and shapes.
 * @module
 */
import { ConfigError, WeightsError } from "../core/errors.ts";
import { transpose2d } from "../core/tensor.ts";
import { checkConfig, type HookedTransformerConfig, NO_ROTARY } from "../model/config.ts";
import { emptyStacks, layerOf, type ModelParams } from "../model/params.ts";
import type { TensorSource } from "../io/tensor_source.ts";
import { checkSizesFitWeights } from "./hf_config.ts";

function field(hf: Record<string, unknown>, key: string, fallback?: number): number {
  const v = hf[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new ConfigError(`config.json has no "${key}": is this a GPT-2 config?`);
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0 || v > 2 ** 31 - 1) {
    throw new ConfigError(
      `config.json field "${key}" must be a positive integer, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/**
 * Reads an HF GPT-2 `config.json` object and checks every field this library relies on.
 * Features GPT-2 checkpoints rarely use and this library does not implement (another activation,
 * `scale_attn_by_inverse_layer_idx`, `reorder_and_upcast_attn`, unscaled attention) are errors
 * rather than silently wrong numbers.
 *
 * @example
 * ```ts
 * import { gpt2Config } from "./gpt2.ts";
 * const cfg = gpt2Config({ n_layer: 2, n_head: 4, n_embd: 32, vocab_size: 96, n_positions: 32 });
 * cfg.dMlp; // 128 (n_inner null or absent means 4 x n_embd)
 * ```
 */
export function gpt2Config(
  hf: Record<string, unknown>,
  modelName = "model",
): HookedTransformerConfig {
  if (typeof hf !== "object" || hf === null || Array.isArray(hf)) {
    throw new ConfigError("config.json must be a JSON object");
  }
  const nLayers = field(hf, "n_layer");
  const nHeads = field(hf, "n_head");
  const dModel = field(hf, "n_embd");
  const dVocab = field(hf, "vocab_size");
  const nCtx = field(hf, "n_positions");
  const dMlp = field(hf, "n_inner", 4 * dModel);
  if (dModel % nHeads !== 0) {
    throw new ConfigError(`n_embd ${dModel} is not divisible by n_head ${nHeads}`);
  }
  const act = hf.activation_function ?? "gelu_new";
  if (act !== "gelu_new") {
    throw new ConfigError(
      `activation_function "${act}" is not supported: GPT-2 uses "gelu_new", the only one implemented`,
    );
  }
  const eps = hf.layer_norm_epsilon ?? 1e-5;
  if (typeof eps !== "number" || !(eps > 0 && eps < 1)) {
    throw new ConfigError(
      `layer_norm_epsilon must be a number in (0, 1), got ${JSON.stringify(eps)}`,
    );
  }
  for (const flag of ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"]) {
    if (hf[flag] === true) {
      throw new ConfigError(`config.json sets ${flag}, which is not supported`);
    }
  }
  if (hf.scale_attn_weights === false) {
    throw new ConfigError("config.json sets scale_attn_weights false, which is not supported");
  }
  const bos = hf.bos_token_id ?? dVocab - 1;
  if (typeof bos !== "number" || !Number.isInteger(bos) || bos < 0 || bos >= dVocab) {
    throw new ConfigError(
      `bos_token_id ${JSON.stringify(bos)} is outside the vocabulary [0, ${dVocab})`,
    );
  }
  const eos = typeof hf.eos_token_id === "number" ? hf.eos_token_id : null;
  return checkConfig({
    modelName,
    originalArchitecture: "GPT2LMHeadModel",
    nLayers,
    dModel,
    nHeads,
    dHead: dModel / nHeads,
    nKeyValueHeads: nHeads,
    dMlp,
    dVocab,
    nCtx,
    actFn: "gelu_new",
    gatedMlp: false,
    normalizationType: "LN",
    eps,
    positionalEmbeddingType: "standard",
    ...NO_ROTARY,
    parallelAttnMlp: false,
    bosTokenId: bos,
    eosTokenId: eos,
    defaultPrependBos: true,
  });
}

/**
 * Maps an HF GPT-2 checkpoint onto TransformerLens parameters, checking every tensor's presence
 * and shape against the config. Accepts both key layouts (with and without the `transformer.`
 * prefix), ignores the causal-mask buffers, and uses `lm_head.weight` when present (otherwise
 * the unembedding is tied to `wte`).
 *
 * @example
 * ```ts
 * import { gpt2Config, gpt2Params } from "./gpt2.ts";
 * import { parseSafetensors } from "../io/safetensors.ts";
 * import { syntheticGpt2 } from "../weights/synthetic.ts";
 * const { config, weights } = syntheticGpt2({
 *   nLayers: 2, nHeads: 4, dModel: 32, dVocab: 96, nCtx: 32, seed: 0,
 * });
 * const params = gpt2Params(parseSafetensors(weights), gpt2Config(config));
 * params.W_Q.shape; // [2, 4, 32, 8]: [n_layers, n_heads, d_model, d_head]
 * ```
 */
export function gpt2Params(file: TensorSource, cfg: HookedTransformerConfig): ModelParams {
  checkSizesFitWeights(cfg, file, "GPT-2");
  const names = file.names();
  const prefix = names.some((n) => n.startsWith("transformer.")) ? "transformer." : "";
  checkNoStrayKeys(names, prefix, cfg);

  const read = (key: string, shape: number[]): Float32Array => {
    const full = prefix + key;
    if (!file.has(full)) {
      throw new WeightsError(
        `weights have no tensor "${full}" (expected shape [${shape}] for a GPT-2 with ` +
          `${cfg.nLayers} layers): the file is not a complete GPT-2 checkpoint`,
      );
    }
    const info = file.info(full);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new ConfigError(
        `tensor "${full}" has shape [${info.shape}] but config.json implies [${shape}]: ` +
          `the config does not match the weights`,
      );
    }
    return file.tensor(full).data;
  };

  const { nLayers, nHeads, dModel: d, dHead, dMlp, dVocab, nCtx } = cfg;
  const stacks = emptyStacks(cfg);
  const ln1w = new Float32Array(nLayers * d), ln1b = new Float32Array(nLayers * d);
  const ln2w = new Float32Array(nLayers * d), ln2b = new Float32Array(nLayers * d);
  for (let l = 0; l < nLayers; l++) {
    const p = `h.${l}.`;
    const at = (name: keyof typeof stacks) => layerOf(stacks[name], l).data;
    const cAttn = read(p + "attn.c_attn.weight", [d, 3 * d]);
    const cAttnBias = read(p + "attn.c_attn.bias", [3 * d]);
    splitHeads(cAttn, cAttnBias, 0, at("W_Q"), at("b_Q"), nHeads, d, dHead);
    splitHeads(cAttn, cAttnBias, 1, at("W_K"), at("b_K"), nHeads, d, dHead);
    splitHeads(cAttn, cAttnBias, 2, at("W_V"), at("b_V"), nHeads, d, dHead);
    // c_proj rows are (head, d_head) pairs in order, so it is W_O [n_heads, d_head, d_model].
    at("W_O").set(read(p + "attn.c_proj.weight", [d, d]));
    at("b_O").set(read(p + "attn.c_proj.bias", [d]));
    at("W_in").set(read(p + "mlp.c_fc.weight", [d, dMlp]));
    at("b_in").set(read(p + "mlp.c_fc.bias", [dMlp]));
    at("W_out").set(read(p + "mlp.c_proj.weight", [dMlp, d]));
    at("b_out").set(read(p + "mlp.c_proj.bias", [d]));
    ln1w.set(read(p + "ln_1.weight", [d]), l * d);
    ln1b.set(read(p + "ln_1.bias", [d]), l * d);
    ln2w.set(read(p + "ln_2.weight", [d]), l * d);
    ln2b.set(read(p + "ln_2.bias", [d]), l * d);
  }
  const wte = read("wte.weight", [dVocab, d]);
  // lm_head.weight is never prefixed; it is [d_vocab, d_model] like wte.
  let unembed = wte;
  if (file.has("lm_head.weight")) {
    const info = file.info("lm_head.weight");
    if (info.shape.length !== 2 || info.shape[0] !== dVocab || info.shape[1] !== d) {
      throw new ConfigError(
        `tensor "lm_head.weight" has shape [${info.shape}] but config.json implies [${dVocab},${d}]`,
      );
    }
    unembed = file.tensor("lm_head.weight").data;
  }
  const stacked = (w: Float32Array, b: Float32Array) => ({
    w: { data: w, shape: [nLayers, d] },
    b: { data: b, shape: [nLayers, d] },
  });
  return {
    W_E: { data: wte, shape: [dVocab, d] },
    W_pos: { data: read("wpe.weight", [nCtx, d]), shape: [nCtx, d] },
    ln1: stacked(ln1w, ln1b),
    ...stacks,
    ln2: stacked(ln2w, ln2b),
    W_gate: null,
    b_gate: null,
    lnFinal: {
      w: { data: read("ln_f.weight", [d]), shape: [d] },
      b: { data: read("ln_f.bias", [d]), shape: [d] },
    },
    W_U: { data: transpose2d(unembed, dVocab, d), shape: [d, dVocab] },
    // GPT-2 has no unembedding bias: zeros until processing folds ln_final's bias in.
    b_U: { data: new Float32Array(dVocab), shape: [dVocab] },
  };
}

/**
 * Layers beyond the config are a mismatch, not something to ignore. Other extra keys (the
 * `h.{l}.attn.bias` mask buffers, heads of fine-tuned checkpoints) are ignored.
 */
function checkNoStrayKeys(names: string[], prefix: string, cfg: HookedTransformerConfig) {
  for (const name of names) {
    const key = name.startsWith(prefix) ? name.slice(prefix.length) : name;
    const layer = /^h\.(\d+)\./.exec(key);
    if (layer && Number(layer[1]) >= cfg.nLayers) {
      throw new ConfigError(
        `weights have tensor "${name}" but config.json says n_layer ${cfg.nLayers}: ` +
          `the config does not match the weights`,
      );
    }
  }
}

/**
 * Column block `which` (0 Q, 1 K, 2 V) of c_attn [d_model, 3 d_model] into W [n_heads, d_model,
 * d_head] and b [n_heads, d_head].
 */
function splitHeads(
  w: Float32Array,
  bias: Float32Array,
  which: number,
  W: Float32Array,
  b: Float32Array,
  nHeads: number,
  d: number,
  dHead: number,
) {
  for (let h = 0; h < nHeads; h++) {
    const col0 = which * d + h * dHead;
    for (let i = 0; i < d; i++) {
      const src = i * 3 * d + col0;
      W.set(w.subarray(src, src + dHead), (h * d + i) * dHead);
    }
    b.set(bias.subarray(col0, col0 + dHead), h * dHead);
  }
}
