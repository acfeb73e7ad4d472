/**
 * Activation patching as TransformerLens's `patching` module: run the corrupted tokens, patch in
 * one piece of the clean run's activation, score the patched logits with a metric, for every
 * layer, position and head. `genericActivationPatch` does it for any hook point and index set;
 * `getActPatchResidPre`, `getActPatchAttnHeadOutByPos`, ... are its TransformerLens presets.
 *
 * The patched runs recompute only what a patch can change (`model/patched_runs.ts`): each starts
 * at the patched layer from the corrupted run's residual stream, computes only positions from the
 * patched one on, and runs batched with the other patches of its layer. The numbers equal a
 * `runWithHooks` loop over the patches (what TransformerLens runs) to float32 rounding.
 * @module
 */
import type { DeviceArray } from "../backend/backend.ts";
import { InputError } from "../core/errors.ts";
import { checkOptions } from "../core/options.ts";
import type { ProgressCallback } from "../core/progress.ts";
import { numel, stack, type Tensor } from "../core/tensor.ts";
import { permute } from "../core/ops.ts";
import type { ActivationCache } from "../model/activation_cache.ts";
import type { EditLayout } from "../model/forward.ts";
import {
  assertHookName,
  getActName,
  HOOK,
  hookName,
  type HookPoint,
  locateHook,
} from "../model/hook_table.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { type PatchGroup, runPatchGroups } from "../model/patched_runs.ts";
import { type Tokens, toTokenTensor } from "../model/tokens.ts";

/**
 * A patching metric: a function of the patched logits [batch, pos, d_vocab] to a number (or a
 * one-element tensor), or a metric object `{ value(logits), grad(logits) }` as the gradient
 * functions take (only `value` is used here).
 *
 * @example
 * ```ts
 * import type { PatchingMetric } from "./activation_patching.ts";
 * // Logit of token 9 at the last position of the first sequence.
 * const metric: PatchingMetric = (logits) => {
 *   const [, T, V] = logits.shape;
 *   return logits.data[(T - 1) * V + 9];
 * };
 * ```
 */
export type PatchingMetric =
  | ((logits: Tensor) => number | Tensor)
  | { value(logits: Tensor): number | Tensor; grad?(logits: Tensor): Tensor };

/**
 * Writes the clean values of one index into the corrupted activation (TransformerLens's patch
 * setters): `(corruptedActivation, index, cleanActivation)`, editing in place or returning the
 * patched tensor. Activations are [batch, ...] as the hook point's TransformerLens shape.
 */
export type PatchSetter = (corrupted: Tensor, index: number[], clean: Tensor) => Tensor | void;

/** The axes a patching grid iterates over (TransformerLens's `AxisNames`). */
export type AxisName = "layer" | "pos" | "head_index" | "head" | "src_pos" | "dest_pos";

/** Copies `clean` into `out` over the index box [lo[d], hi[d]) of a row-major `shape`. */
function copyBox(out: Tensor, clean: Tensor, lo: number[], hi: number[]) {
  const shape = out.shape;
  const inner = numel(shape.slice(lo.length));
  const idx = [...lo];
  const strides = shape.map((_, i) => numel(shape.slice(i + 1)));
  while (true) {
    let off = 0;
    for (let i = 0; i < idx.length; i++) off += idx[i] * strides[i];
    out.data.set(clean.data.subarray(off, off + inner), off);
    let d = idx.length - 1;
    while (d >= 0 && ++idx[d] >= hi[d]) idx[d--] = lo[d + 1];
    if (d < 0) return;
  }
}

function checkIndex(index: number[], n: number, what: string) {
  if (!Array.isArray(index) || index.length !== n) {
    throw new InputError(`${what} takes an index of ${n} numbers, got ${JSON.stringify(index)}`);
  }
}

/**
 * Patches `[:, pos]` for index [layer, pos] (activations [batch, pos, ...]).
 *
 * @example
 * ```ts
 * import { layerPosPatchSetter } from "./activation_patching.ts";
 * const corrupted = { data: new Float32Array(4), shape: [1, 2, 2] };
 * const clean = { data: new Float32Array([1, 2, 3, 4]), shape: [1, 2, 2] };
 * layerPosPatchSetter(corrupted, [0, 1], clean);
 * corrupted.data; // Float32Array [0, 0, 3, 4]
 * ```
 */
