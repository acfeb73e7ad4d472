/**
 * Tensor operations for analysis, on the library's own `Tensor { data: Float32Array, shape }`:
 * indexing and slicing (negative indices count from the end), reshape and permute, broadcasting
 * arithmetic and comparisons, reductions along any axis, softmax, top-k, matmul (on a backend's
 * kernels when large) and `einsum`. Enough to write ARENA's exercises without index loops:
 *
 * ```ts ignore
 * const lastLogits = index(logits, null, -1);             // logits[:, -1]  [batch, d_vocab]
 * const probs = softmax(lastLogits);                      // over the last axis
 * const { indices } = topk(probs, 5);                     // [batch, 5]
 * const dla = einsum("cbd,bd->cb", stack, directions);    // component x batch
 * ```
 *
 * Why not a JavaScript tensor library: the library is imported by URL with no npm access (the URL
 * import test forbids any npm download), so a dependency would have to be vendored; TensorFlow.js
 * keeps tensors in its own backend memory (every activation would be copied in and out, and
 * disposed by hand), and the small ndarray packages (scijs `ndarray`, `numjs`) are unmaintained.
 * These functions work on the arrays activations, weights and results already are, with no copy
 * on the way in. Results are new tensors (`reshape` alone shares its input's data, as torch's
 * `view`). Arithmetic is float32 with float64 accumulation in reductions and products.
 * @module
 */
import type { Backend } from "../backend/backend.ts";
import { InputError } from "./errors.ts";
import { numel, type Tensor, tensor, transpose2d } from "./tensor.ts";

// ---------------------------------------------------------------------------------------------
// Shapes and checks

/** Throws unless `t` is a `Tensor { data: Float32Array, shape }` whose data fits its shape. */
export function checkTensor(t: unknown, what: string): Tensor {
  const x = t as Tensor;
  if (
    typeof t !== "object" || t === null || !(x.data instanceof Float32Array) ||
    !Array.isArray(x.shape)
  ) {
    throw new InputError(`${what} must be a Tensor { data: Float32Array, shape }`);
  }
  if (x.shape.some((d) => !Number.isInteger(d) || d < 0) || x.data.length !== numel(x.shape)) {
    throw new InputError(`${what} has ${x.data.length} values but shape [${x.shape}]`);
  }
  return x;
}

/** A possibly negative axis as an index in [0, rank). */
export function normAxis(axis: number, rank: number, where: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(axis) || a < 0 || a >= rank) {
    throw new InputError(`${where}: axis ${axis} is outside [-${rank}, ${rank}) for rank ${rank}`);
  }
  return a;
}

/** Row-major strides of a shape. */
function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/**
 * The shape two shapes broadcast to (numpy's rules: align from the right, 1 stretches).
 *
 * @example
 * ```ts
 * import { broadcastShapes } from "./ops.ts";
 * broadcastShapes([2, 1, 4], [3, 1]); // [2, 3, 4]
 * ```
 */
export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1, y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) {
      throw new InputError(`shapes [${a}] and [${b}] do not broadcast (axis ${i}: ${x} vs ${y})`);
    }
    out[i] = x === 1 ? y : x;
  }
  return out;
}

/** Strides of `shape` read as `out` (0 on broadcast axes). */
function broadcastStrides(shape: readonly number[], out: readonly number[]): number[] {
  const own = stridesOf(shape);
  const off = out.length - shape.length;
  return out.map((_, i) => (i < off || shape[i - off] === 1) ? 0 : own[i - off]);
}

