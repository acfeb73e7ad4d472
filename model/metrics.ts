/**
 * Metrics: scalar functions of a run's logits that the backward pass differentiates (and that
 * patching scores). A metric is `{ value(logits), grad(logits) }`; the built-ins
 * ({@linkcode lossMetric}, {@linkcode logitDiffMetric}, {@linkcode logProbMetric}) also carry a
 * chunked form, so a backward pass computes their value and gradient one chunk of logit rows at a
 * time, on the backend, without ever holding a `[batch, pos, d_vocab]` tensor.
 * @module
 */
import type { Backend, DeviceArray } from "../backend/backend.ts";
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { nextTokenRows } from "./loss.ts";
import type { Padding } from "./padding.ts";
import type { TokenTensor } from "./tokens.ts";

/** What a metric may read about the run it scores: its tokens (the loss needs them). */
export interface MetricRun {
  /** The run's tokens [batch, pos]. */
  tokens: TokenTensor;
  /** Where each sequence's real tokens are, in a padded batch (the loss skips pads). */
  padding?: Padding;
}

/**
 * A scalar function of the logits [batch, pos, d_vocab] and its gradient (the same shape), as
 * TransformerLens code writes metrics for gradients and attribution patching. The backward pass
 * seeds itself with `grad(logits)`; `value` must be finite.
 *
 * @example
 * ```ts
 * import type { Metric } from "./metrics.ts";
 * // The logit of token 7 at the last position of sequence 0.
 * const logit7: Metric = {
 *   value: (logits) => logits.data[(logits.shape[1] - 1) * logits.shape[2] + 7],
 *   grad: (logits) => {
 *     const g = new Float32Array(logits.data.length);
 *     g[(logits.shape[1] - 1) * logits.shape[2] + 7] = 1;
 *     return { data: g, shape: logits.shape };
 *   },
 * };
 * ```
 */
export interface Metric {
  /** The metric's value for these logits. */
  value(logits: Tensor, run?: MetricRun): number;
  /** d value / d logits, shaped like the logits. */
  grad(logits: Tensor, run?: MetricRun): Tensor;
}

/**
 * The chunked form of a built-in metric for one run: the logit rows it reads, and per chunk of
 * those rows its share of the value and its gradient, computed on the backend.
 * @internal
 */
export interface ChunkedMetric {
  /** The rows (b * pos + t) whose logits the metric reads, in order. */
  rows: Int32Array;
  /**
   * Reads logits [count, d_vocab] of rows `rows[first .. first + count)` and writes d metric /
   * d logits for them into `grad` (same layout; a different array).
   */
  chunk(first: number, count: number, logits: DeviceArray, grad: DeviceArray): Promise<void>;
  /** The value, once every chunk was read. */
  value(): number;
}

const CHUNKED = Symbol("chunked metric");

/** A built-in metric: a {@linkcode Metric} that can also plan its chunked form. */
interface BuiltinMetric extends Metric {
  [CHUNKED](backend: Backend, run: MetricRun, dVocab: number): ChunkedMetric;
}

/**
 * The chunked form of `metric` for a run, or undefined for a metric of the user's own (which then
 * sees the full logits).
 * @internal
 */
export function chunkedMetric(
  metric: Metric,
  backend: Backend,
  run: MetricRun,
  dVocab: number,
): ChunkedMetric | undefined {
  return CHUNKED in metric ? (metric as BuiltinMetric)[CHUNKED](backend, run, dVocab) : undefined;
}

/** Throws an {@link InputError} unless `metric` has `value` and `grad` functions. */
export function checkMetric(metric: unknown, where: string): asserts metric is Metric {
  const m = metric as Metric;
  if (
    typeof metric !== "object" || metric === null || typeof m.value !== "function" ||
    typeof m.grad !== "function"
  ) {
    throw new InputError(
      `${where}: a metric is an object { value(logits): number, grad(logits): Tensor } ` +
        `(lossMetric(), logitDiffMetric(...) and logProbMetric(...) build the usual ones)`,
    );
  }
}

