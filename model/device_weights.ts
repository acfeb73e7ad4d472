/**
 * The model's parameters on the backend, in the layout the forward pass wants: every weight
 * matrix packed once at load, each layer's Q, K and V fused into one [d_model, (n_heads +
 * 2 n_key_value_heads) d_head] matrix so that one product computes all three, and a gated MLP's
 * W_gate and W_in fused into one [d_model, 2 d_mlp] matrix likewise.
 * @module
 */
import type { Backend, DeviceArray, PackedMatrix, WeightDtype } from "../backend/backend.ts";
import type { HookedTransformerConfig } from "./config.ts";
import { layerOf, type ModelParams, type NormParams } from "./params.ts";
import { runNextTurnNow } from "./exclusive.ts";

/** A normalization layer's weight and bias on the backend (bias absent for RMSNorm). */
export interface DeviceNorm {
  w: DeviceArray;
  b?: DeviceArray;
}

/** One block's parameters on the backend. */
export interface DeviceBlock {
  /** Null when folded (LNPre / RMSPre). */
  ln1: DeviceNorm | null;
  /** Columns: Q heads, then K heads, then V heads, each head d_head wide. */
  W_QKV: PackedMatrix;
  b_QKV: DeviceArray;
  /** [n_heads d_head, d_model] */
  W_O: PackedMatrix;
  b_O: DeviceArray;
  ln2: DeviceNorm | null;
  /** [d_model, d_mlp]; in gated MLPs [d_model, 2 d_mlp]: W_gate's columns, then W_in's. */
  W_in: PackedMatrix;
  /** [d_mlp]; in gated MLPs [2 d_mlp]: b_gate, then b_in. */
  b_in: DeviceArray;
  W_out: PackedMatrix;
  b_out: DeviceArray;
  /** Gemma: the attention output's RMSNorm weight (ln1_post), absent elsewhere. */
  ln1Post?: DeviceNorm;
  /** Gemma: the MLP output's RMSNorm weight (ln2_post), absent elsewhere. */
  ln2Post?: DeviceNorm;
  /**
   * Gemma 3: q_norm's weight repeated for each query head, then k_norm's for each key head
   * [(n_heads + n_key_value_heads) d_head] (what `headRmsNorm` takes over the fused Q|K columns).
   */
  qkNorm?: DeviceArray;
}

/** Every parameter the forward pass reads from the backend (the embeddings stay in JavaScript). */
export interface DeviceWeights {
  blocks: DeviceBlock[];
  lnFinal: DeviceNorm | null;
  W_U: PackedMatrix;
  b_U: DeviceArray;
}

/**
 * Uploads processed parameters once, packing every matrix. With `weightDtype: "bf16"` or `"f16"`
 * the big matrices (W_QKV, W_O, [W_gate|]W_in, W_out, W_U) are stored as bfloat16 or half
 * precision (nearest even; how each backend holds them: `WeightDtype`); biases and norm
 * parameters stay f32.
 */