/** Calls `fn(outIndex, offsetA, offsetB)` over `out` in row-major order. */
function walk2(
  out: readonly number[],
  sa: readonly number[],
  sb: readonly number[],
  fn: (i: number, a: number, b: number) => void,
) {
  const n = numel(out), rank = out.length;
  const idx = new Array<number>(rank).fill(0);
  let a = 0, b = 0;
  for (let i = 0; i < n; i++) {
    fn(i, a, b);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      a += sa[d];
      b += sb[d];
      if (idx[d] < out[d]) break;
      a -= sa[d] * out[d];
      b -= sb[d] * out[d];
      idx[d] = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Construction

/**
 * A tensor from nested arrays of numbers (all rows of one length).
 *
 * @example
 * ```ts
 * import { fromNested } from "./ops.ts";
 * fromNested([[1, 2, 3], [4, 5, 6]]).shape; // [2, 3]
 * fromNested(7).shape; // []
 * ```
 */
export function fromNested(values: unknown): Tensor {
  const shape: number[] = [];
  let probe = values;
  while (Array.isArray(probe)) {
    shape.push(probe.length);
    probe = probe[0];
  }
  const data = new Float32Array(numel(shape));
  let k = 0;
  const fill = (v: unknown, depth: number) => {
    if (depth === shape.length) {
      if (typeof v !== "number") {
        throw new InputError(`fromNested: ${JSON.stringify(v)} is not a number`);
      }
      data[k++] = v;
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[depth]) {
      throw new InputError(
        `fromNested: ragged nesting at depth ${depth} (expected ${shape[depth]} entries)`,
      );
    }
    for (const x of v) fill(x, depth + 1);
  };
  fill(values, 0);
  return tensor(data, shape);
}

/**
 * The tensor as nested arrays of numbers (a scalar as a number), for printing and JSON.
 *
 * @example
 * ```ts
 * import { fromNested, toNested } from "./ops.ts";
 * toNested(fromNested([[1, 2], [3, 4]])); // [[1, 2], [3, 4]]
 * ```
 */
export function toNested(t: Tensor): unknown {
  checkTensor(t, "toNested: the tensor");
  if (t.shape.length === 0) return t.data[0];
  let k = 0;
  const build = (depth: number): unknown[] =>
    Array.from(
      { length: t.shape[depth] },
      () => depth === t.shape.length - 1 ? t.data[k++] : build(depth + 1),
    );
  return build(0);
}

/**
 * The single value of a one-element tensor (torch's `.item()`).
 *
 * @example
 * ```ts
 * import { item, sum, fromNested } from "./ops.ts";
 * item(sum(fromNested([1, 2, 3]))); // 6
 * ```
 */
export function item(t: Tensor): number {
  checkTensor(t, "item: the tensor");
  if (t.data.length !== 1) {
    throw new InputError(
      `item: the tensor has ${t.data.length} values (shape [${t.shape}]), not 1`,
    );
  }
  return t.data[0];
}

/**
 * A tensor of `shape` filled with `value` (default 0).
 *
 * @example
 * ```ts
 * import { full } from "./ops.ts";
 * full([2, 2], 1).data; // Float32Array [1, 1, 1, 1]
 * ```
 */
export function full(shape: number[], value = 0): Tensor {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new InputError(`full: bad shape [${shape}]`);
  }
  return tensor(new Float32Array(numel(shape)).fill(value), [...shape]);
}

/**
 * [start, stop) in steps (numpy's `arange`; one argument: [0, stop)).
 *
 * @example
 * ```ts
 * import { arange } from "./ops.ts";
 * arange(4).data; // Float32Array [0, 1, 2, 3]
 * arange(1, 7, 2).data; // Float32Array [1, 3, 5]
 * ```
 */
export function arange(start: number, stop?: number, step = 1): Tensor {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new InputError("arange: step must not be 0");
  const n = Math.max(0, Math.ceil((stop - start) / step));
  return tensor(Float32Array.from({ length: n }, (_, i) => start + i * step), [n]);
}

// ---------------------------------------------------------------------------------------------
// Shape operations

/**
 * The same values with another shape (one entry may be -1: inferred). Shares `t.data`, as torch's
 * `view` does: writing into one writes into the other.
 *
 * @example
 * ```ts
 * import { arange, reshape } from "./ops.ts";
 * reshape(arange(6), [2, -1]).shape; // [2, 3]
 * ```
 */
export function reshape(t: Tensor, shape: number[]): Tensor {
  checkTensor(t, "reshape: the tensor");
  const n = t.data.length;
  const free = shape.filter((d) => d === -1).length;
  if (free > 1 || shape.some((d) => !Number.isInteger(d) || d < -1)) {
    throw new InputError(`reshape: bad target shape [${shape}] (at most one -1)`);
  }
  const known = shape.reduce((p, d) => d === -1 ? p : p * d, 1);
  const out = shape.map((d) => d === -1 ? (known === 0 ? 0 : n / known) : d);
  if (numel(out) !== n || out.some((d) => !Number.isInteger(d))) {
    throw new InputError(`reshape: ${n} values (shape [${t.shape}]) cannot take shape [${shape}]`);
  }
  return tensor(t.data, out);
}

/**
 * The axes reordered: axis i of the result is axis `dims[i]` of `t` (torch's `permute`; negative
 * axes allowed). A copy.
 *
 * @example
 * ```ts
 * import { arange, permute, reshape } from "./ops.ts";
 * permute(reshape(arange(24), [2, 3, 4]), [2, 0, 1]).shape; // [4, 2, 3]
 * ```
 */
export function permute(t: Tensor, dims: number[]): Tensor {
  checkTensor(t, "permute: the tensor");
  const r = t.shape.length;
  const axes = dims.map((d) => normAxis(d, r, "permute"));
  if (axes.length !== r || new Set(axes).size !== r) {
    throw new InputError(`permute: [${dims}] is not a permutation of the ${r} axes`);
  }
  const shape = axes.map((a) => t.shape[a]);
  if (r === 2 && axes[0] === 1) return tensor(transpose2d(t.data, t.shape[0], t.shape[1]), shape);
  const src = stridesOf(t.shape);
  const out = new Float32Array(t.data.length);
  walk2(shape, axes.map((a) => src[a]), new Array(r).fill(0), (i, a) => out[i] = t.data[a]);
  return tensor(out, shape);
}

/**
 * Two axes swapped (default the last two: a matrix transpose). A copy.
 *
 * @example
 * ```ts
 * import { fromNested, toNested, transpose } from "./ops.ts";
 * toNested(transpose(fromNested([[1, 2, 3], [4, 5, 6]]))); // [[1, 4], [2, 5], [3, 6]]
 * ```
 */
export function transpose(t: Tensor, axis0 = -2, axis1 = -1): Tensor {
  checkTensor(t, "transpose: the tensor");
  const r = t.shape.length;
  const a = normAxis(axis0, r, "transpose"), b = normAxis(axis1, r, "transpose");
  const dims = Array.from({ length: r }, (_, i) => i);
  [dims[a], dims[b]] = [dims[b], dims[a]];
  return permute(t, dims);
}

/** A range along one axis for {@link index}: Python's `start:stop:step` (each optional). */
export interface Range {
  /** First index (negative from the end; default 0, or the end for a negative step). */
  start?: number;
  /** End, exclusive (negative from the end; default the axis length). */
  stop?: number;
  /** Step (default 1; may be negative). */
  step?: number;
}

/**
 * One entry of {@link index}: a number selects (and drops the axis, negative from the end),
 * `null` keeps the whole axis, a {@link Range} slices, an array of numbers gathers those indices
 * along the axis, `"..."` stands for as many whole axes as needed.
 */
export type IndexSpec = number | null | Range | readonly number[] | "...";

/** The positions a spec picks along an axis of length n, and whether the axis stays. */
function specIndices(spec: IndexSpec, n: number, axis: number): { ids: number[]; keep: boolean } {
  const fix = (i: number, what: string) => {
    const j = i < 0 ? i + n : i;
    if (!Number.isInteger(i) || j < 0 || j >= n) {
      throw new InputError(`index: ${what} ${i} is outside [-${n}, ${n}) on axis ${axis}`);
    }
    return j;
  };
  if (spec === null) return { ids: Array.from({ length: n }, (_, i) => i), keep: true };
  if (typeof spec === "number") return { ids: [fix(spec, "index")], keep: false };
  if (Array.isArray(spec)) return { ids: spec.map((i) => fix(i, "index")), keep: true };
  const r = spec as Range;
  const step = r.step ?? 1;
  if (!Number.isInteger(step) || step === 0) {
    throw new InputError(`index: range step must be a non-zero integer, got ${r.step}`);
  }
  const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
  const norm = (v: number) => v < 0 ? v + n : v;
  const start = r.start === undefined
    ? (step > 0 ? 0 : n - 1)
    : (step > 0 ? clamp(norm(r.start), 0, n) : clamp(norm(r.start), -1, n - 1));
  const stop = r.stop === undefined
    ? (step > 0 ? n : -1)
    : (step > 0 ? clamp(norm(r.stop), 0, n) : clamp(norm(r.stop), -1, n - 1));
  const ids: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) ids.push(i);
  return { ids, keep: true };
}

/**
 * Indexing as in torch, one spec per leading axis (missing trailing specs keep their axes):
 * `index(t, null, -1)` is `t[:, -1]`, `index(t, "...", { start: 2 })` is `t[..., 2:]`,
 * `index(t, [0, 2])` is `t[[0, 2]]`. Array specs on several axes each gather along their own axis
 * (an outer product, unlike torch's paired advanced indexing). A copy.
 *
 * @example
 * ```ts
 * import { arange, index, reshape, toNested } from "./ops.ts";
 * const t = reshape(arange(12), [3, 4]);
 * toNested(index(t, -1)); // [8, 9, 10, 11]
 * toNested(index(t, null, { start: 1, step: 2 })); // [[1, 3], [5, 7], [9, 11]]
 * toNested(index(t, [2, 0], -1)); // [11, 3]
 * ```
 */
export function index(t: Tensor, ...specs: IndexSpec[]): Tensor {
  checkTensor(t, "index: the tensor");
  const { shape, n, each } = indexed(t, specs, "index");
  const out = new Float32Array(n);
  each((k, o) => out[k] = t.data[o]);
  return tensor(out, shape);
}

/**
 * Index assignment, in place: `set(t, [null, null, h], 0)` is torch's `t[:, :, h] = 0`, and
 * `set(t, specs, value)` writes a tensor that broadcasts to the indexed region's shape (what
 * {@link index} with the same specs returns). Specs as {@link index}'s; a list repeating an index
 * writes it more than once (the last write stays). Returns `t`, changed; in a hook that is the
 * activation itself, so nothing need be returned.
 *
 * @example
 * ```ts
 * import { arange, reshape, set, toNested } from "./ops.ts";
 * const t = reshape(arange(6), [2, 3]);
 * toNested(set(t, [null, 1], 0)); // [[0, 0, 2], [3, 0, 5]]
 * toNested(set(t, [-1], reshape(arange(3), [3]))); // [[0, 0, 2], [0, 1, 2]]
 * toNested(set(t, [null, { start: 1 }], reshape(arange(2), [2, 1]))); // [[0, 0, 0], [0, 1, 1]]
 * ```
 */
