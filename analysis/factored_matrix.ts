/**
 * `FactoredMatrix`: a matrix M = A B kept as its two factors, as TransformerLens's
 * `FactoredMatrix` does, so that low-rank circuit matrices such as GPT-2 small's 50257 x 50257
 * QK and OV circuits (10 GB each in float32) can be multiplied, normed, decomposed and streamed
 * row block by row block without ever being held whole.
 *
 * Large products run on the matmul of the {@link Backend} given at construction (`model.backend`
 * in the circuit helpers); without a backend everything runs in plain JavaScript,
 * which suits small matrices. Leading (batch) dimensions are supported as in TransformerLens:
 * `model.OV` is [n_layers, n_heads, d_model, d_model], and `model.OV.get(1, 4)` one head's.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { Backend, DeviceArray, PackedMatrix } from "../backend/backend.ts";
import { type LastingScope, lastingScope } from "../model/exclusive.ts";
import { eigenvalues } from "../core/linalg.ts";
import {
  broadcastShapes,
  checkTensor,
  index as indexTensor,
  type IndexSpec,
  matmul as tensorMatmul,
  matmul2d,
  transpose as tensorTranspose,
} from "../core/ops.ts";
import { numel, type Tensor, tensor } from "../core/tensor.ts";
import type { ProgressCallback } from "../core/progress.ts";
import { TOP1_HIT, TOP1_UNDECIDED, top1ByBounds } from "./top1_bounds.ts";

/**
 * Options of the {@link FactoredMatrix} constructor.
 *
 * @example
 * ```ts ignore
 * new FactoredMatrix(A, B, { backend: model.backend });
 * ```
 */
export interface FactoredMatrixOptions {
  /** The backend for the large products (default: none, plain JavaScript). */
  backend?: Backend;
}

/**
 * One materialised block of rows of A B (see {@link FactoredMatrix.rowBlocks}).
 *
 * @example
 * ```ts ignore
 * for await (const { start, rows, data } of M.rowBlocks(64)) {
 *   const firstRow = data.subarray(0, M.rdim); // row `start` of A B
 * }
 * ```
 */
export interface RowBlock {
  /** Index of the block's first row. */
  start: number;
  /** Number of rows in the block. */
  rows: number;
  /** The rows, row-major: `rows x n` floats (an owned copy). */
  data: Float32Array;
}

/**
 * A singular value decomposition M = U diag(S) Vh^T (TransformerLens's convention).
 *
 * @example
 * ```ts ignore
 * const { U, S, Vh } = M.svd();
 * S[0]; // the largest singular value
 * ```
 */
export interface Svd {
  /** Left singular vectors [..., ldim, r], one per column. */
  U: Tensor;
  /**
   * Singular values, descending, r = min(ldim, mdim, rdim) per matrix (with leading dimensions,
   * [...leading, r] flattened).
   */
  S: Float32Array;
  /** Right singular vectors [..., rdim, r] (not transposed, as TransformerLens's `Vh`). */
  Vh: Tensor;
}

/** Checks a factor: a tensor of at least 2 dimensions; returns its last two. */
function factorDims(t: Tensor, what: string): [number, number] {
  checkTensor(t, what);
  if (t.shape.length < 2) {
    throw new InputError(
      `${what} must have at least 2 dimensions ([..., rows, cols]), got [${t.shape}]`,
    );
  }
  return [t.shape.at(-2)!, t.shape.at(-1)!];
}

/** The product of 2-D tensors (on the backend when large). */
function mm(a: Tensor, b: Tensor, backend?: Backend): Tensor {
  const [m, k] = a.shape, [, n] = b.shape;
  return { data: matmul2d(a.data, b.data, m, k, n, backend), shape: [m, n] };
}

/** The transpose of a 2-D tensor. */
function tr(t: Tensor): Tensor {
  return tensorTranspose(t);
}

/** G = X^T X for X [r, c] (column Gram matrix), in float64. */
function gramColumns(x: Float32Array, r: number, c: number): Float64Array {
  const g = new Float64Array(c * c);
  const row = new Float64Array(c);
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < c; j++) row[j] = x[i * c + j];
    for (let p = 0; p < c; p++) {
      const v = row[p];
      if (v === 0) continue;
      const base = p * c;
      for (let q = p; q < c; q++) g[base + q] += v * row[q];
    }
  }
  for (let p = 0; p < c; p++) for (let q = 0; q < p; q++) g[p * c + q] = g[q * c + p];
  return g;
}

/** G = X X^T for X [r, c] (row Gram matrix), in float64. */
function gramRows(x: Float32Array, r: number, c: number): Float64Array {
  const g = new Float64Array(r * r);
  for (let p = 0; p < r; p++) {
    for (let q = p; q < r; q++) {
      let s = 0;
      for (let j = 0; j < c; j++) s += x[p * c + j] * x[q * c + j];
      g[p * r + q] = s;
      g[q * r + p] = s;
    }
  }
  return g;
}

/**
 * Thin QR of the columns of X [r, c] (row-major), by Gram-Schmidt with one re-orthogonalisation:
 * X = Q R with Q's columns orthonormal (or zero where X's columns are dependent), R [c, c] upper
 * triangular. Q is returned as c column arrays of length r, in float64. (Exported for
 * `composition.ts`; not part of the library's API.)
 */
