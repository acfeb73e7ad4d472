/**
 * Full circuits of attention heads over the vocabulary, as factored d_vocab x d_vocab matrices:
 * the K-composition circuit of a previous-token head into an induction head, a head's OV circuit
 * (W_E W_V W_O W_U) and QK circuit (W_E W_Q W_K^T W_E^T). All read the model's weights as
 * loaded: processed by default (fold_ln, centring, folded value biases, as TransformerLens's
 * `from_pretrained`), which the study's numbers depend on.
 *
 * Every family uses TransformerLens's definitions, from `W_Q`, `W_K`, `W_V`, `W_O` as the model
 * holds them: with grouped-query attention `W_K` / `W_V` are the repeated per-query-head ones.
 *
 * Rotary models (GPT-NeoX / Pythia, Llama, Qwen2): rotary embeddings are ignored, as
 * TransformerLens ignores them. A query at position p and a key at position p' score
 * q R(p' - p) k, where R turns each rotated pair of dims by the offset's angle; the QK and
 * K-composition circuits use R = I, so they are the exact scores of a query and a key at the same
 * position (offset 0), and for other offsets exact only on the dims that do not turn (3/4 of each
 * head in Pythia, none in Llama and Qwen2). The OV circuit is exact for every family: values are
 * never rotated.
 * @module
 */
import { checkHead } from "../model/checks.ts";
import type { HookedTransformer } from "../model/hooked_transformer.ts";
import { select, type Tensor } from "../core/tensor.ts";
import { matmul, transpose } from "../core/ops.ts";
import { FactoredMatrix } from "./factored_matrix.ts";

/**
 * A head as `[layer, head]`.
 *
 * @example
 * ```ts ignore
 * const prev: HeadIndex = [4, 11];
 * kCompositionCircuit(model, prev, [5, 5]);
 * ```
 */
export type HeadIndex = [number, number];

type HeadWeight = "W_Q" | "W_K" | "W_V" | "W_O";

/** One head's weight matrix (W_Q/W_K/W_V [d_model, d_head], W_O [d_head, d_model]). */
function headWeight(model: HookedTransformer, name: HeadWeight, [l, h]: HeadIndex): Tensor {
  return select(model[name], l, h);
}

/**
 * The K-composition full circuit of a previous-token head (l1, h1) into an induction head
 * (l2, h2), as in the study: Q = W_E W_Q[l2, h2] [d_vocab, d_head] and
 * K = W_E W_V[l1, h1] W_O[l1, h1] W_K[l2, h2] [d_vocab, d_head], returned as the factored
 * M = Q K^T (d_vocab x d_vocab; A = Q, B = K^T). Entry (i, j): how much a query on token i
 * attends to a key whose previous token was j, through the previous-token head. An induction
 * circuit makes the diagonal large: measure it with `top1Accuracy`.
 *
 * The [d_vocab, d_model] products run on the model's backend; the small ones
 * (W_O W_K first, then W_V times that) in float64 JavaScript.
 *
 * @example
 * ```ts ignore
 * import { HookedTransformer, kCompositionCircuit, top1Accuracy } from "./mod.ts";
 * const model = await HookedTransformer.fromPretrained("gpt2");
 * const M = kCompositionCircuit(model, [4, 11], [5, 5]);
 * M.shape; // [50257, 50257], never materialised
 * await top1Accuracy(M); // 0.2283 in the study
 * ```
 */
export function kCompositionCircuit(
  model: HookedTransformer,
  prevHead: HeadIndex,
  inductionHead: HeadIndex,
): FactoredMatrix {
  checkHead(prevHead, model.cfg, "kCompositionCircuit: the previous-token head");
  checkHead(inductionHead, model.cfg, "kCompositionCircuit: the induction head");
  const k = model.backend;
  const W_E = model.W_E;
  const Q = matmul(W_E, headWeight(model, "W_Q", inductionHead), k);
  const OK = matmul(headWeight(model, "W_O", prevHead), headWeight(model, "W_K", inductionHead));
  const VOK = matmul(headWeight(model, "W_V", prevHead), OK);
  const K = matmul(W_E, VOK, k);
  return new FactoredMatrix(Q, transpose(K), { backend: k });
}

/**
 * A head's full OV circuit W_E W_V W_O W_U [d_vocab, d_vocab], factored as
 * A = W_E W_V [d_vocab, d_head] and B = W_O W_U [d_head, d_vocab]. Row i is the direct effect on
 * the logits of attending to token i; a copying head has a large diagonal, which
 * `top1Accuracy` measures (the fraction of tokens whose own logit is the largest).
 *
 * @example
 * ```ts ignore
 * import { HookedTransformer, ovCircuit, top1Accuracy } from "./mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy");
 * const copying = await top1Accuracy(ovCircuit(model, 1, 2));
 * ```
 */
export function ovCircuit(model: HookedTransformer, layer: number, head: number): FactoredMatrix {
  checkHead([layer, head], model.cfg, "ovCircuit");
  const k = model.backend;
  const A = matmul(model.W_E, headWeight(model, "W_V", [layer, head]), k);
  const B = matmul(headWeight(model, "W_O", [layer, head]), model.W_U, k);
  return new FactoredMatrix(A, B, { backend: k });
}

/**
 * A head's full QK circuit over tokens, W_E W_Q W_K^T W_E^T [d_vocab, d_vocab], factored as
 * A = W_E W_Q and B = (W_E W_K)^T: entry (i, j) is the attention score (before scaling by
 * 1/sqrt(d_head)) of a query on token i for a key on token j, through token embeddings alone.
 *
 * @example
 * ```ts ignore
 * import { HookedTransformer, qkCircuit } from "./mod.ts";
 * const model = await HookedTransformer.fromPretrained("induction-toy");
 * qkCircuit(model, 1, 2).getCorner(3); // top-left 3 x 3 of the circuit
 * ```
 */
export function qkCircuit(model: HookedTransformer, layer: number, head: number): FactoredMatrix {
  checkHead([layer, head], model.cfg, "qkCircuit");
  const k = model.backend;
  const W_E = model.W_E;
  const A = matmul(W_E, headWeight(model, "W_Q", [layer, head]), k);
  const K = matmul(W_E, headWeight(model, "W_K", [layer, head]), k);
  return new FactoredMatrix(A, transpose(K), { backend: k });
}
