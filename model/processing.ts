/**
 * TransformerLens's weight processing (`from_pretrained` defaults): fold_ln,
 * center_writing_weights, center_unembed, fold_value_biases, for every family (RMSNorm folds
 * only its weight, and writing weights are centred only in LayerNorm models, as TransformerLens
 * does). Sums run in float64 so the processed weights match TransformerLens's to float32
 * rounding.
 * @module
 */
import type { Tensor } from "../core/tensor.ts";
import type { HookedTransformerConfig } from "./config.ts";
import { layerOf, type ModelParams, type NormParams } from "./params.ts";

/** Which processing steps to apply; TransformerLens's defaults are all `true`. */
export interface ProcessingOptions {
  /** Fold each LayerNorm's weight and bias into the weights that read from it, then centre those weights over d_model. */
  foldLn?: boolean;
  /** Remove the mean over d_model from everything that writes to the residual stream. */
  centerWritingWeights?: boolean;
  /** Remove the mean over the vocabulary from W_U and b_U (logits change only by a constant). */
  centerUnembed?: boolean;
  /** Fold b_V through W_O into b_O (exact, since attention patterns sum to one). */
  foldValueBiases?: boolean;
}

/** Every option name of {@link ProcessingOptions} (checked against the type at compile time). */
export const PROCESSING_OPTION_KEYS: readonly string[] = Object.keys(
  {
    foldLn: true,
    centerWritingWeights: true,
    centerUnembed: true,
    foldValueBiases: true,
  } satisfies Record<keyof ProcessingOptions, true>,
);

/**
 * Processes the parameters in place and returns them with the config that now describes them
 * (`normalizationType` becomes `"LNPre"` / `"RMSPre"` after `foldLn`). In place because a GPT-2
 * XL's parameters are 6 GB in float32: a processed copy beside the original would double that.
 *
 * @example
 * ```ts
 * import { processWeights } from "./processing.ts";
 * import { gpt2Config, gpt2Params } from "../families/gpt2.ts";
 * import { parseSafetensors } from "../io/safetensors.ts";
 * import { syntheticGpt2 } from "../weights/synthetic.ts";
 * const { config, weights } = syntheticGpt2({
 *   nLayers: 1, nHeads: 2, dModel: 8, dVocab: 10, nCtx: 4, seed: 0,
 * });
 * const raw = gpt2Config(config);
 * const { params, cfg } = processWeights(gpt2Params(parseSafetensors(weights), raw), raw, {});
 * params.ln1; // null: folded
 * cfg.normalizationType; // "LNPre"
 * ```
 */
export function processWeights(
  params: ModelParams,
  cfg: HookedTransformerConfig,
  opts: ProcessingOptions = {},
): { params: ModelParams; cfg: HookedTransformerConfig } {
  const foldLn = opts.foldLn ?? true;
  const centerWriting = opts.centerWritingWeights ?? true;
  const centerUnembed = opts.centerUnembed ?? true;
  const foldValue = opts.foldValueBiases ?? true;
  const layerNorm = cfg.normalizationType === "LN" || cfg.normalizationType === "LNPre";

  let out = cfg;
  if (foldLn && (cfg.normalizationType === "LN" || cfg.normalizationType === "RMS")) {
    foldNorms(params, cfg.nLayers);
    out = { ...cfg, normalizationType: layerNorm ? "LNPre" : "RMSPre" };
  }
  // Centring writing weights is exact only when every reader normalises with a mean subtraction.
  if (centerWriting && layerNorm) centerWritingWeights(params);
  // A final softcap is not shift-invariant: TransformerLens skips centring then, and so do we.
  if (centerUnembed && !cfg.outputLogitsSoftCap) centerUnembedding(params);
  if (foldValue) foldValueBiases(params, cfg);
  return { params, cfg: out };
}

/**
 * Folds a norm into a stack of reading matrices W [stack, d_model, n] and biases [stack, n]:
 * b += norm.b @ W (LayerNorm only), W *= norm.w (per input row), then for LayerNorm W is centred
 * over d_model (the folded LayerNorm's output always has zero mean, so this changes nothing
 * downstream).
 */