export const layerPosPatchSetter: PatchSetter = (corrupted, index, clean) => {
  checkIndex(index, 2, "layerPosPatchSetter");
  const [B] = corrupted.shape;
  copyBox(corrupted, clean, [0, index[1]], [B, index[1] + 1]);
};

/**
 * Patches `[:, pos, head]` for index [layer, pos, head] (activations [batch, pos, head, ...]).
 *
 * @example
 * ```ts
 * import { layerPosHeadVectorPatchSetter } from "./activation_patching.ts";
 * const z = { data: new Float32Array(8), shape: [1, 2, 2, 2] };
 * const clean = { data: Float32Array.from({ length: 8 }, (_, i) => i + 1), shape: [1, 2, 2, 2] };
 * layerPosHeadVectorPatchSetter(z, [0, 1, 0], clean);
 * z.data; // Float32Array [0, 0, 0, 0, 5, 6, 0, 0]
 * ```
 */
export const layerPosHeadVectorPatchSetter: PatchSetter = (corrupted, index, clean) => {
  checkIndex(index, 3, "layerPosHeadVectorPatchSetter");
  const [B] = corrupted.shape;
  copyBox(corrupted, clean, [0, index[1], index[2]], [B, index[1] + 1, index[2] + 1]);
};

/**
 * Patches `[:, :, head]` for index [layer, head] (activations [batch, pos, head, ...]).
 *
 * @example
 * ```ts
 * import { layerHeadVectorPatchSetter } from "./activation_patching.ts";
 * const z = { data: new Float32Array(8), shape: [1, 2, 2, 2] };
 * const clean = { data: Float32Array.from({ length: 8 }, (_, i) => i + 1), shape: [1, 2, 2, 2] };
 * layerHeadVectorPatchSetter(z, [0, 1], clean);
 * z.data; // Float32Array [0, 0, 3, 4, 0, 0, 7, 8]
 * ```
 */
export const layerHeadVectorPatchSetter: PatchSetter = (corrupted, index, clean) => {
  checkIndex(index, 2, "layerHeadVectorPatchSetter");
  const [B, T] = corrupted.shape;
  copyBox(corrupted, clean, [0, 0, index[1]], [B, T, index[1] + 1]);
};

/**
 * Patches `[:, head]` for index [layer, head] (patterns [batch, head, dest, src]).
 *
 * @example
 * ```ts
 * import { layerHeadPatternPatchSetter } from "./activation_patching.ts";
 * const p = { data: new Float32Array(8), shape: [1, 2, 2, 2] };
 * const clean = { data: new Float32Array(8).fill(1), shape: [1, 2, 2, 2] };
 * layerHeadPatternPatchSetter(p, [0, 1], clean);
 * p.data; // Float32Array [0, 0, 0, 0, 1, 1, 1, 1]
 * ```
 */
export const layerHeadPatternPatchSetter: PatchSetter = (corrupted, index, clean) => {
  checkIndex(index, 2, "layerHeadPatternPatchSetter");
  const [B] = corrupted.shape;
  copyBox(corrupted, clean, [0, index[1]], [B, index[1] + 1]);
};

/**
 * Patches `[:, head, dest]` for index [layer, head, dest_pos] (patterns [batch, head, dest, src]).
 *
 * @example
 * ```ts
 * import { layerHeadPosPatternPatchSetter } from "./activation_patching.ts";
 * const p = { data: new Float32Array(8), shape: [1, 2, 2, 2] };
 * const clean = { data: new Float32Array(8).fill(1), shape: [1, 2, 2, 2] };
 * layerHeadPosPatternPatchSetter(p, [0, 1, 0], clean);
 * p.data; // Float32Array [0, 0, 0, 0, 1, 1, 0, 0]
 * ```
 */
export const layerHeadPosPatternPatchSetter: PatchSetter = (corrupted, index, clean) => {
  checkIndex(index, 3, "layerHeadPosPatternPatchSetter");
  const [B] = corrupted.shape;
  copyBox(corrupted, clean, [0, index[1], index[2]], [B, index[1] + 1, index[2] + 1]);
};

