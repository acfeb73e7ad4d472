/**
 * The model configuration, in TransformerLens's vocabulary, built from an HF `GPT2Config`.
 * @module
 */
import { ConfigError } from "../core/errors.ts";

/**
 * What a GPT-2-family model looks like, with TransformerLens's field names (camelCase).
 *
 * @example
 * ```ts
 * import { configFromHf } from "./config.ts";
 * const cfg = configFromHf({ n_layer: 2, n_head: 4, n_embd: 32, vocab_size: 96, n_positions: 32 });
 * cfg.dHead; // 8
 * cfg.dMlp; // 128 (n_inner null or absent means 4 x n_embd)
 * ```
 */
export interface HookedTransformerConfig {
  /** Number of transformer blocks (`n_layer`). */
  nLayers: number;
  /** Attention heads per block (`n_head`). */
  nHeads: number;
  /** Width of the residual stream (`n_embd`). */
  dModel: number;
  /** Width of one attention head: dModel / nHeads. */
  dHead: number;
  /** Hidden width of the MLP (`n_inner`, default 4 x dModel). */
  dMlp: number;
  /** Vocabulary size (`vocab_size`). */
  dVocab: number;
  /** Maximum sequence length (`n_positions`). */
  nCtx: number;
  /** LayerNorm epsilon (`layer_norm_epsilon`). */
  eps: number;
  /** The token prepended as beginning-of-sequence (`bos_token_id`). */
  bosTokenId: number;
  /** The MLP activation; only `gelu_new` is supported. */
  actFn: "gelu_new";
  /** The model's name as the user asked for it (for messages and reports). */
  modelName: string;
}

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
 * Features GPT-2 checkpoints rarely use and this library does not implement
 * (another activation, `scale_attn_by_inverse_layer_idx`, `reorder_and_upcast_attn`, unscaled
 * attention) are errors rather than silently wrong numbers.
 */
export function configFromHf(
  hf: Record<string, unknown>,
  modelName = "model",
): HookedTransformerConfig {
  if (typeof hf !== "object" || hf === null || Array.isArray(hf)) {
    throw new ConfigError("config.json must be a JSON object");
  }
  const type = hf.model_type;
  if (type !== undefined && type !== "gpt2") {
    throw new ConfigError(
      `config.json says model_type "${type}"; this library runs GPT-2-family models (model_type "gpt2")`,
    );
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
  return {
    nLayers,
    nHeads,
    dModel,
    dHead: dModel / nHeads,
    dMlp,
    dVocab,
    nCtx,
    eps,
    bosTokenId: bos,
    actFn: "gelu_new",
    modelName,
  };
}
