/**
 * The report's sparse-autoencoder section (`deno task experiments --sae <release> <id>`), written
 * with the public API (`mod.ts`) as a SAELens user would: on the repeated tokens, which of the
 * SAE's features are most active on the repeated half, and how much each one moves the correct
 * next token's logit, directly (`featureDla`) and in total to first order (`featureAttribution`,
 * gradient x activation with the error term on), beside what splicing the SAE costs in loss.
 * @module
 */
import {
  featureAttribution,
  featureDla,
  type HookedTransformer,
  type Metric,
  type SAEModule,
  type Tensor,
} from "../mod.ts";

/** One feature's figures on the repeated tokens. */
export interface SaeFeatureRow {
  /** The feature's index. */
  feature: number;
  /** Mean activation over the repeated half's positions (every sequence analysed). */
  meanRepeat: number;
  /** Mean activation over the first half's positions (BOS excluded). */
  meanFirst: number;
  /** Fraction of the repeated half's positions where the feature is active. */
  densityRepeat: number;
  /**
   * Direct logit attribution to the correct next token: activation x decoder direction through
   * the final norm and W_U (b_U excluded), mean over the repeated half's positions.
   */
  dla: number;
  /**
   * Attribution to the metric (the mean correct-token logit over the repeated half): d metric /
   * d activation x activation, summed over every position, the error term on.
   */
  attribution: number;
}

/** What {@link saeAnalysis} finds (stored in results.json as `sae`). */
export interface SaeAnalysis {
  /** How the SAE was named: `release / id`, or the folder or URL it was loaded from. */
  source: string;
  /** The hook point it reads (SAELens's `hook_name`). */
  hookName: string;
  /** The hook point its output replaces, when it is a transcoder. */
  hookNameOut?: string;
  /** SAELens's architecture name (`standard`, `jumprelu`, `topk`, ...). */
  architecture: string;
  /** Its width. */
  dSae: number;
  /** The block its hook point is in, or null (`hook_embed`, `ln_final.*`). */
  layer: number | null;
  /** The block of the induction head the study chose. */
  inductionLayer: number;
  /** Sequences analysed (the first ones of the batch). */
  batch: number;
  /** Positions t of the repeated half, [start, stop): activations at t, predictions of t + 1. */
  positions: [number, number];
  /** The metric the attributions explain: the mean correct-token logit over those positions. */
  metric: number;
  /** Mean cross-entropy over those positions: the clean model, and with the SAE spliced. */
  loss: { clean: number; spliced: number };
  /** Mean number of active features per position (L0), first half (BOS excluded) and repeat. */
  l0: { first: number; repeat: number };
  /** The error term's attribution to the metric, summed over every position. */
  errorAttribution: number;
  /** The features with the largest mean activation on the repeated half, largest first. */
  topActive: SaeFeatureRow[];
  /** The features with the largest attribution (by absolute value), largest first. */
  topAttribution: SaeFeatureRow[];
}

/**
 * d (mean over sequences and positions t in [start, stop) of logit[b, t, tokens[b][t + 1]]) / d
 * logits: the correct next token's logit on the repeated half, as a metric.
 */
export function correctLogitMetric(rows: number[][], start: number, stop: number): Metric {
  const n = rows.length * (stop - start);
  const each = (logits: Tensor, f: (at: number) => void) => {
    const [B, T, V] = logits.shape;
    for (let b = 0; b < B; b++) {
      for (let t = start; t < stop; t++) f((b * T + t) * V + rows[b][t + 1]);
    }
  };
  return {
    value: (logits) => {
      let s = 0;
      each(logits, (at) => s += logits.data[at]);
      return s / n;
    },
    grad: (logits) => {
      const g = new Float32Array(logits.data.length);
      each(logits, (at) => g[at] = 1 / n);
      return { data: g, shape: [...logits.shape] };
    },
  };
}

/** Mean of a per-token loss [batch, pos - 1] over positions [start, stop). */
function meanLoss(loss: Tensor, start: number, stop: number): number {
  const [B, P] = loss.shape;
  let s = 0;
  for (let b = 0; b < B; b++) for (let t = start; t < stop; t++) s += loss.data[b * P + t];
  return s / (B * (stop - start));
}

/**
 * The SAE section on repeated tokens `[BOS] + r + r` (rows of `1 + 2 seqLen` ids), on the first
 * `maxBatch` sequences: three passes (the spliced run with the error term, cached; the spliced
 * run without it, for the loss; one forward and backward pass for the attributions).
 *
 * @example
 * ```ts
 * import { generateRepeatedTokens, HookedTransformer, SAE } from "../mod.ts";
 * import { saeAnalysis } from "./sae_analysis.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
 * const d = 128, n = 16;
 * const sae = await SAE.fromTensors(
 *   { d_in: d, d_sae: n, hook_name: "blocks.2.hook_resid_pre" },
 *   {
 *     W_enc: { data: Float32Array.from({ length: d * n }, (_, i) => Math.sin(i)), shape: [d, n] },
 *     W_dec: { data: Float32Array.from({ length: n * d }, (_, i) => Math.cos(i) / 8), shape: [n, d] },
 *     b_enc: { data: new Float32Array(n), shape: [n] },
 *     b_dec: { data: new Float32Array(d), shape: [d] },
 *   },
 *   { backend: model.backend },
 * );
 * const tokens = generateRepeatedTokens(model, 10, 2, { seed: 0 });
 * const s = await saeAnalysis(model, sae, tokens, 10, { inductionLayer: 1, source: "example" });
 * s.topActive[0].feature; // the feature most active on the repeat
 * ```
 */
