/**
 * Runs with gradients: one forward pass that records each block's input residual stream, the
 * metric's value and its gradient at the logits (one chunk of logit rows at a time for the
 * built-in metrics), and the backward pass (`backward.ts`). What `runWithCache({ inclBwdCache })`
 * and `runWithHooks({ bwdHooks })` run.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { backward } from "./backward.ts";
import { forward, LOGIT_CHUNK_ROWS, type ModelRuntime } from "./forward.ts";
import type { HookOptions } from "./hook_table.ts";
import type { Padding } from "./padding.ts";
import { type HookFn, HookNames, HookSession } from "./hooks.ts";
import { chunkedMetric, lossMetric, type Metric, type MetricRun } from "./metrics.ts";
import type { TokenTensor } from "./tokens.ts";

/** What a run with gradients returns besides the cache: TransformerLens's `return_type`. */
export type GradientReturnType = "logits" | "loss" | "both" | "none";

/** One run with gradients. */
export interface GradientRun {
  /** The tokens [batch, pos], validated. */
  tokens: TokenTensor;
  /** Forward hooks by full hook name, in the order they run. */
  fwdHooks?: ReadonlyMap<string, HookFn[]>;
  /** Backward hooks by full hook name: each sees the gradient and may return a replacement. */
  bwdHooks?: ReadonlyMap<string, HookFn[]>;
  /** Hook names whose activations to cache. */
  cacheNames?: ReadonlySet<string>;
  /** Hook names whose gradients to cache (as `<name>_grad`). */
  gradNames?: ReadonlySet<string>;
  /** What to differentiate; default TransformerLens's loss (then returnType must ask for it). */
  metric?: Metric;
  /** What to return besides the metric's value (default `"logits"`). */
  returnType?: GradientReturnType;
  /** The optional hook points that are on. */
  hookOptions?: Readonly<HookOptions>;
  /** Where each sequence's real tokens are, in a padded batch. */
  padding?: Padding;
}

/** What a run with gradients computed. */
export interface GradientResult {
  /** The metric's value (the loss when no metric was given). */
  value: number;
  /** Logits [batch, pos, d_vocab] when asked for ("logits", "both"), else null. */
  logits: Tensor | null;
  /** TransformerLens's loss, when asked for ("loss", "both"). */
  loss?: number;
  /** Cached activations, then gradients under `<name>_grad`, in visiting order. */
  cache: Map<string, Tensor>;
}

const RETURN_TYPES: readonly GradientReturnType[] = ["logits", "loss", "both", "none"];

/**
 * Runs forward, then backward from the metric (see {@linkcode GradientRun}). Throws an
 * {@link InputError} when the metric's value is not finite or its gradient has the wrong shape
 * or non-finite entries, and a `HookError` when a hook misbehaves; either way the model's memory
 * is released and the model keeps working.
 */