/**
 * Patches `[:, head, dest, src]` for index [layer, head, dest_pos, src_pos].
 *
 * @example
 * ```ts
 * import { layerHeadDestSrcPosPatternPatchSetter } from "./activation_patching.ts";
 * const p = { data: new Float32Array(8), shape: [1, 2, 2, 2] };
 * const clean = { data: new Float32Array(8).fill(1), shape: [1, 2, 2, 2] };
 * layerHeadDestSrcPosPatternPatchSetter(p, [0, 1, 1, 0], clean);
 * p.data; // Float32Array [0, 0, 0, 0, 0, 0, 1, 0]
 * ```
 */
export const layerHeadDestSrcPosPatternPatchSetter: PatchSetter = (corrupted, index, clean) => {
  checkIndex(index, 4, "layerHeadDestSrcPosPatternPatchSetter");
  const [B] = corrupted.shape;
  const [, h, q, k] = index;
  copyBox(corrupted, clean, [0, h, q, k], [B, h + 1, q + 1, k + 1]);
};

/** Options of {@link genericActivationPatch}. */
export interface GenericPatchOptions {
  /** Writes the clean values of one index into the corrupted activation. */
  patchSetter: PatchSetter;
  /** The activation: a short name as `getActName` takes (`"resid_pre"`, `"z"`, `"pattern"`). */
  activationName: string;
  /** Axes to iterate over fully, layer first: the result has one axis per name. */
  indexAxisNames?: AxisName[];
  /** Or explicit index rows (TransformerLens's `index_df`), layer first: the result is flat. */
  indices?: number[][];
  /** Called after each layer's patches: `(layersDone, layers)`. */
  onProgress?: ProgressCallback;
  /** See {@link ActPatchOptions.logitPositions}. */
  logitPositions?: number[];
}

/** Options of the `getActPatch*` presets. */
export interface ActPatchOptions {
  /** Called after each layer's patches: `(layersDone, layers)`. */
  onProgress?: ProgressCallback;
  /**
   * The only positions whose logits the metric reads (negative: from the end), e.g. `[-1]` for
   * a metric of the last position: patched runs then unembed only those, which saves most of the
   * unembedding on a large vocabulary. The logits at other positions are the corrupted run's, so
   * a metric that reads them would be wrong. Default: every position (TransformerLens's).
   */
  logitPositions?: number[];
}

const SETTER_SHAPES = new Map<
  PatchSetter,
  "pos" | "posHead" | "head" | "patternHead" | "patternHeadDest" | "patternHeadDestSrc"
>([
  [layerPosPatchSetter, "pos"],
  [layerPosHeadVectorPatchSetter, "posHead"],
  [layerHeadVectorPatchSetter, "head"],
  [layerHeadPatternPatchSetter, "patternHead"],
  [layerHeadPosPatternPatchSetter, "patternHeadDest"],
  [layerHeadDestSrcPosPatternPatchSetter, "patternHeadDestSrc"],
]);

/** The value of a metric on logits, checked. */
function metricValue(metric: PatchingMetric, logits: Tensor, where: () => string): number {
  const out = typeof metric === "function" ? metric(logits) : metric.value(logits);
  let v: number;
  if (typeof out === "number") v = out;
  else if (out && out.data instanceof Float32Array && out.data.length === 1) v = out.data[0];
  else {
    throw new InputError(
      `the metric must return a number or a one-element Tensor, got ${
        out && typeof out === "object" && "shape" in out
          ? `a Tensor of shape [${out.shape}]`
          : typeof out
      }`,
    );
  }
  if (Number.isNaN(v)) {
    throw new InputError(
      `the metric returned NaN for ${where()}: check it on the clean and corrupted logits first`,
    );
  }
  return v;
}

function checkMetric(metric: unknown): PatchingMetric {
  if (typeof metric === "function") return metric as PatchingMetric;
  if (
    metric && typeof metric === "object" &&
    typeof (metric as { value?: unknown }).value === "function"
  ) {
    return metric as PatchingMetric;
  }
  throw new InputError(
    "the metric must be a function of the logits, or an object with value(logits)",
  );
}

