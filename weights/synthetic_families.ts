/**
 * Synthetic HF checkpoints of the GPT-NeoX (Pythia), Llama / Qwen2 and Gemma 2 / 3 families: a `config.json`
 * object and `model.safetensors` bytes with seeded random weights under HF's tensor names and
 * shapes, as {@linkcode syntheticGpt2} makes for GPT-2. Benchmarks use them at real models' shapes
 * ({@linkcode PYTHIA_160M}, {@linkcode SMOLLM2_135M}); tests at tiny ones.
 *
 * @example
 * ```ts
 * import { SMOLLM2_135M, syntheticLlama } from "./synthetic_families.ts";
 * import { HookedTransformer } from "../model/hooked_transformer.ts";
 * const { config, weights } = syntheticLlama({ ...SMOLLM2_135M, nLayers: 2, seed: 1 });
 * const model = await HookedTransformer.fromBytes(config, weights, { threads: 1 });
 * model.cfg.nKeyValueHeads; // 3
 * ```
 * @module
 */
import { ConfigError } from "../core/errors.ts";
import type { FloatDtype } from "../core/dtype.ts";
import {
  checkpointBytes,
  normalTensor,
  type SyntheticGpt2,
  type TensorSpec,
  TORCH_DTYPE,
} from "./synthetic.ts";

/** Options shared by the synthetic families. */
export interface SyntheticOptions {
  /** Number of blocks. */
  nLayers: number;
  /** Attention heads per block. */
  nHeads: number;
  /** Residual width. */
  dModel: number;
  /** MLP width (default 4 x dModel for GPT-NeoX, 8/3 x dModel rounded up to 64 for Llama). */
  dMlp?: number;
  /** Vocabulary size. */
  dVocab: number;
  /** Context length (`max_position_embeddings`). */
  nCtx: number;
  /** PRNG seed (default 0): the same options give the same bytes. */
  seed?: number;
  /** Stored dtype (default `"F32"`). */
  dtype?: FloatDtype;
  /** Standard deviation of weights and biases (default 0.02); norm weights are 1 + that. */
  std?: number;
}

/** Options of {@linkcode syntheticGptNeox}. */
export interface SyntheticGptNeoxOptions extends SyntheticOptions {
  /** Fraction of each head that rotary embeddings turn (default 0.25, as Pythia). */
  rotaryPct?: number;
  /** Parallel attention and MLP (default true, as Pythia). */
  parallel?: boolean;
}

/** Options of {@linkcode syntheticLlama}. */
export interface SyntheticLlamaOptions extends SyntheticOptions {
  /** Key/value heads (default nHeads). */
  nKeyValueHeads?: number;
  /** Rotary base (`rope_theta`, default 10000). */
  ropeTheta?: number;
  /** Share the embedding as the unembedding (no `lm_head.weight`; default false). */
  tieWordEmbeddings?: boolean;
  /** `"llama"` (default) or `"qwen2"` (q/k/v biases). */
  modelType?: "llama" | "qwen2";
}

/** Pythia-160M's shape (vocabulary 50304, context 2048). */
export const PYTHIA_160M = {
  nLayers: 12,
  nHeads: 12,
  dModel: 768,
  dMlp: 3072,
  dVocab: 50304,
  nCtx: 2048,
} as const;

/** SmolLM2-135M's shape (grouped-query attention, tied embeddings, rope_theta 100000). */
export const SMOLLM2_135M = {
  nLayers: 30,
  nHeads: 9,
  nKeyValueHeads: 3,
  dModel: 576,
  dMlp: 1536,
  dVocab: 49152,
  nCtx: 8192,
  ropeTheta: 100000,
  tieWordEmbeddings: true,
} as const;

function checked(what: string, opts: SyntheticOptions) {
  for (const key of ["nLayers", "nHeads", "dModel", "dVocab", "nCtx"] as const) {
    const v = opts[key];
    if (!Number.isSafeInteger(v) || v <= 0) {
      throw new ConfigError(`${what}: ${key} must be a positive integer, got ${v}`);
    }
  }
  if (opts.dModel % opts.nHeads !== 0) {
    throw new ConfigError(
      `${what}: dModel ${opts.dModel} is not a multiple of nHeads ${opts.nHeads}`,
    );
  }
  const dtype = opts.dtype ?? "F32", std = opts.std ?? 0.02, seed = opts.seed ?? 0;
  if (!(dtype in TORCH_DTYPE)) {
    throw new ConfigError(`${what}: dtype must be F32, F16 or BF16, got ${dtype}`);
  }
  if (!Number.isFinite(std) || std < 0 || !Number.isFinite(seed)) {
    throw new ConfigError(`${what}: std must be a finite number >= 0 and seed a finite number`);
  }
  const specs: TensorSpec[] = [];
  const normal = (name: string, shape: number[], mean = 0) =>
    specs.push(normalTensor(seed, name, shape, mean, std));
  return { dtype, specs, normal };
}

