/**
 * Top-1 decisions for the rows of a square M = A B (n x n, inner dimension k) without computing
 * most of M, for {@link top1Accuracy}: row i is a hit when its argmax over columns is i. The dense
 * computation compares float32 values D_ij that the backend's matmul makes; this module decides
 * a row only when bounds prove what that comparison gives, whatever order the kernel sums in, and
 * leaves the rest ("undecided") to the dense computation, so the accuracy is identical.
 *
 * Bounds. Each float32 D_ij is within E_ij = gamma_k * |a_i| |b_j| of the real a_i . b_j
 * (gamma_k = k u / (1 - k u), u = 2^-24: any summation order, fused or not). The columns are
 * sorted by norm and cut into chunks; for a chunk t with centroid mu_t and radius rho_t (the
 * largest |b_j - mu_t|), every column j of it has a_i . b_j <= min(|a_i| max|b_j|,
 * a_i . mu_t + |a_i| rho_t) (Cauchy-Schwarz, on the column and on its offset from the centroid).
 * A chunk whose bound, plus E, is below the diagonal's lower bound cannot beat the diagonal and is
 * skipped for that row. The other chunks are multiplied (one matmul for the rows that need the
 * chunk) and their largest off-diagonal value K read: K - 2E above the diagonal's upper bound
 * proves a miss (a witness); when every chunk is skipped or stays below the diagonal's lower
 * bound by 2E, the row is a hit. A row whose values come within the error margins of its diagonal
 * stays undecided.
 * @module
 */
import type { Backend, DeviceArray, PackedMatrix } from "../backend/backend.ts";
import type { ProgressCallback } from "../core/progress.ts";
import { lastingScope } from "../model/exclusive.ts";

/** A row's outcome in {@link top1ByBounds}'s result. */
export const TOP1_MISS = 0;
/** The row's argmax is its diagonal. */
export const TOP1_HIT = 1;
/** The bounds could not decide: compute the row densely. */
export const TOP1_UNDECIDED = 2;

/** Options of {@link top1ByBounds}. */
export interface Top1BoundsOptions {
  /** Columns per chunk (default 1024). */
  chunkColumns?: number;
  /**
   * Rows per block (default 4096): memory holds blockRows x chunkColumns floats (16 MiB at the
   * defaults). 4096 took 15-25% less CPU time than 1024 on 50257 x 50257 products of inner
   * dimension 64, both where most rows are misses and where 60% are hits (fewer, larger products).
   */
  blockRows?: number;
  /** First row to decide (default 0). */
  rowStart?: number;
  /** One past the last row to decide (default n). */
  rowEnd?: number;
  /** Called after each block with (rows done, rows in total). */
  onProgress?: ProgressCallback;
}

/** What {@link top1ByBounds} found. */
export interface Top1Bounds {
  /** Per row of [rowStart, rowEnd): TOP1_MISS, TOP1_HIT or TOP1_UNDECIDED. */
  outcome: Uint8Array;
  /** Matrix entries computed (the dense computation computes (rowEnd - rowStart) x n). */
  computed: number;
}

const U32 = 2 ** -24;
// Underflow: each of the k products and sums may lose up to the smallest normal's spacing.
const TINY = 2 ** -126;
const MINUS_INFINITY = Float32Array.of(-Infinity);

/**
 * Decides the rows of M = A B (A [n, k], B [k, n], row-major float32) that bounds can decide;
 * see the module's comment. Returns null when A or B holds a non-finite value (the bounds do not
 * hold: compute densely).
 *
 * @example
 * ```ts
 * import { WasmBackend } from "../backend/wasm/wasm_backend.ts";
 * import { TOP1_HIT, top1ByBounds } from "./top1_bounds.ts";
 * const backend = await WasmBackend.load({ threads: 1 });
 * // M = [[2, 0], [1, 3]]: both rows peak on the diagonal.
 * const a = Float32Array.of(1, 0, 0, 1), b = Float32Array.of(2, 0, 1, 3);
 * const r = await top1ByBounds(a, b, 2, 2, backend);
 * r!.outcome[0] === TOP1_HIT && r!.outcome[1] === TOP1_HIT; // true
 * ```
 */
