/**
 * Row reductions over f32 matrices in WebAssembly memory: log-sum-exp (log-softmax without
 * materialising it) and argmax, as free functions. They are the {@linkcode Kernels} methods
 * `logSumExpRows` and `argmaxRows` (SIMD, split by rows across the kernel threads); this module
 * keeps the function form for existing callers.
 * @module
 */
import type { Kernels } from "./kernels.ts";

/**
 * log(sum_j exp(x[r, j])) for each row of x [rows, n] (byte offset `x`), in float64.
 *
 * @example
 * ```ts ignore
 * const lse = logSumExpRows(k, logitsPtr, 64, 50257); // Float64Array(64)
 * const logProb = logits[target] - lse[row];
 * ```
 */
export function logSumExpRows(k: Kernels, x: number, rows: number, n: number): Float64Array {
  return k.logSumExpRows(x, rows, n);
}

/**
 * Index of the first maximum of each row of x [rows, n] (torch.argmax's tie rule).
 *
 * @example
 * ```ts ignore
 * const best = argmaxRows(k, blockPtr, 256, 50257); // Int32Array(256)
 * ```
 */
export function argmaxRows(k: Kernels, x: number, rows: number, n: number): Int32Array {
  return k.argmaxRows(x, rows, n);
}
