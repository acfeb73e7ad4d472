/**
 * The decoder layout that Llama, Qwen2 and Gemma checkpoints share: `[model.]layers.{l}.` with
 * `self_attn.{q,k,v,o}_proj` and `mlp.{gate,up,down}_proj`, read into TransformerLens's stacked
 * parameters. The families differ in their norms, embeddings and biases; those stay in
 * `llama.ts` and `gemma.ts`.
 * @module
 */
import { type Tensor, transpose2d } from "../core/tensor.ts";
import type { HookedTransformerConfig } from "../model/config.ts";
import { layerOf, type StackedName } from "../model/params.ts";
import { CheckpointReader, linearToHeads, type TensorSource } from "./hf_config.ts";

/** A checked reader of a Llama-layout checkpoint and its tensor-name prefix. */
export interface LlamaLayoutReader {
  /** The checked reader (tensors of layers past the config's are refused). */
  ck: CheckpointReader;
  /** `"model."` when the checkpoint names its tensors `model.layers...`, else `""`. */
  prefix: string;
}

/**
 * Opens a Llama-layout checkpoint for checked reads: finds whether its names carry the
 * `model.` prefix and refuses tensors of layers the config does not have.
 *
 * @example
 * ```ts
 * import { llamaLayoutReader } from "./llama_layout.ts";
 * import { llamaConfig } from "./llama.ts";
 * import { parseSafetensors } from "../io/safetensors.ts";
 * import { syntheticLlama } from "../weights/synthetic_families.ts";
 * const { config, weights } = syntheticLlama({
 *   nLayers: 1, nHeads: 2, nKeyValueHeads: 1, dModel: 16, dVocab: 32, nCtx: 8,
 * });
 * const { prefix } = llamaLayoutReader(parseSafetensors(weights), "Llama", llamaConfig(config));
 * prefix; // "model."
 * ```
 */
export function llamaLayoutReader(
  file: TensorSource,
  family: string,
  cfg: HookedTransformerConfig,
): LlamaLayoutReader {
  const prefix = file.names().some((n) => n.startsWith("model.")) ? "model." : "";
  const layerKey = new RegExp(`^${prefix.replace(".", "\\.")}layers\\.(\\d+)\\.`);
  return { ck: new CheckpointReader(file, family, cfg, layerKey), prefix };
}

/** Which optional biases a Llama-layout checkpoint stores. */
export interface LlamaLayoutBiases {
  /** `self_attn.{q,k,v}_proj.bias`. */
  qkv: boolean;
  /** `self_attn.o_proj.bias`. */
  o: boolean;
  /** `mlp.{gate,up,down}_proj.bias`. */
  mlp: boolean;
}

const NO_BIASES: LlamaLayoutBiases = { qkv: false, o: false, mlp: false };

/**
 * Reads layer `l`'s attention and gated-MLP weights (and the biases `biases` names) into the
 * stacks: `W_Q` from `q_proj` as [heads, d_model, d_head], `W_K` / `W_V` with their key/value
 * heads, `W_O` from `o_proj` transposed, `W_gate` (`gate_proj`), `W_in` (`up_proj`) and `W_out`
 * (`down_proj`) transposed, each read once and written in place.
 *
 * @example
 * ```ts
 * import { llamaLayoutReader, readLlamaLayer } from "./llama_layout.ts";
 * import { llamaConfig } from "./llama.ts";
 * import { emptyStacks } from "../model/params.ts";
 * import { parseSafetensors } from "../io/safetensors.ts";
 * import { syntheticLlama } from "../weights/synthetic_families.ts";
 * const { config, weights } = syntheticLlama({
 *   nLayers: 1, nHeads: 2, nKeyValueHeads: 1, dModel: 16, dVocab: 32, nCtx: 8,
 * });
 * const cfg = llamaConfig(config);
 * const { ck, prefix } = llamaLayoutReader(parseSafetensors(weights), "Llama", cfg);
 * const stacks = {
 *   ...emptyStacks(cfg),
 *   W_gate: { data: new Float32Array(cfg.dModel * cfg.dMlp), shape: [1, cfg.dModel, cfg.dMlp] },
 *   b_gate: { data: new Float32Array(cfg.dMlp), shape: [1, cfg.dMlp] },
 * };
 * readLlamaLayer(ck, prefix, 0, stacks);
 * stacks.W_Q.data.some((x) => x !== 0); // true
 * ```
 */
export function readLlamaLayer(
  ck: CheckpointReader,
  prefix: string,
  l: number,
  stacks: Record<StackedName, Tensor> & { W_gate: Tensor; b_gate: Tensor },
  biases: LlamaLayoutBiases = NO_BIASES,
): void {
  const { nHeads, nKeyValueHeads: nKv, dModel: d, dHead, dMlp } = ck.cfg;
  const p = `${prefix}layers.${l}.`;
  const at = (name: StackedName) => layerOf(stacks[name], l).data;
  const proj = [
    { x: "q", W: "W_Q", b: "b_Q", heads: nHeads },
    { x: "k", W: "W_K", b: "b_K", heads: nKv },
    { x: "v", W: "W_V", b: "b_V", heads: nKv },
  ] as const;
  for (const { x, W, b, heads } of proj) {
    const rows = heads * dHead;
    linearToHeads(ck.read(`${p}self_attn.${x}_proj.weight`, [rows, d]), d, heads, dHead, at(W));
    if (biases.qkv) at(b).set(ck.read(`${p}self_attn.${x}_proj.bias`, [rows]));
  }
  const o = ck.read(p + "self_attn.o_proj.weight", [d, nHeads * dHead]);
  transpose2d(o, d, nHeads * dHead, at("W_O")); // [n_heads d_head, d_model]
  if (biases.o) at("b_O").set(ck.read(p + "self_attn.o_proj.bias", [d]));
  // Transposes write into the stacks: no temporary copy of each matrix.
  const mlp = (name: string, rows: number, cols: number, out: Float32Array) =>
    transpose2d(ck.read(`${p}mlp.${name}.weight`, [rows, cols]), rows, cols, out);
  mlp("gate_proj", dMlp, d, layerOf(stacks.W_gate, l).data);
  mlp("up_proj", dMlp, d, at("W_in"));
  mlp("down_proj", d, dMlp, at("W_out"));
  if (biases.mlp) {
    layerOf(stacks.b_gate, l).data.set(ck.read(p + "mlp.gate_proj.bias", [dMlp]));
    at("b_in").set(ck.read(p + "mlp.up_proj.bias", [dMlp]));
    at("b_out").set(ck.read(p + "mlp.down_proj.bias", [d]));
  }
}