export function qrColumns(
  x: Float32Array,
  r: number,
  c: number,
): { q: Float64Array[]; R: Float64Array } {
  const q: Float64Array[] = [];
  const R = new Float64Array(c * c);
  let scale = 0;
  for (let j = 0; j < c; j++) {
    const v = new Float64Array(r);
    for (let i = 0; i < r; i++) v[i] = x[i * c + j];
    let n0 = 0;
    for (let i = 0; i < r; i++) n0 += v[i] * v[i];
    scale = Math.max(scale, Math.sqrt(n0));
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < j; p++) {
        const qp = q[p];
        let d = 0;
        for (let i = 0; i < r; i++) d += qp[i] * v[i];
        if (d === 0) continue;
        R[p * c + j] += d;
        for (let i = 0; i < r; i++) v[i] -= d * qp[i];
      }
    }
    let nv = 0;
    for (let i = 0; i < r; i++) nv += v[i] * v[i];
    nv = Math.sqrt(nv);
    if (nv <= 1e-13 * scale || nv === 0) {
      v.fill(0);
      R[j * c + j] = 0;
    } else {
      for (let i = 0; i < r; i++) v[i] /= nv;
      R[j * c + j] = nv;
    }
    q.push(v);
  }
  return { q, R };
}

/**
 * SVD of a small square matrix C [n, n] (row-major, float64) by one-sided Jacobi rotations:
 * C = U diag(s) V^T, s descending. Returns U and V row-major [n, n].
 */
function jacobiSvd(
  C: Float64Array,
  n: number,
): { U: Float64Array; s: Float64Array; V: Float64Array } {
  const W = C.slice();
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0, beta = 0, gamma = 0;
        for (let i = 0; i < n; i++) {
          const wp = W[i * n + p], wq = W[i * n + q];
          alpha += wp * wp;
          beta += wq * wq;
          gamma += wp * wq;
        }
        if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const cs = 1 / Math.sqrt(1 + t * t);
        const sn = cs * t;
        for (let i = 0; i < n; i++) {
          const wp = W[i * n + p], wq = W[i * n + q];
          W[i * n + p] = cs * wp - sn * wq;
          W[i * n + q] = sn * wp + cs * wq;
          const vp = V[i * n + p], vq = V[i * n + q];
          V[i * n + p] = cs * vp - sn * vq;
          V[i * n + q] = sn * vp + cs * vq;
        }
      }
    }
    if (!rotated) break;
  }
  const norms = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += W[i * n + j] * W[i * n + j];
    norms[j] = Math.sqrt(s);
  }
  const order = Array.from({ length: n }, (_, j) => j).sort((a, b) => norms[b] - norms[a]);
  const U = new Float64Array(n * n);
  const Vs = new Float64Array(n * n);
  const s = new Float64Array(n);
  order.forEach((j, col) => {
    s[col] = norms[j];
    for (let i = 0; i < n; i++) {
      U[i * n + col] = norms[j] > 0 ? W[i * n + j] / norms[j] : 0;
      Vs[i * n + col] = V[i * n + j];
    }
  });
  return { U, s, V: Vs };
}

/** Q [r, c] (as c float64 columns) times S [c, w] (row-major) -> float32 [r, w] row-major. */
function columnsTimes(q: Float64Array[], r: number, S: Float64Array, c: number, w: number) {
  const out = new Float32Array(r * w);
  const acc = new Float64Array(w);
  for (let i = 0; i < r; i++) {
    acc.fill(0);
    for (let p = 0; p < c; p++) {
      const v = q[p][i];
      if (v === 0) continue;
      for (let j = 0; j < w; j++) acc[j] += v * S[p * c + j];
    }
    out.set(acc, i * w);
  }
  return out;
}

/**
 * A matrix M = A B held as its factors A [..., ldim, mdim] and B [..., mdim, rdim], like
 * TransformerLens's `FactoredMatrix`, leading (batch) dimensions included: they broadcast
 * between A and B, and every method works per matrix (`get` indexes them, as TL's `M[l, h]`).
 * Products keep the factorisation and put the multiplication on the cheaper side, exactly as
 * TransformerLens chooses; `AB` materialises (refused above {@link FactoredMatrix.maxABElements});
 * `rowBlocks` streams one matrix in blocks of rows.
 *
 * @example
 * ```ts
 * import { FactoredMatrix } from "./factored_matrix.ts";
 * const A = { data: new Float32Array([1, 0, 0, 1, 1, 1]), shape: [3, 2] };
 * const B = { data: new Float32Array([1, 2, 3, 4, 5, 6]), shape: [2, 3] };
 * const M = new FactoredMatrix(A, B);
 * M.shape; // [3, 3]
 * M.AB.data; // [1, 2, 3, 4, 5, 6, 5, 7, 9]
 * M.norm(); // Frobenius norm of AB, from 2 x 2 Gram matrices
 * for await (const block of M.rowBlocks(2)) console.log(block.start, block.rows); // 0 2, then 2 1
 * // Leading dimensions: two matrices sharing B.
 * const batch = new FactoredMatrix({ data: new Float32Array(12).fill(1), shape: [2, 3, 2] }, B);
 * batch.shape; // [2, 3, 3]
 * batch.get(1).AB.shape; // [3, 3]
 * ```
 */
export class FactoredMatrix {
  /**
   * The largest product `AB` materialises, in elements (default 2^27 = 128 Mi floats, 512 MiB).
   * Raise it deliberately if you really want a bigger dense matrix; prefer `rowBlocks`.
   */
  static maxABElements = 2 ** 27;

  /** The left factor [..., ldim, mdim] (its own leading dimensions, before broadcasting). */
  readonly A: Tensor;
  /** The right factor [..., mdim, rdim] (its own leading dimensions, before broadcasting). */
  readonly B: Tensor;
  /** The backend of the large products (undefined: plain JavaScript). */
  readonly backend: Backend | undefined;
  /** Rows of M. */
  readonly ldim: number;
  /** The shared inner dimension of A and B (M's rank is at most this). */
  readonly mdim: number;
  /** Columns of M. */
  readonly rdim: number;
  /** The leading dimensions of A and B broadcast together ([] for a single matrix). */
  readonly leadingDims: number[];
  #svd: Svd | undefined;