export function uploadWeights(
  backend: Backend,
  params: ModelParams,
  cfg: HookedTransformerConfig,
  weightDtype: WeightDtype = "f32",
): DeviceWeights {
  runNextTurnNow(backend); // a cache held on the backend moves to the host first
  const { dModel: d, nHeads, nKeyValueHeads: nKv, dHead, dMlp, dVocab } = cfg;
  const qkvCols = (nHeads + 2 * nKv) * dHead;
  const matrix = (data: Float32Array, k: number, n: number) =>
    backend.uploadMatrix(data, k, n, weightDtype);
  const norm = (p: NormParams | null, l: number | null): DeviceNorm | null => {
    if (!p) return null;
    const slice = (t: NormParams["w"]) => l === null ? t.data : layerOf(t, l).data;
    return { w: backend.upload(slice(p.w)), b: p.b ? backend.upload(slice(p.b)) : undefined };
  };
  // Gated MLPs: the row-major [d_model, 2 d_mlp] concatenation [W_gate | W_in] and its bias.
  const mlpIn = (l: number): [Float32Array, Float32Array] => {
    const W_in = layerOf(params.W_in, l).data, b_in = layerOf(params.b_in, l).data;
    if (!params.W_gate) return [W_in, b_in];
    const W_gate = layerOf(params.W_gate, l).data;
    const w = new Float32Array(2 * d * dMlp), b = new Float32Array(2 * dMlp);
    for (let i = 0; i < d; i++) {
      w.set(W_gate.subarray(i * dMlp, (i + 1) * dMlp), 2 * i * dMlp);
      w.set(W_in.subarray(i * dMlp, (i + 1) * dMlp), (2 * i + 1) * dMlp);
    }
    b.set(layerOf(params.b_gate!, l).data);
    b.set(b_in, dMlp);
    return [w, b];
  };
  const blocks: DeviceBlock[] = [];
  for (let l = 0; l < cfg.nLayers; l++) {
    const [W_in, b_in] = mlpIn(l);
    const qkv = new Float32Array(d * qkvCols);
    const bias = new Float32Array(qkvCols);
    let col = 0;
    for (const [W, b] of [["W_Q", "b_Q"], ["W_K", "b_K"], ["W_V", "b_V"]] as const) {
      const w = layerOf(params[W], l).data, bv = layerOf(params[b], l).data;
      const heads = W === "W_Q" ? nHeads : nKv;
      for (let h = 0; h < heads; h++) {
        for (let i = 0; i < d; i++) {
          const src = (h * d + i) * dHead;
          qkv.set(w.subarray(src, src + dHead), i * qkvCols + col + h * dHead);
        }
      }
      bias.set(bv, col);
      col += heads * dHead;
    }
    blocks.push({
      ln1: norm(params.ln1, l),
      W_QKV: matrix(qkv, d, qkvCols),
      b_QKV: backend.upload(bias),
      W_O: matrix(layerOf(params.W_O, l).data, nHeads * dHead, d),
      b_O: backend.upload(layerOf(params.b_O, l).data),
      ln2: norm(params.ln2, l),
      W_in: matrix(W_in, d, b_in.length),
      b_in: backend.upload(b_in),
      W_out: matrix(layerOf(params.W_out, l).data, dMlp, d),
      b_out: backend.upload(layerOf(params.b_out, l).data),
      ...gemmaNorms(backend, params, cfg, l),
    });
  }
  return {
    blocks,
    lnFinal: norm(params.lnFinal, null),
    W_U: matrix(params.W_U.data, d, dVocab),
    b_U: backend.upload(params.b_U.data),
  };
}

/** A block's Gemma norms on the backend (none for other families). */
function gemmaNorms(
  backend: Backend,
  params: ModelParams,
  cfg: HookedTransformerConfig,
  l: number,
): Pick<DeviceBlock, "ln1Post" | "ln2Post" | "qkNorm"> {
  const out: Pick<DeviceBlock, "ln1Post" | "ln2Post" | "qkNorm"> = {};
  if (params.ln1Post) out.ln1Post = { w: backend.upload(layerOf(params.ln1Post.w, l).data) };
  if (params.ln2Post) out.ln2Post = { w: backend.upload(layerOf(params.ln2Post.w, l).data) };
  if (params.qNorm && params.kNorm) {
    const { nHeads, nKeyValueHeads: nKv, dHead } = cfg;
    const w = new Float32Array((nHeads + nKv) * dHead);
    const q = layerOf(params.qNorm, l).data, k = layerOf(params.kNorm, l).data;
    for (let h = 0; h < nHeads; h++) w.set(q, h * dHead);
    for (let h = 0; h < nKv; h++) w.set(k, (nHeads + h) * dHead);
    out.qkNorm = backend.upload(w);
  }
  return out;
}