/** Options of {@link lossMetric}. */
export interface LossMetricOptions {
  /** Only predictions at positions t >= from count (default 0: all, as TransformerLens's loss). */
  from?: number;
  /** The tokens, when the metric is used outside a run (inside one, the run's tokens). */
  tokens?: TokenTensor;
}

/** Options of {@link logitDiffMetric} and {@link logProbMetric}. */
export interface PositionOptions {
  /** The position read in every sequence; negative counts from the end (default -1). */
  position?: number;
}

/** Position `p` (negative from the end) of sequences of length T. */
function resolvePosition(p: number, T: number, where: string): number {
  const t = p < 0 ? T + p : p;
  if (!Number.isInteger(p) || t < 0 || t >= T) {
    throw new InputError(`${where}: position ${p} is outside sequences of ${T} tokens`);
  }
  return t;
}

function idList(ids: ArrayLike<number>, where: string): Int32Array {
  if (ids === null || typeof ids !== "object" || typeof ids.length !== "number") {
    throw new InputError(`${where}: expected a list of token ids, got ${JSON.stringify(ids)}`);
  }
  return Int32Array.from(ids, (id, i) => {
    if (!Number.isInteger(id) || id < 0) {
      throw new InputError(`${where}: token id ${id} at index ${i} is not a non-negative integer`);
    }
    return id;
  });
}

function checkIds(ids: Int32Array, batch: number, dVocab: number, where: string): void {
  if (ids.length !== batch) {
    throw new InputError(`${where}: ${ids.length} token ids for a batch of ${batch} sequences`);
  }
  for (const id of ids) {
    if (id >= dVocab) throw new InputError(`${where}: token id ${id} is outside [0, ${dVocab})`);
  }
}

/** [batch, pos, d_vocab] of the logits, checked. */
function logitShape(logits: Tensor, where: string): [number, number, number] {
  if (!logits || !(logits.data instanceof Float32Array) || logits.shape?.length !== 3) {
    throw new InputError(`${where}: expected logits [batch, pos, d_vocab]`);
  }
  return logits.shape as [number, number, number];
}

/** log-sum-exp of `n` values at `x[off..]`, in float64. */
function logSumExp(x: Float32Array, off: number, n: number): number {
  let m = -Infinity;
  for (let j = 0; j < n; j++) m = Math.max(m, x[off + j]);
  let s = 0;
  for (let j = 0; j < n; j++) s += Math.exp(x[off + j] - m);
  return m + Math.log(s);
}

/**
 * A metric that is a weighted sum of cross-entropies: value = coef sum_i (lse(row rows[i]) -
 * logit[rows[i], targets[i]]), computed on full logits (JavaScript, float64) or chunked (backend).
 */
interface CrossEntropyRows {
  rows: Int32Array;
  targets: Int32Array;
  coef: number;
}

function crossEntropyValue(logits: Tensor, ce: CrossEntropyRows): number {
  const V = logits.shape[2];
  let v = 0;
  ce.rows.forEach((r, i) => {
    v += ce.coef * (logSumExp(logits.data, r * V, V) - logits.data[r * V + ce.targets[i]]);
  });
  return v;
}

function crossEntropyGrad(logits: Tensor, ce: CrossEntropyRows): Tensor {
  const V = logits.shape[2];
  const g = new Float32Array(logits.data.length);
  ce.rows.forEach((r, i) => {
    const lse = logSumExp(logits.data, r * V, V);
    for (let j = 0; j < V; j++) g[r * V + j] = ce.coef * Math.exp(logits.data[r * V + j] - lse);
    g[r * V + ce.targets[i]] -= ce.coef;
  });
  return { data: g, shape: [...logits.shape] };
}