export function set(t: Tensor, specs: readonly IndexSpec[], value: TensorOrNumber): Tensor {
  checkTensor(t, "set: the tensor");
  if (!Array.isArray(specs)) {
    throw new InputError(
      "set: the index is a list of specs, one per axis (set(t, [null, 2], value) is t[:, 2] = value)",
    );
  }
  const { shape, n, each } = indexed(t, specs, "set");
  if (typeof value === "number") {
    each((_, o) => t.data[o] = value);
    return t;
  }
  const v = checkTensor(value, "set: the value");
  let src: Float32Array;
  try {
    const target = broadcastShapes(v.shape, shape);
    if (target.length !== shape.length || target.some((d, i) => d !== shape[i])) throw 0;
    src = new Float32Array(n);
    walk2(shape, broadcastStrides(v.shape, shape), broadcastStrides(v.shape, shape), (i, p) => {
      src[i] = v.data[p];
    });
  } catch {
    throw new InputError(
      `set: a value of shape [${v.shape}] does not broadcast to the indexed region [${shape}]`,
    );
  }
  each((k, o) => t.data[o] = src[k]);
  return t;
}

/** What a list of index specs picks in `t`: the result's shape, its size, and a walk over it. */
function indexed(t: Tensor, specs: readonly IndexSpec[], where: string) {
  const r = t.shape.length;
  const ell = specs.indexOf("...");
  if (ell !== specs.lastIndexOf("...")) throw new InputError(`${where}: at most one "..."`);
  const explicit = specs.length - (ell >= 0 ? 1 : 0);
  if (explicit > r) {
    throw new InputError(`${where}: ${explicit} indices for a tensor of rank ${r}`);
  }
  const full: IndexSpec[] = ell >= 0
    ? [...specs.slice(0, ell), ...new Array(r - explicit).fill(null), ...specs.slice(ell + 1)]
    : [...specs, ...new Array(r - specs.length).fill(null)];
  const picks = full.map((s, axis) => specIndices(s, t.shape[axis], axis));
  const src = stridesOf(t.shape);
  const counts = picks.map((p) => p.ids.length);
  const n = numel(counts);
  // Offsets of each axis's picks, then an odometer over them.
  const offs = picks.map((p, axis) => p.ids.map((i) => i * src[axis]));
  const each = (fn: (k: number, offset: number) => void) => {
    const idx = new Array<number>(r).fill(0);
    for (let k = 0; k < n; k++) {
      let o = 0;
      for (let d = 0; d < r; d++) o += offs[d][idx[d]];
      fn(k, o);
      for (let d = r - 1; d >= 0; d--) {
        if (++idx[d] < counts[d]) break;
        idx[d] = 0;
      }
    }
  };
  return { shape: counts.filter((_, d) => picks[d].keep), n, each };
}

/**
 * `t` sliced along one axis: Python's `start:stop:step` there (negative values from the end).
 *
 * @example
 * ```ts
 * import { arange, slice } from "./ops.ts";
 * slice(arange(10), 0, -3).data; // Float32Array [7, 8, 9]
 * ```
 */
export function slice(
  t: Tensor,
  axis: number,
  start?: number,
  stop?: number,
  step?: number,
): Tensor {
  checkTensor(t, "slice: the tensor");
  const a = normAxis(axis, t.shape.length, "slice");
  const specs: IndexSpec[] = new Array(a).fill(null);
  specs.push({ start, stop, step });
  return index(t, ...specs);
}

/**
 * The entries at `indices` along `axis` (torch's `index_select`; negative indices allowed).
 *
 * @example
 * ```ts
 * import { fromNested, take, toNested } from "./ops.ts";
 * toNested(take(fromNested([[1, 2, 3], [4, 5, 6]]), [2, 0], -1)); // [[3, 1], [6, 4]]
 * ```
 */
export function take(t: Tensor, indices: ArrayLike<number>, axis = 0): Tensor {
  checkTensor(t, "take: the tensor");
  const a = normAxis(axis, t.shape.length, "take");
  const specs: IndexSpec[] = new Array(a).fill(null);
  specs.push(Array.from(indices));
  return index(t, ...specs);
}

/**
 * Tensors joined along an existing axis (torch's `cat`).
 *
 * @example
 * ```ts
 * import { cat, fromNested } from "./ops.ts";
 * cat([fromNested([[1, 2]]), fromNested([[3, 4], [5, 6]])], 0).shape; // [3, 2]
 * ```
 */
export function cat(parts: Tensor[], axis = 0): Tensor {
  if (!Array.isArray(parts) || parts.length === 0) {
    throw new InputError("cat needs at least one tensor");
  }
  parts.forEach((p, i) => checkTensor(p, `cat: tensor ${i}`));
  const r = parts[0].shape.length;
  const a = normAxis(axis, r, "cat");
  for (const [i, p] of parts.entries()) {
    if (p.shape.length !== r || p.shape.some((d, j) => j !== a && d !== parts[0].shape[j])) {
      throw new InputError(
        `cat: tensor ${i} has shape [${p.shape}], incompatible with [${
          parts[0].shape
        }] along axis ${a}`,
      );
    }
  }
  const shape = [...parts[0].shape];
  shape[a] = parts.reduce((s, p) => s + p.shape[a], 0);
  const outer = numel(shape.slice(0, a));
  const out = new Float32Array(numel(shape));
  let k = 0;
  for (let o = 0; o < outer; o++) {
    for (const p of parts) {
      const block = numel(p.shape.slice(a));
      out.set(p.data.subarray(o * block, (o + 1) * block), k);
      k += block;
    }
  }
  return tensor(out, shape);
}

// ---------------------------------------------------------------------------------------------
// Elementwise

/** A tensor or a number (broadcast everywhere). */
export type TensorOrNumber = Tensor | number;

function asTensor(x: TensorOrNumber, what: string): Tensor {
  return typeof x === "number" ? { data: Float32Array.of(x), shape: [] } : checkTensor(x, what);
}

function binary(
  a: TensorOrNumber,
  b: TensorOrNumber,
  f: (x: number, y: number) => number,
  name: string,
): Tensor {
  const x = asTensor(a, `${name}: the first operand`),
    y = asTensor(b, `${name}: the second operand`);
  const sameShape = x.shape.length === y.shape.length && x.shape.every((d, i) => d === y.shape[i]);
  if (sameShape) {
    const out = new Float32Array(x.data.length);
    for (let i = 0; i < out.length; i++) out[i] = f(x.data[i], y.data[i]);
    return tensor(out, [...x.shape]);
  }
  const shape = broadcastShapes(x.shape, y.shape);
  const out = new Float32Array(numel(shape));
  walk2(shape, broadcastStrides(x.shape, shape), broadcastStrides(y.shape, shape), (i, p, q) => {
    out[i] = f(x.data[p], y.data[q]);
  });
  return tensor(out, shape);
}

