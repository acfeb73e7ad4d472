/**
 * Tensor manipulation as torch names it, for the code ARENA's exercises write: `clone`,
 * `unsqueeze` / `squeeze` / `flatten` (views: they share the input's data, as `reshape`),
 * `expand` / `repeat`, `triu` / `tril` (causal masks), `diagonal`, and `gather` along an axis.
 * Index assignment (`t[:, :, h] = 0`) is `set` in `ops.ts`, beside `index`.
 * @module
 */
import { InputError } from "./errors.ts";
import { checkTensor, normAxis, reshape } from "./ops.ts";
import { numel, type Tensor, tensor } from "./tensor.ts";

function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Calls `fn(outIndex, srcOffset)` over `shape` in row-major order, `src` strides per axis. */
function walk(
  shape: readonly number[],
  src: readonly number[],
  fn: (i: number, p: number) => void,
) {
  const n = numel(shape), rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  let p = 0;
  for (let i = 0; i < n; i++) {
    fn(i, p);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      p += src[d];
      if (idx[d] < shape[d]) break;
      p -= src[d] * shape[d];
      idx[d] = 0;
    }
  }
}

/**
 * A copy with its own data (torch's `clone`).
 *
 * @example
 * ```ts
 * import { clone } from "./manipulation.ts";
 * import { fromNested } from "./ops.ts";
 * const a = fromNested([1, 2]);
 * const b = clone(a);
 * b.data[0] = 9;
 * a.data[0]; // 1
 * ```
 */
export function clone(t: Tensor): Tensor {
  checkTensor(t, "clone: the tensor");
  return tensor(t.data.slice(), [...t.shape]);
}

/**
 * A new axis of length 1 at `dim` (in [-rank - 1, rank], as torch). Shares `t`'s data.
 *
 * @example
 * ```ts
 * import { unsqueeze } from "./manipulation.ts";
 * import { tensor } from "./tensor.ts";
 * unsqueeze(tensor(null, [2, 3]), 1).shape; // [2, 1, 3]
 * unsqueeze(tensor(null, [2, 3]), -1).shape; // [2, 3, 1]
 * ```
 */
export function unsqueeze(t: Tensor, dim: number): Tensor {
  checkTensor(t, "unsqueeze: the tensor");
  const d = normAxis(dim, t.shape.length + 1, "unsqueeze");
  return reshape(t, [...t.shape.slice(0, d), 1, ...t.shape.slice(d)]);
}

/**
 * Without axes of length 1: all of them, or those named (an axis named whose length is not 1 is
 * kept, as torch). Shares `t`'s data.
 *
 * @example
 * ```ts
 * import { squeeze } from "./manipulation.ts";
 * import { tensor } from "./tensor.ts";
 * squeeze(tensor(null, [1, 3, 1])).shape; // [3]
 * squeeze(tensor(null, [1, 3, 1]), 0).shape; // [3, 1]
 * squeeze(tensor(null, [1, 3, 1]), 1).shape; // [1, 3, 1]
 * ```
 */
export function squeeze(t: Tensor, dim?: number | number[]): Tensor {
  checkTensor(t, "squeeze: the tensor");
  const r = t.shape.length;
  const named = dim === undefined
    ? null
    : new Set((Array.isArray(dim) ? dim : [dim]).map((a) => normAxis(a, r, "squeeze")));
  return reshape(t, t.shape.filter((d, i) => d !== 1 || (named !== null && !named.has(i))));
}

/**
 * Axes `startDim` to `endDim` (inclusive, negative from the end) merged into one (torch's
 * `flatten`). Shares `t`'s data.
 *
 * @example
 * ```ts
 * import { flatten } from "./manipulation.ts";
 * import { tensor } from "./tensor.ts";
 * flatten(tensor(null, [2, 3, 4])).shape; // [24]
 * flatten(tensor(null, [2, 3, 4]), 1).shape; // [2, 12]
 * flatten(tensor(null, [2, 3, 4]), 0, 1).shape; // [6, 4]
 * ```
 */
export function flatten(t: Tensor, startDim = 0, endDim = -1): Tensor {
  checkTensor(t, "flatten: the tensor");
  if (t.shape.length === 0) return reshape(t, [1]);
  const r = t.shape.length;
  const a = normAxis(startDim, r, "flatten"), b = normAxis(endDim, r, "flatten");
  if (a > b) throw new InputError(`flatten: startDim ${startDim} is after endDim ${endDim}`);
  const merged = numel(t.shape.slice(a, b + 1));
  return reshape(t, [...t.shape.slice(0, a), merged, ...t.shape.slice(b + 1)]);
}

/**
 * `t` broadcast to `shape` (torch's `expand`: axes of length 1 stretch, new axes go in front, -1
 * keeps an axis). A copy, since tensors here own their data.
 *
 * @example
 * ```ts
 * import { expand } from "./manipulation.ts";
 * import { fromNested, toNested } from "./ops.ts";
 * toNested(expand(fromNested([[1], [2]]), [2, 3])); // [[1, 1, 1], [2, 2, 2]]
 * expand(fromNested([1, 2]), [4, -1]).shape; // [4, 2]
 * ```
 */
