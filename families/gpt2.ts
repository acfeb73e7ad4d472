/**
 * HF GPT-2 checkpoint -> GPT-2 parameters under TransformerLens's names and shapes.
 * @module
 */
import { ConfigError, WeightsError } from "../core/errors.ts";
import type { HookedTransformerConfig } from "../model/config.ts";
import type { SafetensorsFile } from "../io/safetensors.ts";
import { numel, type Tensor } from "../core/tensor.ts";

/** A LayerNorm's weight (`w`) and bias (`b`), each [d_model]. */
export interface LayerNormParams {
  w: Float32Array;
  b: Float32Array;
}

/** One transformer block's parameters, TransformerLens names and shapes. */
export interface BlockParams {
  /** `ln1` before attention; `null` once folded into the next weights (LNPre). */
  ln1: LayerNormParams | null;
  /** [n_heads, d_model, d_head] */
  W_Q: Tensor;
  /** [n_heads, d_head] */
  b_Q: Tensor;
  /** [n_heads, d_model, d_head] */
  W_K: Tensor;
  /** [n_heads, d_head] */
  b_K: Tensor;
  /** [n_heads, d_model, d_head] */
  W_V: Tensor;
  /** [n_heads, d_head] */
  b_V: Tensor;
  /** [n_heads, d_head, d_model] */
  W_O: Tensor;
  /** [d_model] */
  b_O: Tensor;
  /** `ln2` before the MLP; `null` once folded. */
  ln2: LayerNormParams | null;
  /** [d_model, d_mlp] */
  W_in: Tensor;
  /** [d_mlp] */
  b_in: Tensor;
  /** [d_mlp, d_model] */
  W_out: Tensor;
  /** [d_model] */
  b_out: Tensor;
}

/** All of a GPT-2 model's parameters, TransformerLens names and shapes. */
export interface Gpt2Params {
  /** [d_vocab, d_model] */
  W_E: Tensor;
  /** [n_ctx, d_model] */
  W_pos: Tensor;
  blocks: BlockParams[];
  /** The final LayerNorm; `null` once folded into the unembedding. */
  lnFinal: LayerNormParams | null;
  /** [d_model, d_vocab] */
  W_U: Tensor;
  /** [d_vocab] (GPT-2 has none: zeros until processing folds ln_final's bias in) */
  b_U: Tensor;
}

/**
 * Maps an HF GPT-2 safetensors file onto TransformerLens parameters, checking every tensor's
 * presence and shape against the config. Accepts both key layouts (with and without the
 * `transformer.` prefix), ignores the causal-mask buffers, and uses `lm_head.weight` when present
 * (otherwise the unembedding is tied to `wte`).
 *
 * @example
 * ```ts ignore
 * const params = gpt2ParamsFromSafetensors(parseSafetensors(bytes), configFromHf(json));
 * params.blocks[0].W_Q.shape; // [n_heads, d_model, d_head]
 * ```
 */
