/**
 * Attribution patching: a first-order estimate of every activation patch at once. Patching the
 * clean activation into the corrupted run changes the metric by about
 * (clean - corrupted activation) . (d metric / d activation on the corrupted run), so one clean
 * forward pass with a cache and one corrupted forward and backward pass give the estimate for
 * every layer, position (and head or neuron), where exact patching runs the model once per patch.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import type { HookedTransformer } from "./hooked_transformer.ts";
import { checkMetric, type Metric } from "./metrics.ts";
import { type Tokens, toTokenTensor } from "./tokens.ts";

/**
 * The activations {@link attributionPatching} estimates patches of: the residual stream's
 * (`"resid_pre"`, `"resid_mid"`, `"attn_out"`, `"mlp_out"`: [n_layers, pos]), each head's
 * (`"z"`: [n_layers, pos, n_heads]) and each neuron's (`"mlp_post"`: [n_layers, pos, d_mlp]).
 */
export type AttributionPoint =
  | "resid_pre"
  | "resid_mid"
  | "attn_out"
  | "mlp_out"
  | "z"
  | "mlp_post";

const POINTS: readonly AttributionPoint[] = [
  "resid_pre",
  "resid_mid",
  "attn_out",
  "mlp_out",
  "z",
  "mlp_post",
];

/**
 * Attribution patching (Neel Nanda's): for every layer and position of `hook`'s activation, the
 * sum over d_model (and over the batch) of (clean - corrupted activation) x (gradient of the
 * metric on the corrupted run): `"resid_pre" | "resid_mid" | "attn_out" | "mlp_out"` ->
 * [n_layers, pos]; `"z"` -> [n_layers, pos, n_heads] (summed over d_head); `"mlp_post"` ->
 * [n_layers, pos, d_mlp] (summed over the batch only). It estimates, to first order, what
 * patching that activation from the clean run into the corrupted one would add to the metric.
 * Runs one clean forward pass with a cache and one corrupted forward and backward pass.
 *
 * @example
 * ```ts
 * import { attributionPatching, HookedTransformer, logitDiffMetric } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const clean = [[2047, 5, 9, 13, 5, 9]], corrupted = [[2047, 5, 9, 13, 7, 9]];
 * const metric = logitDiffMetric([13], [9]); // at the last position
 * const grid = await attributionPatching(model, clean, corrupted, metric, "resid_pre");
 * grid.shape; // [n_layers, 6]
 * ```
 */
export async function attributionPatching(
  model: HookedTransformer,
  cleanTokens: Tokens,
  corruptedTokens: Tokens,
  metric: Metric,
  hook: AttributionPoint,
): Promise<Tensor> {
  checkMetric(metric, "attributionPatching");
  if (!POINTS.includes(hook)) {
    throw new InputError(
      `attributionPatching: hook must be one of ${POINTS.join(", ")}, got ${JSON.stringify(hook)}`,
    );
  }
  const { cfg } = model;
  const clean = toTokenTensor(cleanTokens, cfg), corrupted = toTokenTensor(corruptedTokens, cfg);
  if (clean.shape[0] !== corrupted.shape[0] || clean.shape[1] !== corrupted.shape[1]) {
    throw new InputError(
      `attributionPatching: clean tokens [${clean.shape}] and corrupted tokens ` +
        `[${corrupted.shape}] must have the same shape`,
    );
  }
  const names = Array.from({ length: cfg.nLayers }, (_, l) => model.getActName(hook, l));
  const cleanRun = await model.runWithCache(clean, { namesFilter: names, returnType: "none" });
  const corruptedRun = await model.runWithCache(corrupted, {
    namesFilter: names,
    inclBwdCache: true,
    metric,
    returnType: "none",
  });
  const [batch, T] = clean.shape;
  // Columns summed over: d_model (residual points), d_head (z), none (mlp_post).
  const width = hook === "z" ? cfg.dHead : hook === "mlp_post" ? 1 : cfg.dModel;
  const kept = hook === "z" ? cfg.nHeads : hook === "mlp_post" ? cfg.dMlp : 1;
  const perLayer = T * kept;
  const sums = new Float64Array(cfg.nLayers * perLayer);
  names.forEach((name, l) => {
    const a = cleanRun.cache.get(name).data, c = corruptedRun.cache.get(name).data;
    const g = corruptedRun.cache.get(`${name}_grad`).data;
    for (let b = 0; b < batch; b++) {
      for (let i = 0; i < perLayer; i++) {
        let s = 0;
        const base = (b * perLayer + i) * width;
        for (let j = base; j < base + width; j++) s += (a[j] - c[j]) * g[j];
        sums[l * perLayer + i] += s;
      }
    }
  });
  const shape = hook === "z" || hook === "mlp_post" ? [cfg.nLayers, T, kept] : [cfg.nLayers, T];
  return { data: Float32Array.from(sums), shape };
}
