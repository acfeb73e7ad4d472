/**
 * Token views (CircuitsVis's `colored_tokens` and `topk_tokens`): a text whose tokens are coloured
 * by a value each, and each position's most likely next tokens with their probabilities.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { escapeHtml, formatNumber, HtmlView, showToken } from "./html.ts";
import { colorOf, type ColorScale, scaleFor, scaleHtml, textColorOn } from "./palette.ts";

/** Options of {@link coloredTokens}. */
export interface ColoredTokensOptions {
  /** What the values are (default "value"). */
  label?: string;
  /** Force a diverging or sequential scale (default: diverging when a value is negative). */
  scale?: "diverging" | "sequential";
}

function values(input: Tensor | readonly number[], what: string): ArrayLike<number> {
  if (Array.isArray(input)) {
    if (input.some((v) => typeof v !== "number")) {
      throw new InputError(`${what} must hold numbers`);
    }
    return input;
  }
  const t = input as Tensor;
  if (!(t?.data instanceof Float32Array) || !Array.isArray(t.shape)) {
    throw new InputError(`${what} must be a number[] or a Tensor`);
  }
  if (t.shape.filter((d) => d !== 1).length > 1) {
    throw new InputError(`${what} must be 1-D, got shape [${t.shape.join(", ")}]`);
  }
  return t.data;
}

function checkTokens(tokens: readonly string[], what: string): void {
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== "string")) {
    throw new InputError(`${what} must be an array of strings (model.toStrTokens(text))`);
  }
}

/**
 * The tokens as text, each coloured by its value (a diverging scale when a value is negative,
 * else sequential from 0), with the value on hover and keyboard focus.
 *
 * @example
 * ```ts
 * import { coloredTokens } from "./tokens.ts";
 * const view = coloredTokens(["And", " God", " said"], [0.1, -2, 1.5], { label: "attribution" });
 * view.html.includes('data-value="-2"'); // true
 * ```
 */
export function coloredTokens(
  tokens: readonly string[],
  vals: Tensor | readonly number[],
  opts: ColoredTokensOptions = {},
): HtmlView {
  checkTokens(tokens, "coloredTokens: tokens");
  const v = values(vals, "coloredTokens: values");
  if (v.length !== tokens.length) {
    throw new InputError(`coloredTokens: ${tokens.length} tokens but ${v.length} values`);
  }
  const label = opts.label ?? "value";
  const scale = scaleFor(v, label, opts.scale);
  const spans = tokens.map((tok, i) => {
    const bg = colorOf(v[i], scale);
    const tip = `${escapeHtml(showToken(tok))} (position ${i})\n${escapeHtml(label)}: ${
      formatNumber(v[i])
    }`;
    return `<span class="tok" tabindex="0" data-pos="${i}" data-value="${v[i]}" ` +
      `data-tip="${tip}" aria-label="${tip.replaceAll("\n", "; ")}" ` +
      `style="background:${bg};color:${textColorOn(bg)}">${escapeHtml(showToken(tok))}</span>`;
  });
  return new HtmlView(
    "colored-tokens",
    `<div>${spans.join("")}</div>${scaleHtml(scale)}`,
    `${tokens.length} tokens coloured by ${label}`,
  );
}

/** Options of {@link topkTokens}. */
export interface TopkTokensOptions {
  /** How many next tokens per position (default 5). */
  k?: number;
  /** Token ids as text (default `[id]`): `(ids) => model.toStrTokens(ids)` for a text model. */
  decode?: (ids: number[]) => string[];
  /**
   * The sequence's token ids: with them, each position also shows the log-probability of the
   * token that actually comes next.
   */
  ids?: readonly number[];
}

/**
 * Each position's `k` most likely next tokens with their probabilities (softmax of the logits
 * [pos, d_vocab], or [1, pos, d_vocab] as `model.run` returns them), coloured by probability,
 * and, given the ids, the log-probability of the token that comes next.
 *
 * @example
 * ```ts
 * import { HookedTransformer } from "../mod.ts";
 * import { topkTokens } from "./tokens.ts";
 * const model = await HookedTransformer.fromPretrained("kjv-small", { threads: 1 });
 * const text = "And Moses said unto Aaron";
 * const view = topkTokens(model.toStrTokens(text), await model.run(text), {
 *   decode: (ids) => model.toStrTokens(ids),
 *   ids: model.toTokens(text)[0],
 * });
 * view.html.includes(" Aaron"); // true: the most likely token after " unto"
 * ```
 */
