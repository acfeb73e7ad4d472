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
