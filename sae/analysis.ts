/**
 * Feature analyses on a spliced SAE: direct logit attribution of the features, their attribution
 * (gradient x activation) to a metric through the model's backward pass, steering by a feature,
 * and the top-activating contexts and density of features over a stream of texts (the core of a
 * Neuronpedia dashboard).
 * @module
 */
import { HookError, InputError } from "../core/errors.ts";
import { ProgressBar } from "../core/progress.ts";
import type { Tensor } from "../core/tensor.ts";
import type { ActivationCache } from "../model/activation_cache.ts";
import { exclusiveUse } from "../model/exclusive.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import type { HookFn } from "../model/hooks.ts";
import type { Metric } from "../model/metrics.ts";
import type { SAEModule } from "./sae.ts";

/** Options of {@linkcode featureDla}. */
export interface FeatureDlaOptions {
  /** Subtract the unembedding of these tokens (one per sequence): a logit difference. */
  incorrectTokens?: ArrayLike<number>;
  /** The position (default -1, the last). */
  posSlice?: number;
}

/**
 * Each feature's direct logit attribution [batch, d_sae]: its activation times its decoder
 * direction in the residual stream (times the normalisation-out factor of that position; through
 * the layer's W_O for `hook_z` SAEs), through the final norm as TransformerLens's
 * `apply_ln_to_stack` does (centred, divided by the cached `ln_final.hook_scale`), dotted with the
 * answer's unembedding (minus the incorrect token's); b_U excluded. The cache must come from a run
 * with the SAE spliced (`runWithCacheWithSaes`, error term on for the clean activations) holding
 * `<hook>.hook_sae_acts_post`, `<hook>.hook_sae_input` and `ln_final.hook_scale`.
 *
 * @example
 * ```ts ignore
 * const { cache } = await model.runWithCacheWithSaes(tokens, { saes: [sae], useErrorTerm: true });
 * const dla = featureDla(cache, sae, [answer], { incorrectTokens: [wrong] }); // [1, d_sae]
 * ```
 */
export function featureDla(
  cache: ActivationCache,
  sae: SAEModule,
  answerTokens: ArrayLike<number>,
  opts: FeatureDlaOptions = {},
): Tensor {
  const model = cache.model;
  if (!model) throw new InputError("featureDla needs a cache from a model run (cache.model)");
  const { cfg } = model;
  const h = sae.cfg.hookName;
  const acts = cache.get(`${h}.hook_sae_acts_post`);
  const scale = cache.get("ln_final.hook_scale");
  const [B, P, dSae] = acts.shape;
  const pos = opts.posSlice ?? -1;
  if (!Number.isInteger(pos) || pos >= P || pos < -P) {
    throw new InputError(`posSlice must be a position in [-${P}, ${P}), got ${pos}`);
  }
  const t = pos < 0 ? P + pos : pos;
  const answer = tokenList(answerTokens, B, cfg.dVocab, "answerTokens");
  const wrong = opts.incorrectTokens === undefined
    ? undefined
    : tokenList(opts.incorrectTokens, B, cfg.dVocab, "incorrectTokens");
  const D = cfg.dModel, V = cfg.dVocab;
  const WU = model.W_U.data;
  const lnW = model.lnFinal?.w?.data;
  const center = cfg.normalizationType === "LN" || cfg.normalizationType === "LNPre";
  // Per-row factor of normalisation-out, from the SAE's input at that position.
  let outScale: Float64Array | undefined;
  if (
    sae.cfg.normalizeActivations === "constant_norm_rescale" ||
    sae.cfg.normalizeActivations === "layer_norm"
  ) {
    const input = cache.get(`${h}.hook_sae_input`);
    outScale = sae.outputScale(input.data, B * P);
  }
  const hookZ = sae.cfg.reshapeActivations === "hook_z";
  const layer = hookZ ? Number(/^blocks\.(\d+)\./.exec(h)?.[1]) : -1;
  const dOut = sae.cfg.dOut;
  const Wdec = sae.W_dec.data;
  const norms = sae.rescalesByDecoderNorm ? sae.decoderNorms() : undefined;
  const out = new Float32Array(B * dSae);
  for (let b = 0; b < B; b++) {
    // u: the unembedding direction (answer - wrong), through the final norm's weight, centred
    const u = new Float64Array(D);
    for (let d = 0; d < D; d++) {
      let v = WU[d * V + answer[b]] - (wrong ? WU[d * V + wrong[b]] : 0);
      if (lnW) v *= lnW[d];
      u[d] = v;
    }
    if (center) {
      let m = 0;
      for (let d = 0; d < D; d++) m += u[d];
      m /= D;
      for (let d = 0; d < D; d++) u[d] -= m;
    }
    // w: u pulled back into the SAE's output space (through W_O for hook_z)
    let w: Float64Array = u;
    if (hookZ) {
      const { nHeads, dHead } = cfg;
      const WO = model.W_O.data;
      w = new Float64Array(nHeads * dHead);
      const base = layer * nHeads * dHead * D;
      for (let i = 0; i < nHeads * dHead; i++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += WO[base + i * D + d] * u[d];
        w[i] = s;
      }
    }
    const row = b * P + t;
    const k = (outScale ? outScale[row] : 1) / scale.data[row];
    for (let f = 0; f < dSae; f++) {
      const a = acts.data[row * dSae + f];
      if (a === 0) continue;
      let s = 0;
      for (let j = 0; j < dOut; j++) s += Wdec[f * dOut + j] * w[j];
      out[b * dSae + f] = a * s * k / (norms ? norms[f] : 1);
    }
  }
  return { data: out, shape: [B, dSae] };
}

