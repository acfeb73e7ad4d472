/**
 * The logit lens as a picture: layer x position, each cell the token that layer's residual
 * stream (through the final norm and the unembedding) ranks first, coloured by its probability.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { gridHtml, type Matrix } from "./grid.ts";
import { escapeHtml, formatNumber, HtmlView } from "./html.ts";
import type { ColorScale } from "./palette.ts";

/** Options of {@link logitLens}. */
export interface LogitLensOptions {
  /** A heading. */
  title?: string;
}

/** What {@link logitLensGrid} computes, and {@link logitLens} draws. */
export interface LogitLensGrid {
  /** The streams: `0_pre` ... `{L-1}_pre`, `final_post` (the model's own prediction). */
  layers: string[];
  /** The input's tokens as text (ids in brackets for an id-only model). */
  tokens: string[];
  /** The top token's id at [layer][position]. */
  topIds: number[][];
  /** Its text. */
  topTokens: string[][];
  /** Its probability. */
  topProbs: number[][];
  /** The probability of the token that comes next (NaN at the last position). */
  nextProbs: number[][];
}

/**
 * The logit lens of one sequence, computed through the model's public API: the residual stream
 * before each block and after the last (`accumulatedResid`), each resumed at the final layer
 * (`run(stack, { startAtLayer: n_layers })`: the final norm and the unembedding, on the model's
 * backend), softmaxed over the vocabulary.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { logitLensGrid } from "./logit_lens.ts";
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * const lens = await logitLensGrid(model, "And the LORD said unto Moses");
 * lens.layers; // ["0_pre", "1_pre", "2_pre", "3_pre", "final_post"]
 * lens.topTokens[4][5]; // " Moses": the model's own guess after " unto"
 * ```
 */
export async function logitLensGrid(
  model: HookedTransformer,
  input: string | readonly number[],
): Promise<LogitLensGrid> {
  let ids: number[];
  if (typeof input === "string") ids = model.toTokens(input)[0];
  else if (Array.isArray(input) && input.every((i) => Number.isInteger(i))) ids = [...input];
  else throw new InputError("logitLens: input must be text or one sequence of token ids");
  if (ids.length === 0) throw new InputError("logitLens: the input has no tokens");
  const decode = (xs: number[]) =>
    model.tokenizer ? model.tokenizer.tokenStrings(xs) : xs.map((i) => `[${i}]`);
  const L = model.cfg.nLayers;
  const { cache } = await model.runWithCache([ids], {
    namesFilter: (n) => n.endsWith("hook_resid_pre") || n === `blocks.${L - 1}.hook_resid_post`,
  });
  const [resid, layers] = cache.accumulatedResid({ returnLabels: true }); // [L + 1, 1, T, d]
  const [S, , T, d] = resid.shape;
  const logits = await model.run({ data: resid.data, shape: [S, T, d] }, { startAtLayer: L });
  const V = logits.shape[2];
  const grid: LogitLensGrid = {
    layers,
    tokens: decode(ids),
    topIds: [],
    topTokens: [],
    topProbs: [],
    nextProbs: [],
  };
  for (let s = 0; s < S; s++) {
    const topIds: number[] = [], topProbs: number[] = [], nextProbs: number[] = [];
    for (let t = 0; t < T; t++) {
      const row = logits.data.subarray((s * T + t) * V, (s * T + t + 1) * V);
      let best = 0;
      for (let i = 1; i < V; i++) if (row[i] > row[best]) best = i;
      let sum = 0;
      for (let i = 0; i < V; i++) sum += Math.exp(row[i] - row[best]);
      topIds.push(best);
      topProbs.push(1 / sum);
      nextProbs.push(t + 1 < T ? Math.exp(row[ids[t + 1]] - row[best]) / sum : NaN);
    }
    grid.topIds.push(topIds);
    grid.topTokens.push(decode(topIds));
    grid.topProbs.push(topProbs);
    grid.nextProbs.push(nextProbs);
  }
  return grid;
}

/**
 * The logit lens of one sequence (text or ids) as a layer x position grid: in each cell the
 * token that stream ranks first, coloured by its probability; hover or focus a cell for the
 * probability and that of the token that actually comes next.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { logitLens } from "./logit_lens.ts";
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * const view = await logitLens(model, "And the LORD said unto Moses");
 * view.text; // "logit lens, 5 streams x 7 positions"
 * ```
 */
export async function logitLens(
  model: HookedTransformer,
  input: string | readonly number[],
  opts: LogitLensOptions = {},
): Promise<HtmlView> {
  const g = await logitLensGrid(model, input);
  const S = g.layers.length, T = g.tokens.length;
  const matrix: Matrix = { rows: S, cols: T, data: Float64Array.from(g.topProbs.flat()) };
  const scale: ColorScale = {
    kind: "sequential",
    min: 0,
    max: 1,
    label: "top token's probability",
  };
  const title = opts.title === undefined
    ? ""
    : `<div class="title">${escapeHtml(opts.title)}</div>`;
  const body = gridHtml({
    matrix,
    rowLabels: g.layers,
    colLabels: g.tokens,
    scale,
    axes: ["stream", "position"],
    cellText: (s, t) => g.topTokens[s][t],
    cellNote: (s, t) =>
      `top: ${JSON.stringify(g.topTokens[s][t])} (id ${g.topIds[s][t]})` +
      (t + 1 < T
        ? `\nnext ${JSON.stringify(g.tokens[t + 1])}: ${formatNumber(g.nextProbs[s][t])}`
        : ""),
  });
  return new HtmlView("logit-lens", title + body, `logit lens, ${S} streams x ${T} positions`);
}
