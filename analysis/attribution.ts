/**
 * The study's activation-patching sweep estimated by attribution patching: one forward and one
 * backward pass instead of one patched run per (layer, position).
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { lossMetric } from "../model/metrics.ts";
import type { Tokens } from "../model/tokens.ts";
import { type PatchingOptions, planSweep } from "./patching.ts";

/**
 * First-order estimates of {@link patchingScores}' grid: for layer l and column j (patched
 * position p = targets[j], clean value from s = p - seqLen), the loss change is estimated as
 * (act[l, s] - act[l, p]) . d loss / d act[l, p], with loss = mean of -lp[seqLen:] (the repeated
 * half's next-token losses) and the gradient from one backward pass of the first sequence.
 * Returns `[nLayers][seqLen]`, like `patchingScores`.
 *
 * The estimate is exact for patches that move the loss linearly; where a patch changes an
 * activation a lot (the study's first column takes BOS's value) it can be far off.
 *
 * @example
 * ```ts
 * import { generateRepeatedTokens, HookedTransformer } from "../mod.ts";
 * import { attributionScores } from "./attribution.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const tokens = generateRepeatedTokens(model, 10, 1, { seed: 0 });
 * const est = await attributionScores(model, tokens, 10, { alignment: "aligned" });
 * est.length; // n_layers
 * ```
 */
export async function attributionScores(
  model: HookedTransformer,
  tokens: Tokens,
  seqLen: number,
  opts: Omit<PatchingOptions, "onProgress"> = {},
): Promise<number[][]> {
  const { targets, sources, one, names } = planSweep(model, tokens, seqLen, opts);
  const d = model.cfg.dModel;
  const { cache } = await model.runWithCache(one, {
    namesFilter: names,
    inclBwdCache: true,
    metric: lossMetric({ from: seqLen }),
    returnType: "none",
  });
  return names.map((name) => {
    const act = cache.get(name).data, grad = cache.get(`${name}_grad`).data;
    return targets.map((p, j) => {
      let s = 0;
      for (let i = 0; i < d; i++) s += (act[sources[j] * d + i] - act[p * d + i]) * grad[p * d + i];
      return s;
    });
  });
}

/**
 * Pearson's correlation of two equally long lists (NaN when either is constant).
 *
 * @example
 * ```ts
 * import { correlation } from "./attribution.ts";
 * correlation([1, 2, 3], [2, 4, 7]); // 0.99...
 * ```
 */
export function correlation(x: readonly number[], y: readonly number[]): number {
  if (x.length !== y.length || x.length === 0) {
    throw new InputError(`correlation of ${x.length} and ${y.length} values`);
  }
  const n = x.length;
  const mx = x.reduce((a, b) => a + b, 0) / n, my = y.reduce((a, b) => a + b, 0) / n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  return sxy / Math.sqrt(sxx * syy);
}