export async function saeAnalysis(
  model: HookedTransformer,
  sae: SAEModule,
  tokens: { data: Int32Array; shape: number[] },
  seqLen: number,
  opts: { inductionLayer: number; source: string; maxBatch?: number; top?: number },
): Promise<SaeAnalysis> {
  const T = tokens.shape[1];
  const B = Math.min(opts.maxBatch ?? 4, tokens.shape[0]);
  const top = opts.top ?? 10;
  const rows = Array.from(
    { length: B },
    (_, b) => Array.from(tokens.data.subarray(b * T, (b + 1) * T)),
  );
  const h = sae.cfg.hookName;
  const { dSae } = sae.cfg;
  const start = seqLen, stop = 2 * seqLen; // as the toolkit analysis: t predicts token t + 1

  // 1. The clean run (the error term on) with the SAE's features, input and the final scale.
  const clean = await model.runWithCacheWithSaes(rows, {
    saes: [sae],
    useErrorTerm: true,
    returnType: "loss",
    lossPerToken: true,
    namesFilter: [`${h}.hook_sae_acts_post`, `${h}.hook_sae_input`, "ln_final.hook_scale"],
  });
  const acts = clean.cache.get(`${h}.hook_sae_acts_post`); // [B, T, d_sae]
  // 2. The same tokens with the SAE's reconstruction in place of the activation.
  const spliced = await model.runWithSaes(rows, {
    saes: [sae],
    returnType: "loss",
    lossPerToken: true,
  });
  // 3. Gradient x activation of every feature at every position.
  const metric = correctLogitMetric(rows, start, stop);
  const fa = await featureAttribution(model, rows, sae, metric);

  // Per feature: activation means and density on both halves, attribution summed.
  const sumFirst = new Float64Array(dSae), sumRepeat = new Float64Array(dSae);
  const onRepeat = new Float64Array(dSae), attribution = new Float64Array(dSae);
  let l0First = 0, l0Repeat = 0, errorAttribution = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * dSae;
      const repeat = t >= start && t < stop, first = t >= 1 && t < start;
      errorAttribution += fa.errorAttr.data[b * T + t];
      for (let f = 0; f < dSae; f++) {
        attribution[f] += fa.attr.data[row + f];
        const a = acts.data[row + f];
        if (a === 0) continue;
        if (repeat) {
          sumRepeat[f] += a;
          onRepeat[f]++;
          l0Repeat++;
        } else if (first) {
          sumFirst[f] += a;
          l0First++;
        }
      }
    }
  }
  // Direct logit attribution at each position of the repeated half, to its correct next token.
  const dla = new Float64Array(dSae);
  for (let t = start; t < stop; t++) {
    const d = featureDla(clean.cache, sae, rows.map((r) => r[t + 1]), { posSlice: t });
    for (let b = 0; b < B; b++) {
      for (let f = 0; f < dSae; f++) dla[f] += d.data[b * dSae + f];
    }
  }
  const nRepeat = B * (stop - start), nFirst = B * (start - 1);
  const rowOf = (f: number): SaeFeatureRow => ({
    feature: f,
    meanRepeat: sumRepeat[f] / nRepeat,
    meanFirst: nFirst > 0 ? sumFirst[f] / nFirst : 0,
    densityRepeat: onRepeat[f] / nRepeat,
    dla: dla[f] / nRepeat,
    attribution: attribution[f],
  });
  const features = Array.from({ length: dSae }, (_, f) => f);
  const topActive = features
    .filter((f) => sumRepeat[f] > 0)
    .sort((a, b) => sumRepeat[b] - sumRepeat[a] || a - b)
    .slice(0, top)
    .map(rowOf);
  const topAttribution = features
    .filter((f) => attribution[f] !== 0)
    .sort((a, b) => Math.abs(attribution[b]) - Math.abs(attribution[a]) || a - b)
    .slice(0, top)
    .map(rowOf);
  const layer = /^blocks\.(\d+)\./.exec(h);
  return {
    source: opts.source,
    hookName: h,
    ...(sae.cfg.hookNameOut !== undefined ? { hookNameOut: sae.cfg.hookNameOut } : {}),
    architecture: sae.cfg.architecture,
    dSae,
    layer: layer ? Number(layer[1]) : null,
    inductionLayer: opts.inductionLayer,
    batch: B,
    positions: [start, stop],
    metric: fa.metric,
    loss: {
      clean: meanLoss(clean.loss, start, stop),
      spliced: meanLoss(spliced, start, stop),
    },
    l0: { first: nFirst > 0 ? l0First / nFirst : 0, repeat: l0Repeat / nRepeat },
    errorAttribution,
    topActive,
    topAttribution,
  };
}
