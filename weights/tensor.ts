/**
 * The tensor type every layer of the library shares: a row-major `Float32Array` with a shape.
 * @module
 */

/**
 * A dense float32 tensor, row-major. It owns its data: activations handed to users are copies,
 * never views into WebAssembly memory.
 *
 * @example
 * ```ts
 * import { tensor } from "./tensor.ts";
 * const t = tensor(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
 * t.shape; // [2, 3]
 * ```
 */
export interface Tensor {
  /** The values, row-major, length = product of `shape`. */
  data: Float32Array;
  /** The dimensions, outermost first. */
  shape: number[];
}

/** Number of elements of a shape (1 for a scalar `[]`). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * Makes a tensor, checking that the data length matches the shape.
 * With no data, allocates zeros.
 */
export function tensor(data: Float32Array | null, shape: number[]): Tensor {
  const n = numel(shape);
  const values = data ?? new Float32Array(n);
  if (values.length !== n) {
    throw new RangeError(`tensor data has ${values.length} values but shape [${shape}] needs ${n}`);
  }
  return { data: values, shape: [...shape] };
}
