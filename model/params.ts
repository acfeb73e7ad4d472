/**
 * A model's parameters under TransformerLens's names and shapes, the same for every family. Block
 * weights are stored stacked over layers (`W_Q` is [n_layers, n_heads, d_model, d_head]), so the
 * model's accessors hand them out without copying, and {@linkcode layerOf} gives one layer's slice
 * as views.
 * @module
 */
import { numel, type Tensor } from "../core/tensor.ts";
import type { HookedTransformerConfig } from "./config.ts";

/** A normalization layer's weight `w` and bias `b` (null for RMSNorm); stacked over layers in blocks. */
export interface NormParams {
  /** [d_model], or [n_layers, d_model] for a block's norm. */
  w: Tensor;
  /** Same shape as `w`; null for RMSNorm, which has no bias. */
  b: Tensor | null;
}

/** Every parameter of a model, TransformerLens names, block weights stacked over layers. */
export interface ModelParams {
  /** Token embedding [d_vocab, d_model]. */
  W_E: Tensor;
  /** Position embedding [n_ctx, d_model]; null for rotary models. */
  W_pos: Tensor | null;
  /** Norm before attention, [n_layers, d_model] each; null once folded (LNPre, RMSPre). */
  ln1: NormParams | null;
  /** [n_layers, n_heads, d_model, d_head] */
  W_Q: Tensor;
  /** [n_layers, n_heads, d_head] */
  b_Q: Tensor;
  /** [n_layers, n_key_value_heads, d_model, d_head] */
  W_K: Tensor;
  /** [n_layers, n_key_value_heads, d_head] */
  b_K: Tensor;
  /** [n_layers, n_key_value_heads, d_model, d_head] */
  W_V: Tensor;
  /** [n_layers, n_key_value_heads, d_head] */
  b_V: Tensor;
  /** [n_layers, n_heads, d_head, d_model] */
  W_O: Tensor;
  /** [n_layers, d_model] */
  b_O: Tensor;
  /** Norm before the MLP; null once folded. */
  ln2: NormParams | null;
  /** MLP input (the "up" projection in gated MLPs) [n_layers, d_model, d_mlp]. */
  W_in: Tensor;
  /** [n_layers, d_mlp] (the up projection's bias in gated MLPs, see `b_gate`). */
  b_in: Tensor;
  /** Gate projection of gated MLPs [n_layers, d_model, d_mlp]; null otherwise. */
  W_gate: Tensor | null;
  /**
   * Gate bias of gated MLPs [n_layers, d_mlp] (zeros unless the checkpoint has one, as Llama's
   * `mlp_bias`); null otherwise. In gated MLPs, `b_in` is the up projection's bias: hook_pre =
   * x W_gate + b_gate, hook_pre_linear = x W_in + b_in, hook_post = act(hook_pre) *
   * hook_pre_linear, as in Hugging Face's models. (TransformerLens adds its b_in after the
   * product instead; for every model it converts, both biases are zero, so the two agree.)
   */
  b_gate: Tensor | null;
  /** [n_layers, d_mlp, d_model] */
  W_out: Tensor;
  /** [n_layers, d_model] */
  b_out: Tensor;
  /** The final norm, [d_model] each; null once folded into the unembedding. */
  lnFinal: NormParams | null;
  /** Unembedding [d_model, d_vocab]. */
  W_U: Tensor;
  /** Unembedding bias [d_vocab]. */
  b_U: Tensor;
  /**
   * Gemma: the weighted RMSNorm on the attention output, [n_layers, d_model] (TL's `ln1_post`,
   * stored as 1 + w like every Gemma norm); never folded.
   */
  ln1Post?: NormParams | null;
  /** Gemma: the weighted RMSNorm on the MLP output (TL's `ln2_post`); never folded. */
  ln2Post?: NormParams | null;
  /** Gemma 3: q_norm's weight (1 + w) [n_layers, d_head], applied to every query head. */
  qNorm?: Tensor | null;
  /** Gemma 3: k_norm's weight (1 + w) [n_layers, d_head], applied to every key head. */
  kNorm?: Tensor | null;
}

/** Names of the block weights stacked over layers. */
export type StackedName =
  | "W_Q"
  | "b_Q"
  | "W_K"
  | "b_K"
  | "W_V"
  | "b_V"
  | "W_O"
  | "b_O"
  | "W_in"
  | "b_in"
  | "W_out"
  | "b_out";

/**
 * The shapes of every parameter for a config (unfolded norms), as the family modules must fill
 * them.
 */
export function paramShapes(cfg: HookedTransformerConfig): Record<StackedName, number[]> {
  const { nLayers: L, nHeads: h, nKeyValueHeads: kv, dModel: d, dHead: dh, dMlp } = cfg;
  return {
    W_Q: [L, h, d, dh],
    b_Q: [L, h, dh],
    W_K: [L, kv, d, dh],
    b_K: [L, kv, dh],
    W_V: [L, kv, d, dh],
    b_V: [L, kv, dh],
    W_O: [L, h, dh, d],
    b_O: [L, d],
    W_in: [L, d, dMlp],
    b_in: [L, dMlp],
    W_out: [L, dMlp, d],
    b_out: [L, d],
  };
}

/** Zero-filled stacked tensors for a config, for a family module to fill. */
export function emptyStacks(cfg: HookedTransformerConfig): Record<StackedName, Tensor> {
  const shapes = paramShapes(cfg);
  const out = {} as Record<StackedName, Tensor>;
  for (const [name, shape] of Object.entries(shapes) as [StackedName, number[]][]) {
    out[name] = { data: new Float32Array(numel(shape)), shape };
  }
  return out;
}

/**
 * Layer `l`'s slice of a stacked tensor, as a view (writes go to the stack).
 *
 * @example
 * ```ts
 * import { layerOf } from "./params.ts";
 * const W = { data: new Float32Array(2 * 3), shape: [2, 3] };
 * layerOf(W, 1).data.length; // 3, a view of W's second row
 * ```
 */
export function layerOf(t: Tensor, l: number): Tensor {
  const shape = t.shape.slice(1);
  const size = numel(shape);
  return { data: t.data.subarray(l * size, (l + 1) * size), shape };
}

/**
 * A key/value stack [n_layers, n_key_value_heads, ...] with each head repeated `group` times
 * along axis 1 (`torch.repeat_interleave(x, group, dim=1)`), as TransformerLens's `W_K` of a
 * grouped-query attention model: query head h reads key/value head floor(h / group).
 *
 * @example
 * ```ts
 * import { repeatKvHeads } from "./params.ts";
 * const b_K = { data: new Float32Array([1, 2, 3, 4]), shape: [1, 2, 2] }; // 2 kv heads of 2
 * repeatKvHeads(b_K, 2).data; // Float32Array [1, 2, 1, 2, 3, 4, 3, 4]: 4 heads
 * ```
 */
export function repeatKvHeads(t: Tensor, group: number): Tensor {
  if (group === 1) return t;
  const [L, heads, ...rest] = t.shape;
  const size = numel(rest);
  const out = new Float32Array(t.data.length * group);
  for (let l = 0; l < L; l++) {
    for (let h = 0; h < heads; h++) {
      const src = t.data.subarray((l * heads + h) * size, (l * heads + h + 1) * size);
      for (let g = 0; g < group; g++) out.set(src, ((l * heads + h) * group + g) * size);
    }
  }
  return { data: out, shape: [L, heads * group, ...rest] };
}
