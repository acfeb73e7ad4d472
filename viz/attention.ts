/**
 * Attention views (CircuitsVis's `attention_pattern` and `attention_heads`): one head's pattern
 * as a query x key grid labelled with the tokens, and every head of a layer as small multiples,
 * each opening into its full grid.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { checkLabels, gridHtml, type Matrix, type MatrixInput, toMatrix } from "./grid.ts";
import { escapeHtml, HtmlView } from "./html.ts";
import { colorOf, type ColorScale, scaleHtml } from "./palette.ts";

/** Options of {@link attentionPattern}. */
export interface AttentionPatternOptions {
  /** A heading (e.g. "L1H2"). */
  title?: string;
}

const ATTENTION_SCALE: ColorScale = { kind: "sequential", min: 0, max: 1, label: "attention" };

function checkTokens(tokens: readonly string[], n: number): string[] {
  return checkLabels(tokens, n, "tokens", "");
}

function checkSquare(m: Matrix, what: string): void {
  if (m.rows !== m.cols) {
    throw new InputError(
      `${what} must be [query, key] with as many keys as queries, got ` +
        `[${m.rows}, ${m.cols}]`,
    );
  }
}

/** Keys after the query: masked by causal attention. */
const causal = (q: number, k: number) => k > q;

function patternGrid(m: Matrix, tokens: string[], cellPx = 18): string {
  return gridHtml({
    matrix: m,
    rowLabels: tokens,
    colLabels: tokens,
    scale: ATTENTION_SCALE,
    axes: ["query", "key"],
    masked: causal,
    cellPx,
  });
}

/**
 * One head's attention pattern [query, key] (a Tensor whose leading dimensions are 1, or rows
 * of numbers) as a grid with the tokens on both axes; keys after the query are drawn masked.
 * Hover or Tab to a cell for its weight.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { index } from "../core/ops.ts";
 * import { attentionPattern } from "./attention.ts";
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * const text = "And God said, Let there be light";
 * const { cache } = await model.runWithCache(text);
 * const view = attentionPattern(index(cache.get("pattern", 0), 0, 3), model.toStrTokens(text));
 * view.html.includes('data-view="attention-pattern"'); // true: display it in a notebook cell
 * ```
 */
export function attentionPattern(
  pattern: MatrixInput,
  tokens: readonly string[],
  opts: AttentionPatternOptions = {},
): HtmlView {
  const m = toMatrix(pattern, "attentionPattern: pattern");
  checkSquare(m, "attentionPattern: pattern");
  const labels = checkTokens(tokens, m.rows);
  const title = opts.title === undefined
    ? ""
    : `<div class="title">${escapeHtml(opts.title)}</div>`;
  return new HtmlView(
    "attention-pattern",
    title + patternGrid(m, labels),
    `attention pattern${opts.title ? ` ${opts.title}` : ""}, ${m.rows} tokens`,
  );
}

/** Options of {@link attentionHeads}. */
export interface AttentionHeadsOptions {
  /** The heads' names (default `H0`, `H1`, ..., or `L{layer}H{h}` with `layer`). */
  headLabels?: string[];
  /** The layer, for the default head names. */
  layer?: number;
  /** Which sequence of a batched pattern [batch, head, query, key] (default 0). */
  batch?: number;
  /** A heading. */
  title?: string;
}

/**
 * Every head of a layer (a pattern [head, query, key], or [batch, head, query, key] as
 * `cache.get("pattern", l)` gives it) as small multiples; each opens (click, or Enter on it)
 * into its full grid with the tokens and each weight on hover and focus.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { attentionHeads } from "./attention.ts";
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * const text = "And God said, Let there be light";
 * const { cache } = await model.runWithCache(text);
 * const view = attentionHeads(cache.get("pattern", 1), model.toStrTokens(text), { layer: 1 });
 * view.text; // "attention heads L1H0 ... L1H5, 9 tokens"
 * ```
 */
export function attentionHeads(
  pattern: Tensor,
  tokens: readonly string[],
  opts: AttentionHeadsOptions = {},
): HtmlView {
  const shape = pattern?.shape;
  if (!shape || !(pattern.data instanceof Float32Array) || ![3, 4].includes(shape.length)) {
    throw new InputError(
      "attentionHeads: pattern must be a Tensor [head, query, key] or [batch, head, query, key]",
    );
  }
  const batch = opts.batch ?? 0;
  const B = shape.length === 4 ? shape[0] : 1;
  if (!Number.isInteger(batch) || batch < 0 || batch >= B) {
    throw new InputError(`attentionHeads: batch ${batch} is outside [0, ${B})`);
  }
  const [H, T, K] = shape.slice(-3);
  if (T !== K) {
    throw new InputError(`attentionHeads: pattern has ${T} queries but ${K} keys`);
  }
  const labels = checkTokens(tokens, T);
  const prefix = opts.layer === undefined ? "H" : `L${opts.layer}H`;
  const heads = checkLabels(opts.headLabels, H, "attentionHeads: headLabels", prefix);
  const px = Math.max(3, Math.min(10, Math.floor(120 / T)));
  const parts: string[] = [];
  for (let h = 0; h < H; h++) {
    const start = (batch * H + h) * T * T;
    const m: Matrix = { rows: T, cols: T, data: pattern.data.subarray(start, start + T * T) };
    const mini: string[] = [];
    for (let q = 0; q < T; q++) {
      for (let k = 0; k < T; k++) {
        const v = m.data[q * T + k];
        mini.push(
          k > q ? `<i></i>` : `<i style="background:${colorOf(v, ATTENTION_SCALE)}"></i>`,
        );
      }
    }
    parts.push(
      `<details data-head="${h}"><summary aria-label="head ${escapeHtml(heads[h])}: ` +
        `open its pattern">${escapeHtml(heads[h])}<div class="mini" ` +
        `style="--px:${px}px;grid-template-columns:repeat(${T}, ${px}px)">${mini.join("")}` +
        `</div></summary>${patternGrid(m, labels)}</details>`,
    );
  }
  const title = opts.title === undefined
    ? ""
    : `<div class="title">${escapeHtml(opts.title)}</div>`;
  const note = `<div class="note">Click a head (or Tab to it and press Enter) to open its ` +
    `pattern, with each weight on hover and focus.</div>`;
  return new HtmlView(
    "attention-heads",
    `${title}${note}<div class="heads">${parts.join("")}</div>${scaleHtml(ATTENTION_SCALE)}`,
    `attention heads ${heads[0]} ... ${heads[H - 1]}, ${T} tokens`,
  );
}