/** What {@linkcode featureAttribution} returns. */
export interface FeatureAttribution {
  /** The metric's value (with the error term on: the clean model's). */
  metric: number;
  /** d metric / d feature activation [batch, pos, d_sae]. */
  grad: Tensor;
  /** grad x activation [batch, pos, d_sae] (attribution patching at the features). */
  attr: Tensor;
  /** The feature activations [batch, pos, d_sae]. */
  acts: Tensor;
  /** Per position, the error term's attribution: sum of (d metric / d output) x error. */
  errorAttr: Tensor;
}

/**
 * The features' attribution to `metric` (SAELens's attribution patching at the features): with
 * the SAE spliced and its error term on (so the run is the clean model's), one forward and one
 * backward pass give d metric / d output at the SAE's output hook; through the decoder (and
 * normalisation-out, and the decoder norms of rescaled top-k SAEs) that is the gradient at each
 * feature. `attr` = gradient x activation.
 *
 * @example
 * ```ts ignore
 * import { logitDiffMetric } from "../mod.ts";
 * const { attr } = await featureAttribution(model, tokens, sae, logitDiffMetric([answer], [wrong]));
 * ```
 */
export async function featureAttribution(
  model: HookedTransformer,
  tokens: number[][],
  sae: SAEModule,
  metric: Metric,
): Promise<FeatureAttribution> {
  const h = sae.cfg.hookName;
  const out = sae.cfg.hookNameOut ?? h;
  const names = [
    `${h}.hook_sae_input`,
    `${h}.hook_sae_acts_post`,
    `${h}.hook_sae_error`,
    out,
  ];
  const r = await model.saes(
    [sae],
    (m) => m.runWithCache(tokens, { inclBwdCache: true, metric, namesFilter: names }),
    { useErrorTerm: true },
  );
  const { cache } = r;
  const acts = cache.get(`${h}.hook_sae_acts_post`);
  const g = cache.get(`${out}_grad`);
  const error = cache.get(`${h}.hook_sae_error`);
  const { dSae, dOut } = sae.cfg;
  const rows = acts.data.length / dSae;
  // d metric / d recons: the output's gradient times normalisation-out's factor
  const gr = g.data.slice();
  const outScale = sae.outputScale(cache.get(`${h}.hook_sae_input`).data, rows);
  if (outScale) {
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < dOut; j++) gr[r * dOut + j] *= outScale[r];
    }
  }
  let grad: Float32Array;
  {
    using _turn = await exclusiveUse(model.backend);
    grad = await sae.decoderGrad(model.backend, gr, rows);
  }
  const attr = grad.map((v, i) => v * acts.data[i]);
  const errorAttr = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < dOut; j++) s += g.data[r * dOut + j] * error.data[r * dOut + j];
    errorAttr[r] = s;
  }
  const lead = acts.shape.slice(0, -1);
  return {
    metric: (r as { value?: number }).value!,
    grad: { data: grad, shape: [...acts.shape] },
    attr: { data: attr, shape: [...acts.shape] },
    acts,
    errorAttr: { data: errorAttr, shape: lead },
  };
}