  /**
   * Wraps A [..., ldim, mdim] and B [..., mdim, rdim] (not copied: do not modify them
   * afterwards); their leading dimensions must broadcast.
   */
  constructor(A: Tensor, B: Tensor, opts: FactoredMatrixOptions = {}) {
    const [l, m] = factorDims(A, "FactoredMatrix: A");
    const [m2, r] = factorDims(B, "FactoredMatrix: B");
    if (m !== m2) {
      throw new InputError(
        `FactoredMatrix: inner dimensions must match, got A [${A.shape}] and B [${B.shape}]`,
      );
    }
    try {
      this.leadingDims = broadcastShapes(A.shape.slice(0, -2), B.shape.slice(0, -2));
    } catch {
      throw new InputError(
        `FactoredMatrix: the leading dimensions of A [${A.shape}] and B [${B.shape}] do not broadcast`,
      );
    }
    this.A = A;
    this.B = B;
    this.backend = opts.backend;
    this.ldim = l;
    this.mdim = m;
    this.rdim = r;
  }

  /** [...leading, ldim, rdim], the shape of M = A B. */
  get shape(): number[] {
    return [...this.leadingDims, this.ldim, this.rdim];
  }

  /** Number of dimensions of M (2 plus the leading ones). */
  get ndim(): number {
    return this.leadingDims.length + 2;
  }