export function expand(t: Tensor, shape: readonly number[]): Tensor {
  checkTensor(t, "expand: the tensor");
  const r = t.shape.length, n = shape.length;
  const bad = () =>
    new InputError(
      `expand: [${t.shape}] cannot expand to [${shape}] (only axes of length 1 stretch; ` +
        `new axes go in front; -1 keeps an axis)`,
    );
  if (n < r || !shape.every((d) => Number.isInteger(d) && d >= -1)) throw bad();
  const out = shape.map((d, i) => {
    const own = i - (n - r) >= 0 ? t.shape[i - (n - r)] : undefined;
    if (d === -1) {
      if (own === undefined) throw bad();
      return own;
    }
    if (own !== undefined && own !== 1 && own !== d) throw bad();
    return d;
  });
  const own = stridesOf(t.shape);
  const src = out.map((_, i) => {
    const j = i - (n - r);
    return j < 0 || t.shape[j] === 1 ? 0 : own[j];
  });
  const data = new Float32Array(numel(out));
  walk(out, src, (i, p) => data[i] = t.data[p]);
  return tensor(data, out);
}

/**
 * `t` tiled `sizes[i]` times along each axis (torch's `repeat`; extra sizes add leading axes).
 *
 * @example
 * ```ts
 * import { repeat } from "./manipulation.ts";
 * import { fromNested, toNested } from "./ops.ts";
 * toNested(repeat(fromNested([1, 2]), 2)); // [1, 2, 1, 2]
 * toNested(repeat(fromNested([1, 2]), 2, 1)); // [[1, 2], [1, 2]]
 * ```
 */
export function repeat(t: Tensor, ...sizes: number[]): Tensor {
  checkTensor(t, "repeat: the tensor");
  const r = t.shape.length, n = sizes.length;
  if (n < r || !sizes.every((s) => Number.isInteger(s) && s >= 0)) {
    throw new InputError(
      `repeat: give one non-negative integer count per axis of [${t.shape}] (or more, for new ` +
        `leading axes), got [${sizes}]`,
    );
  }
  const inShape = [...new Array(n - r).fill(1), ...t.shape];
  // Output axis i splits into (sizes[i], inShape[i]): walk that doubled shape.
  const split = inShape.flatMap((d, i) => [sizes[i], d]);
  const own = stridesOf(inShape);
  const src = inShape.flatMap((_, i) => [0, own[i]]);
  const data = new Float32Array(numel(split));
  walk(split, src, (i, p) => data[i] = t.data[p]);
  return tensor(data, inShape.map((d, i) => d * sizes[i]));
}

function triangle(t: Tensor, diagonal: number, upper: boolean, name: string): Tensor {
  checkTensor(t, `${name}: the tensor`);
  if (t.shape.length < 2) throw new InputError(`${name} needs at least 2 axes, got [${t.shape}]`);
  if (!Number.isInteger(diagonal)) {
    throw new InputError(`${name}: diagonal must be an integer, got ${diagonal}`);
  }
  const [rows, cols] = t.shape.slice(-2);
  const out = t.data.slice();
  for (let o = 0; o < out.length; o += rows * cols) {
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        if (upper ? j - i < diagonal : j - i > diagonal) out[o + i * cols + j] = 0;
      }
    }
  }
  return tensor(out, [...t.shape]);
}

/**
 * The upper triangle of the last two axes: entries with `j - i >= diagonal` kept, others 0
 * (torch's `triu`). `tril(ones, -1)` style masks included.
 *
 * @example
 * ```ts
 * import { triu } from "./manipulation.ts";
 * import { full, toNested } from "./ops.ts";
 * toNested(triu(full([3, 3], 1))); // [[1, 1, 1], [0, 1, 1], [0, 0, 1]]
 * toNested(triu(full([3, 3], 1), 1)); // [[0, 1, 1], [0, 0, 1], [0, 0, 0]]
 * ```
 */
export function triu(t: Tensor, diagonal = 0): Tensor {
  return triangle(t, diagonal, true, "triu");
}

/**
 * The lower triangle of the last two axes: entries with `j - i <= diagonal` kept, others 0
 * (torch's `tril`; `tril(ones([T, T]))` is the causal mask).
 *
 * @example
 * ```ts
 * import { tril } from "./manipulation.ts";
 * import { full, toNested } from "./ops.ts";
 * toNested(tril(full([3, 3], 1))); // [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
 * toNested(tril(full([2, 3], 1), -1)); // [[0, 0, 0], [1, 0, 0]]
 * ```
 */
export function tril(t: Tensor, diagonal = 0): Tensor {
  return triangle(t, diagonal, false, "tril");
}

/**
 * The diagonal of axes `dim1`, `dim2` (torch's `diagonal`: both axes removed, the diagonal
 * appended last; `offset` > 0 above the main diagonal, < 0 below).
 *
 * @example
 * ```ts
 * import { diagonal } from "./manipulation.ts";
 * import { fromNested, toNested } from "./ops.ts";
 * const m = fromNested([[1, 2, 3], [4, 5, 6]]);
 * toNested(diagonal(m)); // [1, 5]
 * toNested(diagonal(m, 1)); // [2, 6]
 * toNested(diagonal(m, -1)); // [4]
 * ```
 */
