/**
 * Eigenvalues of small dense real matrices (d_head x d_head circuits), in float64: balancing,
 * reduction to upper Hessenberg form by elimination, then the Francis double-shift QR iteration,
 * as in EISPACK's `balanc`/`elmhes`/`hqr` (the LAPACK routines torch calls are not available to
 * JavaScript, and no maintained npm package serves URL importers).
 * @module
 */
import { InputError } from "./errors.ts";

/** Eigenvalues as real and imaginary parts; conjugate pairs have opposite `im`. */
export interface Eigenvalues {
  /** Real parts. */
  re: Float64Array;
  /** Imaginary parts. */
  im: Float64Array;
}

/**
 * The eigenvalues of a real n x n matrix (row-major; not modified), sorted by decreasing
 * magnitude, then decreasing real part, then decreasing imaginary part.
 *
 * @example
 * ```ts
 * import { eigenvalues } from "./linalg.ts";
 * // A rotation by 90 degrees: eigenvalues +i and -i.
 * const { re, im } = eigenvalues(Float64Array.of(0, -1, 1, 0), 2);
 * [re[0], im[0], re[1], im[1]]; // [0, 1, 0, -1]
 * ```
 */
export function eigenvalues(matrix: ArrayLike<number>, n: number): Eigenvalues {
  if (!Number.isInteger(n) || n < 0 || matrix.length !== n * n) {
    throw new InputError(`eigenvalues: ${matrix.length} values do not form a ${n} x ${n} matrix`);
  }
  const a = Float64Array.from(matrix);
  if (a.some((v) => !Number.isFinite(v))) {
    throw new InputError("eigenvalues: the matrix holds NaN or infinite values");
  }
  balance(a, n);
  hessenberg(a, n);
  const { re, im } = hqr(a, n);
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) =>
    Math.hypot(re[j], im[j]) - Math.hypot(re[i], im[i]) || re[j] - re[i] || im[j] - im[i]
  );
  return { re: Float64Array.from(order, (i) => re[i]), im: Float64Array.from(order, (i) => im[i]) };
}

/** Scales rows and columns by powers of 2 so their norms are comparable (eigenvalues unchanged). */
function balance(a: Float64Array, n: number) {
  const RADIX = 2, SQRDX = RADIX * RADIX;
  let done = false;
  while (!done) {
    done = true;
    for (let i = 0; i < n; i++) {
      let r = 0, c = 0;
      for (let j = 0; j < n; j++) {
        if (j !== i) {
          c += Math.abs(a[j * n + i]);
          r += Math.abs(a[i * n + j]);
        }
      }
      if (c === 0 || r === 0) continue;
      let g = r / RADIX, f = 1;
      const s = c + r;
      while (c < g) {
        f *= RADIX;
        c *= SQRDX;
      }
      g = r * RADIX;
      while (c > g) {
        f /= RADIX;
        c /= SQRDX;
      }
      if ((c + r) / f < 0.95 * s) {
        done = false;
        for (let j = 0; j < n; j++) a[i * n + j] /= f;
        for (let j = 0; j < n; j++) a[j * n + i] *= f;
      }
    }
  }
}

/** Reduces `a` to upper Hessenberg form by elimination with pivoting (similarity transforms). */
function hessenberg(a: Float64Array, n: number) {
  for (let m = 1; m < n - 1; m++) {
    let x = 0, piv = m;
    for (let j = m; j < n; j++) {
      if (Math.abs(a[j * n + m - 1]) > Math.abs(x)) {
        x = a[j * n + m - 1];
        piv = j;
      }
    }
    if (piv !== m) {
      for (let j = m - 1; j < n; j++) {
        [a[piv * n + j], a[m * n + j]] = [a[m * n + j], a[piv * n + j]];
      }
      for (let j = 0; j < n; j++) [a[j * n + piv], a[j * n + m]] = [a[j * n + m], a[j * n + piv]];
    }
    if (x === 0) continue;
    for (let i = m + 1; i < n; i++) {
      let y = a[i * n + m - 1];
      if (y === 0) continue;
      y /= x;
      a[i * n + m - 1] = 0;
      for (let j = m; j < n; j++) a[i * n + j] -= y * a[m * n + j];
      for (let j = 0; j < n; j++) a[j * n + m] += y * a[j * n + i];
    }
  }
}