/**
 * a + b, broadcasting (either may be a number).
 *
 * @example
 * ```ts
 * import { add, fromNested, toNested } from "./ops.ts";
 * toNested(add(fromNested([[1], [2]]), fromNested([10, 20]))); // [[11, 21], [12, 22]]
 * ```
 */
export function add(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x + y, "add");
}
/**
 * a - b, broadcasting.
 *
 * @example
 * ```ts
 * import { sub, fromNested } from "./ops.ts";
 * sub(fromNested([3, 4]), 1).data; // Float32Array [2, 3]
 * ```
 */
export function sub(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x - y, "sub");
}
/**
 * a * b elementwise, broadcasting.
 *
 * @example
 * ```ts
 * import { mul, fromNested } from "./ops.ts";
 * mul(fromNested([3, 4]), fromNested([2, 0.5])).data; // Float32Array [6, 2]
 * ```
 */
export function mul(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x * y, "mul");
}
/**
 * a / b elementwise, broadcasting.
 *
 * @example
 * ```ts
 * import { div, fromNested } from "./ops.ts";
 * div(fromNested([3, 4]), 2).data; // Float32Array [1.5, 2]
 * ```
 */
export function div(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x / y, "div");
}
/**
 * a ** b elementwise, broadcasting.
 *
 * @example
 * ```ts
 * import { pow, fromNested } from "./ops.ts";
 * pow(fromNested([3, 4]), 2).data; // Float32Array [9, 16]
 * ```
 */
export function pow(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x ** y, "pow");
}
/**
 * The larger of a and b elementwise, broadcasting.
 *
 * @example
 * ```ts
 * import { maximum, fromNested } from "./ops.ts";
 * maximum(fromNested([-1, 4]), 0).data; // Float32Array [0, 4]
 * ```
 */
export function maximum(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => (x > y || Number.isNaN(x)) ? x : y, "maximum");
}
/**
 * The smaller of a and b elementwise, broadcasting.
 *
 * @example
 * ```ts
 * import { minimum, fromNested } from "./ops.ts";
 * minimum(fromNested([-1, 4]), 0).data; // Float32Array [-1, 0]
 * ```
 */
export function minimum(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => (x < y || Number.isNaN(x)) ? x : y, "minimum");
}
/**
 * 1 where a == b, else 0, broadcasting.
 *
 * @example
 * ```ts
 * import { eq, fromNested } from "./ops.ts";
 * eq(fromNested([1, 2, 3]), 2).data; // Float32Array [0, 1, 0]
 * ```
 */
export function eq(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x === y ? 1 : 0, "eq");
}
/**
 * 1 where a != b, else 0, broadcasting.
 *
 * @example
 * ```ts
 * import { ne, fromNested } from "./ops.ts";
 * ne(fromNested([1, 2, 3]), 2).data; // Float32Array [1, 0, 1]
 * ```
 */
export function ne(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x !== y ? 1 : 0, "ne");
}
/**
 * 1 where a > b, else 0, broadcasting.
 *
 * @example
 * ```ts
 * import { gt, fromNested } from "./ops.ts";
 * gt(fromNested([1, 2, 3]), 2).data; // Float32Array [0, 0, 1]
 * ```
 */
export function gt(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x > y ? 1 : 0, "gt");
}
/**
 * 1 where a >= b, else 0, broadcasting.
 *
 * @example
 * ```ts
 * import { ge, fromNested } from "./ops.ts";
 * ge(fromNested([1, 2, 3]), 2).data; // Float32Array [0, 1, 1]
 * ```
 */
export function ge(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x >= y ? 1 : 0, "ge");
}
/**
 * 1 where a < b, else 0, broadcasting.
 *
 * @example
 * ```ts
 * import { lt, fromNested } from "./ops.ts";
 * lt(fromNested([1, 2, 3]), 2).data; // Float32Array [1, 0, 0]
 * ```
 */
export function lt(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x < y ? 1 : 0, "lt");
}
/**
 * 1 where a <= b, else 0, broadcasting.
 *
 * @example
 * ```ts
 * import { le, fromNested } from "./ops.ts";
 * le(fromNested([1, 2, 3]), 2).data; // Float32Array [1, 1, 0]
 * ```
 */
export function le(a: TensorOrNumber, b: TensorOrNumber): Tensor {
  return binary(a, b, (x, y) => x <= y ? 1 : 0, "le");
}

/** Options of {@link allclose}. */
export interface AllcloseOptions {
  /** Relative tolerance (default 1e-5, as torch). */
  rtol?: number;
  /** Absolute tolerance (default 1e-8, as torch). */
  atol?: number;
  /** NaN equals NaN (default false, as torch). */
  equalNan?: boolean;
}

/**
 * Whether `|a - b| <= atol + rtol * |b|` everywhere, broadcasting (torch's `allclose`; `b` is
 * the reference, as there). An error when the shapes do not broadcast, as torch.
 *
 * @example
 * ```ts
 * import { allclose, fromNested } from "./ops.ts";
 * allclose(fromNested([1, 2]), fromNested([1, 2.000001])); // true
 * allclose(fromNested([1, 2]), fromNested([1, 2.1])); // false
 * allclose(fromNested([1, 2]), fromNested([1, 2.1]), { atol: 0.2 }); // true
 * ```
 */
export function allclose(
  a: TensorOrNumber,
  b: TensorOrNumber,
  opts: AllcloseOptions = {},
): boolean {
  const { rtol = 1e-5, atol = 1e-8, equalNan = false } = opts;
  if (!(rtol >= 0) || !(atol >= 0)) {
    throw new InputError(`allclose: rtol and atol must be >= 0, got ${rtol} and ${atol}`);
  }
  const close = binary(a, b, (x, y) => {
    if (Number.isNaN(x) || Number.isNaN(y)) return equalNan && x !== x && y !== y ? 1 : 0;
    if (x === y) return 1; // infinities of one sign
    return Math.abs(x - y) <= atol + rtol * Math.abs(y) ? 1 : 0;
  }, "allclose");
  return close.data.every((v) => v === 1);
}

/**
 * `a` where `condition` is non-zero, else `b` (torch's `where`), broadcasting all three.
 *
 * @example
 * ```ts
 * import { fromNested, gt, where } from "./ops.ts";
 * const x = fromNested([-2, 3, -1]);
 * where(gt(x, 0), x, 0).data; // Float32Array [0, 3, 0]
 * ```
 */
export function where(condition: Tensor, a: TensorOrNumber, b: TensorOrNumber): Tensor {
  const c = checkTensor(condition, "where: the condition");
  const x = asTensor(a, "where: a"), y = asTensor(b, "where: b");
  const shape = broadcastShapes(broadcastShapes(c.shape, x.shape), y.shape);
  const sc = broadcastStrides(c.shape, shape), sx = broadcastStrides(x.shape, shape);
  const sy = broadcastStrides(y.shape, shape);
  const out = new Float32Array(numel(shape));
  const at = (strides: number[], i: number) => {
    let off = 0;
    for (let d = shape.length - 1, rest = i; d >= 0; d--) {
      off += (rest % shape[d]) * strides[d];
      rest = Math.floor(rest / shape[d]);
    }
    return off;
  };
  for (let i = 0; i < out.length; i++) {
    out[i] = c.data[at(sc, i)] !== 0 ? x.data[at(sx, i)] : y.data[at(sy, i)];
  }
  return tensor(out, shape);
}