/**
 * A hook for `<hook_name>.hook_sae_acts_post` that steers: adds `coefficient` to feature
 * `feature` at every position (or sets it, `mode: "set"`). Register it with `model.addHook` (or
 * `model.hooks([...], fn)`) while the SAE is spliced, and `generate` is steered too.
 *
 * @example
 * ```ts ignore
 * model.addSae(sae, { useErrorTerm: true });
 * model.addHook(`${sae.cfg.hookName}.hook_sae_acts_post`, steerFeature(1234, 40));
 * await model.generate("I think", { maxNewTokens: 20 });
 * ```
 */
export function steerFeature(
  feature: number,
  coefficient: number,
  opts: { mode?: "add" | "set" } = {},
): HookFn {
  if (!Number.isInteger(feature) || feature < 0) {
    throw new InputError(`feature must be a non-negative integer, got ${feature}`);
  }
  if (!Number.isFinite(coefficient)) {
    throw new InputError(`coefficient must be a finite number, got ${coefficient}`);
  }
  const set = opts.mode === "set";
  return (acts) => {
    const d = acts.shape.at(-1)!;
    if (feature >= d) throw new HookError(`feature ${feature} is out of range: the SAE has ${d}`);
    for (let i = feature; i < acts.data.length; i += d) {
      acts.data[i] = set ? coefficient : acts.data[i] + coefficient;
    }
  };
}

/** One context where a feature fires. */
export interface FeatureContext {
  /** Which text (index into the list given). */
  text: number;
  /** The token position in it. */
  position: number;
  /** The activation. */
  activation: number;
}

/** Options of {@linkcode topActivatingContexts}. */
export interface TopContextsOptions {
  /** The features to track (default: every feature). */
  features?: number[];
  /** Contexts kept per feature (default 10). */
  k?: number;
  /** Texts per forward pass (default 8): memory is bounded by this batch. */
  batchSize?: number;
  /** Draw a progress bar on stderr (default: when stderr is a terminal). */
  progress?: boolean;
  /** Called after each batch with (texts done, texts). */
  onProgress?: (done: number, total: number) => void;
}

/** What {@linkcode topActivatingContexts} returns. */
export interface TopContexts {
  /** Per tracked feature (in `features` order), its top contexts, largest activation first. */
  top: FeatureContext[][];
  /** The features tracked. */
  features: number[];
  /** Per tracked feature, the fraction of token positions where it is active (density). */
  density: Float64Array;
  /** Token positions seen. */
  positions: number;
}

/**
 * The top-activating contexts of features over a stream of texts (or token lists), in bounded
 * memory: the model runs a batch at a time with the SAE spliced (error term on: the clean model's
 * activations), only the SAE's features are kept, and each feature keeps its `k` best
 * (text, position) pairs. Also counts each feature's density (fraction of positions where it is
 * active). Texts of different lengths run one batch per length group, unpadded.
 *
 * @example
 * ```ts ignore
 * const { top, density } = await topActivatingContexts(model, sae, texts, { k: 5, features: [7] });
 * top[0][0]; // { text, position, activation } of feature 7's strongest context
 * ```
 */