  #wrap(A: Tensor, B: Tensor): FactoredMatrix {
    return new FactoredMatrix(A, B, { backend: this.backend });
  }

  /** Matrix `i` (flat over the leading dimensions) of factor `t`, a 2-D view. */
  #factorAt(t: Tensor, i: number): Tensor {
    const own = t.shape.slice(0, -2), lead = this.leadingDims;
    const tail = t.shape.slice(-2);
    let flat = 0, rest = i, stride = 1;
    for (let d = lead.length - 1; d >= 0; d--) {
      const idx = rest % lead[d];
      rest = Math.floor(rest / lead[d]);
      const od = d - (lead.length - own.length);
      if (od >= 0) {
        if (own[od] !== 1) flat += idx * stride;
        stride *= own[od];
      }
    }
    const size = tail[0] * tail[1];
    return { data: t.data.subarray(flat * size, (flat + 1) * size), shape: tail };
  }

  /** Each matrix of the batch as a 2-D FactoredMatrix (one element without leading dims). */
  #matrices(): FactoredMatrix[] {
    if (this.leadingDims.length === 0) return [this];
    return Array.from(
      { length: numel(this.leadingDims) },
      (_, i) => this.#wrap(this.#factorAt(this.A, i), this.#factorAt(this.B, i)),
    );
  }

  /** Per-matrix results stacked under the leading dimensions. */
  #stacked(parts: Tensor[]): Tensor {
    if (this.leadingDims.length === 0) return parts[0];
    const size = parts[0].data.length;
    const data = new Float32Array(parts.length * size);
    parts.forEach((p, i) => data.set(p.data, i * size));
    return { data, shape: [...this.leadingDims, ...parts[0].shape] };
  }

  #single(what: string): void {
    if (this.leadingDims.length > 0) {
      throw new InputError(
        `${what} works on one matrix, but this FactoredMatrix has leading dimensions ` +
          `[${this.leadingDims}]: pick one with get(...), e.g. M.get(${
            this.leadingDims.map(() => 0)
          })`,
      );
    }
  }

  /**
   * M = A B materialised [..., ldim, rdim]. Throws an {@link InputError} when that has more than
   * {@link FactoredMatrix.maxABElements} elements: stream it with `rowBlocks` instead.
   */
  get AB(): Tensor {
    const n = numel(this.shape);
    if (n > FactoredMatrix.maxABElements) {
      throw new InputError(
        `FactoredMatrix.AB would materialise [${this.shape}] ` +
          `(${(n * 4 / 2 ** 30).toFixed(2)} GiB of float32), above the cap of ` +
          `${FactoredMatrix.maxABElements} elements: stream it with rowBlocks(), use ` +
          `top1Accuracy()/norm()/svd(), or raise FactoredMatrix.maxABElements deliberately`,
      );
    }
    return this.#stacked(this.#matrices().map((m) => mm(m.A, m.B, this.backend)));
  }

  /** The reverse product B A [..., mdim, mdim] (square M only: ldim == rdim). */
  get BA(): Tensor {
    if (this.ldim !== this.rdim) {
      throw new InputError(`BA needs ldim == rdim, but the shape is [${this.shape}]`);
    }
    return this.#stacked(this.#matrices().map((m) => mm(m.B, m.A, this.backend)));
  }

  /** The transpose M^T = B^T A^T, still factored. */
  get T(): FactoredMatrix {
    return this.#wrap(tensorTranspose(this.B), tensorTranspose(this.A));
  }

  /**
   * M X for a matrix X [..., rdim, p] (a FactoredMatrix [..., ldim, p]; leading dimensions
   * broadcast), or for another FactoredMatrix (`(M X.A) X.B`). As TransformerLens: when
   * rdim > mdim the product folds into B (A, B X), otherwise into a dense left factor (A B, X).
   */
  matmul(other: Tensor | FactoredMatrix): FactoredMatrix {
    if (other instanceof FactoredMatrix) return this.matmul(other.A).matmul(other.B);
    const [r] = factorDims(other, "matmul: the right matrix");
    if (r !== this.rdim) {
      throw new InputError(
        `matmul: M is [${this.shape}] but the right matrix is [${other.shape}] (needs ${this.rdim} rows)`,
      );
    }
    if (this.rdim > this.mdim) {
      return this.#wrap(this.A, tensorMatmul(this.B, other, this.backend));
    }
    return this.#wrap(this.AB, other);
  }

  /**
   * X M for a matrix X [..., p, ldim] (a FactoredMatrix [..., p, rdim]), or for another
   * FactoredMatrix (`X.A (X.B M)`). As TransformerLens: when ldim > mdim the product folds into
   * A (X A, B), otherwise into a dense right factor (X, A B).
   */
  rmatmul(other: Tensor | FactoredMatrix): FactoredMatrix {
    if (other instanceof FactoredMatrix) return this.rmatmul(other.B).rmatmul(other.A);
    const [, c] = factorDims(other, "rmatmul: the left matrix");
    if (c !== this.ldim) {
      throw new InputError(
        `rmatmul: M is [${this.shape}] but the left matrix is [${other.shape}] (needs ${this.ldim} columns)`,
      );
    }
    if (this.ldim > this.mdim) {
      return this.#wrap(tensorMatmul(other, this.A, this.backend), this.B);
    }
    return this.#wrap(other, this.AB);
  }

  /**
   * M v for a vector v [rdim]: A (B v), never materialising M. With leading dimensions (TL's
   * `M @ v`), v is one vector for every matrix, or a Tensor [..., rdim] whose leading dimensions
   * broadcast against M's; the result is [...leading, ldim] (flat, row-major, for a
   * Float32Array v; a Tensor for a Tensor v).
   *
   * @example
   * ```ts
   * import { FactoredMatrix } from "./factored_matrix.ts";
   * const A = { data: Float32Array.of(1, 0, 0, 2), shape: [2, 2, 1] }; // two 2x1 factors
   * const B = { data: Float32Array.of(1, 1), shape: [1, 2] };
   * const M = new FactoredMatrix(A, B); // [[1, 1], [0, 0]] and [[0, 0], [2, 2]]
   * M.matvec(Float32Array.of(1, 2)); // Float32Array [3, 0, 0, 6]
   * M.matvec({ data: Float32Array.of(1, 2), shape: [2] }).shape; // [2, 2]
   * ```
   */
  matvec(v: Float32Array): Float32Array;
  /** M v for vectors [..., rdim]: a Tensor [...leading, ldim]. */
  matvec(v: Tensor): Tensor;
  matvec(v: Float32Array | Tensor): Float32Array | Tensor {
    const t = this.#vector(v, this.rdim, "matvec", "rdim");
    // A (B v) as matrices: v [..., rdim, 1].
    const col = { data: t.data, shape: [...t.shape, 1] };
    const out = tensorMatmul(this.A, tensorMatmul(this.B, col), this.backend);
    const res = { data: out.data, shape: out.shape.slice(0, -1) };
    return v instanceof Float32Array ? res.data : res;
  }

  /**
   * v M for a vector v [ldim]: (v A) B, never materialising M; with leading dimensions as
   * {@link FactoredMatrix.matvec} (the result [...leading, rdim]).
   */
  vecmat(v: Float32Array): Float32Array;
  /** v M for vectors [..., ldim]: a Tensor [...leading, rdim]. */
  vecmat(v: Tensor): Tensor;
  vecmat(v: Float32Array | Tensor): Float32Array | Tensor {
    const t = this.#vector(v, this.ldim, "vecmat", "ldim");
    const row = { data: t.data, shape: [...t.shape.slice(0, -1), 1, t.shape.at(-1)!] };
    const out = tensorMatmul(tensorMatmul(row, this.A), this.B, this.backend);
    const res = { data: out.data, shape: [...out.shape.slice(0, -2), out.shape.at(-1)!] };
    return v instanceof Float32Array ? res.data : res;
  }

  #vector(v: Float32Array | Tensor, n: number, where: string, dim: string): Tensor {
    const t = v instanceof Float32Array
      ? { data: v, shape: [v.length] }
      : checkTensor(v, `${where}: the vector`);
    if (t.shape.length === 0 || t.shape.at(-1) !== n) {
      throw new InputError(
        `${where}: the vector has shape [${t.shape}], its last axis must be ${dim} = ${n}`,
      );
    }
    try {
      broadcastShapes(t.shape.slice(0, -1), this.leadingDims);
    } catch {
      throw new InputError(
        `${where}: the vector's leading dimensions [${t.shape.slice(0, -1)}] do not broadcast ` +
          `with M's [${this.leadingDims}]`,
      );
    }
    return t;
  }

  /**
   * s M (the scalar goes into A, as TransformerLens's `*`). An InputError for anything but a
   * finite number (TL refuses a tensor that is not a scalar too).
   */
  scale(s: number): FactoredMatrix {
    if (typeof s !== "number" || !Number.isFinite(s)) {
      throw new InputError(
        `scale takes one finite number, got ${
          typeof s === "object" && s !== null && "shape" in s
            ? `a tensor of shape [${(s as Tensor).shape}]`
            : JSON.stringify(s) ?? String(s)
        } (for a matrix product use matmul / rmatmul)`,
      );
    }
    return this.#wrap({ data: this.A.data.map((x) => x * s), shape: [...this.A.shape] }, this.B);
  }

  /**
   * Indexing as TransformerLens's `M[...]`: one entry per leading dimension, then optionally one
   * for rows and one for columns. An entry is a number (picks; negative counts from the end; on a
   * leading dimension it drops the axis, on rows or columns it keeps a 1-row / 1-column matrix),
   * `null` (keeps all: Python's `:`), a list of indices (`M[:, :, [0, 1]]` is
   * `M.get(null, null, [0, 1])`) or a range `{ start, stop, step }` (Python's `start:stop:step`).
   * Both factors are indexed (a factor broadcast along a leading dimension keeps its length 1).
   *
   * @example
   * ```ts
   * import { FactoredMatrix } from "./factored_matrix.ts";
   * const A = { data: new Float32Array(2 * 3 * 4 * 2).fill(1), shape: [2, 3, 4, 2] };
   * const B = { data: new Float32Array(2 * 5).fill(1), shape: [2, 5] };
   * const M = new FactoredMatrix(A, B);
   * M.get(1, -1).shape; // [4, 5]
   * M.get(null, 0).shape; // [2, 4, 5]
   * M.get(0, 0, 2, 3).shape; // [1, 1]
   * M.get(null, [0, 2]).shape; // [2, 2, 4, 5]
   * M.get(1, { start: 1 }, null, { stop: 2 }).shape; // [2, 4, 2]
   * ```
   */
  get(...index: FactoredIndex[]): FactoredMatrix {
    const lead = this.leadingDims, nLead = lead.length;
    if (index.length > nLead + 2) {
      throw new InputError(
        `get: ${index.length} indices for a FactoredMatrix of shape [${this.shape}] ` +
          `(at most one per leading dimension, then rows and columns)`,
      );
    }
    const show = (i: FactoredIndex) => i === null ? "null" : JSON.stringify(i);
    // Each entry checked against its dimension's length (the factors may broadcast it).
    const check = (i: FactoredIndex, n: number, what: string) => {
      if (i === null || i === undefined) return;
      const ok = typeof i === "number" || Array.isArray(i) ||
        (typeof i === "object" &&
          Object.keys(i).every((k) => ["start", "stop", "step"].includes(k)));
      if (!ok) {
        throw new InputError(
          `get: ${what} index ${show(i)} is not a number, null, a list of indices or ` +
            `{ start, stop, step }`,
        );
      }
      try {
        index1d(n, i);
      } catch (e) {
        throw new InputError(
          `get: ${what} index ${show(i)} does not fit length ${n}: ${(e as Error).message}`,
        );
      }
    };
    index.slice(0, nLead).forEach((i, d) => check(i, lead[d], `dimension ${d}`));
    if (index.length > nLead) check(index[nLead], this.ldim, "row");
    if (index.length > nLead + 1) check(index[nLead + 1], this.rdim, "column");
    const keep1 = (i: FactoredIndex): IndexSpec =>
      typeof i === "number" ? [i] : (i ?? null) as IndexSpec;
    const pick = (t: Tensor, row: FactoredIndex, col: FactoredIndex) => {
      const own = t.shape.slice(0, -2);
      const off = nLead - own.length;
      const specs: IndexSpec[] = own.map((size, od) => {
        const i = index[od + off];
        if (i === undefined || i === null) return null;
        if (size === 1 && lead[od + off] !== 1) return typeof i === "number" ? 0 : null;
        return i as IndexSpec;
      });
      specs.push(keep1(row), keep1(col));
      return indexTensor(t, ...specs);
    };
    const row = index.length > nLead ? index[nLead] : null;
    const col = index.length > nLead + 1 ? index[nLead + 1] : null;
    return this.#wrap(pick(this.A, row, null), pick(this.B, null, col));
  }

  /** M with a new dimension of size 1 at leading position `k` (TL's `unsqueeze`). */
  unsqueeze(k: number): FactoredMatrix {
    const n = this.leadingDims.length;
    if (!Number.isInteger(k) || k < 0 || k > n) {
      throw new InputError(`unsqueeze: position ${k} is outside [0, ${n}]`);
    }
    const grow = (t: Tensor) => {
      const own = t.shape.slice(0, -2);
      const full = [...new Array(n - own.length).fill(1), ...own];
      full.splice(k, 0, 1);
      return { data: t.data, shape: [...full, ...t.shape.slice(-2)] };
    };
    return this.#wrap(grow(this.A), grow(this.B));
  }

  /** Rows [start, end) of M, still factored (A's rows, the same B; one matrix). */
  rowSlice(start: number, end: number): FactoredMatrix {
    this.#single("rowSlice");
    if (
      !Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > this.ldim ||
      start > end
    ) {
      throw new InputError(`rowSlice: [${start}, ${end}) is not inside [0, ${this.ldim})`);
    }
    const m = this.mdim;
    return this.#wrap(
      { data: this.A.data.slice(start * m, end * m), shape: [end - start, m] },
      this.B,
    );
  }

  /** Row i of M (rdim floats), computed from the factors (one matrix). */
  row(i: number): Float32Array {
    return this.rowSlice(i, i + 1).AB.data;
  }

  /** The diagonal of a square M, sum_p A[i, p] B[p, i], without materialising M (one matrix). */
  diag(): Float32Array {
    this.#single("diag");
    if (this.ldim !== this.rdim) {
      throw new InputError(`diag needs a square matrix, the shape is [${this.shape}]`);
    }
    const { mdim: m, rdim: n } = this;
    const out = new Float32Array(n);
    const A = this.A.data, B = this.B.data;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let p = 0; p < m; p++) s += A[i * m + p] * B[p * n + i];
      out[i] = s;
    }
    return out;
  }

  /**
   * The Frobenius norm of M = A B (one matrix), from the mdim x mdim Gram matrices:
   * ||A B||_F^2 = sum_pq (A^T A)_pq (B B^T)_pq, in float64 (M is never materialised).
   */
  norm(): number {
    this.#single("norm (use norms() for every matrix)");
    const ga = gramColumns(this.A.data, this.ldim, this.mdim);
    const gb = gramRows(this.B.data, this.mdim, this.rdim);
    let s = 0;
    for (let i = 0; i < ga.length; i++) s += ga[i] * gb[i];
    return Math.sqrt(Math.max(0, s));
  }

  /**
   * The Frobenius norm of every matrix, [...leading] (TL's `norm()`).
   *
   * @example
   * ```ts
   * import { FactoredMatrix } from "./factored_matrix.ts";
   * const A = { data: Float32Array.of(1, 0, 0, 2), shape: [2, 1, 2] };
   * const B = { data: Float32Array.of(3, 4), shape: [2, 1] };
   * new FactoredMatrix(A, B).norms().data; // Float32Array [3, 8]
   * ```
   */
  norms(): Tensor {
    const values = this.#matrices().map((m) => m.norm());
    return { data: Float32Array.from(values), shape: [...this.leadingDims] };
  }

  /**
   * Singular value decomposition M = U diag(S) Vh^T without materialising M (as TransformerLens:
   * decompose each factor, then the small middle matrix): thin QR of A and of B^T, then a Jacobi
   * SVD of the mdim x mdim core, in float64. r = min(ldim, mdim, rdim) values per matrix;
   * singular vectors of zero singular values may be zero. Cached.
   */
  svd(): Svd {
    if (this.#svd) return this.#svd;
    if (this.leadingDims.length > 0) {
      const parts = this.#matrices().map((m) => m.svd());
      const S = new Float32Array(parts.length * parts[0].S.length);
      parts.forEach((p, i) => S.set(p.S, i * p.S.length));
      this.#svd = {
        U: this.#stacked(parts.map((p) => p.U)),
        S,
        Vh: this.#stacked(parts.map((p) => p.Vh)),
      };
      return this.#svd;
    }
    const { ldim, mdim: k, rdim } = this;
    const qa = qrColumns(this.A.data, ldim, k);
    const bt = tr(this.B);
    const qb = qrColumns(bt.data, rdim, k);
    // core = Ra Rb^T [k, k]
    const core = new Float64Array(k * k);
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) s += qa.R[i * k + p] * qb.R[j * k + p];
        core[i * k + j] = s;
      }
    }
    const { U: uc, s, V: vc } = jacobiSvd(core, k);
    const r = Math.min(ldim, k, rdim);
    const U = columnsTimes(qa.q, ldim, uc, k, k);
    const V = columnsTimes(qb.q, rdim, vc, k, k);
    const trim = (x: Float32Array, rows: number): Tensor => {
      if (r === k) return { data: x, shape: [rows, k] };
      const out = new Float32Array(rows * r);
      for (let i = 0; i < rows; i++) out.set(x.subarray(i * k, i * k + r), i * r);
      return { data: out, shape: [rows, r] };
    };
    this.#svd = { U: trim(U, ldim), S: Float32Array.from(s.subarray(0, r)), Vh: trim(V, rdim) };
    return this.#svd;
  }

  /** Left singular vectors [..., ldim, r] (see {@link FactoredMatrix.svd}). */
  get U(): Tensor {
    return this.svd().U;
  }
  /** Singular values, descending (see {@link FactoredMatrix.svd}). */
  get S(): Float32Array {
    return this.svd().S;
  }
  /**
   * Right singular vectors [..., rdim, r], M = U diag(S) V^T (TransformerLens 3's `V`; see
   * {@link FactoredMatrix.svd}).
   */
  get V(): Tensor {
    return this.svd().Vh;
  }
  /** The same as {@link FactoredMatrix.V} (TL 2's name: V itself, not its transpose). */
  get Vh(): Tensor {
    return this.svd().Vh;
  }

  /** diag(S) Vh^T [..., r, rdim]: the factorisation with the left orthogonal factor removed. */
  collapseL(): Tensor {
    if (this.leadingDims.length > 0) {
      return this.#stacked(this.#matrices().map((m) => m.collapseL()));
    }
    const { S, Vh } = this.svd();
    const r = S.length, n = this.rdim;
    const out = new Float32Array(r * n);
    for (let i = 0; i < r; i++) {
      for (let j = 0; j < n; j++) out[i * n + j] = S[i] * Vh.data[j * r + i];
    }
    return { data: out, shape: [r, n] };
  }

  /** U diag(S) [..., ldim, r]: the factorisation with the right orthogonal factor removed. */
  collapseR(): Tensor {
    if (this.leadingDims.length > 0) {
      return this.#stacked(this.#matrices().map((m) => m.collapseR()));
    }
    const { S, U } = this.svd();
    const r = S.length;
    const out = U.data.slice();
    for (let i = 0; i < this.ldim; i++) for (let j = 0; j < r; j++) out[i * r + j] *= S[j];
    return { data: out, shape: [this.ldim, r] };
  }

  /** The same matrix as (U sqrt(S), sqrt(S) Vh^T): balanced factors with orthogonal rows/columns. */
  makeEven(): FactoredMatrix {
    if (this.leadingDims.length > 0) {
      const parts = this.#matrices().map((m) => m.makeEven());
      return this.#wrap(this.#stacked(parts.map((p) => p.A)), this.#stacked(parts.map((p) => p.B)));
    }
    const { S, U, Vh } = this.svd();
    const r = S.length, n = this.rdim;
    const root = S.map(Math.sqrt);
    const a = U.data.slice();
    for (let i = 0; i < this.ldim; i++) for (let j = 0; j < r; j++) a[i * r + j] *= root[j];
    const b = new Float32Array(r * n);
    for (let i = 0; i < r; i++) {
      for (let j = 0; j < n; j++) b[i * n + j] = root[i] * Vh.data[j * r + i];
    }
    return this.#wrap({ data: a, shape: [this.ldim, r] }, { data: b, shape: [r, n] });
  }

  /**
   * The eigenvalues of each (square) matrix, from the small B A (TL's `eigenvalues`: A B and B A
   * share their non-zero eigenvalues): `re` and `im` [..., mdim], sorted by decreasing magnitude.
   *
   * @example
   * ```ts
   * import { FactoredMatrix } from "./factored_matrix.ts";
   * const A = { data: Float32Array.of(1, 0, 0, 1, 0, 0), shape: [3, 2] };
   * const B = { data: Float32Array.of(0, -1, 0, 1, 0, 0), shape: [2, 3] };
   * const { re, im } = new FactoredMatrix(A, B).eigenvalues; // a rotation: +i and -i
   * [re.data[0], im.data[0]]; // [0, 1]
   * ```
   */
  get eigenvalues(): { re: Tensor; im: Tensor } {
    const BA = this.BA;
    const k = this.mdim, count = BA.data.length / (k * k);
    const re = new Float32Array(count * k), im = new Float32Array(count * k);
    for (let i = 0; i < count; i++) {
      const e = eigenvalues(BA.data.subarray(i * k * k, (i + 1) * k * k), k);
      re.set(e.re, i * k);
      im.set(e.im, i * k);
    }
    const shape = [...this.leadingDims, k];
    return { re: { data: re, shape }, im: { data: im, shape: [...shape] } };
  }

  /** The top-left `n x n` corner of M (for printing), computed from the factors (one matrix). */
  getCorner(n = 3): Tensor {
    this.#single("getCorner");
    const rows = Math.min(n, this.ldim), cols = Math.min(n, this.rdim);
    const a = this.rowSlice(0, rows).A;
    const b = new Float32Array(this.mdim * cols);
    for (let p = 0; p < this.mdim; p++) {
      b.set(this.B.data.subarray(p * this.rdim, p * this.rdim + cols), p * cols);
    }
    return mm(a, { data: b, shape: [this.mdim, cols] });
  }

  /**
   * Streams M in blocks of `blockRows` rows (the last block may be shorter), each an owned copy.
   * With a backend, each block is one matmul against B packed once; memory holds B packed, one
   * block of A rows and one block of M rows (blockRows x rdim floats), in a backend scope open
   * from the first block until the loop ends (a `break` closes it too). Running the model between
   * blocks is fine: its own scopes open and close inside this one.
   */
  async *rowBlocks(blockRows = 64): AsyncGenerator<RowBlock, void, undefined> {
    this.#single("rowBlocks");
    const stream = new RowStream(this, blockRows);
    try {
      for (let start = 0; start < this.ldim; start += stream.blockRows) {
        const rows = Math.min(stream.blockRows, this.ldim - start);
        yield { start, rows, data: await stream.copy(start, rows) };
      }
    } finally {
      await stream.close();
    }
  }

  /** `FactoredMatrix: Shape([..., ldim, rdim]), Hidden Dim(mdim)`, as TransformerLens prints it. */
  toString(): string {
    return `FactoredMatrix: Shape([${this.shape.join(", ")}]), Hidden Dim(${this.mdim})`;
  }
}