export function gpt2ParamsFromSafetensors(
  file: SafetensorsFile,
  cfg: HookedTransformerConfig,
): Gpt2Params {
  const names = file.names();
  const prefix = names.some((n) => n.startsWith("transformer.")) ? "transformer." : "";
  checkNoStrayKeys(names, prefix, cfg);

  const read = (key: string, shape: number[]): Float32Array => {
    const full = prefix + key;
    if (!file.has(full)) {
      throw new WeightsError(
        `weights have no tensor "${full}" (expected shape [${shape}] for a GPT-2 with ` +
          `${cfg.nLayers} layers): the file is not a complete GPT-2 checkpoint`,
      );
    }
    const info = file.info(full);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new ConfigError(
        `tensor "${full}" has shape [${info.shape}] but config.json implies [${shape}]: ` +
          `the config does not match the weights`,
      );
    }
    return file.tensor(full).data;
  };

  const { nLayers, nHeads, dModel: d, dHead, dMlp, dVocab, nCtx } = cfg;
  const wte = read("wte.weight", [dVocab, d]);
  const W_pos = { data: read("wpe.weight", [nCtx, d]), shape: [nCtx, d] };
  const blocks: BlockParams[] = [];
  for (let l = 0; l < nLayers; l++) {
    const p = `h.${l}.`;
    const cAttn = read(p + "attn.c_attn.weight", [d, 3 * d]);
    const cAttnBias = read(p + "attn.c_attn.bias", [3 * d]);
    const part = (which: number) => splitHeads(cAttn, cAttnBias, which, nHeads, d, dHead);
    const [W_Q, b_Q] = part(0);
    const [W_K, b_K] = part(1);
    const [W_V, b_V] = part(2);
    blocks.push({
      ln1: { w: read(p + "ln_1.weight", [d]), b: read(p + "ln_1.bias", [d]) },
      W_Q,
      b_Q,
      W_K,
      b_K,
      W_V,
      b_V,
      // c_proj rows are (head, d_head) pairs in order, so it is W_O [n_heads, d_head, d_model].
      W_O: { data: read(p + "attn.c_proj.weight", [d, d]), shape: [nHeads, dHead, d] },
      b_O: { data: read(p + "attn.c_proj.bias", [d]), shape: [d] },
      ln2: { w: read(p + "ln_2.weight", [d]), b: read(p + "ln_2.bias", [d]) },
      W_in: { data: read(p + "mlp.c_fc.weight", [d, dMlp]), shape: [d, dMlp] },
      b_in: { data: read(p + "mlp.c_fc.bias", [dMlp]), shape: [dMlp] },
      W_out: { data: read(p + "mlp.c_proj.weight", [dMlp, d]), shape: [dMlp, d] },
      b_out: { data: read(p + "mlp.c_proj.bias", [d]), shape: [d] },
    });
  }
  const lnFinal = { w: read("ln_f.weight", [d]), b: read("ln_f.bias", [d]) };
  // lm_head.weight is never prefixed; it is [d_vocab, d_model] like wte.
  const lmHead = file.has("lm_head.weight") ? "lm_head.weight" : null;
  let unembed = wte;
  if (lmHead) {
    const info = file.info(lmHead);
    if (info.shape.length !== 2 || info.shape[0] !== dVocab || info.shape[1] !== d) {
      throw new ConfigError(
        `tensor "lm_head.weight" has shape [${info.shape}] but config.json implies [${dVocab},${d}]`,
      );
    }
    unembed = file.tensor(lmHead).data;
  }
  return {
    W_E: { data: wte, shape: [dVocab, d] },
    W_pos,
    blocks,
    lnFinal,
    W_U: { data: transpose(unembed, dVocab, d), shape: [d, dVocab] },
    b_U: { data: new Float32Array(dVocab), shape: [dVocab] },
  };
}

/**
 * Layers beyond the config are a mismatch, not something to ignore. Other extra keys (the
 * `h.{l}.attn.bias` mask buffers, heads of fine-tuned checkpoints) are ignored.
 */
function checkNoStrayKeys(names: string[], prefix: string, cfg: HookedTransformerConfig) {
  for (const name of names) {
    const key = name.startsWith(prefix) ? name.slice(prefix.length) : name;
    const layer = /^h\.(\d+)\./.exec(key);
    if (layer && Number(layer[1]) >= cfg.nLayers) {
      throw new ConfigError(
        `weights have tensor "${name}" but config.json says n_layer ${cfg.nLayers}: ` +
          `the config does not match the weights`,
      );
    }
  }
}

/** Column block `which` (0 Q, 1 K, 2 V) of c_attn, as [n_heads, d_model, d_head] and [n_heads, d_head]. */
function splitHeads(
  w: Float32Array,
  bias: Float32Array,
  which: number,
  nHeads: number,
  d: number,
  dHead: number,
): [Tensor, Tensor] {
  const W = new Float32Array(nHeads * d * dHead);
  const b = new Float32Array(nHeads * dHead);
  for (let h = 0; h < nHeads; h++) {
    const col0 = which * d + h * dHead;
    for (let i = 0; i < d; i++) {
      const src = i * 3 * d + col0;
      W.set(w.subarray(src, src + dHead), (h * d + i) * dHead);
    }
    b.set(bias.subarray(col0, col0 + dHead), h * dHead);
  }
  return [{ data: W, shape: [nHeads, d, dHead] }, { data: b, shape: [nHeads, dHead] }];
}

/** [rows, cols] -> [cols, rows]. */
export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  if (a.length !== rows * cols) throw new RangeError("transpose: size mismatch");
  const out = new Float32Array(numel([rows, cols]));
  const B = 64; // blocked so both sides stay in cache for a 50257 x 768 matrix
  for (let i0 = 0; i0 < rows; i0 += B) {
    const i1 = Math.min(rows, i0 + B);
    for (let j0 = 0; j0 < cols; j0 += B) {
      const j1 = Math.min(cols, j0 + B);
      for (let i = i0; i < i1; i++) {
        for (let j = j0; j < j1; j++) out[j * rows + i] = a[i * cols + j];
      }
    }
  }
  return out;
}