/**
 * `f` applied to every value (a copy).
 *
 * @example
 * ```ts
 * import { fromNested, map } from "./ops.ts";
 * map(fromNested([1, 4, 9]), Math.sqrt).data; // Float32Array [1, 2, 3]
 * ```
 */
export function map(t: Tensor, f: (x: number) => number): Tensor {
  checkTensor(t, "map: the tensor");
  return tensor(t.data.map(f), [...t.shape]);
}

/**
 * -t.
 *
 * @example
 * ```ts
 * import { neg, fromNested } from "./ops.ts";
 * neg(fromNested([1, -2])).data; // Float32Array [-1, 2]
 * ```
 */
export function neg(t: Tensor): Tensor {
  return map(t, (x) => -x);
}
/**
 * e^t elementwise.
 *
 * @example
 * ```ts
 * import { exp, fromNested } from "./ops.ts";
 * exp(fromNested([0])).data; // Float32Array [1]
 * ```
 */
export function exp(t: Tensor): Tensor {
  return map(t, Math.exp);
}
/**
 * Natural log elementwise.
 *
 * @example
 * ```ts
 * import { log, fromNested } from "./ops.ts";
 * log(fromNested([1])).data; // Float32Array [0]
 * ```
 */
export function log(t: Tensor): Tensor {
  return map(t, Math.log);
}
/**
 * |t| elementwise.
 *
 * @example
 * ```ts
 * import { abs, fromNested } from "./ops.ts";
 * abs(fromNested([-1.5, 2])).data; // Float32Array [1.5, 2]
 * ```
 */
export function abs(t: Tensor): Tensor {
  return map(t, Math.abs);
}
/**
 * Square root elementwise.
 *
 * @example
 * ```ts
 * import { sqrt, fromNested } from "./ops.ts";
 * sqrt(fromNested([4, 9])).data; // Float32Array [2, 3]
 * ```
 */
export function sqrt(t: Tensor): Tensor {
  return map(t, Math.sqrt);
}

// ---------------------------------------------------------------------------------------------
// Reductions

/** Options of the reductions. */
export interface ReduceOptions {
  /** Keep each reduced axis with length 1 (torch's `keepdim`; default false). */
  keepDim?: boolean;
}

/**
 * Reduces the given axes (all when undefined): the reduced values of each output position are
 * handed to `f` as a contiguous Float32Array (the axes are moved last first).
 */
function reduce(
  t: Tensor,
  axis: number | number[] | undefined,
  opts: ReduceOptions,
  name: string,
  f: (values: Float32Array) => number,
): Tensor {
  checkTensor(t, `${name}: the tensor`);
  const r = t.shape.length;
  const axes = axis === undefined
    ? Array.from({ length: r }, (_, i) => i)
    : [...new Set((Array.isArray(axis) ? axis : [axis]).map((a) => normAxis(a, r, name)))]
      .sort((a, b) => a - b);
  const kept = Array.from({ length: r }, (_, i) => i).filter((i) => !axes.includes(i));
  const trailing = axes.every((a, i) => a === r - axes.length + i);
  const moved = trailing ? t : permute(t, [...kept, ...axes]);
  const n = numel(axes.map((a) => t.shape[a]));
  const outer = numel(kept.map((a) => t.shape[a]));
  if (n === 0 && name !== "sum" && name !== "mean" && name !== "norm") {
    throw new InputError(`${name}: cannot reduce an empty axis`);
  }
  const out = new Float32Array(outer);
  for (let o = 0; o < outer; o++) out[o] = f(moved.data.subarray(o * n, (o + 1) * n));
  const shape = opts.keepDim
    ? t.shape.map((d, i) => axes.includes(i) ? 1 : d)
    : kept.map((a) => t.shape[a]);
  return tensor(out, shape);
}

function sum64(v: Float32Array): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  return s;
}

/**
 * The sum over `axis` (a number, a list, or all axes when omitted), accumulated in float64.
 *
 * @example
 * ```ts
 * import { fromNested, sum } from "./ops.ts";
 * const t = fromNested([[1, 2, 3], [4, 5, 6]]);
 * sum(t).data; // Float32Array [21]
 * sum(t, -1).data; // Float32Array [6, 15]
 * sum(t, 0, { keepDim: true }).shape; // [1, 3]
 * ```
 */
export function sum(t: Tensor, axis?: number | number[], opts: ReduceOptions = {}): Tensor {
  return reduce(t, axis, opts, "sum", sum64);
}

/**
 * The mean over `axis` (all axes when omitted), accumulated in float64.
 *
 * @example
 * ```ts
 * import { fromNested, mean } from "./ops.ts";
 * mean(fromNested([[1, 2], [3, 6]]), 0).data; // Float32Array [2, 4]
 * ```
 */
export function mean(t: Tensor, axis?: number | number[], opts: ReduceOptions = {}): Tensor {
  return reduce(t, axis, opts, "mean", (v) => sum64(v) / v.length);
}

/** Options of {@link norm}. */
export interface VectorNormOptions extends ReduceOptions {
  /** Which norm: 2 (default), 1 or `Infinity`. */
  ord?: number;
}

/**
 * The vector norm over `axis` (all axes when omitted), accumulated in float64: `ord` 2 (the
 * default, sqrt of the sum of squares), 1 (sum of absolute values) or `Infinity` (the largest
 * absolute value), as `torch.linalg.vector_norm` / `t.norm(dim=...)`.
 *
 * @example
 * ```ts
 * import { fromNested, norm } from "./ops.ts";
 * norm(fromNested([[3, 4], [6, 8]]), -1).data; // Float32Array [5, 10]
 * norm(fromNested([[3, -4]]), -1, { ord: 1 }).data; // Float32Array [7]
 * ```
 */
export function norm(
  t: Tensor,
  axis?: number | number[],
  opts: VectorNormOptions = {},
): Tensor {
  const ord = opts.ord ?? 2;
  if (ord !== 1 && ord !== 2 && ord !== Infinity) {
    throw new InputError(`norm: ord must be 1, 2 or Infinity, got ${ord}`);
  }
  return reduce(t, axis, { keepDim: opts.keepDim }, "norm", (v) => {
    let s = 0;
    for (let i = 0; i < v.length; i++) {
      const x = Math.abs(v[i]);
      if (ord === 2) s += x * x;
      else if (ord === 1) s += x;
      else if (x > s || Number.isNaN(x)) s = x;
    }
    return ord === 2 ? Math.sqrt(s) : s;
  });
}

/**
 * The largest value over `axis` (all axes when omitted; NaN wins, as torch).
 *
 * @example
 * ```ts
 * import { fromNested, max } from "./ops.ts";
 * max(fromNested([[1, 5], [7, 2]]), -1).data; // Float32Array [5, 7]
 * ```
 */
