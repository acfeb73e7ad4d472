/**
 * TransformerLens's `refactor_factored_attn_matrices` load option: every head's W_Q W_K^T and
 * W_V W_O are refactored by SVD without changing what the model computes. W_QK (with the query
 * and key biases as an extra input coordinate) becomes the even split U sqrt(S), sqrt(S) Vh^T;
 * W_OV becomes W_V = U S and W_O = Vh^T (a rotation, so z has the norm of the head's output), with
 * b_V folded into b_O.
 * @module
 */
import { FactoredMatrix } from "../analysis/factored_matrix.ts";
import { ConfigError } from "../core/errors.ts";
import { type Tensor, transpose2d } from "../core/tensor.ts";
import type { HookedTransformerConfig } from "./config.ts";
import type { ModelParams } from "./params.ts";

/**
 * Refactors the attention weights of `params` in place (see the module doc); run after the other
 * processing steps, as TransformerLens does. Refused for rotary models (QK then depends on the
 * positions) and for grouped-query attention (keys are shared between query heads).
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", {
 *   refactorFactoredAttnMatrices: true,
 *   threads: 1,
 * });
 * model.b_V.data.every((v) => v === 0); // true: folded into b_O
 * ```
 */
export function refactorFactoredAttnMatrices(
  params: ModelParams,
  cfg: HookedTransformerConfig,
): void {
  if (cfg.positionalEmbeddingType === "rotary") {
    throw new ConfigError(
      "refactorFactoredAttnMatrices: a rotary model's QK circuit depends on the positions of the " +
        "query and key, so it cannot be refactored",
    );
  }
  if (cfg.nKeyValueHeads !== cfg.nHeads) {
    throw new ConfigError(
      "refactorFactoredAttnMatrices is not supported with grouped-query attention (key and value " +
        "heads are shared between query heads)",
    );
  }
  const { nLayers: L, nHeads: H, dModel: d, dHead: dh } = cfg;
  const head = (t: Tensor, l: number, h: number, size: number) =>
    t.data.subarray((l * H + h) * size, (l * H + h + 1) * size);
  for (let l = 0; l < L; l++) {
    for (let h = 0; h < H; h++) {
      // QK: [W_Q; b_Q] (d + 1) x dh times its key counterpart, split evenly.
      const qEff = new Float32Array((d + 1) * dh), kEff = new Float32Array((d + 1) * dh);
      qEff.set(head(params.W_Q, l, h, d * dh));
      qEff.set(head(params.b_Q, l, h, dh), d * dh);
      kEff.set(head(params.W_K, l, h, d * dh));
      kEff.set(head(params.b_K, l, h, dh), d * dh);
      const kT = transpose2d(kEff, d + 1, dh);
      const even = new FactoredMatrix(
        { data: qEff, shape: [d + 1, dh] },
        { data: kT, shape: [dh, d + 1] },
      ).makeEven();
      // A [d + 1, r] and B [r, d + 1], r = min(d + 1, dh): rows of A and columns of B are the
      // new query and key weights (last row: the biases); columns past r stay zero.
      const r = even.mdim;
      const q = even.A.data, k = transpose2d(even.B.data, r, d + 1);
      const WQ = head(params.W_Q, l, h, d * dh), bQ = head(params.b_Q, l, h, dh);
      const WK = head(params.W_K, l, h, d * dh), bK = head(params.b_K, l, h, dh);
      for (const t of [WQ, bQ, WK, bK]) t.fill(0);
      for (let i = 0; i <= d; i++) {
        for (let j = 0; j < r; j++) {
          (i < d ? WQ : bQ)[(i < d ? i * dh : 0) + j] = q[i * r + j];
          (i < d ? WK : bK)[(i < d ? i * dh : 0) + j] = k[i * r + j];
        }
      }
    }
    // OV: b_O += sum_h b_V[h] W_O[h], b_V = 0, then W_V = U S and W_O = Vh^T per head.
    const bO = params.b_O.data.subarray(l * d, (l + 1) * d);
    const acc = Float64Array.from(bO);
    for (let h = 0; h < H; h++) {
      const bV = head(params.b_V, l, h, dh), WO = head(params.W_O, l, h, dh * d);
      for (let e = 0; e < dh; e++) for (let i = 0; i < d; i++) acc[i] += bV[e] * WO[e * d + i];
      bV.fill(0);
    }
    bO.set(acc);
    for (let h = 0; h < H; h++) {
      const WV = head(params.W_V, l, h, d * dh), WO = head(params.W_O, l, h, dh * d);
      const ov = new FactoredMatrix({ data: WV.slice(), shape: [d, dh] }, {
        data: WO.slice(),
        shape: [dh, d],
      });
      const { U, S, Vh } = ov.svd();
      const r = S.length;
      WV.fill(0);
      WO.fill(0);
      for (let i = 0; i < d; i++) {
        for (let j = 0; j < r; j++) WV[i * dh + j] = U.data[i * r + j] * S[j];
      }
      for (let j = 0; j < r; j++) for (let i = 0; i < d; i++) WO[j * d + i] = Vh.data[i * r + j];
    }
  }
}
