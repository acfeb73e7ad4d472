/**
 * Compact views of the library's data: a `Tensor` as its shape, dtype, summary statistics and a
 * table of values with ellipses (as PyTorch prints a large tensor), and an `ActivationCache` as
 * its hook names and shapes.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { numel, type Tensor } from "../core/tensor.ts";
import type { ActivationCache } from "../model/activation_cache.ts";
import { escapeHtml, formatNumber, HtmlView } from "./html.ts";

/** Rows or columns past this many are elided (the first and last `EDGE` are shown). */
const MAX_SHOWN = 8;
const EDGE = 3;
/** Slices of a tensor of rank > 2 past this many are elided. */
const MAX_SLICES = 3;

/** Indices shown along an axis of length n: all, or the first and last EDGE with -1 between. */
function shownIndices(n: number): number[] {
  if (n <= MAX_SHOWN) return Array.from({ length: n }, (_, i) => i);
  return [
    ...Array.from({ length: EDGE }, (_, i) => i),
    -1,
    ...Array.from({ length: EDGE }, (_, i) => n - EDGE + i),
  ];
}

function isTensor(t: unknown): t is Tensor {
  if (typeof t !== "object" || t === null) return false;
  const { data, shape } = t as Tensor;
  return data instanceof Float32Array && Array.isArray(shape) &&
    shape.every((d) => Number.isInteger(d) && d >= 0) && numel(shape) === data.length;
}

function stats(data: Float32Array): string {
  let min = Infinity, max = -Infinity, sum = 0, n = 0, bad = 0;
  for (const v of data) {
    if (!Number.isFinite(v)) {
      bad++;
      continue;
    }
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
    n++;
  }
  if (n === 0) return bad ? `${bad} non-finite values` : "no values";
  return `min ${formatNumber(min)}, max ${formatNumber(max)}, mean ${formatNumber(sum / n)}` +
    (bad ? `, ${bad} non-finite` : "");
}

function table(t: Tensor, offset: number, rows: number, cols: number): string {
  const rIdx = shownIndices(rows), cIdx = shownIndices(cols);
  const head = `<tr><th></th>${cIdx.map((c) => `<th>${c < 0 ? "…" : c}</th>`).join("")}</tr>`;
  const body = rIdx.map((r) => {
    if (r < 0) return `<tr><th>…</th>${cIdx.map(() => `<td class="e">⋮</td>`).join("")}</tr>`;
    const cells = cIdx.map((c) => {
      if (c < 0) return `<td class="e">…</td>`;
      const v = t.data[offset + r * cols + c];
      return `<td data-value="${v}">${formatNumber(v)}</td>`;
    });
    return `<tr><th>${r}</th>${cells.join("")}</tr>`;
  });
  return `<table class="vals">${head}${body.join("")}</table>`;
}

/**
 * A Tensor as a compact table: shape, dtype, min / max / mean, and its values with ellipses past
 * 8 rows or columns (the last two axes; the first slices of the leading ones). In `deno jupyter`
 * a cell whose value is a Tensor shows this (see `enableNotebookDisplay`).
 *
 * @example
 * ```ts
 * import { tensorView } from "./tensor_view.ts";
 * const view = tensorView({ data: new Float32Array(100).map((_, i) => i), shape: [10, 10] });
 * view.text; // "Tensor float32 [10, 10]: min 0, max 99, mean 49.5"
 * ```
 */
export function tensorView(t: Tensor): HtmlView {
  if (!isTensor(t)) {
    throw new InputError("tensorView: expected a Tensor { data: Float32Array, shape: number[] }");
  }
  const shape = t.shape;
  const summary = `Tensor float32 [${shape.join(", ")}]: ${stats(t.data)}`;
  let values: string;
  if (shape.length === 0) {
    values = `<table class="vals"><tr><td>${formatNumber(t.data[0])}</td></tr></table>`;
  } else if (t.data.length === 0) {
    values = `<div class="note">empty</div>`;
  } else if (shape.length === 1) {
    values = table(t, 0, 1, shape[0]);
  } else {
    const rows = shape.at(-2)!, cols = shape.at(-1)!;
    const lead = shape.slice(0, -2);
    const slices = numel(lead);
    const shown = slices <= MAX_SLICES
      ? Array.from({ length: slices }, (_, i) => i)
      : [0, 1, -1, slices - 1];
    values = shown.map((s) => {
      if (s < 0) return `<div class="note">… ${slices - 3} more slices …</div>`;
      const idx: number[] = [];
      for (let rest = s, a = lead.length - 1; a >= 0; a--) {
        idx.unshift(rest % lead[a]);
        rest = Math.floor(rest / lead[a]);
      }
      const label = lead.length ? `<div class="note">[${[...idx, ":", ":"].join(", ")}]</div>` : "";
      return label + table(t, s * rows * cols, rows, cols);
    }).join("");
  }
  return new HtmlView(
    "tensor",
    `<div class="title">${escapeHtml(summary)}</div>${values}`,
    summary,
  );
}

/**
 * An ActivationCache as a table of its hook names and shapes. In `deno jupyter` a cell whose
 * value is a cache shows this (see `enableNotebookDisplay`).
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { cacheView } from "./tensor_view.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const { cache } = await model.runWithCache([[2047, 5, 9, 5, 9]]);
 * cacheView(cache).text; // "ActivationCache: 55 activations, 0.16 MB"
 * ```
 */
export function cacheView(cache: ActivationCache): HtmlView {
  const entries = cache.entries();
  let bytes = 0;
  for (const [, t] of entries) bytes += t.data.byteLength;
  const summary = `ActivationCache: ${entries.length} activations, ${(bytes / 1e6).toFixed(2)} MB`;
  const rows = entries.map(([name, t]) =>
    `<tr><td>${escapeHtml(name)}</td><td>[${t.shape.join(", ")}]</td></tr>`
  );
  return new HtmlView(
    "activation-cache",
    `<div class="title">${escapeHtml(summary)}</div><table class="kv">` +
      `<tr><th>hook point</th><th>shape</th></tr>${rows.join("")}</table>`,
    summary,
  );
}