export async function runWithGradients(
  m: ModelRuntime,
  run: GradientRun,
): Promise<GradientResult> {
  const { backend, cfg, weights } = m;
  const returnType = run.returnType ?? "logits";
  if (!RETURN_TYPES.includes(returnType)) {
    throw new InputError(
      `returnType must be one of ${RETURN_TYPES.join(", ")}, got ${JSON.stringify(returnType)}`,
    );
  }
  const wantLoss = returnType === "loss" || returnType === "both";
  if (!run.metric && !wantLoss) {
    throw new InputError(
      `a backward pass needs a scalar to differentiate: returnType: "loss" (TransformerLens's ` +
        `loss) or a metric (lossMetric(), logitDiffMetric(...), logProbMetric(...), your own)`,
    );
  }
  const metric = run.metric ?? lossMetric();
  const { tokens } = run;
  const [batch, T] = tokens.shape;
  const rows = batch * T, d = cfg.dModel, V = cfg.dVocab;
  const names = new HookNames(cfg.nLayers);
  const hookOptions = run.hookOptions ?? {};
  const fwd = new HookSession(backend, names, run.fwdHooks, run.cacheNames, {
    hookOptions,
    trackChanges: true,
  });
  const { padding } = run;
  const metricRun: MetricRun = { tokens, padding };
  // Full logits when they are returned, when the loss is asked beside another metric, or for a
  // metric of the user's own; else the built-in metric's chunked form.
  const keepLogits = returnType === "logits" || returnType === "both" ||
    (wantLoss && run.metric !== undefined);
  const chunked = keepLogits ? undefined : chunkedMetric(metric, backend, metricRun, V);

  using scope = backend.scope();
  const residPre = Array.from({ length: cfg.nLayers + 1 }, () => scope.alloc(rows * d));
  const dFinal = scope.alloc(rows * d);
  backend.write(dFinal, new Float32Array(rows * d));
  const chunkRows = Math.min(LOGIT_CHUNK_ROWS, chunked ? chunked.rows.length : rows);
  const grad = scope.alloc(chunkRows * V), dx = scope.alloc(chunkRows * d);
  let value: number;
  let logits: Tensor | null = null;
  if (chunked) {
    await forward(m, {
      batch,
      T,
      tokens,
      padding,
      record: { residPre },
      unembed: {
        rows: chunked.rows,
        each: async (first, count, lg, raw) => {
          const g = grad.at(0, count * V);
          await chunked.chunk(first, count, lg, g);
          // A final softcap (Gemma 2): the gradient at the uncapped logits.
          if (raw) backend.softcapBackward(raw, g, g, cfg.outputLogitsSoftCap!);
          backend.matmulTransposed(g, weights.W_U, dx, count);
          for (let i = 0; i < count; i++) {
            backend.copy(dx.at(i * d, d), dFinal.at(chunked.rows[first + i] * d, d));
          }
        },
      },
    }, fwd);
    value = chunked.value();
  } else {
    const out = new Float32Array(rows * V);
    const cap = cfg.outputLogitsSoftCap;
    const rawOut = cap ? new Float32Array(rows * V) : undefined;
    await forward(m, {
      batch,
      T,
      tokens,
      padding,
      record: { residPre },
      unembed: {
        each: async (r0, _count, lg, raw) => {
          await backend.readInto(lg, out, r0 * V);
          if (raw && rawOut) await backend.readInto(raw, rawOut, r0 * V);
        },
      },
    }, fwd);
    logits = { data: out, shape: [batch, T, V] };
    value = metric.value(logits, metricRun);
    let g = checkGrad(metric.grad(logits, metricRun), logits);
    if (cap && rawOut) {
      // A final softcap (Gemma 2): d/draw = d/dcapped (1 - tanh(raw / cap)^2), in float64.
      const data = new Float32Array(g.data.length);
      for (let i = 0; i < data.length; i++) {
        const t = Math.tanh(rawOut[i] / cap);
        data[i] = g.data[i] * (1 - t * t);
      }
      g = { data, shape: g.shape };
    }
    for (let r0 = 0; r0 < rows; r0 += chunkRows) {
      const count = Math.min(chunkRows, rows - r0);
      backend.write(grad, g.data.subarray(r0 * V, (r0 + count) * V));
      backend.matmulTransposed(grad.at(0, count * V), weights.W_U, dFinal.at(r0 * d), count);
    }
  }
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new InputError(
      `the metric's value is ${value}: a backward pass needs a finite number (check the ` +
        `metric for a log of 0 or a division by 0, and the hooks for NaN activations)`,
    );
  }
  const bwd = new HookSession(backend, names, run.bwdHooks, run.gradNames, {
    hookOptions,
    backward: true,
  });
  await backward(
    m,
    { batch, T, padding, residPre, dFinal, changes: fwd.changes, hookOptions },
    bwd,
  );

  const cache = new Map(fwd.cached);
  for (const [name, g] of bwd.cached) cache.set(`${name}_grad`, g);
  const loss = !wantLoss
    ? undefined
    : run.metric === undefined
    ? value
    : lossMetric().value(logits!, metricRun);
  return {
    value,
    logits: returnType === "logits" || returnType === "both" ? logits : null,
    loss,
    cache,
  };
}

/** The metric's gradient, checked: the logits' shape, finite values. */
function checkGrad(g: unknown, logits: Tensor): Tensor {
  const t = g as Tensor;
  if (
    typeof g !== "object" || g === null || !(t.data instanceof Float32Array) ||
    !Array.isArray(t.shape)
  ) {
    throw new InputError("the metric's grad(logits) must return a Tensor { data, shape }");
  }
  const same = t.shape.length === 3 && t.shape.every((n, i) => n === logits.shape[i]) &&
    t.data.length === logits.data.length;
  if (!same) {
    throw new InputError(
      `the metric's grad(logits) has shape [${t.shape}] (${t.data.length} values); it must have ` +
        `the logits' shape [${logits.shape}]`,
    );
  }
  const bad = t.data.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new InputError(`the metric's gradient is ${t.data[bad]} at index ${bad}: not finite`);
  }
  return t;
}