export function topkTokens(
  tokens: readonly string[],
  logits: Tensor,
  opts: TopkTokensOptions = {},
): HtmlView {
  checkTokens(tokens, "topkTokens: tokens");
  const shape = logits?.shape;
  if (
    !shape || !(logits.data instanceof Float32Array) || shape.length < 2 ||
    shape.slice(0, -2).some((d) => d !== 1)
  ) {
    throw new InputError(
      "topkTokens: logits must be a Tensor [pos, d_vocab] or [1, pos, d_vocab] (one sequence)",
    );
  }
  const [T, V] = shape.slice(-2);
  if (T !== tokens.length) {
    throw new InputError(`topkTokens: ${tokens.length} tokens but logits for ${T} positions`);
  }
  const k = opts.k ?? 5;
  if (!Number.isInteger(k) || k < 1 || k > V) {
    throw new InputError(`topkTokens: k must be a whole number in [1, ${V}], got ${k}`);
  }
  const ids = opts.ids;
  if (ids !== undefined && ids.length !== T) {
    throw new InputError(`topkTokens: ${ids.length} ids for ${T} tokens`);
  }
  const decode = opts.decode ?? ((xs: number[]) => xs.map((i) => `[${i}]`));
  const scale: ColorScale = { kind: "sequential", min: 0, max: 1, label: "probability" };
  const head = `<tr><th>pos</th><th>token</th>${ids ? "<th>next: log-prob</th>" : ""}${
    Array.from({ length: k }, (_, r) => `<th>top ${r + 1}</th>`).join("")
  }</tr>`;
  const rows: string[] = [];
  for (let t = 0; t < T; t++) {
    const row = logits.data.subarray(t * V, (t + 1) * V);
    let max = -Infinity;
    for (const x of row) if (x > max) max = x;
    let sum = 0;
    for (const x of row) sum += Math.exp(x - max);
    const logZ = max + Math.log(sum);
    const top = topIndices(row, k);
    const names = decode(top);
    const cells = top.map((id, r) => {
      const p = Math.exp(row[id] - logZ);
      const bg = colorOf(p, scale);
      const tip = `${escapeHtml(showToken(names[r]))} (id ${id})\nprobability: ${formatNumber(p)}`;
      return `<td tabindex="0" data-id="${id}" data-value="${p}" data-tip="${tip}" ` +
        `aria-label="${tip.replaceAll("\n", "; ")}" style="background:${bg};` +
        `color:${textColorOn(bg)}">${escapeHtml(showToken(names[r]))} ${
          (p * 100).toFixed(1)
        }%</td>`;
    });
    let next = "";
    if (ids) {
      if (t + 1 < T) {
        const lp = row[ids[t + 1]] - logZ;
        next = `<td data-value="${lp}">${escapeHtml(showToken(tokens[t + 1]))} ` +
          `${formatNumber(lp)}</td>`;
      } else next = `<td></td>`;
    }
    rows.push(
      `<tr><th>${t}</th><td>${escapeHtml(showToken(tokens[t]))}</td>${next}${cells.join("")}</tr>`,
    );
  }
  return new HtmlView(
    "topk-tokens",
    `<table class="topk">${head}${rows.join("")}</table>${scaleHtml(scale)}`,
    `top ${k} next tokens at ${T} positions`,
  );
}

/** The `k` largest entries' indices, largest first (ties: lower index first). */
function topIndices(row: ArrayLike<number>, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < row.length; i++) {
    if (best.length === k && row[i] <= row[best[k - 1]]) continue;
    let j = best.length === k ? k - 1 : best.length;
    if (best.length < k) best.push(i);
    while (j > 0 && row[best[j - 1]] < row[i]) {
      best[j] = best[j - 1];
      j--;
    }
    best[j] = i;
  }
  return best;
}
