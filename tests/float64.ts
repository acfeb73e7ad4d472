/**
 * Float64 references the circuit tests compute their definitions with: a dense product, a
 * transpose and the Frobenius norm of row-major arrays.
 * @module
 */

/** Row-major [r, k] x [k, c] in float64. */
export function mm(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  r: number,
  k: number,
  c: number,
): Float64Array {
  const out = new Float64Array(r * c);
  for (let i = 0; i < r; i++) {
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      for (let j = 0; j < c; j++) out[i * c + j] += x * b[p * c + j];
    }
  }
  return out;
}

/** The [c, r] transpose of a row-major [r, c] array, in float64. */
export function transposed(a: ArrayLike<number>, r: number, c: number): Float64Array {
  const out = new Float64Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = a[i * c + j];
  return out;
}

/** The Frobenius norm, summed in float64. */
export function frob(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

/**
 * TransformerLens's composition scores by their definition, in float64, from each head's d x d
 * circuits: ||OV(l1, h1) W(l2, h2)||_F / (||OV(l1, h1)||_F ||W(l2, h2)||_F) where l1 < l2 (0
 * elsewhere), W being the OV circuit (V), QK (Q) or QK^T (K). Indexed [l1, h1, l2, h2].
 */
export function compositionScoreDefinition(
  mode: "Q" | "K" | "V",
  ov: (l: number, h: number) => Float64Array,
  qk: (l: number, h: number) => Float64Array,
  shape: { L: number; H: number; d: number },
): Float64Array {
  const { L, H, d } = shape;
  const out = new Float64Array(L * H * L * H);
  for (let l1 = 0; l1 < L; l1++) {
    for (let h1 = 0; h1 < H; h1++) {
      const left = ov(l1, h1);
      for (let l2 = l1 + 1; l2 < L; l2++) {
        for (let h2 = 0; h2 < H; h2++) {
          const right = mode === "V"
            ? ov(l2, h2)
            : mode === "Q"
            ? qk(l2, h2)
            : transposed(qk(l2, h2), d, d);
          out[((l1 * H + h1) * L + l2) * H + h2] = frob(mm(left, right, d, d, d)) /
            (frob(left) * frob(right));
        }
      }
    }
  }
  return out;
}