/**
 * Computes row blocks of A B. With a backend: B packed once in a scope of its own, each block's A
 * rows copied in, one matmul, the block left on the backend (`device`). Without: JavaScript.
 */
class RowStream {
  readonly blockRows: number;
  readonly #m: FactoredMatrix;
  readonly #backend: Backend | undefined;
  #held: LastingScope<{ packed: PackedMatrix; aBuf: DeviceArray; cBuf: DeviceArray }> | undefined;

  constructor(m: FactoredMatrix, blockRows: number) {
    if (!Number.isInteger(blockRows) || blockRows < 1) {
      throw new InputError(`blockRows must be a positive integer, got ${blockRows}`);
    }
    this.blockRows = Math.min(blockRows, Math.max(1, m.ldim));
    this.#m = m;
    this.#backend = m.backend;
  }

  /**
   * Rows [start, start + rows) of A B: on the backend (valid until the next call) when there is
   * one, else in JavaScript. The backend's arrays live in a lasting scope (opened in a turn of its
   * own, see `model/exclusive.ts`), so other streams and model calls may interleave with this one.
   */
  async block(start: number, rows: number): Promise<DeviceArray | Float32Array> {
    const { mdim, rdim } = this.#m;
    const a = this.#m.A.data.subarray(start * mdim, (start + rows) * mdim);
    const backend = this.#backend;
    if (!backend) return mm({ data: a, shape: [rows, mdim] }, this.#m.B).data;
    this.#held ??= await lastingScope(backend, (scope) => ({
      packed: scope.uploadMatrix(this.#m.B.data, mdim, rdim),
      aBuf: scope.alloc(this.blockRows * mdim),
      cBuf: scope.alloc(this.blockRows * rdim),
    }));
    const { packed, aBuf, cBuf } = this.#held.value;
    backend.write(aBuf, a);
    const c = cBuf.at(0, rows * rdim);
    backend.matmul(aBuf, packed, c, rows);
    return c;
  }

  /** Rows [start, start + rows) of A B, as an owned array. */
  async copy(start: number, rows: number): Promise<Float32Array> {
    const b = await this.block(start, rows);
    return b instanceof Float32Array ? b : await this.#backend!.read(b);
  }

  /** Releases what the stream holds on the backend (safe to call twice). */
  async close(): Promise<void> {
    const held = this.#held;
    this.#held = undefined;
    await held?.close();
  }
}