/**
 * Activation patching for any hook point and set of indices (TransformerLens's
 * `generic_activation_patch`): for every index (layer first), run `corruptedTokens` with the
 * activation `activationName` of that layer patched by `patchSetter` from `cleanCache`, and
 * score the logits with `metric`. With `indexAxisNames` the result has one axis per name (layer,
 * pos, head, ...); with `indices` it is flat, one value per row.
 *
 * The library's setters (`layerPosPatchSetter`, ...) run as resumed, batched runs that compute
 * only what the patch can change; any other setter runs as a hook on batched runs from the
 * patched layer.
 *
 * @example
 * ```ts
 * import {
 *   genericActivationPatch,
 *   HookedTransformer,
 *   layerPosPatchSetter,
 * } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const clean = [[2047, 5, 9, 13, 5, 9]], corrupted = [[2047, 6, 9, 13, 5, 9]];
 * const { cache } = await model.runWithCache(clean);
 * const metric = (logits: { data: Float32Array; shape: number[] }) => {
 *   const [, T, V] = logits.shape;
 *   return logits.data[(T - 1) * V + 13]; // the logit of the induction answer
 * };
 * const grid = await genericActivationPatch(model, corrupted, cache, metric, {
 *   patchSetter: layerPosPatchSetter,
 *   activationName: "resid_pre",
 *   indexAxisNames: ["layer", "pos"],
 * });
 * grid.shape; // [n_layers, 6]
 * ```
 */
export async function genericActivationPatch(
  model: HookedTransformer,
  corruptedTokens: Tokens,
  cleanCache: ActivationCache,
  metric: PatchingMetric,
  opts: GenericPatchOptions,
): Promise<Tensor> {
  checkOptions(
    opts,
    ["patchSetter", "activationName", "indexAxisNames", "indices", "onProgress", "logitPositions"],
    "genericActivationPatch",
  );
  await Promise.resolve();
  checkMetric(metric);
  if (typeof opts?.patchSetter !== "function") {
    throw new InputError("genericActivationPatch: patchSetter must be a function");
  }
  const cfg = model.cfg;
  const tokens = toTokenTensor(corruptedTokens, cfg);
  const [B, T] = tokens.shape;
  const nameOf = (l: number) => getActName(opts.activationName, l, undefined, cfg.nLayers);
  const known = new Set(model.hookNames);
  assertHookName(nameOf(0), known, cfg);
  const point = locateHook(nameOf(0))!.point;
  const heads = point === HOOK.k || point === HOOK.v ? cfg.nKeyValueHeads : cfg.nHeads;

  // The index rows, and the result's shape.
  let rows: number[][], shape: number[];
  if (opts.indexAxisNames !== undefined) {
    if (opts.indices !== undefined) {
      throw new InputError("give indexAxisNames or indices, not both");
    }
    const range: Record<AxisName, number> = {
      layer: cfg.nLayers,
      pos: T,
      src_pos: T,
      dest_pos: T,
      head_index: heads,
      head: heads,
    };
    shape = opts.indexAxisNames.map((a) => {
      if (!(a in range)) {
        throw new InputError(
          `unknown index axis "${a}"; expected one of ${Object.keys(range).join(", ")}`,
        );
      }
      return range[a];
    });
    if (opts.indexAxisNames[0] !== "layer") {
      throw new InputError(`the first index axis must be "layer"`);
    }
    rows = [];
    const idx = new Array(shape.length).fill(0);
    for (let n = numel(shape), i = 0; i < n; i++) {
      rows.push([...idx]);
      for (let d = shape.length - 1; d >= 0 && ++idx[d] >= shape[d]; d--) idx[d] = 0;
    }
  } else if (Array.isArray(opts.indices)) {
    rows = opts.indices;
    shape = [rows.length];
    for (const r of rows) {
      if (!Array.isArray(r) || !Number.isInteger(r[0]) || r[0] < 0 || r[0] >= cfg.nLayers) {
        throw new InputError(
          `each index must start with a layer in [0, ${cfg.nLayers}), got ${JSON.stringify(r)}`,
        );
      }
    }
  } else {
    throw new InputError("genericActivationPatch needs indexAxisNames or indices");
  }

  // The clean activations, checked against the corrupted run's shapes.
  const layers = [...new Set(rows.map((r) => r[0]))].sort((a, b) => a - b);
  const clean = new Map<number, Tensor>();
  for (const l of layers) {
    const name = nameOf(l);
    if (!cleanCache.has(name)) {
      throw new InputError(
        `the clean cache has no "${name}": run runWithCache on the clean tokens keeping it`,
      );
    }
    const act = cleanCache.get(name);
    const want = point.shape(cfg, B, T, T);
    if (act.shape.join() !== want.join()) {
      throw new InputError(
        `the clean "${name}" has shape [${act.shape}] but the corrupted run's is [${want}]: ` +
          `clean and corrupted tokens must have the same shape (and the cache its batch axis)`,
      );
    }
    clean.set(l, act);
  }

  const out = new Float32Array(rows.length);
  const groups: PatchGroup[] = [];
  const groupRows: number[][] = [];
  for (const l of layers) {
    const mine = rows.flatMap((r, i) => r[0] === l ? [i] : []);
    groupRows.push(mine);
    groups.push(
      patchGroup(model, point, l, mine.map((i) => rows[i]), clean.get(l)!, opts.patchSetter, B, T),
    );
  }
  let logitPositions: number[] | undefined;
  if (opts.logitPositions !== undefined) {
    if (!Array.isArray(opts.logitPositions) || opts.logitPositions.length === 0) {
      throw new InputError("logitPositions must be a non-empty array of positions");
    }
    logitPositions = opts.logitPositions.map((p) => {
      if (!Number.isInteger(p) || p < -T || p >= T) {
        throw new InputError(`logitPositions: ${p} is outside [-${T}, ${T})`);
      }
      return p < 0 ? p + T : p;
    });
  }
  opts.onProgress?.(0, groups.length);
  await runPatchGroups(
    model,
    tokens,
    groups,
    (g, run, logits) => {
      const i = groupRows[g][run];
      out[i] = metricValue(metric, logits, () => `${opts.activationName} patch [${rows[i]}]`);
    },
    opts.onProgress,
    logitPositions,
  );
  return { data: out, shape };
}

