/**
 * The model families this library runs, by HF `model_type`: each reads its `config.json` into the
 * family-neutral config and converts its checkpoint to TransformerLens's parameters. To add a
 * family, write `families/<name>.ts` with those two functions and register it here.
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import type { HookedTransformerConfig } from "../model/config.ts";
import type { ModelParams } from "../model/params.ts";
import type { TensorSource } from "../io/tensor_source.ts";
import { gpt2Config, gpt2Params } from "./gpt2.ts";

/** A family's two conversions. */
export interface Family {
  /** HF `config.json` -> the family-neutral config (a ConfigError for what is unsupported). */
  config(hf: Record<string, unknown>, modelName: string): HookedTransformerConfig;
  /** The checkpoint's tensors -> TransformerLens parameters, checked against the config. */
  params(file: TensorSource, cfg: HookedTransformerConfig): ModelParams;
}

/** Families by HF `model_type`. */
export const FAMILIES: Readonly<Record<string, Family>> = {
  gpt2: { config: gpt2Config, params: gpt2Params },
};

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
