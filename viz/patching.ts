/**
 * A patching grid as a heat map: the effect of each patch (layer x position, layer x head, ...)
 * on a diverging scale centred on 0, the form TransformerLens's patching functions return.
 * @module
 */
import { checkLabels, gridHtml, type MatrixInput, toMatrix } from "./grid.ts";
import { escapeHtml, HtmlView } from "./html.ts";
import { scaleFor } from "./palette.ts";

/** Labels and names of a {@link patchingHeatmap}. */
export interface PatchingLabels {
  /** One per row (default `L0`, `L1`, ...: patching grids are layer-major). */
  rows?: string[];
  /** One per column (e.g. `model.toStrTokens(text)`; default `0`, `1`, ...). */
  cols?: string[];
  /** The axes' names (default `["layer", "position"]`). */
  axes?: [string, string];
  /** What the values are (default "patching effect"). */
  value?: string;
  /** A heading. */
  title?: string;
}

/**
 * A patching grid [rows, cols] (a Tensor whose leading dimensions are 1, or rows of numbers) on
 * a diverging colour-blind-safe scale centred on 0, with the scale and each value on hover and
 * keyboard focus.
 *
 * @example
 * ```ts
 * import { patchingHeatmap } from "./patching.ts";
 * const view = patchingHeatmap([[0.1, -0.3], [0.9, 0]], { cols: ["And", " God"] });
 * view.html.includes('data-scale="diverging"'); // true
 * ```
 */
export function patchingHeatmap(grid: MatrixInput, labels: PatchingLabels = {}): HtmlView {
  const m = toMatrix(grid, "patchingHeatmap: grid");
  const rows = checkLabels(labels.rows, m.rows, "patchingHeatmap: rows", "L");
  const cols = checkLabels(labels.cols, m.cols, "patchingHeatmap: cols", "");
  const value = labels.value ?? "patching effect";
  const title = labels.title === undefined
    ? ""
    : `<div class="title">${escapeHtml(labels.title)}</div>`;
  const body = gridHtml({
    matrix: m,
    rowLabels: rows,
    colLabels: cols,
    scale: scaleFor(m.data, value, "diverging"),
    axes: labels.axes ?? ["layer", "position"],
  });
  return new HtmlView("patching-heatmap", title + body, `${value}, ${m.rows} x ${m.cols}`);
}