/** Where a patched run of hook point `p` at layer `l` starts. */
function startOf(
  model: HookedTransformer,
  p: HookPoint,
  l: number,
): { startLayer: number; startMid: boolean } {
  const cfg = model.cfg;
  if (!p.inBlock) {
    return { startLayer: p.index < HOOK.residPre.index ? 0 : cfg.nLayers, startMid: false };
  }
  return { startLayer: l, startMid: !cfg.parallelAttnMlp && p.index >= HOOK.residMid.index };
}

/** The runs of one layer: as edits for the library's setters, else as a hook. */
function patchGroup(
  model: HookedTransformer,
  point: HookPoint,
  layer: number,
  rows: number[][],
  clean: Tensor,
  setter: PatchSetter,
  B: number,
  T: number,
): PatchGroup {
  const { startLayer, startMid } = startOf(model, point, layer);
  const kind = SETTER_SHAPES.get(setter);
  const isPattern = point === HOOK.pattern;
  const rowShaped = !isPattern && point !== HOOK.attnScores && !point.readOnly;
  const fast = kind !== undefined && (kind.startsWith("pattern") ? isPattern : rowShaped);
  if (!fast) {
    return {
      startLayer,
      startMid,
      qStart: rows.map(() => 0),
      hook: {
        name: hookName(point, layer),
        fn: (act, run) => {
          const patched = setter(act, rows[run], clean);
          if (patched && patched !== act) {
            if (
              !(patched.data instanceof Float32Array) || patched.data.length !== act.data.length
            ) {
              throw new InputError(
                `the patch setter returned a tensor of shape [${patched.shape}], not [${act.shape}]`,
              );
            }
            act.data.set(patched.data);
          }
        },
      },
    };
  }
  const backend = model.backend;
  const firstPos = (r: number[]) => {
    const pos = kind === "pos" || kind === "posHead"
      ? r[1]
      : kind === "patternHeadDest" || kind === "patternHeadDestSrc"
      ? r[2]
      : 0;
    if (!Number.isInteger(pos) || pos < 0 || pos >= T) {
      throw new InputError(`position ${pos} in patch [${r}] is outside [0, ${T})`);
    }
    return pos;
  };
  const resumable = point.inBlock || startLayer > 0;
  const qStart = rows.map((r) => resumable ? firstPos(r) : 0);
  const shape = point.shape(model.cfg, B, T, T);
  const headOf = (r: number[], at: number) => {
    const h = r[at], n = isPattern ? shape[1] : shape[2];
    if (!Number.isInteger(h) || h < 0 || h >= n) {
      throw new InputError(`head ${h} in patch [${r}] is outside [0, ${n})`);
    }
    return h;
  };
  return {
    startLayer,
    startMid,
    qStart,
    edit: {
      point,
      layer: point.inBlock ? layer : null,
      apply: isPattern
        ? (x, at, run, b, s) => writePattern(backend, x, at, clean, rows[run], kind!, b, s, headOf)
        : (x, at, run, b, s) => writeRows(backend, x, at, clean, rows[run], kind!, b, s, headOf),
    },
  };
}

