/**
 * Colours for the views: a diverging palette for signed values (patching effects, attributions)
 * and a sequential one for values from 0 up (attention, probabilities), both readable with the
 * common colour-vision deficiencies, and the scale each view shows beside its cells.
 *
 * The diverging palette is Paul Tol's "BuRd" (blue - near white - red, his colour-blind-safe
 * version of ColorBrewer's RdBu); the sequential one is its blue half, running from near white
 * to dark blue, whose lightness alone carries the value, so it reads the same in grey.
 * @module
 */
import { InputError } from "../core/errors.ts";
import { escapeHtml, formatNumber } from "./html.ts";

/** Paul Tol's BuRd, negative (blue) to positive (red). */
export const DIVERGING: readonly string[] = [
  "#2166ac",
  "#4393c3",
  "#92c5de",
  "#d1e5f0",
  "#f7f7f7",
  "#fddbc7",
  "#f4a582",
  "#d6604d",
  "#b2182b",
];

/** Near white to dark blue, for values from 0 up. */
export const SEQUENTIAL: readonly string[] = [
  "#f7f7f7",
  "#d1e5f0",
  "#92c5de",
  "#4393c3",
  "#2166ac",
  "#053061",
];

/** The colour of missing or non-finite values. */
export const MISSING_COLOR = "#bdbdbd";

/** How values map to colours. */
export interface ColorScale {
  /** `"diverging"`: `-max` .. 0 .. `max`; `"sequential"`: `min` .. `max`. */
  kind: "diverging" | "sequential";
  /** The value at the light end of a sequential scale (0 for diverging ones). */
  min: number;
  /** The value at the dark end (a diverging scale's red end; its blue end is `-max`). */
  max: number;
  /** What the values are, written beside the scale (e.g. "attention", "logit difference"). */
  label: string;
}

function rgb(hex: string): [number, number, number] {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function hex([r, g, b]: number[]): string {
  return "#" + [r, g, b].map((c) => Math.round(c).toString(16).padStart(2, "0")).join("");
}

/** The colour at `t` in [0, 1] along `stops`, interpolated in sRGB. */
function along(stops: readonly string[], t: number): string {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const [a, b] = [rgb(stops[i]), rgb(stops[i + 1])];
  const f = x - i;
  return hex(a.map((c, k) => c + (b[k] - c) * f));
}

/**
 * A scale for `values`: diverging around 0 when any is negative (or when `kind` says so), else
 * sequential from 0 to their maximum (from their minimum, if `kind` forces a sequential scale on
 * negative values). NaN and infinite values are ignored.
 *
 * @example
 * ```ts
 * import { scaleFor } from "./palette.ts";
 * scaleFor([-0.5, 2], "effect"); // { kind: "diverging", min: 0, max: 2, label: "effect" }
 * scaleFor([0.1, 0.9], "probability").kind; // "sequential"
 * ```
 */
export function scaleFor(
  values: ArrayLike<number>,
  label: string,
  kind?: "diverging" | "sequential",
): ColorScale {
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === Infinity) lo = hi = 0;
  const chosen = kind ?? (lo < 0 ? "diverging" : "sequential");
  if (chosen === "diverging") {
    return { kind: "diverging", min: 0, max: Math.max(Math.abs(lo), Math.abs(hi)) || 1, label };
  }
  const min = Math.min(0, lo);
  return { kind: "sequential", min, max: hi > min ? hi : min + 1, label };
}

/**
 * The colour of `value` on `scale` (values past the ends take the end colours).
 *
 * @example
 * ```ts
 * import { colorOf } from "./palette.ts";
 * const scale = { kind: "diverging", min: 0, max: 1, label: "x" } as const;
 * [colorOf(-1, scale), colorOf(0, scale), colorOf(1, scale)]; // ["#2166ac", "#f7f7f7", "#b2182b"]
 * ```
 */
export function colorOf(value: number, scale: ColorScale): string {
  if (!Number.isFinite(value)) return MISSING_COLOR;
  if (scale.kind === "diverging") return along(DIVERGING, 0.5 + value / (2 * scale.max));
  return along(SEQUENTIAL, (value - scale.min) / (scale.max - scale.min));
}

/**
 * Black or white, whichever reads better on `background` (WCAG relative luminance).
 *
 * @example
 * ```ts
 * import { textColorOn } from "./palette.ts";
 * [textColorOn("#f7f7f7"), textColorOn("#053061")]; // ["#111", "#fff"]
 * ```
 */
export function textColorOn(background: string): string {
  const lin = rgb(background).map((c) => {
    const s = c / 255;
    return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  });
  const luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  return luminance > 0.22 ? "#111" : "#fff";
}

/**
 * The scale as HTML: its label, the low end, a gradient bar, the high end (and 0 in the middle of
 * a diverging one).
 *
 * @example
 * ```ts
 * import { scaleHtml } from "./palette.ts";
 * scaleHtml({ kind: "sequential", min: 0, max: 1, label: "attention" }).includes("attention"); // true
 * ```
 */
export function scaleHtml(scale: ColorScale): string {
  if (!(scale.max > scale.min || scale.kind === "diverging")) {
    throw new InputError(`a colour scale needs max > min, got ${scale.min} .. ${scale.max}`);
  }
  const stops = scale.kind === "diverging" ? DIVERGING : SEQUENTIAL;
  const gradient = `linear-gradient(to right, ${stops.join(", ")})`;
  const lo = scale.kind === "diverging" ? -scale.max : scale.min;
  const mid = scale.kind === "diverging" ? `<span class="mid">(0 at the centre)</span>` : "";
  return `<div class="scale" data-scale="${scale.kind}" data-min="${lo}" data-max="${scale.max}">` +
    `<span>${escapeHtml(scale.label)}:</span><span>${formatNumber(lo)}</span>` +
    `<span class="bar" role="img" aria-label="${escapeHtml(scale.label)} colour scale from ` +
    `${formatNumber(lo)} to ${formatNumber(scale.max)}" style="background:${gradient}"></span>` +
    `<span>${formatNumber(scale.max)}</span>${mid}</div>`;
}