export function diagonal(t: Tensor, offset = 0, dim1 = 0, dim2 = 1): Tensor {
  checkTensor(t, "diagonal: the tensor");
  const r = t.shape.length;
  if (r < 2) throw new InputError(`diagonal needs at least 2 axes, got [${t.shape}]`);
  const a = normAxis(dim1, r, "diagonal"), b = normAxis(dim2, r, "diagonal");
  if (a === b) throw new InputError(`diagonal: dim1 and dim2 are both axis ${a}`);
  if (!Number.isInteger(offset)) {
    throw new InputError(`diagonal: offset must be an integer, got ${offset}`);
  }
  const rest = t.shape.map((_, i) => i).filter((i) => i !== a && i !== b);
  const len = Math.max(
    0,
    Math.min(t.shape[a] - Math.max(-offset, 0), t.shape[b] - Math.max(offset, 0)),
  );
  const own = stridesOf(t.shape);
  const base = Math.max(-offset, 0) * own[a] + Math.max(offset, 0) * own[b];
  const shape = [...rest.map((i) => t.shape[i]), len];
  const src = [...rest.map((i) => own[i]), own[a] + own[b]];
  const data = new Float32Array(numel(shape));
  walk(shape, src, (i, p) => data[i] = t.data[base + p]);
  return tensor(data, shape);
}

/** Integer indices as {@link gather} takes them: a `Tensor` or `{ data, shape }` of integers. */
export interface IndexTensor {
  /** The indices, row-major (integers; negative count from the end of the axis). */
  data: ArrayLike<number>;
  /** Their shape: `t`'s rank. */
  shape: number[];
}

/**
 * Values picked along `axis` by `index` (torch's `gather`): `out[i][j] = t[index[i][j]][j]` for
 * axis 0, `t[i][index[i][j]]` for axis 1. `index` has `t`'s rank, and no axis longer than `t`'s
 * except along `axis`; the result has `index`'s shape.
 *
 * @example
 * ```ts
 * import { gather } from "./manipulation.ts";
 * import { fromNested, toNested } from "./ops.ts";
 * const logProbs = fromNested([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]]);
 * const next = { data: [2, 0], shape: [2, 1] };
 * toNested(gather(logProbs, -1, next)); // [[0.7], [0.5]] (float32)
 * ```
 */
export function gather(t: Tensor, axis: number, index: IndexTensor): Tensor {
  checkTensor(t, "gather: the tensor");
  const r = t.shape.length;
  const a = normAxis(axis, r, "gather");
  const ish = index?.shape;
  if (
    !Array.isArray(ish) || !index.data || typeof index.data.length !== "number" ||
    index.data.length !== numel(ish)
  ) {
    throw new InputError("gather: index must be { data, shape } (a Tensor or integer array)");
  }
  if (ish.length !== r || ish.some((d, i) => i !== a && d > t.shape[i])) {
    throw new InputError(
      `gather: index of shape [${ish}] does not fit a tensor of shape [${t.shape}] along axis ` +
        `${a} (same rank, no axis longer except ${a})`,
    );
  }
  const own = stridesOf(t.shape);
  const src = ish.map((_, i) => i === a ? 0 : own[i]);
  const n = t.shape[a];
  const data = new Float32Array(numel(ish));
  walk(ish, src, (i, p) => {
    const k = index.data[i];
    const j = k < 0 ? k + n : k;
    if (!Number.isInteger(k) || j < 0 || j >= n) {
      throw new InputError(`gather: index ${k} is outside [-${n}, ${n}) on axis ${a}`);
    }
    data[i] = t.data[p + j * own[a]];
  });
  return tensor(data, [...ish]);
}

/**
 * Running sums along `axis` (torch's `cumsum`), accumulated in float64.
 *
 * @example
 * ```ts
 * import { cumsum } from "./manipulation.ts";
 * import { fromNested, toNested } from "./ops.ts";
 * toNested(cumsum(fromNested([[1, 2, 3], [4, 5, 6]]), -1)); // [[1, 3, 6], [4, 9, 15]]
 * toNested(cumsum(fromNested([[1, 2, 3], [4, 5, 6]]), 0)); // [[1, 2, 3], [5, 7, 9]]
 * ```
 */
export function cumsum(t: Tensor, axis: number): Tensor {
  checkTensor(t, "cumsum: the tensor");
  if (t.shape.length === 0) return clone(t);
  const a = normAxis(axis, t.shape.length, "cumsum");
  const n = t.shape[a];
  const inner = numel(t.shape.slice(a + 1));
  const outer = numel(t.shape.slice(0, a));
  const out = new Float32Array(t.data.length);
  const acc = new Float64Array(inner);
  for (let o = 0; o < outer; o++) {
    acc.fill(0);
    for (let i = 0; i < n; i++) {
      const base = (o * n + i) * inner;
      for (let j = 0; j < inner; j++) out[base + j] = acc[j] += t.data[base + j];
    }
  }
  return tensor(out, [...t.shape]);
}