/** Writes the clean rows a row-shaped setter patches into the pass's activation. */
function writeRows(
  backend: HookedTransformer["backend"],
  x: DeviceArray,
  at: EditLayout,
  clean: Tensor,
  index: number[],
  kind: string,
  b: number,
  s: number,
  headOf: (r: number[], at: number) => number,
) {
  const T = at.T, q = at.qStart[s], cols = at.cols;
  const [t0, t1] = kind === "head" ? [q, T] : [index[1], index[1] + 1];
  let c0 = 0, c1 = cols;
  if (kind !== "pos") {
    const heads = clean.shape[2];
    const h = headOf(index, kind === "head" ? 1 : 2);
    c0 = h * cols / heads;
    c1 = (h + 1) * cols / heads;
  }
  const w = c1 - c0;
  const src = new Float32Array((t1 - t0) * w);
  for (let t = t0; t < t1; t++) {
    const off = (b * T + t) * cols + c0;
    src.set(clean.data.subarray(off, off + w), (t - t0) * w);
  }
  backend.writeRows(x.at((at.rowOffset[s] + t0 - q) * at.stride + c0), src, t1 - t0, w, at.stride);
}

/** Writes the clean pattern entries a pattern setter patches into the pass's pattern buffer. */
function writePattern(
  backend: HookedTransformer["backend"],
  x: DeviceArray,
  at: EditLayout,
  clean: Tensor,
  index: number[],
  kind: string,
  b: number,
  s: number,
  headOf: (r: number[], at: number) => number,
) {
  const T = at.T, q = at.qStart[s], nQ = T - q;
  const nHeads = clean.shape[1];
  const h = headOf(index, 1);
  const [t0, t1] = kind === "patternHead" ? [q, T] : [index[2], index[2] + 1];
  let k0 = 0, k1 = T;
  if (kind === "patternHeadDestSrc") {
    const k = index[3];
    if (!Number.isInteger(k) || k < 0 || k >= T) {
      throw new InputError(`source position ${k} in patch [${index}] is outside [0, ${T})`);
    }
    [k0, k1] = [k, k + 1];
  }
  const w = k1 - k0;
  const src = new Float32Array((t1 - t0) * w);
  for (let t = t0; t < t1; t++) {
    const off = ((b * nHeads + h) * T + t) * T + k0;
    src.set(clean.data.subarray(off, off + w), (t - t0) * w);
  }
  const base = at.patternOffset[s] + (h * nQ + t0 - q) * T + k0;
  backend.writeRows(x.at(base), src, t1 - t0, w, T);
}

/**
 * The signature of the `getActPatch*` presets: `(model, corruptedTokens, cleanCache, metric,
 * { onProgress })` to the grid of metric values.
 */
export type ActPatchFunction = (
  model: HookedTransformer,
  corruptedTokens: Tokens,
  cleanCache: ActivationCache,
  metric: PatchingMetric,
  opts?: ActPatchOptions,
) => Promise<Tensor>;

function preset(
  activationName: string,
  patchSetter: PatchSetter,
  indexAxisNames: AxisName[],
): ActPatchFunction {
  return async (model, corruptedTokens, cleanCache, metric, opts = {}) => {
    checkOptions(opts, ["onProgress", "logitPositions"], "activation patching");
    return await genericActivationPatch(model, corruptedTokens, cleanCache, metric, {
      patchSetter,
      activationName,
      indexAxisNames,
      ...opts,
    });
  };
}

/**
 * Patches each layer's `hook_resid_pre` at each position: [n_layers, pos].
 *
 * @example
 * ```ts
 * import { getActPatchResidPre, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) => l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchResidPre(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 6]
 * ```
 */
export const getActPatchResidPre: ActPatchFunction = preset("resid_pre", layerPosPatchSetter, [
  "layer",
  "pos",
]);
/**
 * Patches each layer's `hook_resid_mid` at each position: [n_layers, pos].
 *
 * @example
 * ```ts
 * import { getActPatchResidMid, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchResidMid(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 6]
 * ```
 */
