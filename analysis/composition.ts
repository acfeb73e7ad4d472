/**
 * Composition scores between attention heads (Elhage et al., "A Mathematical Framework for
 * Transformer Circuits"), as TransformerLens's `all_composition_scores`.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { Backend } from "../backend/backend.ts";
import { matmul2d } from "../core/ops.ts";
import type { Tensor } from "../core/tensor.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { type FactoredMatrix, qrColumns } from "./factored_matrix.ts";

/** Which input of the later head reads the earlier head's output. */
export type CompositionMode = "Q" | "K" | "V";

/**
 * The composition scores of every pair of heads, [n_layers, n_heads, n_layers, n_heads]: entry
 * (l1, h1, l2, h2) is ||W_OV(l1,h1) W(l2,h2)||_F / (||W_OV(l1,h1)||_F ||W(l2,h2)||_F) with W the
 * later head's QK circuit (mode "Q"), its transpose ("K") or its OV circuit ("V"), and 0 unless
 * l1 < l2 (TransformerLens's `all_composition_scores`). Each circuit A B (factors [d, k] and
 * [k, d]) is first reduced to k rows or columns that keep every product's Frobenius norm, so the
 * product per pair is k x k; all pairs from one earlier layer are one product on the model's
 * backend. TransformerLens reduces with the SVD (`collapse_l` = S Vh^T); this uses the thin QR
 * A = Q R and keeps R B, which is S Vh^T turned by an orthogonal k x k matrix: the same norms, at
 * a third of the cost (an SVD here is two QRs, a Jacobi SVD and two products).
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
  // Earlier heads: [k, d] rows; later heads: [d, k] columns (each keeps products' norms).
  const left = normRows(OV, model.backend), later = normColumns(right, model.backend);
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

/**
 * Per matrix M = A B of `m` (A [d, k], B [k, d'], leading axes flattened): R B [k, d'] from the
 * thin QR A = Q R, whose product with any X has the norm of M X (Q's columns are orthonormal).
 */
function normRows(m: FactoredMatrix, backend: Backend): Tensor {
  const lead = m.A.shape.slice(0, -2);
  const [d, k] = m.A.shape.slice(-2), d2 = m.B.shape.at(-1)!;
  const count = lead.reduce((a, b) => a * b, 1);
  const out = new Float32Array(count * k * d2);
  for (let i = 0; i < count; i++) {
    const { R } = qrColumns(m.A.data.subarray(i * d * k, (i + 1) * d * k), d, k);
    const B = m.B.data.subarray(i * k * d2, (i + 1) * k * d2);
    out.set(matmul2d(Float32Array.from(R), B, k, k, d2, backend), i * k * d2);
  }
  return { data: out, shape: [...lead, k, d2] };
}

/** Per matrix M = A B of `m`: columns [d, k] whose product X C has the norm of X M. */
function normColumns(m: FactoredMatrix, backend: Backend): Tensor {
  const rows = normRows(m.T, backend); // (R A^T) [k, d] for M^T = B^T A^T
  const [k, d] = rows.shape.slice(-2);
  const out = new Float32Array(rows.data.length);
  for (let i = 0; i < rows.data.length / (k * d); i++) {
    const o = i * k * d;
    for (let p = 0; p < k; p++) {
      for (let j = 0; j < d; j++) out[o + j * k + p] = rows.data[o + p * d + j];
    }
  }
  return { data: out, shape: [...rows.shape.slice(0, -2), d, k] };
}