/**
 * Options of {@link top1Accuracy}.
 *
 * @example
 * ```ts ignore
 * await top1Accuracy(M, { blockRows: 16, onProgress: (done, total) => bar.update(done, total) });
 * ```
 */
export interface Top1Options {
  /**
   * Rows of M computed per block: memory holds blockRows x n floats. Default: 16 on one thread
   * (the fastest there on GPT-2 small's 50257-wide circuit: a block stays in cache for the argmax),
   * 128 when the backend runs several threads (fewer, larger matmuls to split between them), 256
   * on an asynchronous backend (not `eager`: each block's argmax is a round trip to the device,
   * and a matmul of few rows leaves most of a GPU's tiles empty).
   */
  blockRows?: number;
  /** Called after each block with (rows done, rows in total). */
  onProgress?: ProgressCallback;
  /**
   * How rows are decided. `"bounds"`: bounds on blocks of columns
   * decide most rows from a fraction of M, and the rows they cannot decide are computed densely,
   * so the answer is the dense one exactly (see `analysis/top1_bounds.ts`; memory: B packed in
   * column chunks, and 4096 x 1024 floats, 16 MiB, for the chunks' products). `"dense"`: every row
   * of M computed and its argmax taken. `"auto"` (the default): bounds from 8192 rows up with a
   * backend (below, the dense product is as fast as the bounds' bookkeeping), else dense. Without
   * a backend the computation is always dense.
   */
  method?: "auto" | "bounds" | "dense";
}