export async function top1ByBounds(
  a: Float32Array,
  b: Float32Array,
  n: number,
  k: number,
  backend: Backend,
  opts: Top1BoundsOptions = {},
): Promise<Top1Bounds | null> {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return null;
  for (let i = 0; i < b.length; i++) if (!Number.isFinite(b[i])) return null;
  let maxA = 0, maxB = 0;
  for (let i = 0; i < a.length; i++) maxA = Math.max(maxA, Math.abs(a[i]));
  for (let i = 0; i < b.length; i++) maxB = Math.max(maxB, Math.abs(b[i]));
  // Far from overflow (the bounds assume finite sums): |D_ij| <= k max|a| max|b|.
  if (k * maxA * maxB > 1e36) return null;
  const rowStart = opts.rowStart ?? 0, rowEnd = opts.rowEnd ?? n;
  const c = Math.max(1, Math.min(opts.chunkColumns ?? 1024, n));
  const rb = Math.max(1, Math.min(opts.blockRows ?? 4096, rowEnd - rowStart));
  // gamma_k, widened a little for the float64 rounding of the bounds themselves.
  const gamma = ((k * U32) / (1 - k * U32)) * (1 + 1e-6);
  const eta = 2 * k * TINY;

  // Columns: norms, sorted descending, cut into chunks with centroid and radius.
  const colNorm2 = new Float64Array(n);
  for (let p = 0; p < k; p++) {
    const row = b.subarray(p * n, (p + 1) * n);
    for (let j = 0; j < n; j++) colNorm2[j] += row[j] * row[j];
  }
  const perm = new Uint32Array(n);
  for (let j = 0; j < n; j++) perm[j] = j;
  perm.sort((x, y) => colNorm2[y] - colNorm2[x] || x - y);
  const chunks = Math.ceil(n / c);
  const chunkMaxNorm = new Float64Array(chunks);
  const chunkRadius = new Float64Array(chunks);
  const mu = new Float32Array(k * chunks); // [k, chunks], the centroids (float32 for the matmul)
  const muNorm = new Float64Array(chunks);
  const subs: Float32Array[] = [];
  const chunkCols: Uint32Array[] = [];

  const col = new Float64Array(k);
  for (let t = 0; t < chunks; t++) {
    const cols = perm.subarray(t * c, Math.min(n, (t + 1) * c));
    const w = cols.length;
    chunkCols.push(cols);
    chunkMaxNorm[t] = Math.sqrt(colNorm2[cols[0]]);
    const sub = new Float32Array(k * w);
    const centroid = new Float64Array(k);
    for (let p = 0; p < k; p++) {
      const src = p * n, dst = p * w;
      let s = 0;
      for (let q = 0; q < w; q++) {
        const v = b[src + cols[q]];
        sub[dst + q] = v;
        s += v;
      }
      centroid[p] = s / w;
    }
    // The float32 centroid is the one the bound uses: the radius is measured from it.
    let mn = 0;
    for (let p = 0; p < k; p++) {
      const v = Math.fround(centroid[p]);
      mu[p * chunks + t] = v;
      centroid[p] = v;
      mn += v * v;
    }
    muNorm[t] = Math.sqrt(mn);
    let radius2 = 0;
    for (let q = 0; q < w; q++) {
      let d2 = 0;
      for (let p = 0; p < k; p++) {
        col[p] = sub[p * w + q] - centroid[p];
        d2 += col[p] * col[p];
      }
      if (d2 > radius2) radius2 = d2;
    }
    chunkRadius[t] = Math.sqrt(radius2) * (1 + 1e-9);
    subs.push(sub);
  }
  // The arrays stay on the backend across this function's awaits, while other calls may run
  // between them (see model/exclusive.ts).
  const held = await lastingScope(backend, (scope) => ({
    packed: subs.map((sub, t) => scope.uploadMatrix(sub, k, chunkCols[t].length)),
    muPacked: scope.uploadMatrix(mu, k, chunks),
    aBuf: scope.alloc(rb * k),
    gBuf: scope.alloc(rb * k),
    kBuf: scope.alloc(rb * c),
    muBuf: scope.alloc(rb * chunks),
  }));
  subs.length = 0;
  try {
    return await decideRows(held.value);
  } finally {
    await held.close();
  }

  async function decideRows(
    { packed, muPacked, aBuf, gBuf, kBuf, muBuf }: {
      packed: PackedMatrix[];
      muPacked: PackedMatrix;
      aBuf: DeviceArray;
      gBuf: DeviceArray;
      kBuf: DeviceArray;
      muBuf: DeviceArray;
    },
  ): Promise<Top1Bounds> {
    const outcome = new Uint8Array(rowEnd - rowStart);
    let computed = 0;
    const alpha = new Float64Array(rb), lo = new Float64Array(rb), hi = new Float64Array(rb);
    const best = new Float64Array(rb);
    const undecided = new Uint8Array(rb);
    const need = new Int32Array(rb);
    let lastYield = performance.now();
    opts.onProgress?.(0, rowEnd - rowStart);
    for (let s = rowStart; s < rowEnd; s += rb) {
      const rows = Math.min(rb, rowEnd - s);
      const aRows = a.subarray(s * k, (s + rows) * k);
      backend.write(aBuf, aRows);
      backend.matmul(aBuf, muPacked, muBuf.at(0, rows * chunks), rows);
      const aMu = await backend.read(muBuf.at(0, rows * chunks));
      for (let r = 0; r < rows; r++) {
        const i = s + r;
        let d = 0, absd = 0, n2 = 0;
        for (let p = 0; p < k; p++) {
          const x = a[i * k + p], y = b[p * n + i];
          d += x * y;
          absd += Math.abs(x * y);
          n2 += x * x;
        }
        alpha[r] = Math.sqrt(n2) * (1 + 1e-9);
        // D_ii within gamma * sum|a b| of the real value; d itself within ~k 2^-53 of it.
        const err = gamma * absd + eta + 2 * k * 2 ** -53 * absd;
        lo[r] = d - err;
        hi[r] = d + err;
        best[r] = -Infinity;
        undecided[r] = 1;
      }
      for (let t = 0; t < chunks; t++) {
        const cols = chunkCols[t], w = cols.length;
        let m = 0;
        for (let r = 0; r < rows; r++) {
          if (!undecided[r]) continue;
          const e = gamma * alpha[r] * chunkMaxNorm[t] + eta;
          // a_i . mu_t from the float32 product, widened by its own rounding error.
          const am = aMu[r * chunks + t] + gamma * alpha[r] * muNorm[t] + eta;
          const bound = Math.min(alpha[r] * chunkMaxNorm[t], am + alpha[r] * chunkRadius[t]);
          if (bound + e >= lo[r]) need[m++] = r;
        }
        if (m === 0) continue;
        let src: DeviceArray = aBuf;
        if (m < rows) {
          const g = new Float32Array(m * k);
          for (let q = 0; q < m; q++) {
            g.set(aRows.subarray(need[q] * k, (need[q] + 1) * k), q * k);
          }
          backend.write(gBuf, g);
          src = gBuf;
        }
        const kc = kBuf.at(0, m * w);
        backend.matmul(src, packed[t], kc, m);
        computed += m * w;
        let idx = await backend.argmaxRows(kc, m, w);
        let diagonalWins = false;
        for (let q = 0; q < m; q++) {
          if (cols[idx[q]] !== s + need[q]) continue;
          // The largest value is the diagonal's own column: hide it, to find the largest other.
          backend.write(kc.at(q * w + idx[q], 1), MINUS_INFINITY);
          diagonalWins = true;
        }
        if (diagonalWins) idx = await backend.argmaxRows(kc, m, w);
        const top = await backend.takeAlongRows(kc, w, idx);
        for (let q = 0; q < m; q++) {
          const r = need[q], i = s + r;
          // A row of one column, the diagonal's: nothing else in this chunk.
          const v = w === 1 && cols[0] === i ? -Infinity : top[q];
          const e2 = 2 * (gamma * alpha[r] * chunkMaxNorm[t] + eta);
          if (v - e2 > hi[r]) {
            outcome[i - rowStart] = TOP1_MISS;
            undecided[r] = 0;
          } else if (v + e2 > best[r]) {
            best[r] = v + e2;
          }
        }
      }
      for (let r = 0; r < rows; r++) {
        if (!undecided[r]) continue;
        outcome[s + r - rowStart] = best[r] < lo[r] ? TOP1_HIT : TOP1_UNDECIDED;
      }
      opts.onProgress?.(s + rows - rowStart, rowEnd - rowStart);
      if (performance.now() - lastYield > 100) {
        await new Promise((res) => setTimeout(res, 0));
        lastYield = performance.now();
      }
    }
    return { outcome, computed };
  }
}