function crossEntropyChunked(backend: Backend, ce: CrossEntropyRows, dVocab: number) {
  let value = 0;
  return {
    rows: ce.rows,
    async chunk(first: number, count: number, logits: DeviceArray, grad: DeviceArray) {
      const targets = ce.targets.subarray(first, first + count);
      const coef = new Float32Array(count).fill(ce.coef);
      // Both are enqueued before either is awaited (the gather reads the logits first).
      const [picked, lse] = await Promise.all([
        backend.takeAlongRows(logits, dVocab, targets),
        backend.crossEntropyGradRows(logits, count, dVocab, coef, targets, grad),
      ]);
      for (let i = 0; i < count; i++) value += ce.coef * (lse[i] - picked[i]);
    },
    value: () => value,
  };
}

/**
 * TransformerLens's loss as a metric: the mean over the batch and positions of the next-token
 * cross-entropy (`lm_cross_entropy_loss`), optionally only for predictions at positions
 * t >= `from` (t predicts token t + 1). Inside a run it reads the run's tokens, and in a padded
 * batch counts only positions where both t and t + 1 are real tokens (TL's attention-mask loss).
 *
 * @example
 * ```ts
 * import { HookedTransformer, lossMetric } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const tokens = [[2047, 5, 9, 13, 5, 9, 13]];
 * const { value, cache } = await model.runWithCache(tokens, {
 *   metric: lossMetric({ from: 3 }), // the loss on the repeated half only
 *   inclBwdCache: true,
 *   returnType: "none",
 *   namesFilter: (name) => name.endsWith("hook_mlp_out"),
 * });
 * cache.get("blocks.0.hook_mlp_out_grad").shape; // [1, 7, d_model]
 * value; // the loss
 * ```
 */
export function lossMetric(opts: LossMetricOptions = {}): Metric {
  const from = opts.from ?? 0;
  if (!Number.isInteger(from) || from < 0) {
    throw new InputError(`lossMetric: from must be a non-negative integer, got ${from}`);
  }
  const plan = (shape: readonly number[], run?: MetricRun): CrossEntropyRows => {
    const tokens = opts.tokens ?? run?.tokens;
    if (!tokens) {
      throw new InputError(
        "lossMetric: no tokens to predict: inside a run it reads the run's tokens; outside one " +
          "give them with lossMetric({ tokens })",
      );
    }
    const [B, T] = tokens.shape;
    if (shape[0] !== B || shape[1] !== T) {
      throw new InputError(`lossMetric: logits [${shape}] do not match tokens [${B}, ${T}]`);
    }
    const padding = opts.tokens ? undefined : run?.padding;
    const { rows, targets } = nextTokenRows(tokens.data, B, T, padding, from);
    if (rows.length === 0) {
      throw new InputError(
        `lossMetric: from ${from} leaves no prediction in ${T} tokens` +
          (padding ? " (counting real tokens only)" : ""),
      );
    }
    return { rows, targets, coef: 1 / rows.length };
  };
  const metric: BuiltinMetric = {
    value: (logits, run) => crossEntropyValue(logits, plan(logitShape(logits, "lossMetric"), run)),
    grad: (logits, run) => crossEntropyGrad(logits, plan(logitShape(logits, "lossMetric"), run)),
    [CHUNKED]: (backend, run, dVocab) =>
      crossEntropyChunked(backend, plan([...run.tokens.shape, dVocab], run), dVocab),
  };
  return metric;
}

/**
 * The mean over the batch of the log-probability of `targets[b]` at `position` (default the
 * last): TransformerLens users' "logprob of the answer" metric.
 *
 * @example
 * ```ts
 * import { logProbMetric } from "./metrics.ts";
 * const metric = logProbMetric([0], { position: -1 });
 * const logits = { data: new Float32Array([0, 0, 0, 0, 1, 0, 0, 0]), shape: [1, 2, 4] };
 * metric.value(logits); // log softmax([1, 0, 0, 0])[0] = 1 - log(e + 3)
 * ```
 */