/**
 * An HF GPT-NeoX (Pythia) checkpoint with seeded random weights: LayerNorm weights
 * 1 + normal(0, std), every other tensor normal(0, std).
 *
 * @example
 * ```ts ignore
 * import { PYTHIA_160M, syntheticGptNeox } from "./synthetic_families.ts";
 * const { config, weights } = syntheticGptNeox({ ...PYTHIA_160M, seed: 0 }); // ~0.65 GB
 * config.rotary_pct; // 0.25
 * ```
 */
export function syntheticGptNeox(opts: SyntheticGptNeoxOptions): SyntheticGpt2 {
  const { config, specs } = syntheticGptNeoxSpecs(opts);
  return { config, weights: checkpointBytes(specs, opts.dtype ?? "F32") };
}

/**
 * The config and tensor list of {@linkcode syntheticGptNeox}'s checkpoint, values not yet drawn:
 * each spec fills its tensor in order, chunk by chunk, so a checkpoint larger than memory can be
 * streamed to disk (as `bench/webgpu_large.ts` does).
 *
 * @example
 * ```ts
 * import { syntheticGptNeoxSpecs } from "./synthetic_families.ts";
 * const { specs } = syntheticGptNeoxSpecs({ nLayers: 1, nHeads: 2, dModel: 8, dVocab: 16, nCtx: 8 });
 * specs[0].name; // "gpt_neox.embed_in.weight"
 * ```
 */
export function syntheticGptNeoxSpecs(
  opts: SyntheticGptNeoxOptions,
): { config: Record<string, unknown>; specs: TensorSpec[] } {
  const { dtype, specs, normal } = checked("syntheticGptNeox", opts);
  const { nLayers, dModel: d, dVocab } = opts;
  const dMlp = opts.dMlp ?? 4 * d;
  const layerNorm = (name: string) => {
    normal(`${name}.weight`, [d], 1);
    normal(`${name}.bias`, [d]);
  };
  normal("gpt_neox.embed_in.weight", [dVocab, d]);
  for (let l = 0; l < nLayers; l++) {
    const p = `gpt_neox.layers.${l}.`;
    layerNorm(p + "input_layernorm");
    normal(p + "attention.query_key_value.weight", [3 * d, d]);
    normal(p + "attention.query_key_value.bias", [3 * d]);
    normal(p + "attention.dense.weight", [d, d]);
    normal(p + "attention.dense.bias", [d]);
    layerNorm(p + "post_attention_layernorm");
    normal(p + "mlp.dense_h_to_4h.weight", [dMlp, d]);
    normal(p + "mlp.dense_h_to_4h.bias", [dMlp]);
    normal(p + "mlp.dense_4h_to_h.weight", [d, dMlp]);
    normal(p + "mlp.dense_4h_to_h.bias", [d]);
  }
  layerNorm("gpt_neox.final_layer_norm");
  normal("embed_out.weight", [dVocab, d]);
  return {
    config: {
      architectures: ["GPTNeoXForCausalLM"],
      model_type: "gpt_neox",
      hidden_size: d,
      num_attention_heads: opts.nHeads,
      num_hidden_layers: nLayers,
      intermediate_size: dMlp,
      vocab_size: dVocab,
      max_position_embeddings: opts.nCtx,
      rotary_pct: opts.rotaryPct ?? 0.25,
      rotary_emb_base: 10000,
      use_parallel_residual: opts.parallel ?? true,
      layer_norm_eps: 1e-5,
      hidden_act: "gelu",
      tie_word_embeddings: false,
      bos_token_id: 0,
      eos_token_id: 0,
      torch_dtype: TORCH_DTYPE[dtype],
    },
    specs,
  };
}

