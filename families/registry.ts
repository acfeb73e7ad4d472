/**
 * The model families this library runs, by HF `model_type`: each reads its `config.json` into the
 * family-neutral config and converts its checkpoint to TransformerLens's parameters. To add a
 * family, write `families/<name>.ts` with those two functions and register it here.
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import type { HookedTransformerConfig } from "../model/config.ts";
import type { ModelParams } from "../model/params.ts";
import { gpt2Config, gpt2Params } from "./gpt2.ts";
import { gptNeoxConfig, gptNeoxParams } from "./gpt_neox.ts";
import type { TensorSource } from "../io/tensor_source.ts";
import { llamaConfig, llamaParams, qwen2Config, qwen2Params } from "./llama.ts";
import { gemma2Config, gemma2Params, gemma3Config, gemma3Params } from "./gemma.ts";

/** A family's two conversions. */
export interface Family {
  /** The family's name, for reports and messages ("GPT-2", "GPT-NeoX", "Llama", "Qwen2", "Gemma 2", "Gemma 3"). */
  name: string;
  /** The HF architecture its configs become (`originalArchitecture`). */
  architecture: string;
  /** HF `config.json` -> the family-neutral config (a ConfigError for what is unsupported). */
  config(hf: Record<string, unknown>, modelName: string): HookedTransformerConfig;
  /**
   * The checkpoint's tensors -> TransformerLens parameters, checked against the config (`hf`
   * says which optional tensors the checkpoint must have: biases, an untied unembedding).
   */
  params(
    file: TensorSource,
    cfg: HookedTransformerConfig,
    hf: Record<string, unknown>,
  ): ModelParams;
}

/** Families by HF `model_type`. */
export const FAMILIES: Readonly<Record<string, Family>> = {
  gpt2: { name: "GPT-2", architecture: "GPT2LMHeadModel", config: gpt2Config, params: gpt2Params },
  gpt_neox: {
    name: "GPT-NeoX",
    architecture: "GPTNeoXForCausalLM",
    config: gptNeoxConfig,
    params: gptNeoxParams,
  },
  llama: {
    name: "Llama",
    architecture: "LlamaForCausalLM",
    config: llamaConfig,
    params: llamaParams,
  },
  qwen2: {
    name: "Qwen2",
    architecture: "Qwen2ForCausalLM",
    config: qwen2Config,
    params: qwen2Params,
  },
  gemma2: {
    name: "Gemma 2",
    architecture: "Gemma2ForCausalLM",
    config: gemma2Config,
    params: gemma2Params,
  },
  gemma3_text: {
    name: "Gemma 3",
    architecture: "Gemma3ForCausalLM",
    config: gemma3Config,
    params: gemma3Params,
  },
};

/**
 * The family name of a model's config (by its `originalArchitecture`), e.g. "GPT-NeoX"; the
 * architecture itself for one no family here produces.
 *
 * @example
 * ```ts
 * import { familyName } from "./registry.ts";
 * familyName({ originalArchitecture: "GPTNeoXForCausalLM" }); // "GPT-NeoX"
 * ```
 */
export function familyName(cfg: Pick<HookedTransformerConfig, "originalArchitecture">): string {
  const family = Object.values(FAMILIES).find((f) => f.architecture === cfg.originalArchitecture);
  return family?.name ?? cfg.originalArchitecture;
}

/**
 * The family of an HF config (by `model_type`; GPT-2 when absent, as old GPT-2 configs omit it).
 *
 * @example
 * ```ts
 * import { familyOf } from "./registry.ts";
 * const family = familyOf({ model_type: "gpt2" });
 * family.config({ n_layer: 1, n_head: 2, n_embd: 8, vocab_size: 10, n_positions: 4 }, "tiny").nLayers; // 1
 * ```
 */
export function familyOf(hf: Record<string, unknown>): Family {
  if (typeof hf !== "object" || hf === null || Array.isArray(hf)) {
    throw new ConfigError("config.json must be a JSON object");
  }
  const type = hf.model_type ?? "gpt2";
  const family = typeof type === "string" ? FAMILIES[type] : undefined;
  if (!family) {
    throw new ConfigError(
      `config.json says model_type ${JSON.stringify(type)}; this library runs ` +
        `${Object.keys(FAMILIES).map((t) => `"${t}"`).join(", ")}`,
    );
  }
  return family;
}
