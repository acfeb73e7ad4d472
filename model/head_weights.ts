/**
 * Per-head weight matrices for the optional hook points that give each head its own input or
 * output (TransformerLens's `use_split_qkv_input` / `use_attn_in`, and `use_attn_result`). The
 * default forward pass uses the fused matrices of `device_weights.ts`; these are uploaded only
 * when such an option is first turned on, so a model that never uses them pays nothing.
 * @module
 */
import type { Backend, PackedMatrix, WeightDtype } from "../backend/backend.ts";
import type { HookedTransformerConfig } from "./config.ts";
import { layerOf, type ModelParams } from "./params.ts";
import { runNextTurnNow } from "./exclusive.ts";

/** Per-head matrices on the backend, by layer then head; each part appears once uploaded. */
export interface HeadWeights {
  /** W_Q, W_K, W_V of each head, [d_model, d_head] (K and V: key/value heads). */
  inputs?: { W_Q: PackedMatrix[][]; W_K: PackedMatrix[][]; W_V: PackedMatrix[][] };
  /** W_O of each head, [d_head, d_model]. */
  W_O?: PackedMatrix[][];
}

/** Uploads one [layers, heads, k, n] stacked weight as a matrix per layer and head. */
function perHead(
  backend: Backend,
  t: ModelParams["W_Q"],
  cfg: HookedTransformerConfig,
  dtype: WeightDtype,
): PackedMatrix[][] {
  const [, heads, k, n] = t.shape;
  return Array.from({ length: cfg.nLayers }, (_, l) => {
    const w = layerOf(t, l).data;
    return Array.from(
      { length: heads },
      (_, h) => backend.uploadMatrix(w.subarray(h * k * n, (h + 1) * k * n), k, n, dtype),
    );
  });
}

/**
 * Adds what the options need to `into` (uploads happen once; the backend must have no open scope,
 * so options are set between runs).
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * model.setUseAttnResult(true); // uploads each head's W_O once
 * ```
 */
export function ensureHeadWeights(
  into: HeadWeights,
  backend: Backend,
  params: ModelParams,
  cfg: HookedTransformerConfig,
  dtype: WeightDtype,
  need: { inputs?: boolean; output?: boolean },
): void {
  runNextTurnNow(backend); // a cache held on the backend moves to the host first
  if (need.inputs && !into.inputs) {
    into.inputs = {
      W_Q: perHead(backend, params.W_Q, cfg, dtype),
      W_K: perHead(backend, params.W_K, cfg, dtype),
      W_V: perHead(backend, params.W_V, cfg, dtype),
    };
  }
  if (need.output && !into.W_O) into.W_O = perHead(backend, params.W_O, cfg, dtype);
}
