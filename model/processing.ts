/**
 * TransformerLens's weight processing (`from_pretrained` defaults): fold_ln,
 * center_writing_weights, center_unembed, fold_value_biases. Sums run in float64 so the processed
 * weights match TransformerLens's to float32 rounding.
 * @module
 */
import type { BlockParams, Gpt2Params, LayerNormParams } from "../families/gpt2.ts";
import type { Tensor } from "../core/tensor.ts";

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

/**
 * Processes the parameters in place and returns them. In place because a GPT-2 XL's parameters
 * are 6 GB in float32: a processed copy beside the original would double that.
 *
 * @example
 * ```ts ignore
 * const processed = processWeights(params, { foldLn: true, centerWritingWeights: true,
 *   centerUnembed: true, foldValueBiases: true });
 * processed.blocks[0].ln1; // null: LayerNorm without weight and bias (LNPre)
 * ```
 */
export function processWeights(params: Gpt2Params, opts: ProcessingOptions = {}): Gpt2Params {
  const foldLn = opts.foldLn ?? true;
  const centerWriting = opts.centerWritingWeights ?? true;
  const centerUnembed = opts.centerUnembed ?? true;
  const foldValue = opts.foldValueBiases ?? true;

  const p = params;
  if (foldLn) foldLayerNorm(p);
  if (centerWriting) centerWritingWeights(p);
  if (centerUnembed) centerUnembedding(p);
  if (foldValue) { for (const block of p.blocks) foldValueBias(block); }
  return p;
}

/**
 * Folds a LayerNorm into a stack of reading matrices W [stack, d_model, n] and biases
 * [stack, n]: b += ln.b @ W, W *= ln.w (per input row), then W is centred over d_model
 * (the folded LayerNorm's output always has zero mean, so this changes nothing downstream).
 */
function foldInto(ln: LayerNormParams, W: Tensor, b: Tensor) {
  const d = ln.w.length;
  const n = W.shape[W.shape.length - 1];
  const stack = W.data.length / (d * n);
  const sum = new Float64Array(n);
  const mean = new Float64Array(n);
  for (let s = 0; s < stack; s++) {
    const base = s * d * n;
    sum.fill(0);
    for (let i = 0; i < d; i++) {
      const row = base + i * n;
      for (let j = 0; j < n; j++) sum[j] += W.data[row + j] * ln.b[i];
    }
    for (let j = 0; j < n; j++) b.data[s * n + j] = b.data[s * n + j] + sum[j];
    mean.fill(0);
    for (let i = 0; i < d; i++) {
      const row = base + i * n;
      const w = ln.w[i];
      for (let j = 0; j < n; j++) {
        const v = Math.fround(W.data[row + j] * w);
        W.data[row + j] = v;
        mean[j] += v;
      }
    }
    for (let j = 0; j < n; j++) mean[j] /= d;
    for (let i = 0; i < d; i++) {
      const row = base + i * n;
      for (let j = 0; j < n; j++) W.data[row + j] = W.data[row + j] - mean[j];
    }
  }
}

function foldLayerNorm(p: Gpt2Params) {
  for (const block of p.blocks) {
    if (block.ln1) {
      foldInto(block.ln1, block.W_Q, block.b_Q);
      foldInto(block.ln1, block.W_K, block.b_K);
      foldInto(block.ln1, block.W_V, block.b_V);
      block.ln1 = null;
    }
    if (block.ln2) {
      foldInto(block.ln2, block.W_in, block.b_in);
      block.ln2 = null;
    }
  }
  if (p.lnFinal) {
    foldInto(p.lnFinal, p.W_U, p.b_U);
    p.lnFinal = null;
  }
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

function centerWritingWeights(p: Gpt2Params) {
  const d = p.W_E.shape[1];
  centerRows(p.W_E.data, d);
  centerRows(p.W_pos.data, d);
  for (const b of p.blocks) {
    centerRows(b.W_O.data, d);
    centerRows(b.b_O.data, d);
    centerRows(b.W_out.data, d);
    centerRows(b.b_out.data, d);
  }
}

function centerUnembedding(p: Gpt2Params) {
  const vocab = p.W_U.shape[1];
  centerRows(p.W_U.data, vocab);
  centerRows(p.b_U.data, vocab);
}

/** b_O += sum over heads of b_V[h] @ W_O[h]; b_V = 0. */
function foldValueBias(b: BlockParams) {
  const [nHeads, dHead, d] = b.W_O.shape;
  const acc = new Float64Array(d);
  for (let h = 0; h < nHeads; h++) {
    for (let j = 0; j < dHead; j++) {
      const bv = b.b_V.data[h * dHead + j];
      const row = (h * dHead + j) * d;
      for (let k = 0; k < d; k++) acc[k] += bv * b.W_O.data[row + k];
    }
  }
  for (let k = 0; k < d; k++) b.b_O.data[k] = b.b_O.data[k] + acc[k];
  b.b_V.data.fill(0);
}