export const getActPatchResidMid: ActPatchFunction = preset("resid_mid", layerPosPatchSetter, [
  "layer",
  "pos",
]);
/**
 * Patches each layer's `hook_attn_out` at each position: [n_layers, pos].
 *
 * @example
 * ```ts
 * import { getActPatchAttnOut, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnOut(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 6]
 * ```
 */
export const getActPatchAttnOut: ActPatchFunction = preset("attn_out", layerPosPatchSetter, [
  "layer",
  "pos",
]);
/**
 * Patches each layer's `hook_mlp_out` at each position: [n_layers, pos].
 *
 * @example
 * ```ts
 * import { getActPatchMlpOut, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchMlpOut(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 6]
 * ```
 */
export const getActPatchMlpOut: ActPatchFunction = preset("mlp_out", layerPosPatchSetter, [
  "layer",
  "pos",
]);
/**
 * Patches one head's `hook_z` at every position: [n_layers, n_heads].
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadOutAllPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadOutAllPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 4]
 * ```
 */
export const getActPatchAttnHeadOutAllPos: ActPatchFunction = preset(
  "z",
  layerHeadVectorPatchSetter,
  [
    "layer",
    "head",
  ],
);
/**
 * Patches one head's `hook_z` at one position: [n_layers, pos, n_heads].
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadOutByPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadOutByPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 6, 4]
 * ```
 */
export const getActPatchAttnHeadOutByPos: ActPatchFunction = preset(
  "z",
  layerPosHeadVectorPatchSetter,
  [
    "layer",
    "pos",
    "head",
  ],
);
/**
 * Patches one head's `hook_q` at every position: [n_layers, n_heads].
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadQAllPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadQAllPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 4]
 * ```
 */
export const getActPatchAttnHeadQAllPos: ActPatchFunction = preset(
  "q",
  layerHeadVectorPatchSetter,
  [
    "layer",
    "head",
  ],
);
/**
 * Patches one head's `hook_q` at one position: [n_layers, pos, n_heads].
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadQByPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadQByPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 6, 4]
 * ```
 */
export const getActPatchAttnHeadQByPos: ActPatchFunction = preset(
  "q",
  layerPosHeadVectorPatchSetter,
  [
    "layer",
    "pos",
    "head",
  ],
);
/**
 * Patches one key/value head's `hook_k` at every position: [n_layers, n_key_value_heads].
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadKAllPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadKAllPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 4]
 * ```
 */
export const getActPatchAttnHeadKAllPos: ActPatchFunction = preset(
  "k",
  layerHeadVectorPatchSetter,
  [
    "layer",
    "head",
  ],
);
/**
 * Patches one key/value head's `hook_k` at one position: [n_layers, pos, n_key_value_heads].
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadKByPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadKByPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 6, 4]
 * ```
 */
export const getActPatchAttnHeadKByPos: ActPatchFunction = preset(
  "k",
  layerPosHeadVectorPatchSetter,
  [
    "layer",
    "pos",
    "head",
  ],
);
/**
 * Patches one key/value head's `hook_v` at every position: [n_layers, n_key_value_heads].
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadVAllPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadVAllPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 4]
 * ```
 */
export const getActPatchAttnHeadVAllPos: ActPatchFunction = preset(
  "v",
  layerHeadVectorPatchSetter,
  [
    "layer",
    "head",
  ],
);
/**
 * Patches one key/value head's `hook_v` at one position: [n_layers, pos, n_key_value_heads].
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadVByPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadVByPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 6, 4]
 * ```
 */
export const getActPatchAttnHeadVByPos: ActPatchFunction = preset(
  "v",
  layerPosHeadVectorPatchSetter,
  [
    "layer",
    "pos",
    "head",
  ],
);
/**
 * Patches one head's whole attention pattern: [n_layers, n_heads].
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadPatternAllPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadPatternAllPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 4]
 * ```
 */
export const getActPatchAttnHeadPatternAllPos: ActPatchFunction = preset(
  "pattern",
  layerHeadPatternPatchSetter,
  ["layer", "head_index"],
);
/**
 * Patches one head's pattern row of one destination position: [n_layers, n_heads, dest_pos]
 * (TransformerLens's axis order).
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadPatternByPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadPatternByPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 4, 6]
 * ```
 */
export const getActPatchAttnHeadPatternByPos: ActPatchFunction = preset(
  "pattern",
  layerHeadPosPatternPatchSetter,
  [
    "layer",
    "head_index",
    "dest_pos",
  ],
);
/**
 * Patches one entry of one head's pattern: [n_layers, n_heads, dest_pos, src_pos].
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadPatternDestSrcPos, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadPatternDestSrcPos(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 4, 6, 6]
 * ```
 */
