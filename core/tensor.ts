/**
 * The tensor type every layer of the library shares: a row-major `Float32Array` with a shape.
 * @module
 */
import { indexGuard, isIndexKey } from "./index_guard.ts";

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

/**
 * The tensors the library hands out: a plain `{ data, shape }` whose prototype refuses Python's
 * `t[0]` / `t[-1]` (JavaScript would answer `undefined`) with an error naming {@link select} and
 * `index`. Own fields only, so reading `data` and `shape` costs what it costs on a literal.
 */
class DenseTensor implements Tensor {
  data: Float32Array;
  shape: number[];
  constructor(data: Float32Array, shape: number[]) {
    this.data = data;
    this.shape = shape;
  }
}
Object.setPrototypeOf(
  DenseTensor.prototype,
  indexGuard((key) =>
    isIndexKey(key)
      ? `a Tensor has no [${key}]: Python's t[${key}] is index(t, ${key}) or select(t, ${key}) ` +
        `here (index also takes null, ranges, lists and "..."), and one value is t.data[i] ` +
        `(row-major) or item(index(t, ...))`
      : undefined
  ),
);

/**
 * The same tensor (data and shape shared, not copied) as the library hands tensors out: `t[0]`
 * throws an InputError naming `index` / `select` instead of returning `undefined`.
 *
 * @example
 * ```ts
 * import { guardTensor } from "./tensor.ts";
 * const t = guardTensor({ data: new Float32Array(4), shape: [2, 2] });
 * try {
 *   (t as unknown as number[])[0];
 * } catch (e) {
 *   (e as Error).message; // "a Tensor has no [0]: Python's t[0] is index(t, 0) ..."
 * }
 * ```
 */
export function guardTensor(t: Tensor): Tensor {
  return t instanceof DenseTensor ? t : new DenseTensor(t.data, t.shape);
}

/**
 * A tensor whose values are fetched when `data` is first read: `read()` is called then, once, and
 * `data` becomes a plain field holding its result (assigning `data` first skips the read). How a
 * cache hands out activations that still sit in the backend's memory (`model/resident_cache.ts`):
 * reading one costs its copy, and an activation never read is never copied.
 *
 * @example
 * ```ts
 * import { deferredTensor } from "./tensor.ts";
 * let reads = 0;
 * const t = deferredTensor([2], () => (reads++, new Float32Array([1, 2])));
 * t.shape; // [2]: no read yet
 * t.data[1] + t.data[0]; // 3, from one read
 * reads; // 1
 * ```
 */
export function deferredTensor(shape: number[], read: () => Float32Array): Tensor {
  const t = new DenseTensor(EMPTY, [...shape]);
  const n = numel(shape);
  const settle = (data: Float32Array) =>
    Object.defineProperty(t, "data", {
      value: data,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  Object.defineProperty(t, "data", {
    get() {
      const data = read();
      if (data.length !== n) {
        throw new RangeError(
          `tensor data has ${data.length} values but shape [${shape}] needs ${n}`,
        );
      }
      settle(data);
      return data;
    },
    set: settle,
    enumerable: true,
    configurable: true,
  });
  return t;
}

const EMPTY = new Float32Array(0);

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
  return new DenseTensor(values, [...shape]);
}

/**
 * Stacks tensors of one shape along a new leading axis (as `torch.stack`).
 *
 * @example
 * ```ts
 * import { stack, tensor } from "./tensor.ts";
 * stack([tensor(null, [2, 3]), tensor(null, [2, 3])]).shape; // [2, 2, 3]
 * ```
 */
export function stack(parts: Tensor[]): Tensor {
  if (parts.length === 0) throw new RangeError("stack needs at least one tensor");
  const shape = parts[0].shape;
  const size = numel(shape);
  const data = new Float32Array(parts.length * size);
  parts.forEach((t, i) => {
    if (t.shape.length !== shape.length || t.shape.some((d, j) => d !== shape[j])) {
      throw new RangeError(`stack: tensor ${i} has shape [${t.shape}], expected [${shape}]`);
    }
    data.set(t.data, i * size);
  });
  return new DenseTensor(data, [parts.length, ...shape]);
}

/**
 * The sub-tensor at the given leading indices, copied: `select(W_Q, 4, 11)` is TransformerLens's
 * `W_Q[4, 11]`, shape [d_model, d_head].
 *
 * @example
 * ```ts
 * import { select, tensor } from "./tensor.ts";
 * const t = tensor(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
 * select(t, 1).data; // Float32Array [4, 5, 6]
 * ```
 */
export function select(t: Tensor, ...indices: number[]): Tensor {
  if (indices.length > t.shape.length) {
    throw new RangeError(
      `select: ${indices.length} indices for a tensor of rank ${t.shape.length}`,
    );
  }
  let offset = 0;
  indices.forEach((i, axis) => {
    const dim = t.shape[axis];
    if (!Number.isInteger(i) || i < 0 || i >= dim) {
      throw new RangeError(`select: index ${i} out of range [0, ${dim}) on axis ${axis}`);
    }
    offset = offset * dim + i;
  });
  const rest = t.shape.slice(indices.length);
  const size = numel(rest);
  return new DenseTensor(t.data.slice(offset * size, (offset + 1) * size), rest);
}

/**
 * The transpose of a row-major [rows, cols] matrix, as a [cols, rows] array: a new one, or `out`
 * (rows x cols long, not overlapping `a`) when given, so that a loader can write straight into
 * its parameters without a temporary copy. Blocked, so both sides stay in cache even for a 50257
 * x 768 unembedding.
 *
 * @example
 * ```ts
 * import { transpose2d } from "./tensor.ts";
 * transpose2d(new Float32Array([1, 2, 3, 4, 5, 6]), 2, 3); // Float32Array [1, 4, 2, 5, 3, 6]
 * const out = new Float32Array(6);
 * transpose2d(new Float32Array([1, 2, 3, 4, 5, 6]), 3, 2, out); // out: [1, 3, 5, 2, 4, 6]
 * ```
 */
export function transpose2d(
  a: Float32Array,
  rows: number,
  cols: number,
  out: Float32Array = new Float32Array(rows * cols),
): Float32Array {
  if (a.length !== rows * cols) {
    throw new RangeError(`transpose: ${a.length} values do not form a ${rows} x ${cols} matrix`);
  }
  if (out.length !== rows * cols) {
    throw new RangeError(`transpose: out holds ${out.length} values, not ${rows} x ${cols}`);
  }
  const B = 64;
  for (let i0 = 0; i0 < rows; i0 += B) {
    const i1 = Math.min(rows, i0 + B);
    for (let j0 = 0; j0 < cols; j0 += B) {
      const j1 = Math.min(cols, j0 + B);
      for (let i = i0; i < i1; i++) {
        for (let j = j0; j < j1; j++) out[j * rows + i] = a[i * cols + j];
      }
    }
  }
  return out;
}