export function logProbMetric(targets: ArrayLike<number>, opts: PositionOptions = {}): Metric {
  const where = "logProbMetric";
  const ids = idList(targets, where);
  const position = opts.position ?? -1;
  const plan = (shape: readonly number[]): CrossEntropyRows => {
    const [B, T, V] = shape;
    checkIds(ids, B, V, where);
    const t = resolvePosition(position, T, where);
    return {
      rows: Int32Array.from({ length: B }, (_, b) => b * T + t),
      targets: ids,
      coef: -1 / B,
    };
  };
  const metric: BuiltinMetric = {
    value: (logits) => crossEntropyValue(logits, plan(logitShape(logits, where))),
    grad: (logits) => crossEntropyGrad(logits, plan(logitShape(logits, where))),
    [CHUNKED]: (backend, run, dVocab) =>
      crossEntropyChunked(backend, plan([...run.tokens.shape, dVocab]), dVocab),
  };
  return metric;
}

/**
 * The mean over the batch of `logits[b, position, answer[b]] - logits[b, position, wrong[b]]`
 * (position default -1, the last): the logit difference of TransformerLens's IOI and attribution
 * patching demos.
 *
 * @example
 * ```ts
 * import { logitDiffMetric } from "./metrics.ts";
 * const metric = logitDiffMetric([2], [0]);
 * const logits = { data: new Float32Array([0, 0, 0, 5, 1, 0]), shape: [1, 2, 3] };
 * metric.value(logits); // 0 - 5 = -5: at the last position, logit 2 minus logit 0
 * ```
 */
export function logitDiffMetric(
  answerTokens: ArrayLike<number>,
  wrongTokens: ArrayLike<number>,
  opts: PositionOptions = {},
): Metric {
  const where = "logitDiffMetric";
  const answer = idList(answerTokens, where), wrong = idList(wrongTokens, where);
  if (answer.length !== wrong.length) {
    throw new InputError(
      `${where}: ${answer.length} answer tokens but ${wrong.length} wrong tokens (one each per ` +
        `sequence)`,
    );
  }
  const position = opts.position ?? -1;
  const plan = (shape: readonly number[]) => {
    const [B, T, V] = shape;
    checkIds(answer, B, V, where);
    checkIds(wrong, B, V, where);
    const t = resolvePosition(position, T, where);
    return { B, rows: Int32Array.from({ length: B }, (_, b) => b * T + t) };
  };
  const metric: BuiltinMetric = {
    value(logits) {
      const V = logitShape(logits, where)[2];
      const { B, rows } = plan(logits.shape);
      let v = 0;
      rows.forEach((r, b) => v += logits.data[r * V + answer[b]] - logits.data[r * V + wrong[b]]);
      return v / B;
    },
    grad(logits) {
      const V = logitShape(logits, where)[2];
      const { B, rows } = plan(logits.shape);
      const g = new Float32Array(logits.data.length);
      rows.forEach((r, b) => {
        g[r * V + answer[b]] += 1 / B;
        g[r * V + wrong[b]] -= 1 / B;
      });
      return { data: g, shape: [...logits.shape] };
    },
    [CHUNKED](backend, run, dVocab) {
      const { B, rows } = plan([...run.tokens.shape, dVocab]);
      let value = 0;
      return {
        rows,
        async chunk(first, count, logits, grad) {
          const a = answer.subarray(first, first + count), w = wrong.subarray(first, first + count);
          const [la, lw] = await Promise.all([
            backend.takeAlongRows(logits, dVocab, a),
            backend.takeAlongRows(logits, dVocab, w),
          ]);
          const g = new Float32Array(count * dVocab);
          for (let i = 0; i < count; i++) {
            value += (la[i] - lw[i]) / B;
            g[i * dVocab + a[i]] += 1 / B;
            g[i * dVocab + w[i]] -= 1 / B;
          }
          backend.write(grad, g);
        },
        value: () => value,
      };
    },
  };
  return metric;
}