/**
 * An HF Llama (or Qwen2) checkpoint with seeded random weights: RMSNorm weights
 * 1 + normal(0, std), every other tensor normal(0, std); q/k/v biases for Qwen2; no
 * `lm_head.weight` when the embeddings are tied.
 *
 * @example
 * ```ts
 * import { syntheticLlama } from "./synthetic_families.ts";
 * const { config } = syntheticLlama({
 *   nLayers: 2, nHeads: 4, nKeyValueHeads: 2, dModel: 32, dVocab: 96, nCtx: 32, modelType: "qwen2",
 * });
 * config.model_type; // "qwen2"
 * ```
 */
export function syntheticLlama(opts: SyntheticLlamaOptions): SyntheticGpt2 {
  const { dtype, specs, normal } = checked("syntheticLlama", opts);
  const { nLayers, nHeads, dModel: d, dVocab } = opts;
  const nKv = opts.nKeyValueHeads ?? nHeads, dHead = d / nHeads;
  const dMlp = opts.dMlp ?? Math.ceil((8 * d) / 3 / 64) * 64;
  const qwen2 = (opts.modelType ?? "llama") === "qwen2";
  const tied = opts.tieWordEmbeddings ?? false;
  if (!Number.isSafeInteger(nKv) || nKv <= 0 || nHeads % nKv !== 0) {
    throw new ConfigError(
      `syntheticLlama: nHeads ${nHeads} is not a multiple of nKeyValueHeads ${nKv}`,
    );
  }
  normal("model.embed_tokens.weight", [dVocab, d]);
  for (let l = 0; l < nLayers; l++) {
    const p = `model.layers.${l}.`;
    normal(p + "input_layernorm.weight", [d], 1);
    for (const [x, heads] of [["q", nHeads], ["k", nKv], ["v", nKv]] as const) {
      normal(`${p}self_attn.${x}_proj.weight`, [heads * dHead, d]);
      if (qwen2) normal(`${p}self_attn.${x}_proj.bias`, [heads * dHead]);
    }
    normal(p + "self_attn.o_proj.weight", [d, d]);
    normal(p + "post_attention_layernorm.weight", [d], 1);
    normal(p + "mlp.gate_proj.weight", [dMlp, d]);
    normal(p + "mlp.up_proj.weight", [dMlp, d]);
    normal(p + "mlp.down_proj.weight", [d, dMlp]);
  }
  normal("model.norm.weight", [d], 1);
  if (!tied) normal("lm_head.weight", [dVocab, d]);
  return {
    config: {
      architectures: [qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"],
      model_type: qwen2 ? "qwen2" : "llama",
      hidden_size: d,
      num_attention_heads: nHeads,
      num_key_value_heads: nKv,
      num_hidden_layers: nLayers,
      intermediate_size: dMlp,
      vocab_size: dVocab,
      max_position_embeddings: opts.nCtx,
      rms_norm_eps: 1e-5,
      rope_theta: opts.ropeTheta ?? 10000,
      rope_scaling: null,
      hidden_act: "silu",
      tie_word_embeddings: tied,
      bos_token_id: 0,
      eos_token_id: 0,
      torch_dtype: TORCH_DTYPE[dtype],
    },
    weights: checkpointBytes(specs, dtype),
  };
}

/** Options of {@linkcode syntheticGemma}. */
export interface SyntheticGemmaOptions {
  /** 2 (`gemma2`: softcaps, sliding even layers) or 3 (`gemma3_text`: q/k norms, two ropes). */
  version: 2 | 3;
  /** Number of blocks. */
  nLayers: number;
  /** Residual width. */
  dModel: number;
  /** Vocabulary size. */
  dVocab: number;
  /** Attention heads (default 4). */
  nHeads?: number;
  /** Key/value heads (default 1). */
  nKeyValueHeads?: number;
  /** Head width (default 16; Gemma's head_dim need not be dModel / nHeads). */
  dHead?: number;
  /** MLP width (default 4 x dModel). */
  dMlp?: number;
  /** Context length (default 512). */
  nCtx?: number;
  /** Sliding window (default 8). */
  slidingWindow?: number;
  /** Gemma 3's sliding_window_pattern (default 6). */
  slidingWindowPattern?: number;
  /** PRNG seed (default 0). */
  seed?: number;
  /** Stored dtype (default `"F32"`; the released checkpoints are `"BF16"`). */
  dtype?: FloatDtype;
  /** Standard deviation of the weights (default 0.02); norm weights are stored as normal(0, std). */
  std?: number;
}

/** Gemma-3-270M's shape (`google/gemma-3-270m`'s config: 18 layers, 1 key/value head). */
export const GEMMA3_270M = {
  version: 3,
  nLayers: 18,
  dModel: 640,
  nHeads: 4,
  nKeyValueHeads: 1,
  dHead: 256,
  dMlp: 2048,
  dVocab: 262144,
  nCtx: 32768,
  slidingWindow: 512,
  slidingWindowPattern: 6,
} as const;

/**
 * An HF Gemma 2 or Gemma 3 (text) checkpoint with seeded random weights under HF's names and
 * shapes: norm weights normal(0, std) (Gemma's norms compute x * (1 + w)), every other tensor
 * normal(0, std), the embedding tied (no `lm_head.weight`).
 *
 * @example
 * ```ts
 * import { syntheticGemma } from "./synthetic_families.ts";
 * import { HookedTransformer } from "../model/hooked_transformer.ts";
 * const { config, weights } = syntheticGemma({ version: 3, nLayers: 2, dModel: 32, dVocab: 64 });
 * const model = await HookedTransformer.fromBytes(config, weights, { threads: 1 });
 * model.cfg.attnTypes; // ["local", "local"]
 * ```
 */
export function syntheticGemma(opts: SyntheticGemmaOptions): SyntheticGpt2 {
  const nHeads = opts.nHeads ?? 4;
  const { dtype, specs, normal } = checked("syntheticGemma", {
    ...opts,
    nHeads: 1,
    nCtx: opts.nCtx ?? 512,
  });
  if (opts.version !== 2 && opts.version !== 3) {
    throw new ConfigError(`syntheticGemma: version must be 2 or 3, got ${opts.version}`);
  }
  const { nLayers, dModel: d, dVocab } = opts;
  const nKv = opts.nKeyValueHeads ?? 1, dHead = opts.dHead ?? 16;
  const dMlp = opts.dMlp ?? 4 * d;
  if (!Number.isSafeInteger(nKv) || nKv <= 0 || nHeads % nKv !== 0) {
    throw new ConfigError(
      `syntheticGemma: nHeads ${nHeads} is not a multiple of nKeyValueHeads ${nKv}`,
    );
  }
  const gemma3 = opts.version === 3;
  normal("model.embed_tokens.weight", [dVocab, d]);
  for (let l = 0; l < nLayers; l++) {
    const p = `model.layers.${l}.`;
    for (const [x, heads] of [["q", nHeads], ["k", nKv], ["v", nKv]] as const) {
      normal(`${p}self_attn.${x}_proj.weight`, [heads * dHead, d]);
    }
    normal(p + "self_attn.o_proj.weight", [d, nHeads * dHead]);
    if (gemma3) {
      normal(p + "self_attn.q_norm.weight", [dHead]);
      normal(p + "self_attn.k_norm.weight", [dHead]);
    }
    for (const n of ["input", "post_attention", "pre_feedforward", "post_feedforward"]) {
      normal(`${p}${n}_layernorm.weight`, [d]);
    }
    normal(p + "mlp.gate_proj.weight", [dMlp, d]);
    normal(p + "mlp.up_proj.weight", [dMlp, d]);
    normal(p + "mlp.down_proj.weight", [d, dMlp]);
  }
  normal("model.norm.weight", [d]);
  const common = {
    hidden_size: d,
    num_attention_heads: nHeads,
    num_key_value_heads: nKv,
    head_dim: dHead,
    num_hidden_layers: nLayers,
    intermediate_size: dMlp,
    vocab_size: dVocab,
    max_position_embeddings: opts.nCtx ?? 512,
    rms_norm_eps: 1e-6,
    hidden_activation: "gelu_pytorch_tanh",
    query_pre_attn_scalar: dHead,
    sliding_window: opts.slidingWindow ?? 8,
    bos_token_id: 2,
    eos_token_id: 1,
    pad_token_id: 0,
    torch_dtype: TORCH_DTYPE[dtype],
  };
  const config = gemma3
    ? {
      architectures: ["Gemma3ForCausalLM"],
      model_type: "gemma3_text",
      ...common,
      sliding_window_pattern: opts.slidingWindowPattern ?? 6,
      rope_theta: 1000000,
      rope_local_base_freq: 10000,
      rope_scaling: null,
      attn_logit_softcapping: null,
      final_logit_softcapping: null,
    }
    : {
      architectures: ["Gemma2ForCausalLM"],
      model_type: "gemma2",
      ...common,
      rope_theta: 10000,
      attn_logit_softcapping: 50,
      final_logit_softcapping: 30,
    };
  return { config, weights: checkpointBytes(specs, dtype) };
}
