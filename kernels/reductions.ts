/**
 * Row reductions over f32 matrices in WebAssembly memory: log-sum-exp (log-softmax without
 * materialising it) and argmax. Used where a whole vocabulary row would be slow in JavaScript:
 * next-token log-probs and the circuits' top-1 accuracy over 50257-wide rows.
 * @module
 */
import type { Kernels } from "./kernels.ts";

interface ReductionExports {
  logSumExpRows(x: number, n: number, out: number, start: number, end: number): void;
  argmaxRows(x: number, n: number, out: number, start: number, end: number): void;
}

function exportsOf(k: Kernels): ReductionExports {
  return k.exports as unknown as ReductionExports;
}

/**
 * log(sum_j exp(x[r, j])) for each row of x [rows, n] (byte offset `x`), in float64.
 * Exponentials are float32 (relative error ~1e-7), summed in float64 by blocks of 256.
 *
 * @example
 * ```ts ignore
 * const lse = logSumExpRows(k, logitsPtr, 64, 50257); // Float64Array(64)
 * const logProb = logits[target] - lse[row];
 * ```
 */
export function logSumExpRows(k: Kernels, x: number, rows: number, n: number): Float64Array {
  const mark = k.mark();
  try {
    const out = k.alloc(rows * 2);
    exportsOf(k).logSumExpRows(x, n, out, 0, rows);
    return new Float64Array(k.memory.buffer, out, rows).slice();
  } finally {
    k.release(mark);
  }
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
  const mark = k.mark();
  try {
    const out = k.alloc(rows);
    exportsOf(k).argmaxRows(x, n, out, 0, rows);
    return new Int32Array(k.memory.buffer, out, rows).slice();
  } finally {
    k.release(mark);
  }
}
