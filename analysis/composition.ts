/**
 * Composition scores between attention heads (Elhage et al., "A Mathematical Framework for
 * Transformer Circuits"), as TransformerLens's `all_composition_scores`.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { matmul2d } from "../core/ops.ts";
import type { Tensor } from "../core/tensor.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";

/** Which input of the later head reads the earlier head's output. */
export type CompositionMode = "Q" | "K" | "V";

/**
 * The composition scores of every pair of heads, [n_layers, n_heads, n_layers, n_heads]: entry
 * (l1, h1, l2, h2) is ||W_OV(l1,h1) W(l2,h2)||_F / (||W_OV(l1,h1)||_F ||W(l2,h2)||_F) with W the
 * later head's QK circuit (mode "Q"), its transpose ("K") or its OV circuit ("V"), and 0 unless
 * l1 < l2 (TransformerLens's `all_composition_scores`). As TransformerLens, each circuit is first
 * reduced to its singular values and vectors (`collapseL` of the earlier head, `collapseR` of the
 * later), so the product per pair is d_head x d_head; all pairs from one earlier layer are one
 * product on the model's backend.
 *
 * @example
 * ```ts
 * import { allCompositionScores, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const k = allCompositionScores(model, "K");
 * k.shape; // [3, 4, 3, 4]
 * k.data[((0 * 4 + 2) * 3 + 1) * 4 + 2]; // layer 0 head 2 into layer 1 head 2's keys
 * ```
 */
export function allCompositionScores(model: HookedTransformer, mode: CompositionMode): Tensor {
  if (mode !== "Q" && mode !== "K" && mode !== "V") {
    throw new InputError(
      `allCompositionScores: mode must be "Q", "K" or "V", got ${JSON.stringify(mode)}`,
    );
  }
  const { nLayers: L, nHeads: H, dModel: d } = model.cfg;
  const OV = model.OV;
  const right = mode === "V" ? OV : mode === "Q" ? model.QK : model.QK.T;
  // Earlier heads: S Vh^T [r, d]; later heads: U S [d, r].
  const left = OV.collapseL(), later = right.collapseR();
  const r = left.shape.at(-2)!, r2 = later.shape.at(-1)!;
  const heads = L * H;
  const frob = (x: Float32Array, off: number, n: number) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += x[off + i] ** 2;
    return Math.sqrt(s);
  };
  const leftNorm = Array.from({ length: heads }, (_, i) => frob(left.data, i * r * d, r * d));
  const rightNorm = Array.from({ length: heads }, (_, i) => frob(later.data, i * d * r2, d * r2));
  // Later heads side by side: [d, heads * r2].
  const cols = heads * r2;
  const R = new Float32Array(d * cols);
  for (let j = 0; j < heads; j++) {
    for (let i = 0; i < d; i++) {
      R.set(later.data.subarray((j * d + i) * r2, (j * d + i + 1) * r2), i * cols + j * r2);
    }
  }
  const out = new Float32Array(heads * heads);
  for (let l1 = 0; l1 < L - 1; l1++) {
    // Every head of layer l1 against every head of the later layers: [H r, d] x [d, later cols].
    const first = (l1 + 1) * H * r2;
    const width = cols - first;
    const Rl = new Float32Array(d * width);
    for (let i = 0; i < d; i++) Rl.set(R.subarray(i * cols + first, (i + 1) * cols), i * width);
    const P = matmul2d(
      left.data.subarray(l1 * H * r * d, (l1 + 1) * H * r * d),
      Rl,
      H * r,
      d,
      width,
      model.backend,
    );
    for (let h1 = 0; h1 < H; h1++) {
      const a = l1 * H + h1;
      for (let b = (l1 + 1) * H; b < heads; b++) {
        let s = 0;
        for (let i = 0; i < r; i++) {
          const row = (h1 * r + i) * width + (b * r2 - first);
          for (let j = 0; j < r2; j++) s += P[row + j] ** 2;
        }
        out[a * heads + b] = Math.sqrt(s) / (leftNorm[a] * rightNorm[b]);
      }
    }
  }
  return { data: out, shape: [L, H, L, H] };
}