export function max(t: Tensor, axis?: number | number[], opts: ReduceOptions = {}): Tensor {
  return reduce(t, axis, opts, "max", (v) => {
    let m = -Infinity;
    for (let i = 0; i < v.length; i++) {
      if (Number.isNaN(v[i])) return NaN;
      if (v[i] > m) m = v[i];
    }
    return m;
  });
}

/**
 * The smallest value over `axis` (all axes when omitted; NaN wins, as torch).
 *
 * @example
 * ```ts
 * import { fromNested, min } from "./ops.ts";
 * min(fromNested([[1, 5], [7, 2]]), -1).data; // Float32Array [1, 2]
 * ```
 */
export function min(t: Tensor, axis?: number | number[], opts: ReduceOptions = {}): Tensor {
  return neg(max(neg(t), axis, opts));
}

/** Index of the first maximum (NaN counts as the maximum, as torch). */
function argmaxOf(v: Float32Array): number {
  let best = 0;
  for (let i = 0; i < v.length; i++) {
    if (Number.isNaN(v[i])) return i;
    if (v[i] > v[best]) best = i;
  }
  return best;
}

/**
 * Index of the largest value along `axis` (the first on ties, as torch), as a float tensor
 * (exact below 2^24); over the flattened tensor when `axis` is omitted.
 *
 * @example
 * ```ts
 * import { argmax, fromNested } from "./ops.ts";
 * argmax(fromNested([[1, 5], [7, 2]]), -1).data; // Float32Array [1, 0]
 * argmax(fromNested([[1, 5], [7, 2]])).data; // Float32Array [2]
 * ```
 */
export function argmax(t: Tensor, axis?: number, opts: ReduceOptions = {}): Tensor {
  checkTensor(t, "argmax: the tensor");
  if (axis === undefined) return reduce(reshape(t, [-1]), 0, {}, "argmax", argmaxOf);
  return reduce(t, axis, opts, "argmax", argmaxOf);
}

/**
 * Index of the smallest value along `axis` (the first on ties).
 *
 * @example
 * ```ts
 * import { argmin, fromNested } from "./ops.ts";
 * argmin(fromNested([[1, 5], [7, 2]]), -1).data; // Float32Array [0, 1]
 * ```
 */
export function argmin(t: Tensor, axis?: number, opts: ReduceOptions = {}): Tensor {
  return argmax(neg(t), axis, opts);
}

/** Options of {@link topk}. */
export interface TopkOptions {
  /** The axis (default -1). */
  axis?: number;
  /** Largest values first (default true); false: smallest first. */
  largest?: boolean;
}

/**
 * The k largest values along an axis and their indices, sorted (torch's `topk`; ties keep the
 * lower index first).
 *
 * @example
 * ```ts
 * import { fromNested, topk } from "./ops.ts";
 * const { values, indices } = topk(fromNested([0.1, 0.7, 0.2]), 2);
 * values.data; // Float32Array [0.7, 0.2] (in float32)
 * indices.data; // Float32Array [1, 2]
 * ```
 */
export function topk(
  t: Tensor,
  k: number,
  opts: TopkOptions = {},
): { values: Tensor; indices: Tensor } {
  checkTensor(t, "topk: the tensor");
  const r = t.shape.length;
  if (r === 0) throw new InputError("topk needs a tensor with at least one axis");
  const a = normAxis(opts.axis ?? -1, r, "topk");
  const n = t.shape[a];
  if (!Number.isInteger(k) || k < 0 || k > n) {
    throw new InputError(`topk: k = ${k} must be an integer in [0, ${n}] (the axis length)`);
  }
  const sign = opts.largest === false ? -1 : 1;
  const last = a === r - 1 ? t : transpose(t, a, -1);
  const outer = last.data.length / Math.max(n, 1);
  const values = new Float32Array(outer * k), indices = new Float32Array(outer * k);
  const order = new Int32Array(n);
  for (let o = 0; o < outer; o++) {
    const row = last.data.subarray(o * n, (o + 1) * n);
    for (let i = 0; i < n; i++) order[i] = i;
    const key = (i: number) => Number.isNaN(row[i]) ? Infinity : sign * row[i];
    const sorted = Array.from(order).sort((x, y) => key(y) - key(x) || x - y);
    for (let j = 0; j < k; j++) {
      values[o * k + j] = row[sorted[j]];
      indices[o * k + j] = sorted[j];
    }
  }
  const shape = [...last.shape.slice(0, -1), k];
  const back = (x: Float32Array) =>
    a === r - 1 ? { data: x, shape } : transpose({ data: x, shape }, a, -1);
  return { values: back(values), indices: back(indices) };
}

/**
 * Softmax along `axis` (default -1), computed in float64 per row.
 *
 * @example
 * ```ts
 * import { fromNested, softmax } from "./ops.ts";
 * softmax(fromNested([0, Math.log(3)])).data; // Float32Array [0.25, 0.75]
 * ```
 */
export function softmax(t: Tensor, axis = -1): Tensor {
  return alongAxis(t, axis, "softmax", (row, out) => {
    const m = rowMax(row);
    let s = 0;
    for (let i = 0; i < row.length; i++) s += Math.exp(row[i] - m);
    for (let i = 0; i < row.length; i++) out[i] = Math.exp(row[i] - m) / s;
  });
}

/**
 * Log-softmax along `axis` (default -1), computed in float64 per row.
 *
 * @example
 * ```ts
 * import { fromNested, logSoftmax } from "./ops.ts";
 * logSoftmax(fromNested([0, 0])).data; // Float32Array [-0.6931472, -0.6931472]
 * ```
 */
export function logSoftmax(t: Tensor, axis = -1): Tensor {
  return alongAxis(t, axis, "logSoftmax", (row, out) => {
    const m = rowMax(row);
    let s = 0;
    for (let i = 0; i < row.length; i++) s += Math.exp(row[i] - m);
    const lse = m + Math.log(s);
    for (let i = 0; i < row.length; i++) out[i] = row[i] - lse;
  });
}

function rowMax(row: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > m) m = row[i];
  return m === -Infinity ? 0 : m;
}

/** Applies `f(row, out)` to every row along `axis` (moved last and back). */
function alongAxis(
  t: Tensor,
  axis: number,
  name: string,
  f: (row: Float32Array, out: Float32Array) => void,
): Tensor {
  checkTensor(t, `${name}: the tensor`);
  const r = t.shape.length;
  if (r === 0) throw new InputError(`${name} needs a tensor with at least one axis`);
  const a = normAxis(axis, r, name);
  const x = a === r - 1 ? t : transpose(t, a, -1);
  const n = x.shape[r - 1];
  const out = new Float32Array(x.data.length);
  for (let o = 0; o < x.data.length; o += n) f(x.data.subarray(o, o + n), out.subarray(o, o + n));
  const y = { data: out, shape: [...x.shape] };
  return a === r - 1 ? y : transpose(y, a, -1);
}

// ---------------------------------------------------------------------------------------------
// Products

/** Products at least this many multiply-adds go to the backend when one is given. */
const BACKEND_MIN_MACS = 1 << 18;
/** Floats of A rows plus C rows held on the backend per block of a large product. */
const BACKEND_BLOCK_FLOATS = 1 << 21;

