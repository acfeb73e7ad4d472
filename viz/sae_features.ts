/**
 * The active features of an SAE per token (Neuronpedia's and SAE-Vis's per-token feature list):
 * for each position, how many features fire (L0) and the `k` strongest with their activations,
 * coloured on a sequential scale from 0 to the largest activation shown.
 * @module
 */
import { InputError } from "../core/errors.ts";
import type { Tensor } from "../core/tensor.ts";
import { escapeHtml, formatNumber, HtmlView, showToken } from "./html.ts";
import { colorOf, type ColorScale, scaleHtml, textColorOn } from "./palette.ts";

/** Options of {@link saeFeatures}. */
export interface SaeFeaturesOptions {
  /** Features shown per position, strongest first (default 8). */
  k?: number;
  /** What the SAE is, for the title and tooltips (e.g. its hook name). */
  label?: string;
}

/**
 * Each position's active SAE features: `acts` are the SAE's feature activations
 * (`sae.encode(activation)`, [pos, d_sae] or [1, pos, d_sae]); a feature is active where its
 * activation is above 0. The table has one row per token: the number of active features
 * (`data-active`) and the `k` strongest (`data-id` the feature, `data-value` its activation).
 *
 * @example
 * ```ts
 * import { saeFeatures } from "./sae_features.ts";
 * const acts = { data: Float32Array.from([0, 2, 0.5, 0, 0, 0]), shape: [2, 3] };
 * const view = saeFeatures(["a", "b"], acts, { k: 2 });
 * view.html.includes('data-id="1" data-value="2"'); // true: feature 1 fires at "a"
 * ```
 */
export function saeFeatures(
  tokens: readonly string[],
  acts: Tensor,
  opts: SaeFeaturesOptions = {},
): HtmlView {
  if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== "string")) {
    throw new InputError("saeFeatures: tokens must be an array of strings");
  }
  const shape = acts?.shape;
  if (
    !shape || !(acts.data instanceof Float32Array) || shape.length < 2 ||
    shape.slice(0, -2).some((d) => d !== 1)
  ) {
    throw new InputError(
      "saeFeatures: acts must be a Tensor [pos, d_sae] or [1, pos, d_sae] (one sequence)",
    );
  }
  const [T, F] = shape.slice(-2);
  if (T !== tokens.length) {
    throw new InputError(`saeFeatures: ${tokens.length} tokens but activations for ${T}`);
  }
  const k = opts.k ?? 8;
  if (!Number.isInteger(k) || k < 1) {
    throw new InputError(`saeFeatures: k must be a whole number >= 1, got ${k}`);
  }
  const label = opts.label ?? "SAE";
  const rows: { l0: number; top: number[] }[] = [];
  let max = 0;
  for (let t = 0; t < T; t++) {
    const row = acts.data.subarray(t * F, (t + 1) * F);
    const active: number[] = [];
    for (let f = 0; f < F; f++) if (row[f] > 0) active.push(f);
    active.sort((a, b) => row[b] - row[a] || a - b);
    const top = active.slice(0, k);
    if (top.length > 0) max = Math.max(max, row[top[0]]);
    rows.push({ l0: active.length, top });
  }
  const scale: ColorScale = {
    kind: "sequential",
    min: 0,
    max: max > 0 ? max : 1,
    label: "feature activation",
  };
  const head = `<tr><th>pos</th><th>token</th><th>active</th>${
    Array.from({ length: k }, (_, r) => `<th>${r + 1}</th>`).join("")
  }</tr>`;
  const body = rows.map(({ l0, top }, t) => {
    const row = acts.data.subarray(t * F, (t + 1) * F);
    const cells = Array.from({ length: k }, (_, r) => {
      const f = top[r];
      if (f === undefined) return "<td></td>";
      const v = row[f], bg = colorOf(v, scale);
      const tip = `feature ${f} at ${escapeHtml(showToken(tokens[t]))} (position ${t})\n` +
        `activation: ${formatNumber(v)}`;
      return `<td tabindex="0" data-id="${f}" data-value="${v}" data-tip="${tip}" ` +
        `aria-label="${tip.replaceAll("\n", "; ")}" style="background:${bg};` +
        `color:${textColorOn(bg)}">#${f} ${formatNumber(v)}</td>`;
    });
    return `<tr data-pos="${t}"><th>${t}</th><td>${escapeHtml(showToken(tokens[t]))}</td>` +
      `<td data-active="${l0}">${l0}</td>${cells.join("")}</tr>`;
  });
  return new HtmlView(
    "sae-features",
    `<div class="title">${escapeHtml(label)}: active features per token (of ${F})</div>` +
      `<table class="sae-features">${head}${body.join("")}</table>${scaleHtml(scale)}`,
    `${label}: active features at ${T} positions`,
  );
}
