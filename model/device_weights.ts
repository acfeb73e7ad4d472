/**
 * The model's parameters inside WebAssembly memory, in the layout the kernels want: each weight
 * matrix packed once at load, Q|K|V fused into one [d_model, 3 d_model] matrix as HF stores it.
 * @module
 */
import type { BDtype, Kernels } from "../backend/wasm/kernels.ts";
import type { Gpt2Params, LayerNormParams } from "../families/gpt2.ts";
import type { HookedTransformerConfig } from "./config.ts";

/** A packed right-hand matrix [k, n] for `Kernels.matmul` (pass `dtype` as its `bDtype`). */
export interface PackedMatrix {
  ptr: number;
  k: number;
  n: number;
  /** How it is stored: f32 panels, or bf16 panels (half the memory, widened to f32 in the kernel). */
  dtype: BDtype;
}

/** LayerNorm weight and bias pointers, or null for LNPre (folded). */
export interface DeviceLayerNorm {
  gamma: number;
  beta: number;
}

/** One block's parameters in WebAssembly memory. */
export interface DeviceBlock {
  ln1: DeviceLayerNorm | null;
  /** [d_model, 3 d_model]: columns Q|K|V, each split into heads (column h d_head + j). */
  W_QKV: PackedMatrix;
  /** [3 d_model] */
  b_QKV: number;
  /** [d_model (= head, d_head), d_model] */
  W_O: PackedMatrix;
  b_O: number;
  ln2: DeviceLayerNorm | null;
  W_in: PackedMatrix;
  b_in: number;
  W_out: PackedMatrix;
  b_out: number;
}

/** All parameters the forward pass reads from WebAssembly memory (embeddings stay in JS). */
export interface DeviceWeights {
  blocks: DeviceBlock[];
  lnFinal: DeviceLayerNorm | null;
  W_U: PackedMatrix;
  b_U: number;
}

/**
 * Copies processed parameters into WebAssembly memory once, packing every matmul operand. With
 * `weightDtype: "bf16"` the big matrices (W_QKV, W_O, W_in, W_out, W_U) are stored as bfloat16
 * (rounded to nearest even); biases and LayerNorm parameters stay f32.
 */
export function uploadWeights(
  k: Kernels,
  params: Gpt2Params,
  cfg: HookedTransformerConfig,
  weightDtype: BDtype = "f32",
): DeviceWeights {
  const bf16 = weightDtype === "bf16";
  const { dModel: d, nHeads, dHead } = cfg;
  const vector = (data: Float32Array): number => {
    const ptr = k.alloc(data.length);
    k.write(ptr, data);
    return ptr;
  };
  const ln = (p: LayerNormParams | null): DeviceLayerNorm | null =>
    p && { gamma: vector(p.w), beta: vector(p.b) };
  const packed = (data: Float32Array, rows: number, cols: number): PackedMatrix => {
    const ptr = k.alloc(bf16 ? k.packedSizeBf16(rows, cols) : k.packedSize(rows, cols));
    // The unpacked copy is scratch above the packed one, released right after packing.
    const mark = k.mark();
    if (bf16) k.packBBf16(vector(data), ptr, rows, cols);
    else k.packB(vector(data), ptr, rows, cols);
    k.release(mark);
    return { ptr, k: rows, n: cols, dtype: weightDtype };
  };

  const blocks = params.blocks.map((b): DeviceBlock => {
    const qkv = new Float32Array(d * 3 * d);
    const bias = new Float32Array(3 * d);
    [b.W_Q, b.W_K, b.W_V].forEach((W, part) => {
      for (let h = 0; h < nHeads; h++) {
        for (let i = 0; i < d; i++) {
          const src = (h * d + i) * dHead;
          qkv.set(W.data.subarray(src, src + dHead), i * 3 * d + part * d + h * dHead);
        }
      }
    });
    bias.set(b.b_Q.data, 0);
    bias.set(b.b_K.data, d);
    bias.set(b.b_V.data, 2 * d);
    return {
      ln1: ln(b.ln1),
      W_QKV: packed(qkv, d, 3 * d),
      b_QKV: vector(bias),
      W_O: packed(b.W_O.data, d, d),
      b_O: vector(b.b_O.data),
      ln2: ln(b.ln2),
      W_in: packed(b.W_in.data, d, cfg.dMlp),
      b_in: vector(b.b_in.data),
      W_out: packed(b.W_out.data, cfg.dMlp, d),
      b_out: vector(b.b_out.data),
    };
  });
  return {
    blocks,
    lnFinal: ln(params.lnFinal),
    W_U: packed(params.W_U.data, d, cfg.dVocab),
    b_U: vector(params.b_U.data),
  };
}