/**
 * C = A B for matrices A [m, k] and B [k, n] as Float32Arrays. A large product runs on the matmul
 * of `backend` when it is eager (WebAssembly; see `Backend.eager`), else of its eager companion
 * `backend.host` (the WebAssembly backend beside a WebGPU one), B packed once and A in row blocks
 * so memory stays bounded; so the result is the same on either device. Without an eager backend,
 * or for a small product, it runs in JavaScript with float64 accumulation.
 */
export function matmul2d(
  a: Float32Array,
  b: Float32Array,
  m: number,
  k: number,
  n: number,
  backend?: Backend,
): Float32Array {
  const out = new Float32Array(m * n);
  if (m === 0 || n === 0 || k === 0) return out;
  // A synchronous function can take the backend's result only from an eager backend, whose
  // readInto has written `out` when it returns (a GPU's would land after this returns): an
  // asynchronous backend's host companion runs the product instead.
  const eager = backend?.eager ? backend : backend?.host;
  if (eager?.eager && m * k * n >= BACKEND_MIN_MACS) {
    const backend = eager;
    using scope = backend.scope();
    const packed = scope.uploadMatrix(b, k, n);
    const rowsPer = Math.max(1, Math.min(m, Math.floor(BACKEND_BLOCK_FLOATS / (k + n))));
    const aBuf = scope.alloc(rowsPer * k);
    const cBuf = scope.alloc(rowsPer * n);
    for (let r0 = 0; r0 < m; r0 += rowsPer) {
      const rows = Math.min(rowsPer, m - r0);
      backend.write(aBuf, a.subarray(r0 * k, (r0 + rows) * k));
      backend.matmul(aBuf, packed, cBuf, rows);
      backend.readInto(cBuf.at(0, rows * n), out, r0 * n);
    }
    return out;
  }
  const acc = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    acc.fill(0);
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p];
      if (x === 0) continue;
      const row = p * n;
      for (let j = 0; j < n; j++) acc[j] += x * b[row + j];
    }
    out.set(acc, i * n);
  }
  return out;
}

/**
 * The matrix product as torch's `matmul`: 1-D operands are vectors, leading (batch) axes
 * broadcast. Large products run on `backend` (pass `model.backend`) when given: on its matmul
 * when it is eager (WebAssembly), on its eager host companion (`backend.host`) when it is not
 * (a WebGPU backend answers asynchronously, so a WebGPU model's products of host arrays run on
 * the WebAssembly backend beside it, with the same kernel and the same results as on `"wasm"`).
 * Without a backend, or with an asynchronous one that has no companion, they run in JavaScript
 * with float64 accumulation.
 *
 * @example
 * ```ts
 * import { fromNested, matmul, toNested } from "./ops.ts";
 * const a = fromNested([[1, 2], [3, 4]]);
 * toNested(matmul(a, a)); // [[7, 10], [15, 22]]
 * toNested(matmul(a, fromNested([1, 1]))); // [3, 7]
 * ```
 */
export function matmul(a: Tensor, b: Tensor, backend?: Backend): Tensor {
  checkTensor(a, "matmul: the left operand");
  checkTensor(b, "matmul: the right operand");
  if (a.shape.length === 0 || b.shape.length === 0) {
    throw new InputError("matmul: operands must have at least one axis (use mul for scalars)");
  }
  const aVec = a.shape.length === 1, bVec = b.shape.length === 1;
  const A = aVec ? reshape(a, [1, a.shape[0]]) : a;
  const B = bVec ? reshape(b, [b.shape[0], 1]) : b;
  const [m, k] = A.shape.slice(-2), [k2, n] = B.shape.slice(-2);
  if (k !== k2) {
    throw new InputError(`matmul: inner dimensions differ: [${a.shape}] @ [${b.shape}]`);
  }
  const lead = broadcastShapes(A.shape.slice(0, -2), B.shape.slice(0, -2));
  const batches = numel(lead);
  let data: Float32Array;
  if (B.shape.length === 2) {
    // B is shared by every batch: one product with the batches stacked as rows.
    data = matmul2d(A.data, B.data, batches * m, k, n, backend);
  } else {
    const ea = expandLead(A, lead), eb = expandLead(B, lead);
    data = new Float32Array(batches * m * n);
    for (let i = 0; i < batches; i++) {
      const ai = ea.data.subarray(i * m * k, (i + 1) * m * k);
      const bi = eb.data.subarray(i * k * n, (i + 1) * k * n);
      data.set(matmul2d(ai, bi, m, k, n, backend), i * m * n);
    }
  }
  const shape = [...lead, ...(aVec ? [] : [m]), ...(bVec ? [] : [n])];
  return tensor(data, shape);
}

/** `t` with its leading axes (all but the last two) broadcast to `lead` (a copy if needed). */
function expandLead(t: Tensor, lead: number[]): Tensor {
  const own = t.shape.slice(0, -2);
  const tail = t.shape.slice(-2);
  if (own.length === lead.length && own.every((d, i) => d === lead[i])) return t;
  const shape = [...lead, ...tail];
  const out = new Float32Array(numel(shape));
  const block = numel(tail);
  const s = broadcastStrides(own, lead);
  walk2(lead, s, s, (i, p) => out.set(t.data.subarray(p * block, (p + 1) * block), i * block));
  return tensor(out, shape);
}

/** Options of {@link einsum}, passed as its last argument. */
export interface EinsumOptions {
  /**
   * Runs the large contractions on this backend (pass `model.backend`), or on its eager host
   * companion when it is asynchronous (see {@link matmul}).
   */
  backend?: Backend;
}

/**
 * Einstein summation, in torch's letter form (`"bpd,dv->bpv"`, spaces ignored) or with
 * einops-style named axes as ARENA writes them (`"batch pos d_model, d_model d_vocab -> batch
 * pos d_vocab"`: names separated by spaces). Both take `...` for the axes a spec does not name
 * (`"... d, d v -> ... v"`, `"...ij,jk->...ik"`): they are aligned from the right across operands
 * and must agree in length (no stretching of length-1 axes); an output without `...` sums them, as
 * torch. Explicit output only (`->` is required), and no index repeated within one operand. A spec
 * is read as names when a term holds two names separated by spaces or a name has a digit or `_`;
 * otherwise as letters.
 * Operands are contracted left to right; each pair becomes one (batched) matmul after the axes are
 * moved into place, so the common patterns cost what the product costs. A final
 * `{ backend }` argument runs large contractions on the backend (a WebGPU backend's on its host
 * companion, as {@link matmul}).
 *
 * @example
 * ```ts
 * import { einsum, fromNested, toNested } from "./ops.ts";
 * const a = fromNested([[1, 2], [3, 4]]);
 * toNested(einsum("ij,jk->ik", a, a)); // [[7, 10], [15, 22]]
 * toNested(einsum("ij->j", a)); // [4, 6]
 * toNested(einsum("ij,ij->i", a, a)); // [5, 25]
 * toNested(einsum("row d_model, d_model col -> row col", a, a)); // [[7, 10], [15, 22]]
 * toNested(einsum("... d, d -> ...", a, fromNested([1, 1]))); // [3, 7]
 * ```
 */