/** {@linkcode Top1Options.blockRows}'s default on `backend`. */
function defaultTop1BlockRows(backend: Backend | undefined): number {
  if (backend && !backend.eager) return 256;
  return (backend?.threads ?? 1) > 1 ? 128 : 16;
}

/**
 * The fraction of rows i of a square M = A B whose argmax over columns is i (the first maximum
 * wins ties, as `torch.argmax`). Streams M in row blocks: with a backend each block is one
 * matmul and the argmax of each row runs on the backend, so memory holds only
 * B packed and one block (blockRows x n floats): 12.3 MiB + 3.1 MiB for GPT-2 small's
 * K-composition circuit in 16-row blocks (12.3 MiB + 24.5 MiB in 128-row blocks). From 8,192
 * rows (or with `method: "bounds"`) bounds decide most rows without their products (see
 * `Top1Options.method`), on the CPU: a WebGPU backend's host companion runs them.
 * Yields to the event loop between blocks now and then, so callers can redraw progress.
 *
 * @example
 * ```ts ignore
 * import { HookedTransformer, kCompositionCircuit, top1Accuracy } from "./mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy");
 * const circuit = kCompositionCircuit(model, [0, 2], [1, 2]);
 * const acc = await top1Accuracy(circuit, { onProgress: (d, t) => console.log(d, t) });
 * ```
 */
