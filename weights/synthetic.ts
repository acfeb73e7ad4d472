/**
 * Synthetic HF GPT-2 checkpoints: a `config.json` object and `model.safetensors` bytes with
 * seeded random weights, HF's tensor names and shapes, in the layout of the official `gpt2` file
 * (no prefix, `h.{l}.attn.bias` causal-mask buffers) or of fine-tuned checkpoints (`transformer.`
 * prefix, no masks). Tests and benchmarks use them wherever real GPT-2 weights are unavailable;
 * GPT-2-small shape (124M parameters) takes about a second and is written straight into the final
 * buffer.
 *
 * @example
 * ```ts
 * import { syntheticGpt2 } from "./synthetic.ts";
 * import { parseSafetensors } from "../io/safetensors.ts";
 * const { config, weights } = syntheticGpt2({
 *   nLayers: 2, nHeads: 4, dModel: 32, dVocab: 96, nCtx: 32, seed: 1,
 * });
 * parseSafetensors(weights).info("h.0.attn.c_attn.weight").shape; // [32, 96]
 * config.n_embd; // 32
 * ```
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import { SeededRng } from "../core/rng.ts";
import { encodeFloats, type FloatDtype, HOST_LITTLE_ENDIAN } from "../core/dtype.ts";
import { allocateSafetensors } from "../io/safetensors.ts";

/** Options of {@link syntheticGpt2}. */
export interface SyntheticGpt2Options {
  /** Number of blocks (`n_layer`). */
  nLayers: number;
  /** Attention heads per block (`n_head`); must divide `dModel`. */
  nHeads: number;
  /** Residual width (`n_embd`). */
  dModel: number;
  /** MLP width (`n_inner`); default 4 x dModel, written as `n_inner: null` like HF does. */
  dMlp?: number;
  /** Vocabulary size (`vocab_size`); BOS = EOS = dVocab - 1. */
  dVocab: number;
  /** Context length (`n_positions`). */
  nCtx: number;
  /** PRNG seed: the same options give the same bytes. */
  seed: number;
  /**
   * `"official"` (default): the official `gpt2` file's names (no prefix) with `h.{l}.attn.bias`
   * causal-mask buffers. `"prefixed"`: `transformer.`-prefixed names, no mask buffers.
   */
  layout?: "official" | "prefixed";
  /** Stored dtype (default `"F32"`). */
  dtype?: FloatDtype;
  /** Standard deviation of weights and biases (default 0.02); LayerNorm weights are 1 + that. */
  std?: number;
}

/** A synthetic checkpoint: what HF's `config.json` and `model.safetensors` would hold. */
export interface SyntheticGpt2 {
  /** The `config.json` object (serialise with `JSON.stringify`). */
  config: Record<string, unknown>;
  /** The `model.safetensors` bytes. */
  weights: Uint8Array;
}

/** Fills `out` with a tensor's values from flat index `start` on (called in order, in chunks). */
export type Fill = (out: Float32Array, start: number) => void;

/** One tensor of a synthetic checkpoint: its name, shape and values. */
export interface TensorSpec {
  name: string;
  shape: number[];
  fill: Fill;
}

/**
 * A tensor of normal(mean, std) values from its own random stream, keyed by seed and name (so
 * the same name holds the same values whatever else the checkpoint holds).
 */
export function normalTensor(
  seed: number,
  name: string,
  shape: number[],
  mean: number,
  std: number,
): TensorSpec {
  let rng: SeededRng | null = null;
  const fill: Fill = (out) => {
    rng ??= new SeededRng(seed, name);
    rng.fillNormal(out, mean, std);
  };
  return { name, shape, fill };
}

/**
 * `model.safetensors` bytes of the tensors (names prefixed by `prefix`), in name order as HF's
 * `save_pretrained` writes them, with `__metadata__` `{ format: "pt" }`. Values are written
 * straight into the final buffer (F32) or through a small chunk (F16, BF16).
 */
export function checkpointBytes(specs: TensorSpec[], dtype: FloatDtype, prefix = ""): Uint8Array {
  specs = [...specs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const { bytes, slots } = allocateSafetensors(
    specs.map((s) => ({ name: prefix + s.name, dtype, shape: s.shape })),
    { format: "pt" },
  );
  const direct = dtype === "F32" && HOST_LITTLE_ENDIAN;
  const chunk = direct ? null : new Float32Array(1 << 16);
  const elementBytes = dtype === "F32" ? 4 : 2;
  for (let i = 0; i < specs.length; i++) {
    const { byteOffset, byteLength } = slots[i];
    const count = byteLength / elementBytes;
    if (chunk === null) {
      specs[i].fill(new Float32Array(bytes.buffer, byteOffset, count), 0);
      continue;
    }
    for (let start = 0; start < count; start += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, count - start));
      specs[i].fill(part, start);
      const at = byteOffset + start * elementBytes;
      encodeFloats(dtype, part, bytes.subarray(at, at + part.length * elementBytes));
    }
  }
  return bytes;
}

/** `torch_dtype` / `dtype` of an HF config for each stored dtype. */
export const TORCH_DTYPE: Record<FloatDtype, string> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
};