export function einsum(spec: string, ...args: (Tensor | EinsumOptions)[]): Tensor {
  const last = args.at(-1);
  const opts: EinsumOptions = last && !("data" in (last as object))
    ? args.pop() as EinsumOptions
    : {};
  const operands = args.map((t, i) => checkTensor(t, `einsum: operand ${i}`));
  const { ins, out: outAxes, sizes } = parseEinsum(spec, operands);
  // Contract left to right, summing each index as soon as no later operand or the output needs it.
  let cur = { t: operands[0], axes: ins[0] };
  for (let i = 0; i <= operands.length - 1; i++) {
    const later = ins.slice(i + 1).join("") + outAxes;
    if (i > 0) cur = contract(cur, { t: operands[i], axes: ins[i] }, later, sizes, opts.backend);
    const drop = [...cur.axes].filter((c) => !later.includes(c));
    if (drop.length) {
      cur = {
        t: sum(cur.t, drop.map((c) => cur.axes.indexOf(c))),
        axes: [...cur.axes].filter((c) => !drop.includes(c)).join(""),
      };
    }
  }
  const order = [...outAxes].map((c) => cur.axes.indexOf(c));
  return order.every((o, i) => o === i) ? cur.t : permute(cur.t, order);
}

/**
 * An einsum spec, letters or names, as one character per axis (names and `...` axes get private
 * characters), checked against the operands: ranks, sizes, repeats and the output.
 */
function parseEinsum(
  spec: string,
  operands: Tensor[],
): { ins: string[]; out: string; sizes: Map<string, number> } {
  if (typeof spec !== "string") throw new InputError("einsum: the spec must be a string");
  const sides = spec.split("->");
  if (sides.length !== 2) {
    throw new InputError(
      `einsum: "${spec}" is not an explicit spec like "bpd,dv->bpv" or "batch pos d_model, ` +
        `d_model d_vocab -> batch pos d_vocab" (one "->")`,
    );
  }
  const terms = sides[0].split(",");
  if (terms.length !== operands.length) {
    throw new InputError(
      `einsum: "${spec}" names ${terms.length} operands, got ${operands.length}`,
    );
  }
  const all = [...terms, sides[1]];
  const named = all.some((t) => /\S\s+\S/.test(t.trim())) ||
    /[0-9_]/.test(spec);
  const ELL = "...";
  const tokens = all.map((term) => {
    const toks = named
      ? term.replaceAll(ELL, ` ${ELL} `).trim().split(/\s+/).filter((x) => x !== "")
      : term.replace(/\s+/g, "").split(/(\.\.\.)/).flatMap((x) => x === ELL ? [x] : [...x]);
    for (const tok of toks) {
      const ok = tok === ELL ||
        (named ? /^[A-Za-z_][A-Za-z0-9_]*$/.test(tok) : /^[A-Za-z]$/.test(tok));
      if (!ok) {
        throw new InputError(
          `einsum: "${tok}" in "${spec}" is not ${named ? "an axis name" : "a letter"} or "..."`,
        );
      }
    }
    if (toks.filter((x) => x === ELL).length > 1) {
      throw new InputError(`einsum: "${term.trim()}" has more than one "..."`);
    }
    const names = toks.filter((x) => x !== ELL);
    const twice = names.find((x, i) => names.indexOf(x) !== i);
    if (twice !== undefined) {
      throw new InputError(
        `einsum: "${term.trim()}" repeats the index ${twice} (diagonals are not supported)`,
      );
    }
    return toks;
  });
  // Letters stand for themselves; names and "..." axes get private characters.
  const charOf = new Map<string, string>();
  const ch = (name: string) => {
    let c = charOf.get(name);
    if (c === undefined) {
      c = named ? String.fromCharCode(0x100 + charOf.size) : name;
      charOf.set(name, c);
    }
    return c;
  };
  const ellLen = tokens.slice(0, -1).map((toks, i) => {
    const has = toks.includes(ELL);
    const k = operands[i].shape.length - (toks.length - (has ? 1 : 0));
    if (k < 0 || (!has && k !== 0)) {
      throw new InputError(
        `einsum: operand ${i} has shape [${operands[i].shape}] but "${terms[i].trim()}" names ${
          toks.length - (has ? 1 : 0)
        } axes${has ? " and ..." : ""}`,
      );
    }
    return k;
  });
  const maxEll = Math.max(0, ...ellLen);
  const ellChars = Array.from({ length: maxEll }, (_, j) => String.fromCharCode(0x3000 + j));
  const sizes = new Map<string, number>();
  const nameOf = new Map<string, string>();
  const ins = tokens.slice(0, -1).map((toks, i) => {
    const chars = toks.flatMap((x) => x === ELL ? ellChars.slice(maxEll - ellLen[i]) : [ch(x)]);
    chars.forEach((c, j) => {
      const d = operands[i].shape[j];
      const known = sizes.get(c);
      if (!nameOf.has(c)) {
        nameOf.set(c, c >= "\u3000" ? `... axis ${j}` : [...charOf].find(([, v]) => v === c)![0]);
      }
      if (known !== undefined && known !== d) {
        throw new InputError(
          `einsum: index ${
            nameOf.get(c)
          } has size ${known} in one operand and ${d} in operand ${i}`,
        );
      }
      sizes.set(c, d);
    });
    return chars.join("");
  });
  const outToks = tokens.at(-1)!;
  const outNames = outToks.filter((x) => x !== ELL);
  const unknown = outNames.find((x) => !charOf.has(x));
  if (
    unknown !== undefined ||
    (outToks.includes(ELL) && tokens.slice(0, -1).every((t) => !t.includes(ELL)))
  ) {
    throw new InputError(
      `einsum: the output "${sides[1].trim()}" names ${unknown ?? "..."}, which no operand has`,
    );
  }
  const out = outToks.flatMap((x) => x === ELL ? ellChars : [charOf.get(x)!]).join("");
  return { ins, out, sizes };
}

/** x (axes a) times y (axes b) summed over the indices they share that `keep` does not name. */
function contract(
  x: { t: Tensor; axes: string },
  y: { t: Tensor; axes: string },
  keep: string,
  sizes: Map<string, number>,
  backend: Backend | undefined,
): { t: Tensor; axes: string } {
  const both = [...x.axes].filter((c) => y.axes.includes(c));
  const batch = both.filter((c) => keep.includes(c));
  const summed = both.filter((c) => !keep.includes(c));
  const left = [...x.axes].filter((c) => !both.includes(c));
  const right = [...y.axes].filter((c) => !both.includes(c));
  const size = (cs: string[]) => numel(cs.map((c) => sizes.get(c)!));
  const arrange = (s: { t: Tensor; axes: string }, order: string[]) => {
    const perm = order.map((c) => s.axes.indexOf(c));
    return perm.every((p, i) => p === i) ? s.t : permute(s.t, perm);
  };
  const xa = arrange(x, [...batch, ...left, ...summed]);
  const ya = arrange(y, [...batch, ...summed, ...right]);
  const B = size(batch), M = size(left), K = size(summed), N = size(right);
  const prod = matmul(
    { data: xa.data, shape: [B, M, K] },
    { data: ya.data, shape: [B, K, N] },
    backend,
  );
  const shape = [...batch, ...left, ...right].map((c) => sizes.get(c)!);
  return { t: { data: prod.data, shape }, axes: [...batch, ...left, ...right].join("") };
}