export async function topActivatingContexts(
  model: HookedTransformer,
  sae: SAEModule,
  texts: Iterable<string | number[]> | AsyncIterable<string | number[]>,
  opts: TopContextsOptions = {},
): Promise<TopContexts> {
  const { dSae } = sae.cfg;
  const features = opts.features ?? Array.from({ length: dSae }, (_, i) => i);
  for (const f of features) {
    if (!Number.isInteger(f) || f < 0 || f >= dSae) {
      throw new InputError(`feature ${f} is out of range: the SAE has ${dSae} features`);
    }
  }
  const k = opts.k ?? 10;
  const batchSize = opts.batchSize ?? 8;
  if (!Number.isInteger(k) || k < 1) throw new InputError(`k must be >= 1, got ${k}`);
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new InputError(`batchSize must be >= 1, got ${batchSize}`);
  }
  const nF = features.length;
  // per feature: a min-heap of k (activation, text, position) in flat arrays
  const heapAct = new Float32Array(nF * k).fill(-Infinity);
  const heapText = new Int32Array(nF * k);
  const heapPos = new Int32Array(nF * k);
  const heapSize = new Int32Array(nF);
  const active = new Float64Array(nF);
  let positions = 0;
  const total = Array.isArray(texts) ? texts.length : undefined;
  const bar = new ProgressBar({ label: "top contexts", total, enabled: opts.progress });
  bar.start(0);
  const name = `${sae.cfg.hookName}.hook_sae_acts_post`;
  let index = 0, done = 0;
  const pending: { tokens: number[]; text: number }[] = [];

  const push = (fi: number, act: number, text: number, pos: number) => {
    const o = fi * k;
    let size = heapSize[fi];
    if (size < k) {
      let i = size++;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (heapAct[o + p] <= act) break;
        heapAct[o + i] = heapAct[o + p];
        heapText[o + i] = heapText[o + p];
        heapPos[o + i] = heapPos[o + p];
        i = p;
      }
      heapAct[o + i] = act;
      heapText[o + i] = text;
      heapPos[o + i] = pos;
      heapSize[fi] = size;
      return;
    }
    if (act <= heapAct[o]) return;
    let i = 0;
    for (;;) {
      const a = 2 * i + 1;
      if (a >= k) break;
      const c = a + 1 < k && heapAct[o + a + 1] < heapAct[o + a] ? a + 1 : a;
      if (heapAct[o + c] >= act) break;
      heapAct[o + i] = heapAct[o + c];
      heapText[o + i] = heapText[o + c];
      heapPos[o + i] = heapPos[o + c];
      i = c;
    }
    heapAct[o + i] = act;
    heapText[o + i] = text;
    heapPos[o + i] = pos;
  };

  const flush = async () => {
    // one pass per group of equal lengths
    const byLen = new Map<number, typeof pending>();
    for (const p of pending) byLen.set(p.tokens.length, [...(byLen.get(p.tokens.length) ?? []), p]);
    pending.length = 0;
    for (const group of byLen.values()) {
      const { cache } = await model.runWithCacheWithSaes(group.map((g) => g.tokens), {
        saes: [sae],
        useErrorTerm: true,
        namesFilter: [name],
      });
      const acts = cache.get(name).data;
      const T = group[0].tokens.length;
      for (let b = 0; b < group.length; b++) {
        for (let t = 0; t < T; t++) {
          const row = (b * T + t) * dSae;
          for (let fi = 0; fi < nF; fi++) {
            const a = acts[row + features[fi]];
            if (a > 0) {
              active[fi]++;
              push(fi, a, group[b].text, t);
            }
          }
        }
        positions += T;
      }
      done += group.length;
      bar.advance(group.length);
      opts.onProgress?.(done, total ?? done);
    }
  };

  try {
    for await (const text of texts as AsyncIterable<string | number[]>) {
      const tokens = typeof text === "string" ? model.toTokens(text)[0] : text;
      if (!Array.isArray(tokens) || tokens.length === 0) {
        throw new InputError(`text ${index} has no tokens`);
      }
      pending.push({ tokens, text: index++ });
      if (pending.length >= batchSize) await flush();
    }
    if (pending.length) await flush();
  } finally {
    bar.finish();
  }
  const top: FeatureContext[][] = [];
  for (let fi = 0; fi < nF; fi++) {
    const list: FeatureContext[] = [];
    for (let i = 0; i < heapSize[fi]; i++) {
      const o = fi * k + i;
      list.push({ text: heapText[o], position: heapPos[o], activation: heapAct[o] });
    }
    list.sort((a, b) => b.activation - a.activation || a.text - b.text || a.position - b.position);
    top.push(list);
  }
  return {
    top,
    features,
    density: active.map((n) => (positions ? n / positions : 0)),
    positions,
  };
}

function tokenList(ids: ArrayLike<number>, B: number, V: number, what: string): number[] {
  const list = Array.from(ids ?? []);
  if (list.length !== B) {
    throw new InputError(`${what}: expected one token per sequence (${B}), got ${list.length}`);
  }
  for (const id of list) {
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new InputError(`${what}: token ${id} is not an id in [0, ${V})`);
    }
  }
  return list;
}