/** Eigenvalues of an upper Hessenberg matrix (destroyed) by the double-shift QR iteration. */
function hqr(a: Float64Array, n: number): Eigenvalues {
  const re = new Float64Array(n), im = new Float64Array(n);
  const A = (i: number, j: number) => a[i * n + j];
  const set = (i: number, j: number, v: number) => a[i * n + j] = v;
  let anorm = 0;
  for (let i = 0; i < n; i++) {
    for (let j = Math.max(i - 1, 0); j < n; j++) anorm += Math.abs(A(i, j));
  }
  let nn = n - 1, t = 0;
  while (nn >= 0) {
    let its = 0, l: number;
    do {
      for (l = nn; l >= 1; l--) {
        let s = Math.abs(A(l - 1, l - 1)) + Math.abs(A(l, l));
        if (s === 0) s = anorm;
        if (Math.abs(A(l, l - 1)) + s === s) {
          set(l, l - 1, 0);
          break;
        }
      }
      let x = A(nn, nn);
      if (l === nn) {
        re[nn] = x + t;
        im[nn--] = 0;
      } else {
        let y = A(nn - 1, nn - 1);
        let w = A(nn, nn - 1) * A(nn - 1, nn);
        if (l === nn - 1) {
          const p = 0.5 * (y - x), q = p * p + w;
          let z = Math.sqrt(Math.abs(q));
          x += t;
          if (q >= 0) {
            z = p + (p >= 0 ? Math.abs(z) : -Math.abs(z));
            re[nn - 1] = re[nn] = x + z;
            if (z !== 0) re[nn] = x - w / z;
            im[nn - 1] = im[nn] = 0;
          } else {
            re[nn - 1] = re[nn] = x + p;
            im[nn - 1] = -(im[nn] = z);
          }
          nn -= 2;
        } else {
          if (its === 60) {
            throw new InputError("eigenvalues: the QR iteration did not converge in 60 steps");
          }
          if (its === 10 || its === 20 || its === 40) {
            t += x;
            for (let i = 0; i <= nn; i++) set(i, i, A(i, i) - x);
            const s = Math.abs(A(nn, nn - 1)) + Math.abs(A(nn - 1, nn - 2));
            y = x = 0.75 * s;
            w = -0.4375 * s * s;
          }
          ++its;
          let m: number, p = 0, q = 0, r = 0, z: number;
          for (m = nn - 2; m >= l; m--) {
            z = A(m, m);
            r = x - z;
            const s0 = y - z;
            p = (r * s0 - w) / A(m + 1, m) + A(m, m + 1);
            q = A(m + 1, m + 1) - z - r - s0;
            r = A(m + 2, m + 1);
            const s = Math.abs(p) + Math.abs(q) + Math.abs(r);
            p /= s;
            q /= s;
            r /= s;
            if (m === l) break;
            const u = Math.abs(A(m, m - 1)) * (Math.abs(q) + Math.abs(r));
            const v = Math.abs(p) *
              (Math.abs(A(m - 1, m - 1)) + Math.abs(z) + Math.abs(A(m + 1, m + 1)));
            if (u + v === v) break;
          }
          for (let i = m + 2; i <= nn; i++) {
            set(i, i - 2, 0);
            if (i !== m + 2) set(i, i - 3, 0);
          }
          for (let k = m; k <= nn - 1; k++) {
            if (k !== m) {
              p = A(k, k - 1);
              q = A(k + 1, k - 1);
              r = k !== nn - 1 ? A(k + 2, k - 1) : 0;
              x = Math.abs(p) + Math.abs(q) + Math.abs(r);
              if (x !== 0) {
                p /= x;
                q /= x;
                r /= x;
              }
            }
            const norm = Math.sqrt(p * p + q * q + r * r);
            const s = p >= 0 ? norm : -norm;
            if (s === 0) continue;
            if (k === m) {
              if (l !== m) set(k, k - 1, -A(k, k - 1));
            } else {
              set(k, k - 1, -s * x);
            }
            p += s;
            x = p / s;
            y = q / s;
            z = r / s;
            q /= p;
            r /= p;
            for (let j = k; j <= nn; j++) {
              p = A(k, j) + q * A(k + 1, j);
              if (k !== nn - 1) {
                p += r * A(k + 2, j);
                set(k + 2, j, A(k + 2, j) - p * z);
              }
              set(k + 1, j, A(k + 1, j) - p * y);
              set(k, j, A(k, j) - p * x);
            }
            const mmin = nn < k + 3 ? nn : k + 3;
            for (let i = l; i <= mmin; i++) {
              p = x * A(i, k) + y * A(i, k + 1);
              if (k !== nn - 1) {
                p += z * A(i, k + 2);
                set(i, k + 2, A(i, k + 2) - p * r);
              }
              set(i, k + 1, A(i, k + 1) - p * q);
              set(i, k, A(i, k) - p);
            }
          }
        }
      }
    } while (l < nn - 1);
  }
  return { re, im };
}