export async function top1Accuracy(m: FactoredMatrix, opts: Top1Options = {}): Promise<number> {
  if (m.leadingDims.length > 0) {
    throw new InputError(`top1Accuracy needs one matrix; pick it with get(...) from [${m.shape}]`);
  }
  if (m.ldim !== m.rdim) {
    throw new InputError(`top1Accuracy needs a square matrix, the shape is [${m.shape}]`);
  }
  const n = m.rdim;
  if (n === 0) return NaN;
  const stream = new RowStream(m, opts.blockRows ?? defaultTop1BlockRows(m.backend));
  const method = opts.method ?? "auto";
  if (m.backend && (method === "bounds" || (method === "auto" && n >= 8192))) {
    // The bounds decide rows through many small products and reads: a CPU's work, so an
    // asynchronous device hands them to its eager host companion (Backend.host, the same
    // kernels as on wasm); the rows they leave undecided are streamed on the device below.
    const cpu = m.backend.eager ? m.backend : m.backend.host ?? m.backend;
    const decided = await top1ByBounds(m.A.data, m.B.data, n, m.mdim, cpu, {
      onProgress: opts.onProgress,
    });
    if (decided) return await top1Finish(m, stream, decided.outcome);
  }
  let hits = 0;
  let lastYield = performance.now();
  try {
    opts.onProgress?.(0, n);
    for (let start = 0; start < n; start += stream.blockRows) {
      const rows = Math.min(stream.blockRows, n - start);
      const block = await stream.block(start, rows);
      if (block instanceof Float32Array) {
        for (let i = 0; i < rows; i++) if (argmaxJs(block, i * n, n) === start + i) hits++;
      } else {
        const best = await m.backend!.argmaxRows(block, rows, n);
        for (let i = 0; i < rows; i++) if (best[i] === start + i) hits++;
      }
      opts.onProgress?.(start + rows, n);
      if (performance.now() - lastYield > 100) {
        await new Promise((r) => setTimeout(r, 0));
        lastYield = performance.now();
      }
    }
  } finally {
    await stream.close();
  }
  return hits / n;
}

/**
 * The accuracy from the bounds' outcomes: the undecided rows computed as the dense path computes
 * them (the same row blocks of the same stream, so the same float32 values and argmax).
 */
async function top1Finish(m: FactoredMatrix, stream: RowStream, outcome: Uint8Array) {
  const n = m.rdim;
  let hits = 0;
  try {
    for (let start = 0; start < n; start += stream.blockRows) {
      const rows = Math.min(stream.blockRows, n - start);
      let open = false;
      for (let i = start; i < start + rows; i++) {
        if (outcome[i] === TOP1_HIT) hits++;
        else if (outcome[i] === TOP1_UNDECIDED) open = true;
      }
      if (!open) continue;
      const block = await stream.block(start, rows);
      const best = block instanceof Float32Array
        ? Int32Array.from({ length: rows }, (_, i) => argmaxJs(block, i * n, n))
        : await m.backend!.argmaxRows(block, rows, n);
      for (let i = 0; i < rows; i++) {
        if (outcome[start + i] === TOP1_UNDECIDED && best[i] === i + start) hits++;
      }
    }
  } finally {
    await stream.close();
  }
  return hits / n;
}

/** Index of the first maximum of x[off .. off + n). */
function argmaxJs(x: Float32Array, off: number, n: number): number {
  let best = 0;
  let v = x[off];
  for (let j = 1; j < n; j++) {
    if (x[off + j] > v) {
      v = x[off + j];
      best = j;
    }
  }
  return best;
}

/**
 * One entry of {@link FactoredMatrix.get}: a number, null (all), a list of indices, or a range.
 */
export type FactoredIndex = number | null | readonly number[] | {
  start?: number;
  stop?: number;
  step?: number;
};

/** Checks one index entry against a length (throws index's InputError when it does not fit). */
function index1d(n: number, i: FactoredIndex): void {
  indexTensor(tensor(null, [n]), i as IndexSpec);
}