export const getActPatchAttnHeadPatternDestSrcPos: ActPatchFunction = preset(
  "pattern",
  layerHeadDestSrcPosPatternPatchSetter,
  ["layer", "head_index", "dest_pos", "src_pos"],
);

/**
 * `getActPatchResidPre`, `getActPatchAttnOut` and `getActPatchMlpOut` stacked: [3, n_layers, pos].
 *
 * @example
 * ```ts
 * import { getActPatchBlockEvery, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchBlockEvery(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [3, 3, 6]
 * ```
 */
export async function getActPatchBlockEvery(
  model: HookedTransformer,
  corruptedTokens: Tokens,
  cleanCache: ActivationCache,
  metric: PatchingMetric,
  opts: ActPatchOptions = {},
): Promise<Tensor> {
  const parts: Tensor[] = [];
  for (const f of [getActPatchResidPre, getActPatchAttnOut, getActPatchMlpOut]) {
    parts.push(await f(model, corruptedTokens, cleanCache, metric, opts));
  }
  return stack(parts);
}

/** Pads the last axis of [..., n] to `to` with zeros (k and v with fewer key/value heads). */
function padLast(t: Tensor, to: number): Tensor {
  const n = t.shape.at(-1)!;
  if (n === to) return t;
  const rows = t.data.length / n;
  const out = new Float32Array(rows * to);
  for (let r = 0; r < rows; r++) out.set(t.data.subarray(r * n, (r + 1) * n), r * to);
  return { data: out, shape: [...t.shape.slice(0, -1), to] };
}

/**
 * Every head's output, query, key, value and pattern patched across all positions:
 * [5, n_layers, n_heads] (k and v padded with zeros when there are fewer key/value heads).
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadAllPosEvery, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadAllPosEvery(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [5, 3, 4]
 * ```
 */
export async function getActPatchAttnHeadAllPosEvery(
  model: HookedTransformer,
  corruptedTokens: Tokens,
  cleanCache: ActivationCache,
  metric: PatchingMetric,
  opts: ActPatchOptions = {},
): Promise<Tensor> {
  const H = model.cfg.nHeads;
  const parts: Tensor[] = [];
  for (
    const f of [
      getActPatchAttnHeadOutAllPos,
      getActPatchAttnHeadQAllPos,
      getActPatchAttnHeadKAllPos,
      getActPatchAttnHeadVAllPos,
      getActPatchAttnHeadPatternAllPos,
    ]
  ) parts.push(padLast(await f(model, corruptedTokens, cleanCache, metric, opts), H));
  return stack(parts);
}

/**
 * Every head's output, query, key, value and pattern patched position by position:
 * [5, n_layers, pos, n_heads] (the pattern's [layer, head, dest] grid moved to this order).
 *
 * @example
 * ```ts
 * import { getActPatchAttnHeadByPosEvery, HookedTransformer } from "../mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 13, 5, 9]]);
 * const metric = (l: { data: Float32Array; shape: number[] }) =>
 *   l.data[(l.shape[1] - 1) * l.shape[2] + 13];
 * (await getActPatchAttnHeadByPosEvery(model, [[2047, 6, 9, 13, 5, 9]], cache, metric)).shape; // [5, 3, 6, 4]
 * ```
 */
export async function getActPatchAttnHeadByPosEvery(
  model: HookedTransformer,
  corruptedTokens: Tokens,
  cleanCache: ActivationCache,
  metric: PatchingMetric,
  opts: ActPatchOptions = {},
): Promise<Tensor> {
  const H = model.cfg.nHeads;
  const parts: Tensor[] = [];
  for (
    const f of [
      getActPatchAttnHeadOutByPos,
      getActPatchAttnHeadQByPos,
      getActPatchAttnHeadKByPos,
      getActPatchAttnHeadVByPos,
    ]
  ) parts.push(padLast(await f(model, corruptedTokens, cleanCache, metric, opts), H));
  const pattern = await getActPatchAttnHeadPatternByPos(
    model,
    corruptedTokens,
    cleanCache,
    metric,
    opts,
  );
  parts.push(permute(pattern, [0, 2, 1]));
  return stack(parts);
}