function foldInto(w: Float32Array, nb: Float32Array | null, W: Tensor, b: Tensor | null) {
  const d = w.length;
  const n = W.shape[W.shape.length - 1];
  const stack = W.data.length / (d * n);
  const sum = new Float64Array(n);
  const mean = new Float64Array(n);
  for (let s = 0; s < stack; s++) {
    const base = s * d * n;
    if (nb && b) {
      sum.fill(0);
      for (let i = 0; i < d; i++) {
        const row = base + i * n;
        for (let j = 0; j < n; j++) sum[j] += W.data[row + j] * nb[i];
      }
      for (let j = 0; j < n; j++) b.data[s * n + j] = b.data[s * n + j] + sum[j];
    }
    mean.fill(0);
    for (let i = 0; i < d; i++) {
      const row = base + i * n;
      const wi = w[i];
      for (let j = 0; j < n; j++) {
        const v = Math.fround(W.data[row + j] * wi);
        W.data[row + j] = v;
        mean[j] += v;
      }
    }
    if (!nb) continue; // RMSNorm: no centring
    for (let j = 0; j < n; j++) mean[j] /= d;
    for (let i = 0; i < d; i++) {
      const row = base + i * n;
      for (let j = 0; j < n; j++) W.data[row + j] = W.data[row + j] - mean[j];
    }
  }
}

function foldNorms(p: ModelParams, nLayers: number) {
  const at = (t: Tensor, l: number) => layerOf(t, l);
  const normOf = (n: NormParams, l: number) => ({
    w: at(n.w, l).data,
    b: n.b ? at(n.b, l).data : null,
  });
  for (let l = 0; l < nLayers; l++) {
    if (p.ln1) {
      const { w, b } = normOf(p.ln1, l);
      foldInto(w, b, at(p.W_Q, l), at(p.b_Q, l));
      foldInto(w, b, at(p.W_K, l), at(p.b_K, l));
      foldInto(w, b, at(p.W_V, l), at(p.b_V, l));
    }
    if (p.ln2) {
      const { w, b } = normOf(p.ln2, l);
      foldInto(w, b, at(p.W_in, l), at(p.b_in, l));
      if (p.W_gate) foldInto(w, b, at(p.W_gate, l), at(p.b_gate!, l));
    }
  }
  if (p.lnFinal) foldInto(p.lnFinal.w.data, p.lnFinal.b?.data ?? null, p.W_U, p.b_U);
  p.ln1 = null;
  p.ln2 = null;
  p.lnFinal = null;
}

/** Subtracts each row's mean over its last axis (length n), in place. */
export function centerRows(data: Float32Array, n: number) {
  for (let r = 0; r < data.length; r += n) {
    let s = 0;
    for (let j = 0; j < n; j++) s += data[r + j];
    const mean = s / n;
    for (let j = 0; j < n; j++) data[r + j] = data[r + j] - mean;
  }
}

function centerWritingWeights(p: ModelParams) {
  const d = p.W_E.shape[1];
  centerRows(p.W_E.data, d);
  if (p.W_pos) centerRows(p.W_pos.data, d);
  centerRows(p.W_O.data, d);
  centerRows(p.b_O.data, d);
  centerRows(p.W_out.data, d);
  centerRows(p.b_out.data, d);
}

function centerUnembedding(p: ModelParams) {
  const vocab = p.W_U.shape[1];
  centerRows(p.W_U.data, vocab);
  centerRows(p.b_U.data, vocab);
}

/**
 * b_O += sum over heads of b_V[head's key/value group] @ W_O[h]; b_V = 0 (exact, since attention
 * patterns sum to one).
 */
function foldValueBiases(p: ModelParams, cfg: HookedTransformerConfig) {
  const { nLayers, nHeads, nKeyValueHeads, dHead, dModel: d } = cfg;
  const group = nHeads / nKeyValueHeads;
  const acc = new Float64Array(d);
  for (let l = 0; l < nLayers; l++) {
    const W_O = layerOf(p.W_O, l).data, b_V = layerOf(p.b_V, l).data;
    const b_O = layerOf(p.b_O, l).data;
    acc.fill(0);
    for (let h = 0; h < nHeads; h++) {
      const kv = Math.floor(h / group);
      for (let j = 0; j < dHead; j++) {
        const bv = b_V[kv * dHead + j];
        const row = (h * dHead + j) * d;
        for (let k = 0; k < d; k++) acc[k] += bv * W_O[row + k];
      }
    }
    for (let k = 0; k < d; k++) b_O[k] = b_O[k] + acc[k];
  }
  p.b_V.data.fill(0);
}
