/**
 * The heat-map grid the matrix views share (attention patterns, patching grids, the logit lens):
 * an HTML table whose cells carry their colour, their number (`data-value`), a tooltip shown on
 * hover and on keyboard focus (`data-tip`, each cell is a Tab stop) and an `aria-label`; and the
 * checks that turn a `Tensor` or nested array into rows of numbers.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { escapeHtml, formatNumber, showToken } from "./html.ts";
import { colorOf, type ColorScale, scaleHtml, textColorOn } from "./palette.ts";

/** A matrix given as a Tensor or as rows of numbers. */
export type MatrixInput = Tensor | readonly (readonly number[])[];

/** A matrix as rows of numbers, with its size. */
export interface Matrix {
  rows: number;
  cols: number;
  /** Row-major values. */
  data: Float32Array | Float64Array;
}

function isTensor(x: unknown): x is Tensor {
  return typeof x === "object" && x !== null && "data" in x && "shape" in x &&
    (x as Tensor).data instanceof Float32Array && Array.isArray((x as Tensor).shape);
}

/**
 * A 2-D matrix from a Tensor whose leading dimensions are all 1 (so `[1, 1, q, k]` is `[q, k]`)
 * or from rows of numbers of one length; an InputError naming `what` otherwise.
 *
 * @example
 * ```ts
 * import { toMatrix } from "./grid.ts";
 * toMatrix([[1, 2], [3, 4]], "grid").cols; // 2
 * ```
 */
export function toMatrix(input: MatrixInput, what: string): Matrix {
  if (isTensor(input)) {
    const shape = input.shape;
    if (shape.length < 2 || shape.slice(0, -2).some((d) => d !== 1)) {
      throw new InputError(
        `${what} must be a 2-D tensor (leading dimensions of size 1 allowed), got shape ` +
          `[${shape.join(", ")}]`,
      );
    }
    return { rows: shape.at(-2)!, cols: shape.at(-1)!, data: input.data };
  }
  if (!Array.isArray(input) || input.length === 0 || !input.every(Array.isArray)) {
    throw new InputError(`${what} must be a Tensor or a non-empty array of rows of numbers`);
  }
  const cols = input[0].length;
  const data = new Float64Array(input.length * cols);
  input.forEach((row, r) => {
    if (row.length !== cols) {
      throw new InputError(`${what}: row ${r} has ${row.length} values, row 0 has ${cols}`);
    }
    row.forEach((v, c) => {
      if (typeof v !== "number") {
        throw new InputError(`${what}: row ${r}, column ${c} is ${typeof v}, not a number`);
      }
      data[r * cols + c] = v;
    });
  });
  return { rows: input.length, cols, data };
}

/**
 * Checks that `labels` has `n` strings (or makes `prefix0`, `prefix1`, ... when undefined).
 */
export function checkLabels(
  labels: readonly string[] | undefined,
  n: number,
  what: string,
  prefix: string,
): string[] {
  if (labels === undefined) return Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  if (!Array.isArray(labels) || labels.some((l) => typeof l !== "string")) {
    throw new InputError(`${what} must be an array of strings`);
  }
  if (labels.length !== n) {
    throw new InputError(`${what} has ${labels.length} labels for ${n} entries`);
  }
  return [...labels];
}

/** How one grid is drawn. */
export interface GridSpec {
  matrix: Matrix;
  rowLabels: string[];
  colLabels: string[];
  scale: ColorScale;
  /** Names of the axes, for tooltips: e.g. ["query", "key"]. */
  axes: [string, string];
  /** Cells left blank (a causal mask): not coloured, no value. */
  masked?: (row: number, col: number) => boolean;
  /** Text written inside a cell (the logit lens's top token); default none. */
  cellText?: (row: number, col: number) => string;
  /** Extra tooltip lines for a cell. */
  cellNote?: (row: number, col: number) => string;
  /** Cell size in pixels (default 18; wider cells hold `cellText`). */
  cellPx?: number;
}

/**
 * The grid as an HTML table followed by its scale.
 *
 * @example
 * ```ts
 * import { gridHtml, toMatrix } from "./grid.ts";
 * import { scaleFor } from "./palette.ts";
 * const matrix = toMatrix([[0.5, -1]], "m");
 * const html = gridHtml({
 *   matrix, rowLabels: ["L0"], colLabels: ["a", "b"], axes: ["layer", "position"],
 *   scale: scaleFor(matrix.data, "effect"),
 * });
 * html.includes('data-value="-1"'); // true
 * ```
 */
export function gridHtml(spec: GridSpec): string {
  const { matrix, rowLabels, colLabels, scale, axes } = spec;
  const px = spec.cellPx ?? 18;
  const wide = spec.cellText !== undefined;
  const head = `<thead><tr><th></th>${
    colLabels.map((l) => `<th scope="col">${escapeHtml(showToken(l))}</th>`).join("")
  }</tr></thead>`;
  const rows: string[] = [];
  for (let r = 0; r < matrix.rows; r++) {
    const cells: string[] = [];
    for (let c = 0; c < matrix.cols; c++) {
      const where = `${axes[0]} ${escapeHtml(showToken(rowLabels[r]))}, ` +
        `${axes[1]} ${escapeHtml(showToken(colLabels[c]))}`;
      if (spec.masked?.(r, c)) {
        cells.push(`<td class="c m" aria-label="${where}: masked"></td>`);
        continue;
      }
      const v = matrix.data[r * matrix.cols + c];
      const bg = colorOf(v, scale);
      const note = spec.cellNote ? `\n${escapeHtml(spec.cellNote(r, c))}` : "";
      const tip = `${where}\n${escapeHtml(scale.label)}: ${formatNumber(v)}${note}`;
      const text = wide ? escapeHtml(showToken(spec.cellText!(r, c))) : "";
      cells.push(
        `<td class="c${wide ? " wide" : ""}" tabindex="0" data-row="${r}" data-col="${c}" ` +
          `data-value="${v}" data-tip="${tip}" aria-label="${tip.replaceAll("\n", "; ")}" ` +
          `style="background:${bg};color:${textColorOn(bg)}">${text}</td>`,
      );
    }
    rows.push(
      `<tr><th scope="row">${escapeHtml(showToken(rowLabels[r]))}</th>${cells.join("")}</tr>`,
    );
  }
  return `<table class="grid" style="--cell:${px}px">${head}<tbody>${rows.join("")}</tbody>` +
    `</table>${scaleHtml(scale)}`;
}