function positiveInt(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    throw new ConfigError(`syntheticGpt2: ${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/**
 * Makes an HF GPT-2 checkpoint with seeded random weights: normal(0, std) matrices, embeddings
 * and biases, LayerNorm weights 1 + normal(0, std) and LayerNorm biases normal(0, std) (all
 * randomised, so weight processing such as LayerNorm folding is exercised). Each tensor has its own
 * random stream keyed by seed and unprefixed name, so both layouts hold the same values and
 * F16/BF16 files hold those values rounded. Tensors are stored in name order, as HF's
 * `save_pretrained` writes them, with `__metadata__` `{ format: "pt" }`.
 *
 * @example
 * ```ts ignore
 * import { syntheticGpt2 } from "./synthetic.ts";
 * // GPT-2 small's shape, as a benchmark model (about 0.5 GB of float32):
 * const { config, weights } = syntheticGpt2({
 *   nLayers: 12, nHeads: 12, dModel: 768, dVocab: 50257, nCtx: 1024, seed: 0,
 * });
 * const dir = await Deno.makeTempDir(); // a folder HookedTransformer.fromPretrained(dir) loads
 * await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
 * await Deno.writeFile(`${dir}/model.safetensors`, weights);
 * ```
 */
export function syntheticGpt2(opts: SyntheticGpt2Options): SyntheticGpt2 {
  const nLayers = positiveInt("nLayers", opts.nLayers);
  const nHeads = positiveInt("nHeads", opts.nHeads);
  const d = positiveInt("dModel", opts.dModel);
  const dMlp = opts.dMlp === undefined ? 4 * d : positiveInt("dMlp", opts.dMlp);
  const dVocab = positiveInt("dVocab", opts.dVocab);
  const nCtx = positiveInt("nCtx", opts.nCtx);
  const layout = opts.layout ?? "official";
  const dtype = opts.dtype ?? "F32";
  const std = opts.std ?? 0.02;
  if (d % nHeads !== 0) {
    throw new ConfigError(`syntheticGpt2: dModel ${d} is not a multiple of nHeads ${nHeads}`);
  }
  if (layout !== "official" && layout !== "prefixed") {
    throw new ConfigError(`syntheticGpt2: layout must be "official" or "prefixed", got ${layout}`);
  }
  if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") {
    throw new ConfigError(`syntheticGpt2: dtype must be F32, F16 or BF16, got ${dtype}`);
  }
  if (!Number.isFinite(std) || std < 0) {
    throw new ConfigError(`syntheticGpt2: std must be a finite number >= 0, got ${std}`);
  }
  if (!Number.isFinite(opts.seed)) {
    throw new ConfigError(`syntheticGpt2: seed must be a finite number, got ${opts.seed}`);
  }

  const specs: TensorSpec[] = [];
  const normal = (name: string, shape: number[], mean = 0) =>
    specs.push(normalTensor(opts.seed, name, shape, mean, std));
  const layerNorm = (prefix: string) => {
    normal(`${prefix}.weight`, [d], 1);
    normal(`${prefix}.bias`, [d]);
  };
  normal("wte.weight", [dVocab, d]);
  normal("wpe.weight", [nCtx, d]);
  for (let l = 0; l < nLayers; l++) {
    const h = `h.${l}`;
    layerNorm(`${h}.ln_1`);
    if (layout === "official") {
      specs.push({ name: `${h}.attn.bias`, shape: [1, 1, nCtx, nCtx], fill: causalMask(nCtx) });
    }
    normal(`${h}.attn.c_attn.weight`, [d, 3 * d]);
    normal(`${h}.attn.c_attn.bias`, [3 * d]);
    normal(`${h}.attn.c_proj.weight`, [d, d]);
    normal(`${h}.attn.c_proj.bias`, [d]);
    layerNorm(`${h}.ln_2`);
    normal(`${h}.mlp.c_fc.weight`, [d, dMlp]);
    normal(`${h}.mlp.c_fc.bias`, [dMlp]);
    normal(`${h}.mlp.c_proj.weight`, [dMlp, d]);
    normal(`${h}.mlp.c_proj.bias`, [d]);
  }
  layerNorm("ln_f");
  const bytes = checkpointBytes(specs, dtype, layout === "prefixed" ? "transformer." : "");

  const config: Record<string, unknown> = {
    activation_function: "gelu_new",
    architectures: ["GPT2LMHeadModel"],
    attn_pdrop: 0.1,
    bos_token_id: dVocab - 1,
    dtype: TORCH_DTYPE[dtype],
    embd_pdrop: 0.1,
    eos_token_id: dVocab - 1,
    initializer_range: 0.02,
    layer_norm_epsilon: 1e-5,
    model_type: "gpt2",
    n_embd: d,
    n_head: nHeads,
    n_inner: dMlp === 4 * d ? null : dMlp,
    n_layer: nLayers,
    n_positions: nCtx,
    reorder_and_upcast_attn: false,
    resid_pdrop: 0.1,
    scale_attn_by_inverse_layer_idx: false,
    scale_attn_weights: true,
    summary_activation: null,
    summary_first_dropout: 0.1,
    summary_proj_to_labels: true,
    summary_type: "cls_index",
    summary_use_proj: true,
    tie_word_embeddings: true,
    use_cache: true,
    vocab_size: dVocab,
  };
  return { config, weights: bytes };
}

/** Fills a [1, 1, nCtx, nCtx] buffer with HF's causal mask: 1 where key <= query, else 0. */
function causalMask(nCtx: number): Fill {
  return (out, start) => {
    const n = out.length;
    let i = 0;
    while (i < n) {
      const flat = start + i;
      const row = Math.floor(flat / nCtx) % nCtx;
      const col = flat % nCtx;
      const rowEnd = Math.min(n, i + (nCtx - col)); // end of this row within `out`
      const ones = Math.min(rowEnd, i + Math.max(0, row + 1 - col)); // cols col..row are 1
      out.fill(1, i, ones);
      out.fill(0, ones, rowEnd);
      i = rowEnd;
    }
  };
}
